//! The search-filter grammar shared by the native API, the CLI and the MLflow-compatible API.
//!
//! A filter is MLflow's search syntax:
//!
//! ```text
//! name LIKE 'bert%' AND tags.task = 'nlp' AND (version >= 3 OR tags.`my key` IS NOT NULL)
//! ```
//!
//! [`parse`] turns the text into a [`Filter`] tree without knowing which entity it will
//! search; [`compile`] checks that tree against a [`FilterSchema`] (which fields exist, their
//! types, where the tags live, which fields are facts of [`Related`] rows such as a model's
//! versions) and produces a parameterised SQL fragment for one [`Dialect`]. User text never reaches the SQL string: every value becomes a bound
//! parameter, and field names are looked up in the schema and replaced by its columns.
//!
//! Bounds keep hostile input cheap: at most [`MAX_FILTER_LEN`] bytes, nesting depth
//! [`MAX_DEPTH`], [`MAX_COMPARISONS`] comparisons and [`MAX_IN_VALUES`] values in one `IN` list.

use std::fmt;

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// The deepest nesting of parentheses accepted.
pub const MAX_DEPTH: usize = 32;
/// The most comparisons one filter may hold.
pub const MAX_COMPARISONS: usize = 64;
/// The most values one `IN (…)` list may hold.
pub const MAX_IN_VALUES: usize = 256;

/// A filter that could not be parsed or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FilterError {
    /// Byte offset of the offending token in the filter text, when known.
    pub position: Option<usize>,
    /// What is wrong, naming the offending token.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "invalid filter at byte {p}: {}", self.message),
            None => write!(f, "invalid filter: {}", self.message),
        }
    }
}

impl FilterError {
    fn at(position: usize, message: impl Into<String>) -> Self {
        Self { position: Some(position), message: message.into() }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// All of these hold.
    And(Vec<Filter>),
    /// At least one of these holds.
    Or(Vec<Filter>),
    /// One comparison.
    Compare(Comparison),
}

/// What a comparison looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A named field (`name`, `attributes.created_at`).
    Field(String),
    /// A tag, by key (`tags.task`, ``tags.`my key` ``).
    Tag(String),
    /// A metric, by name (`metrics.accuracy`, ``metrics.`f1 macro` ``).
    Metric(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `LIKE` (case-sensitive; `%` any run, `_` one character, `\` escapes)
    Like,
    /// `NOT LIKE`
    NotLike,
    /// `ILIKE` (case-insensitive `LIKE`)
    ILike,
    /// `NOT ILIKE`
    NotILike,
    /// `IN (…)`
    In,
    /// `NOT IN (…)`
    NotIn,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    IsNotNull,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Like | Self::ILike => "LIKE",
            Self::NotLike | Self::NotILike => "NOT LIKE",
            Self::In => "IN",
            Self::NotIn => "NOT IN",
            Self::IsNull => "IS NULL",
            Self::IsNotNull => "IS NOT NULL",
        }
    }
}

/// A literal value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string.
    Text(String),
    /// An unquoted number, kept as written until its field's type is known.
    Number(String),
}

/// One comparison: `target op values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// What is compared.
    pub target: Target,
    /// How.
    pub op: Op,
    /// No value for `IS [NOT] NULL`, several for `IN`, one otherwise.
    pub values: Vec<Literal>,
    /// Byte offset of the target in the filter text, for error messages.
    pub position: usize,
}

/// The SQL dialect to compile for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The type of a searchable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text, compared as text; supports `LIKE`/`ILIKE`.
    Text,
    /// Text compared without regard to ASCII case (SPDX licence identifiers): the column and
    /// the values are folded to lower case, so `=`, `IN`, `<` and `LIKE` all ignore case.
    /// Only ASCII letters fold, on both backends alike.
    TextIgnoreCase,
    /// A whole number.
    Integer,
    /// Milliseconds since the Unix epoch; accepts a number or an RFC 3339 string.
    Timestamp,
    /// A floating-point number (metric values).
    Real,
}

/// A searchable field of an entity.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Its name in filters.
    pub name: &'static str,
    /// Other accepted names (MLflow's, for instance).
    pub aliases: &'static [&'static str],
    /// The SQL column expression it compiles to.
    pub column: &'static str,
    /// Its type.
    pub kind: FieldKind,
    /// `None` when `column` belongs to the row being searched; otherwise the rows of
    /// another table related to it (a model's versions), and the field holds for the row when
    /// it holds for any of them. See [`Related`].
    pub related: Option<Related>,
}

impl FieldSpec {
    /// A field of the searched row itself, with no other name.
    #[must_use]
    pub const fn new(name: &'static str, column: &'static str, kind: FieldKind) -> Self {
        Self { name, aliases: &[], column, kind, related: None }
    }

    /// The same field, also accepted under these names.
    #[must_use]
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// The same field, read from related rows: it holds when it holds for any of them.
    #[must_use]
    pub const fn of_any(mut self, related: Related) -> Self {
        self.related = Some(related);
        self
    }
}

/// Rows related to the searched row, for fields that hold when any related row holds them
/// ("a model with a production version").
///
/// A comparison on such a field compiles to `EXISTS (SELECT 1 FROM {from} WHERE {link} AND
/// column op value)`. The negative operators are the negation of their positive form:
/// `!=`, `NOT IN`, `NOT LIKE` and `NOT ILIKE` compile to `NOT EXISTS (… column = / IN / LIKE /
/// ILIKE …)` ("no related row has the value"), and `IS NULL` to `NOT EXISTS (… column IS NOT
/// NULL)` ("no related row has any value"). So a comparison and its negation always split
/// the rows in two, and a row without related rows satisfies every negative form.
#[derive(Debug, Clone, Copy)]
pub struct Related {
    /// The subquery's `FROM` clause, with its own table aliases (`versions fv`).
    pub from: &'static str,
    /// The condition tying the related rows to the outer row (`fv.model_id = m.id`).
    pub link: &'static str,
}

/// Where an entity's key/value tags are stored.
#[derive(Debug, Clone, Copy)]
pub struct TagSpec {
    /// The tag table.
    pub table: &'static str,
    /// Its column referring to the owning row.
    pub owner_column: &'static str,
    /// The owning row's id expression in the outer query.
    pub outer_id: &'static str,
    /// The key column.
    pub key_column: &'static str,
    /// The value column.
    pub value_column: &'static str,
}

/// Where the metric values of an entity (or of its versions) are stored: one row per
/// entity and metric name.
///
/// `metrics.k op v` compiles to `EXISTS (SELECT 1 FROM {from} WHERE {link} AND {name} = k AND
/// {value} op v)`: it holds when the metric is there with a value that compares so, as a tag
/// does (`!=` needs the metric present with another value); `metrics.k IS NULL` holds when it
/// is not there at all.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// The subquery's `FROM` clause, with its own table aliases (`version_metrics fm`).
    pub from: &'static str,
    /// The condition tying its rows to the outer row (`fm.version_id = v.id`).
    pub link: &'static str,
    /// The metric name column.
    pub name_column: &'static str,
    /// The value column.
    pub value_column: &'static str,
}

/// What one entity offers to filters.
#[derive(Debug, Clone, Copy)]
pub struct FilterSchema {
    /// The entity's name, for error messages ("model", "version").
    pub entity: &'static str,
    /// Its fields.
    pub fields: &'static [FieldSpec],
    /// Its tags, if it has any.
    pub tags: Option<TagSpec>,
    /// Its metrics, if it has any.
    pub metrics: Option<MetricSpec>,
}

impl FilterSchema {
    fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name) || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A floating-point number.
    Real(f64),
}

/// A compiled filter: a SQL boolean expression with `$n` placeholders, and their values.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFilter {
    /// The expression, numbered from the `first_param` given to [`compile`].
    pub sql: String,
    /// The values for `$first_param`, `$first_param + 1`, ….
    pub params: Vec<SqlValue>,
}

// ---------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: field names, keywords, dotted paths.
    Word(String),
    /// A single- or double-quoted string (double quotes are also identifiers after `tags.`).
    Str {
        text: String,
        double: bool,
    },
    /// A backtick-quoted identifier.
    Backtick(String),
    /// A number as written.
    Number(String),
    /// A comparison operator.
    Op(Op),
    LParen,
    RParen,
    Comma,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Word(w) => write!(f, "'{w}'"),
            Self::Str { text, double: false } => write!(f, "the string '{text}'"),
            Self::Str { text, double: true } => write!(f, "the string \"{text}\""),
            Self::Backtick(t) => write!(f, "`{t}`"),
            Self::Number(n) => write!(f, "the number {n}"),
            Self::Op(op) => write!(f, "'{}'", op_text(*op)),
            Self::LParen => f.write_str("'('"),
            Self::RParen => f.write_str("')'"),
            Self::Comma => f.write_str("','"),
        }
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Ne => "!=",
        other => other.sql(),
    }
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':')
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let tok = match c {
            '(' => {
                chars.next();
                Tok::LParen
            }
            ')' => {
                chars.next();
                Tok::RParen
            }
            ',' => {
                chars.next();
                Tok::Comma
            }
            '=' => {
                chars.next();
                Tok::Op(Op::Eq)
            }
            '!' => {
                chars.next();
                match chars.next() {
                    Some((_, '=')) => Tok::Op(Op::Ne),
                    _ => return Err(FilterError::at(pos, "'!' must be followed by '=' ('!=')")),
                }
            }
            '<' => {
                chars.next();
                match chars.peek() {
                    Some((_, '=')) => {
                        chars.next();
                        Tok::Op(Op::Le)
                    }
                    Some((_, '>')) => {
                        chars.next();
                        Tok::Op(Op::Ne)
                    }
                    _ => Tok::Op(Op::Lt),
                }
            }
            '>' => {
                chars.next();
                if matches!(chars.peek(), Some((_, '='))) {
                    chars.next();
                    Tok::Op(Op::Ge)
                } else {
                    Tok::Op(Op::Gt)
                }
            }
            '\'' | '"' | '`' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(FilterError::at(pos, format!("unterminated quoted text starting with {c}")));
                        }
                        // A doubled quote stands for one quote character, as in SQL.
                        Some((_, q)) if q == c => {
                            if matches!(chars.peek(), Some(&(_, n)) if n == c) {
                                chars.next();
                                text.push(c);
                            } else {
                                break;
                            }
                        }
                        Some((_, other)) => text.push(other),
                    }
                }
                match c {
                    '`' => Tok::Backtick(text),
                    _ => Tok::Str { text, double: c == '"' },
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let mut text = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || matches!(d, '.' | '-' | '+') {
                        text.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Tok::Number(text)
            }
            c if is_word_start(c) => {
                let mut text = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if is_word_char(d) {
                        text.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Tok::Word(text)
            }
            other => return Err(FilterError::at(pos, format!("unexpected character '{other}'"))),
        };
        out.push((pos, tok));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    comparisons: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn next(&mut self) -> Option<(usize, Tok)> {
        let t = self.toks.get(self.at).cloned();
        if t.is_some() {
            self.at += 1;
        }
        t
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "the end of the filter".to_owned(), ToString::to_string)
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut parts = vec![self.and(depth)?];
        while self.keyword("OR") {
            self.next();
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Filter::Or(parts) })
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut parts = vec![self.primary(depth)?];
        while self.keyword("AND") {
            self.next();
            parts.push(self.primary(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Filter::And(parts) })
    }

    fn primary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if self.peek() == Some(&Tok::LParen) {
            let open = self.pos();
            if depth >= MAX_DEPTH {
                return Err(FilterError::at(open, format!("parentheses nested deeper than {MAX_DEPTH}")));
            }
            self.next();
            let inner = self.or(depth + 1)?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(FilterError::at(
                    self.pos(),
                    format!("expected ')' to close the '(' at byte {open}, found {}", self.found()),
                ));
            }
            self.next();
            return Ok(inner);
        }
        self.comparison().map(Filter::Compare)
    }

    fn target(&mut self) -> Result<(usize, Target), FilterError> {
        let pos = self.pos();
        let word = match self.next() {
            Some((_, Tok::Word(w))) => w,
            // A whole identifier in backticks: `created_at`.
            Some((_, Tok::Backtick(w))) => return Ok((pos, Target::Field(w))),
            Some((_, t)) => return Err(FilterError::at(pos, format!("expected a field or tag name, found {t}"))),
            None => return Err(FilterError::at(pos, "expected a field or tag name, found the end of the filter")),
        };
        let (prefix, rest) = match word.split_once('.') {
            Some((p, r)) => (p.to_ascii_lowercase(), r.to_owned()),
            None => return Ok((pos, Target::Field(word))),
        };
        // `tags.` followed directly by a quoted key: tags.`my key` or tags."my key".
        let rest = if rest.is_empty() {
            match self.toks.get(self.at) {
                Some((p, Tok::Backtick(k) | Tok::Str { text: k, double: true })) if *p == pos + word.len() => {
                    let k = k.clone();
                    self.next();
                    k
                }
                _ => return Err(FilterError::at(pos, format!("expected a name after '{word}'"))),
            }
        } else {
            rest
        };
        match prefix.as_str() {
            "tags" | "tag" => Ok((pos, Target::Tag(rest))),
            "metrics" | "metric" => Ok((pos, Target::Metric(rest))),
            "attribute" | "attributes" => Ok((pos, Target::Field(rest))),
            _ => Err(FilterError::at(
                pos,
                format!("unknown prefix '{prefix}' in '{word}': use tags.<key>, metrics.<name> or attributes.<field>"),
            )),
        }
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        let pos = self.pos();
        match self.next() {
            Some((_, Tok::Str { text, .. })) => Ok(Literal::Text(text)),
            Some((_, Tok::Number(n))) => Ok(Literal::Number(n)),
            Some((_, t)) => Err(FilterError::at(pos, format!("expected a quoted string or a number, found {t}"))),
            None => Err(FilterError::at(pos, "expected a quoted string or a number, found the end of the filter")),
        }
    }

    fn comparison(&mut self) -> Result<Comparison, FilterError> {
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(FilterError::at(self.pos(), format!("more than {MAX_COMPARISONS} comparisons")));
        }
        let (position, target) = self.target()?;
        let op_pos = self.pos();
        let op = match self.next() {
            Some((_, Tok::Op(op))) => op,
            Some((_, Tok::Word(w))) => match w.to_ascii_uppercase().as_str() {
                "LIKE" => Op::Like,
                "ILIKE" => Op::ILike,
                "IN" => Op::In,
                "IS" => {
                    if self.keyword("NOT") {
                        self.next();
                        self.expect_keyword("NULL")?;
                        Op::IsNotNull
                    } else {
                        self.expect_keyword("NULL")?;
                        Op::IsNull
                    }
                }
                "NOT" => {
                    let p = self.pos();
                    match self.next() {
                        Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case("LIKE") => Op::NotLike,
                        Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case("ILIKE") => Op::NotILike,
                        Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case("IN") => Op::NotIn,
                        other => {
                            let found =
                                other.map_or_else(|| "the end of the filter".to_owned(), |(_, t)| t.to_string());
                            return Err(FilterError::at(
                                p,
                                format!("expected LIKE, ILIKE or IN after NOT, found {found}"),
                            ));
                        }
                    }
                }
                _ => return Err(FilterError::at(op_pos, format!("expected a comparison operator, found '{w}'"))),
            },
            Some((_, t)) => return Err(FilterError::at(op_pos, format!("expected a comparison operator, found {t}"))),
            None => {
                return Err(FilterError::at(op_pos, "expected a comparison operator, found the end of the filter"));
            }
        };
        let values = match op {
            Op::IsNull | Op::IsNotNull => Vec::new(),
            Op::In | Op::NotIn => {
                if self.peek() != Some(&Tok::LParen) {
                    return Err(FilterError::at(self.pos(), format!("expected '(' after IN, found {}", self.found())));
                }
                self.next();
                let mut values = vec![self.literal()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.next();
                    values.push(self.literal()?);
                    if values.len() > MAX_IN_VALUES {
                        return Err(FilterError::at(
                            self.pos(),
                            format!("more than {MAX_IN_VALUES} values in one IN list"),
                        ));
                    }
                }
                if self.peek() != Some(&Tok::RParen) {
                    return Err(FilterError::at(
                        self.pos(),
                        format!("expected ',' or ')' in the IN list, found {}", self.found()),
                    ));
                }
                self.next();
                values
            }
            _ => vec![self.literal()?],
        };
        Ok(Comparison { target, op, values, position })
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), FilterError> {
        if self.keyword(kw) {
            self.next();
            Ok(())
        } else {
            Err(FilterError::at(self.pos(), format!("expected {kw}, found {}", self.found())))
        }
    }
}

/// Parses a filter.
///
/// # Errors
/// A [`FilterError`] with the byte offset and the offending token, for text that does not
/// follow the grammar or exceeds the bounds. An empty or blank filter is an error: callers
/// treat "no filter" as `None`.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(FilterError {
            position: None,
            message: format!("filter is {} bytes long; the limit is {MAX_FILTER_LEN}", input.len()),
        });
    }
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err(FilterError { position: None, message: "filter is empty".into() });
    }
    let mut p = Parser { toks, at: 0, end: input.len(), comparisons: 0 };
    let filter = p.or(0)?;
    if p.peek().is_some() {
        return Err(FilterError::at(
            p.pos(),
            format!("expected AND, OR or the end of the filter, found {}", p.found()),
        ));
    }
    Ok(filter)
}

// ---------------------------------------------------------------------------------------
// Compiler
// ---------------------------------------------------------------------------------------

struct Compiler<'a> {
    schema: &'a FilterSchema,
    dialect: Dialect,
    next_param: usize,
    params: Vec<SqlValue>,
}

/// Compiles a parsed filter for one entity and dialect.
///
/// Placeholders are numbered `$first_param`, `$first_param + 1`, … so the fragment can be
/// appended to a query that already binds parameters.
///
/// # Errors
/// A [`FilterError`] for an unknown field, a tag filter on an entity without tags, a value
/// of the wrong type (text for a number field, a malformed timestamp), or an operator the
/// field's type does not support (`LIKE` on a number).
pub fn compile(
    filter: &Filter,
    schema: &FilterSchema,
    dialect: Dialect,
    first_param: usize,
) -> Result<CompiledFilter, FilterError> {
    let mut c = Compiler { schema, dialect, next_param: first_param, params: Vec::new() };
    let sql = c.node(filter)?;
    Ok(CompiledFilter { sql, params: c.params })
}

impl Compiler<'_> {
    fn bind(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        let p = format!("${}", self.next_param);
        self.next_param += 1;
        p
    }

    fn node(&mut self, f: &Filter) -> Result<String, FilterError> {
        match f {
            Filter::And(parts) => self.join(parts, " AND "),
            Filter::Or(parts) => self.join(parts, " OR "),
            Filter::Compare(c) => self.comparison(c),
        }
    }

    fn join(&mut self, parts: &[Filter], sep: &str) -> Result<String, FilterError> {
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            out.push(format!("({})", self.node(p)?));
        }
        Ok(out.join(sep))
    }

    fn comparison(&mut self, c: &Comparison) -> Result<String, FilterError> {
        match &c.target {
            Target::Field(name) => {
                let Some(field) = self.schema.field(name).copied() else {
                    let known = self.schema.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ");
                    return Err(FilterError::at(
                        c.position,
                        format!("unknown {} field '{name}'; known fields: {known}, tags.<key>", self.schema.entity),
                    ));
                };
                let Some(related) = field.related else {
                    return self.predicate(field.column, field.kind, c);
                };
                // The negative forms are the negation of the positive ones over the related
                // rows: "no version is in production", not "some version is not".
                let (negate, positive) = match c.op {
                    Op::Ne => (true, Op::Eq),
                    Op::NotIn => (true, Op::In),
                    Op::NotLike => (true, Op::Like),
                    Op::NotILike => (true, Op::ILike),
                    Op::IsNull => (true, Op::IsNotNull),
                    other => (false, other),
                };
                let pred = self.predicate(field.column, field.kind, &Comparison { op: positive, ..c.clone() })?;
                let not = if negate { "NOT " } else { "" };
                Ok(format!("{not}EXISTS (SELECT 1 FROM {} WHERE {} AND {pred})", related.from, related.link))
            }
            Target::Tag(key) => {
                let Some(tags) = self.schema.tags else {
                    return Err(FilterError::at(
                        c.position,
                        format!("a {} has no tags to filter on", self.schema.entity),
                    ));
                };
                let alias = format!("ft{}", self.next_param);
                let key_param = self.bind(SqlValue::Text(key.clone()));
                let head = format!(
                    "SELECT 1 FROM {table} {alias} WHERE {alias}.{owner} = {outer} AND {alias}.{kcol} = {key_param}",
                    table = tags.table,
                    owner = tags.owner_column,
                    outer = tags.outer_id,
                    kcol = tags.key_column,
                );
                match c.op {
                    Op::IsNull => Ok(format!("NOT EXISTS ({head})")),
                    Op::IsNotNull => Ok(format!("EXISTS ({head})")),
                    _ => {
                        let value_col = format!("{alias}.{}", tags.value_column);
                        let pred = self.predicate(&value_col, FieldKind::Text, c)?;
                        Ok(format!("EXISTS ({head} AND {pred})"))
                    }
                }
            }
            Target::Metric(name) => {
                let Some(metrics) = self.schema.metrics else {
                    return Err(FilterError::at(
                        c.position,
                        format!("a {} has no metrics to filter on", self.schema.entity),
                    ));
                };
                let name_param = self.bind(SqlValue::Text(name.clone()));
                let head = format!(
                    "SELECT 1 FROM {} WHERE {} AND {} = {name_param}",
                    metrics.from, metrics.link, metrics.name_column
                );
                match c.op {
                    Op::IsNull => Ok(format!("NOT EXISTS ({head})")),
                    Op::IsNotNull => Ok(format!("EXISTS ({head})")),
                    _ => {
                        let pred = self.predicate(metrics.value_column, FieldKind::Real, c)?;
                        Ok(format!("EXISTS ({head} AND {pred})"))
                    }
                }
            }
        }
    }

    fn value(&self, kind: FieldKind, lit: &Literal, c: &Comparison) -> Result<SqlValue, FilterError> {
        let what = match &c.target {
            Target::Field(n) => format!("field '{n}'"),
            Target::Tag(k) => format!("tag '{k}'"),
            Target::Metric(k) => format!("metric '{k}'"),
        };
        match (kind, lit) {
            (FieldKind::Text, Literal::Text(s)) => Ok(SqlValue::Text(s.clone())),
            (FieldKind::TextIgnoreCase, Literal::Text(s)) => Ok(SqlValue::Text(s.to_ascii_lowercase())),
            (FieldKind::Text | FieldKind::TextIgnoreCase, Literal::Number(n)) => {
                Err(FilterError::at(c.position, format!("{what} holds text: quote the value ('{n}')")))
            }
            (FieldKind::Real, Literal::Number(n) | Literal::Text(n)) => n
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(SqlValue::Real)
                .ok_or_else(|| FilterError::at(c.position, format!("{what} holds numbers, not '{n}'"))),
            (FieldKind::Integer, Literal::Number(n) | Literal::Text(n)) => n
                .parse::<i64>()
                .map(SqlValue::Integer)
                .map_err(|_| FilterError::at(c.position, format!("{what} holds whole numbers, not '{n}'"))),
            (FieldKind::Timestamp, Literal::Number(n)) => n.parse::<i64>().map(SqlValue::Integer).map_err(|_| {
                FilterError::at(c.position, format!("{what} is a time: milliseconds since 1970 or RFC 3339, not '{n}'"))
            }),
            (FieldKind::Timestamp, Literal::Text(s)) => {
                if let Ok(ms) = s.parse::<i64>() {
                    return Ok(SqlValue::Integer(ms));
                }
                let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
                    FilterError::at(
                        c.position,
                        format!("{what} is a time: milliseconds since 1970 or RFC 3339 (2026-01-31T12:00:00Z), not '{s}'"),
                    )
                })?;
                let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                    .map_err(|_| FilterError::at(c.position, format!("time '{s}' is out of range")))?;
                Ok(SqlValue::Integer(ms))
            }
        }
    }

    fn predicate(&mut self, column: &str, kind: FieldKind, c: &Comparison) -> Result<String, FilterError> {
        let folded;
        let column = if kind == FieldKind::TextIgnoreCase && !matches!(c.op, Op::IsNull | Op::IsNotNull) {
            // Values are lowered in `value` with the same ASCII-only rule; PostgreSQL's lower()
            // folds only ASCII under the "C" collation, SQLite's always does.
            folded = match self.dialect {
                Dialect::Sqlite => format!("lower({column})"),
                Dialect::Postgres => format!("lower({column} COLLATE \"C\")"),
            };
            folded.as_str()
        } else {
            column
        };
        match c.op {
            Op::IsNull | Op::IsNotNull => Ok(format!("{column} {}", c.op.sql())),
            Op::In | Op::NotIn => {
                let mut ps = Vec::with_capacity(c.values.len());
                for v in &c.values {
                    let v = self.value(kind, v, c)?;
                    ps.push(self.bind(v));
                }
                Ok(format!("{column} {} ({})", c.op.sql(), ps.join(", ")))
            }
            Op::Like | Op::NotLike | Op::ILike | Op::NotILike => {
                if !matches!(kind, FieldKind::Text | FieldKind::TextIgnoreCase) {
                    return Err(FilterError::at(
                        c.position,
                        format!(
                            "{} works on text only",
                            if matches!(c.op, Op::Like | Op::NotLike) { "LIKE" } else { "ILIKE" }
                        ),
                    ));
                }
                let pattern = match c.values.first() {
                    // Both sides already folded: the case-sensitive matcher ignores case.
                    Some(Literal::Text(s)) if kind == FieldKind::TextIgnoreCase => s.to_ascii_lowercase(),
                    Some(Literal::Text(s)) => s.clone(),
                    Some(Literal::Number(n)) => {
                        return Err(FilterError::at(c.position, format!("a LIKE pattern must be quoted ('{n}')")));
                    }
                    None => return Err(FilterError::at(c.position, "missing LIKE pattern")),
                };
                let negate = matches!(c.op, Op::NotLike | Op::NotILike);
                let not = if negate { "NOT " } else { "" };
                let insensitive = matches!(c.op, Op::ILike | Op::NotILike) && kind == FieldKind::Text;
                Ok(match (self.dialect, insensitive) {
                    // SQLite's LIKE ignores ASCII case; GLOB is the case-sensitive matcher.
                    (Dialect::Sqlite, false) => {
                        let p = self.bind(SqlValue::Text(like_to_glob(&pattern)));
                        format!("{column} {not}GLOB {p}")
                    }
                    (Dialect::Sqlite, true) => {
                        let p = self.bind(SqlValue::Text(pattern));
                        format!("lower({column}) {not}LIKE lower({p}) ESCAPE '\\'")
                    }
                    (Dialect::Postgres, false) => {
                        let p = self.bind(SqlValue::Text(pattern));
                        format!("{column} {not}LIKE {p} ESCAPE '\\'")
                    }
                    (Dialect::Postgres, true) => {
                        let p = self.bind(SqlValue::Text(pattern));
                        format!("{column} {not}ILIKE {p} ESCAPE '\\'")
                    }
                })
            }
            _ => {
                let Some(lit) = c.values.first() else {
                    return Err(FilterError::at(c.position, "missing value"));
                };
                let v = self.value(kind, lit, c)?;
                let p = self.bind(v);
                Ok(format!("{column} {} {p}", c.op.sql()))
            }
        }
    }
}

/// Translates a SQL `LIKE` pattern (`%`, `_`, `\` escapes) into an equivalent SQLite `GLOB`
/// pattern, so that SQLite matches case-sensitively as PostgreSQL's `LIKE` does.
#[must_use]
pub fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '%' => {
                out.push('*');
                continue;
            }
            '_' => {
                out.push('?');
                continue;
            }
            '\\' => chars.next().unwrap_or('\\'),
            other => other,
        };
        match literal {
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: FilterSchema = FilterSchema {
        entity: "model",
        fields: &[
            FieldSpec::new("name", "m.name", FieldKind::Text),
            FieldSpec::new("version", "v.number", FieldKind::Integer).aliases(&["version_number"]),
            FieldSpec::new("created_at", "m.created_at", FieldKind::Timestamp).aliases(&["creation_timestamp"]),
        ],
        tags: Some(TagSpec {
            table: "model_tags",
            owner_column: "model_id",
            outer_id: "m.id",
            key_column: "key",
            value_column: "value",
        }),
        metrics: Some(MetricSpec {
            from: "version_metrics fm JOIN versions fmv ON fmv.id = fm.version_id",
            link: "fmv.model_id = m.id",
            name_column: "fm.name",
            value_column: "fm.value",
        }),
    };

    fn sql(f: &str, d: Dialect) -> CompiledFilter {
        compile(&parse(f).unwrap(), &SCHEMA, d, 1).unwrap()
    }

    fn err(f: &str) -> FilterError {
        parse(f).and_then(|p| compile(&p, &SCHEMA, Dialect::Postgres, 1)).unwrap_err()
    }

    #[test]
    fn simple_comparisons_compile_to_bound_parameters() {
        let c = sql("name = 'bert'", Dialect::Postgres);
        assert_eq!(c.sql, "m.name = $1");
        assert_eq!(c.params, [SqlValue::Text("bert".into())]);
        let c = sql("version >= 3 AND name != \"x\"", Dialect::Sqlite);
        assert_eq!(c.sql, "(v.number >= $1) AND (m.name <> $2)");
        assert_eq!(c.params, [SqlValue::Integer(3), SqlValue::Text("x".into())]);
    }

    #[test]
    fn numbering_starts_where_the_caller_says() {
        let c = compile(&parse("name = 'a' OR name = 'b'").unwrap(), &SCHEMA, Dialect::Postgres, 4).unwrap();
        assert_eq!(c.sql, "(m.name = $4) OR (m.name = $5)");
    }

    #[test]
    fn prefixes_aliases_and_keywords_are_case_insensitive() {
        let a = sql("attributes.version_number > 1 and attribute.name like 'a%'", Dialect::Postgres);
        assert_eq!(a.sql, "(v.number > $1) AND (m.name LIKE $2 ESCAPE '\\')");
        assert_eq!(sql("`name` = 'x'", Dialect::Postgres).sql, "m.name = $1");
    }

    #[test]
    fn tags_compile_to_exists_subqueries() {
        let c = sql("tags.task = 'nlp'", Dialect::Postgres);
        assert_eq!(
            c.sql,
            "EXISTS (SELECT 1 FROM model_tags ft1 WHERE ft1.model_id = m.id AND ft1.key = $1 AND ft1.value = $2)"
        );
        assert_eq!(c.params, [SqlValue::Text("task".into()), SqlValue::Text("nlp".into())]);
        let c = sql("tags.`my key` IS NULL", Dialect::Sqlite);
        assert!(c.sql.starts_with("NOT EXISTS ("), "{}", c.sql);
        assert_eq!(c.params, [SqlValue::Text("my key".into())]);
        let c = sql("tags.\"a.b\" IS NOT NULL", Dialect::Sqlite);
        assert_eq!(c.params, [SqlValue::Text("a.b".into())]);
        let c = sql("tag.x.y IN ('1', '2')", Dialect::Sqlite);
        assert_eq!(c.params.len(), 3);
        assert!(c.sql.contains("ft1.value IN ($2, $3)"), "{}", c.sql);
    }

    #[test]
    fn like_is_case_sensitive_on_both_backends() {
        let c = sql("name LIKE 'B_r%'", Dialect::Sqlite);
        assert_eq!(c.sql, "m.name GLOB $1");
        assert_eq!(c.params, [SqlValue::Text("B?r*".into())]);
        let c = sql("name NOT ILIKE 'b%'", Dialect::Sqlite);
        assert_eq!(c.sql, "lower(m.name) NOT LIKE lower($1) ESCAPE '\\'");
        let c = sql("name ILIKE 'b%'", Dialect::Postgres);
        assert_eq!(c.sql, "m.name ILIKE $1 ESCAPE '\\'");
    }

    #[test]
    fn glob_translation_keeps_literals_literal() {
        assert_eq!(like_to_glob("a*b?c[d]"), "a[*]b[?]c[[]d]");
        assert_eq!(like_to_glob(r"100\%_\_"), "100%?_");
        assert_eq!(like_to_glob(r"end\"), r"end\");
    }

    #[test]
    fn timestamps_accept_milliseconds_and_rfc3339() {
        assert_eq!(sql("created_at > 1700000000000", Dialect::Postgres).params, [SqlValue::Integer(1_700_000_000_000)]);
        assert_eq!(
            sql("creation_timestamp >= '2026-01-31T12:00:00Z'", Dialect::Postgres).params,
            [SqlValue::Integer(1_769_860_800_000)]
        );
        assert!(err("created_at > 'yesterday'").message.contains("RFC 3339"));
    }

    #[test]
    fn quotes_are_escaped_by_doubling() {
        assert_eq!(sql("name = 'it''s'", Dialect::Postgres).params, [SqlValue::Text("it's".into())]);
        // Backslashes are ordinary characters in strings, so LIKE escapes pass through.
        assert_eq!(sql(r"name = 'a\'", Dialect::Postgres).params, [SqlValue::Text(r"a\".into())]);
        assert_eq!(sql(r"name LIKE '50\%'", Dialect::Postgres).params, [SqlValue::Text(r"50\%".into())]);
    }

    #[test]
    fn errors_name_the_offending_token_and_its_position() {
        let e = err("name = 'x' AMD y");
        assert_eq!(e.position, Some(11));
        assert!(e.message.contains("'AMD'"), "{e}");
        let e = err("colour = 'red'");
        assert!(e.message.contains("unknown model field 'colour'"), "{e}");
        assert!(e.message.contains("name, version, created_at"), "{e}");
        assert!(err("name == 'x'").message.contains("'='"));
        assert!(err("name = ").message.contains("end of the filter"));
        assert!(err("name = 'x").message.contains("unterminated"));
        assert!(err("(name = 'x'").message.contains("expected ')'"));
        assert!(err("version = 'three'").message.contains("whole numbers"));
        assert!(err("name = 3").message.contains("quote the value"));
        assert!(err("version LIKE '1%'").message.contains("text only"));
        assert!(err("name IN 'a'").message.contains("expected '('"));
        assert!(err("name IS 'a'").message.contains("expected NULL"));
        assert!(err("params.lr = '1'").message.contains("unknown prefix 'params'"));
        assert!(err("name NOT = 'a'").message.contains("after NOT"));
        assert!(err("name ; DROP TABLE models").message.contains("unexpected character ';'"));
        assert!(parse("").is_err());
        assert!(parse("   ").is_err());
    }

    #[test]
    fn metrics_compile_to_exists_subqueries_over_numbers() {
        let c = sql("metrics.accuracy > 0.9", Dialect::Postgres);
        assert_eq!(
            c.sql,
            "EXISTS (SELECT 1 FROM version_metrics fm JOIN versions fmv ON fmv.id = fm.version_id \
             WHERE fmv.model_id = m.id AND fm.name = $1 AND fm.value > $2)"
        );
        assert_eq!(c.params, vec![SqlValue::Text("accuracy".into()), SqlValue::Real(0.9)]);
        // Quoted numbers, integers, negative and exponent forms are numbers too.
        assert_eq!(sql("metric.`f1 macro` <= '1'", Dialect::Sqlite).params[1], SqlValue::Real(1.0));
        assert_eq!(sql("metrics.loss IN (1, -2.5, 3e-2)", Dialect::Sqlite).params.len(), 4);
        let c = sql("metrics.toxicity IS NULL", Dialect::Sqlite);
        assert!(c.sql.starts_with("NOT EXISTS (") && !c.sql.contains("fm.value"), "{}", c.sql);
        assert!(sql("metrics.toxicity IS NOT NULL", Dialect::Sqlite).sql.starts_with("EXISTS ("));
        // `!=` needs the metric, with another value, as for tags.
        let c = sql("metrics.accuracy != 0.5", Dialect::Sqlite);
        assert!(c.sql.starts_with("EXISTS (") && c.sql.ends_with("fm.value <> $2)"), "{}", c.sql);
        assert!(err("metrics.accuracy = 'high'").message.contains("holds numbers"));
        assert!(err("metrics.accuracy = 'NaN'").message.contains("holds numbers"));
        assert!(err("metrics.accuracy LIKE '0.9%'").message.contains("text only"));
        let schema = FilterSchema { metrics: None, ..SCHEMA };
        let e = compile(&parse("metrics.a > 1").unwrap(), &schema, Dialect::Sqlite, 1).unwrap_err();
        assert!(e.message.contains("has no metrics"), "{e}");
    }

    #[test]
    fn tags_on_an_entity_without_tags_are_refused() {
        let schema = FilterSchema { tags: None, ..SCHEMA };
        let e = compile(&parse("tags.a = 'b'").unwrap(), &schema, Dialect::Sqlite, 1).unwrap_err();
        assert!(e.message.contains("has no tags"), "{e}");
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(parse(&"a".repeat(MAX_FILTER_LEN + 1)).unwrap_err().message.contains("limit"));
        let deep = format!("{}name = 'x'{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let ok = format!("{}name = 'x'{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let many = vec!["name = 'x'"; MAX_COMPARISONS + 1].join(" OR ");
        assert!(parse(&many).unwrap_err().message.contains("comparisons"));
        let list = (0..=MAX_IN_VALUES).map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",");
        assert!(parse(&format!("name IN ({list})")).unwrap_err().message.contains("IN list"));
    }

    /// Models with facts of their versions, as the store declares them.
    const WITH_VERSIONS: FilterSchema = FilterSchema {
        entity: "model",
        fields: &[
            FieldSpec::new("name", "m.name", FieldKind::Text),
            FieldSpec::new("stage", "fv.stage", FieldKind::Text)
                .of_any(Related { from: "versions fv", link: "fv.model_id = m.id" }),
            FieldSpec::new("license", "fc.license", FieldKind::TextIgnoreCase).aliases(&["licence"]).of_any(Related {
                from: "versions fv JOIN version_cards fc ON fc.version_id = fv.id",
                link: "fv.model_id = m.id",
            }),
            FieldSpec::new("spdx", "c.license", FieldKind::TextIgnoreCase),
        ],
        tags: None,
        metrics: None,
    };

    fn with_versions(f: &str, d: Dialect) -> CompiledFilter {
        compile(&parse(f).unwrap(), &WITH_VERSIONS, d, 1).unwrap()
    }

    #[test]
    fn related_fields_hold_when_any_related_row_does() {
        let c = with_versions("stage = 'production'", Dialect::Postgres);
        assert_eq!(c.sql, "EXISTS (SELECT 1 FROM versions fv WHERE fv.model_id = m.id AND fv.stage = $1)");
        assert_eq!(c.params, [SqlValue::Text("production".into())]);
        let c = with_versions("stage IN ('staging', 'production')", Dialect::Sqlite);
        assert_eq!(c.sql, "EXISTS (SELECT 1 FROM versions fv WHERE fv.model_id = m.id AND fv.stage IN ($1, $2))");
        let c = with_versions("stage IS NOT NULL", Dialect::Sqlite);
        assert_eq!(c.sql, "EXISTS (SELECT 1 FROM versions fv WHERE fv.model_id = m.id AND fv.stage IS NOT NULL)");
        let c = with_versions("stage LIKE 'prod%'", Dialect::Postgres);
        assert_eq!(
            c.sql,
            "EXISTS (SELECT 1 FROM versions fv WHERE fv.model_id = m.id AND fv.stage LIKE $1 ESCAPE '\\')"
        );
    }

    #[test]
    fn negative_forms_of_related_fields_say_no_related_row_matches() {
        let head = "NOT EXISTS (SELECT 1 FROM versions fv WHERE fv.model_id = m.id AND";
        for (f, pred) in [
            ("stage != 'production'", "fv.stage = $1)"),
            ("stage <> 'production'", "fv.stage = $1)"),
            ("stage NOT IN ('a', 'b')", "fv.stage IN ($1, $2))"),
            ("stage NOT LIKE 'prod%'", "fv.stage GLOB $1)"),
            ("stage NOT ILIKE 'PROD%'", "lower(fv.stage) LIKE lower($1) ESCAPE '\\')"),
            ("stage IS NULL", "fv.stage IS NOT NULL)"),
        ] {
            assert_eq!(with_versions(f, Dialect::Sqlite).sql, format!("{head} {pred}"), "{f}");
        }
        // Inside AND/OR the subqueries keep their own parentheses.
        let c = with_versions("name = 'a' OR stage != 'draft'", Dialect::Postgres);
        assert_eq!(c.sql, format!("(m.name = $1) OR ({head} fv.stage = $2))"));
    }

    #[test]
    fn case_insensitive_text_folds_both_sides() {
        let c = with_versions("spdx = 'Apache-2.0'", Dialect::Sqlite);
        assert_eq!(c.sql, "lower(c.license) = $1");
        assert_eq!(c.params, [SqlValue::Text("apache-2.0".into())]);
        let c = with_versions("spdx IN ('MIT', 'bsd-3-Clause')", Dialect::Postgres);
        assert_eq!(c.sql, "lower(c.license COLLATE \"C\") IN ($1, $2)");
        assert_eq!(c.params, [SqlValue::Text("mit".into()), SqlValue::Text("bsd-3-clause".into())]);
        // LIKE and ILIKE alike ignore case: the pattern is folded and the case-sensitive
        // matcher compares it with the folded column.
        let c = with_versions("spdx LIKE 'Apache%'", Dialect::Sqlite);
        assert_eq!((c.sql.as_str(), c.params), ("lower(c.license) GLOB $1", vec![SqlValue::Text("apache*".into())]));
        let c = with_versions("spdx NOT ILIKE 'GPL-_.0'", Dialect::Postgres);
        assert_eq!(c.sql, "lower(c.license COLLATE \"C\") NOT LIKE $1 ESCAPE '\\'");
        assert_eq!(c.params, [SqlValue::Text("gpl-_.0".into())]);
        // Only ASCII letters fold, as in SQL.
        assert_eq!(with_versions("spdx = 'ÉA'", Dialect::Sqlite).params, [SqlValue::Text("Éa".into())]);
        // NULL tests look at the column as it is.
        assert_eq!(with_versions("spdx IS NULL", Dialect::Postgres).sql, "c.license IS NULL");
        // An alias, a related field and folding together.
        let c = with_versions("licence != 'MIT'", Dialect::Postgres);
        assert_eq!(
            c.sql,
            "NOT EXISTS (SELECT 1 FROM versions fv JOIN version_cards fc ON fc.version_id = fv.id \
             WHERE fv.model_id = m.id AND lower(fc.license COLLATE \"C\") = $1)"
        );
        assert_eq!(c.params, [SqlValue::Text("mit".into())]);
        let e = compile(&parse("spdx = 3").unwrap(), &WITH_VERSIONS, Dialect::Sqlite, 1).unwrap_err();
        assert!(e.message.contains("quote the value"), "{e}");
    }

    #[test]
    fn unknown_fields_list_the_related_ones_too() {
        let e = compile(&parse("colour = 'red'").unwrap(), &WITH_VERSIONS, Dialect::Sqlite, 1).unwrap_err();
        assert!(e.message.contains("known fields: name, stage, license, spdx"), "{e}");
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = parse("name = 'a' OR name = 'b' AND version = 1").unwrap();
        let Filter::Or(parts) = f else { panic!("expected OR at the top") };
        assert!(matches!(parts[1], Filter::And(_)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(s in "\\PC{0,200}") {
                let _ = parse(&s);
            }

            /// Any string value round-trips as one bound parameter, whatever it contains:
            /// user text never reaches the SQL string.
            #[test]
            fn values_are_always_bound(v in "\\PC{0,64}") {
                let f = format!("name = '{}'", v.replace('\'', "''"));
                let c = compile(&parse(&f).unwrap(), &SCHEMA, Dialect::Postgres, 1).unwrap();
                prop_assert_eq!(c.sql, "m.name = $1");
                prop_assert_eq!(c.params, vec![SqlValue::Text(v)]);
            }

            /// Values of related and case-insensitive fields are bound too, whatever the
            /// operator: the SQL text depends only on the shape of the filter.
            #[test]
            fn related_values_are_always_bound(v in "\\PC{0,64}", op in prop::sample::select(
                vec!["=", "!=", "<", ">=", "LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"],
            )) {
                let quoted = v.replace('\'', "''");
                for field in ["stage", "license"] {
                    let f = format!("{field} {op} '{quoted}'");
                    let plain = format!("{field} {op} 'x'");
                    for d in [Dialect::Sqlite, Dialect::Postgres] {
                        let c = compile(&parse(&f).unwrap(), &WITH_VERSIONS, d, 1).unwrap();
                        let p = compile(&parse(&plain).unwrap(), &WITH_VERSIONS, d, 1).unwrap();
                        prop_assert_eq!(&c.sql, &p.sql);
                        prop_assert_eq!(c.params.len(), 1);
                    }
                }
                let f = format!("license NOT IN ('{quoted}', 'b')");
                let c = compile(&parse(&f).unwrap(), &WITH_VERSIONS, Dialect::Postgres, 1).unwrap();
                prop_assert_eq!(c.params.len(), 2);
                prop_assert!(c.sql.ends_with("IN ($1, $2))"), "{}", c.sql);
            }

            /// Tag keys, however odd, are bound too.
            #[test]
            fn tag_keys_are_always_bound(k in "[^`]{1,32}", v in "[a-z]{0,8}") {
                let f = format!("tags.`{k}` = '{v}'");
                let c = compile(&parse(&f).unwrap(), &SCHEMA, Dialect::Sqlite, 1).unwrap();
                let plain = compile(&parse("tags.k = 'v'").unwrap(), &SCHEMA, Dialect::Sqlite, 1).unwrap();
                prop_assert_eq!(c.sql, plain.sql);
                prop_assert_eq!(c.params[0].clone(), SqlValue::Text(k));
            }

            /// Every LIKE pattern becomes a GLOB that matches exactly the same strings, for
            /// patterns and inputs over a small alphabet with the special characters.
            #[test]
            fn glob_matches_like(p in "[ab%_\\\\*?\\[]{0,6}", s in "[ab%_\\\\*?\\[]{0,6}") {
                prop_assert_eq!(like_match(&p, &s), glob_match(&like_to_glob(&p), &s));
            }
        }

        /// Reference LIKE semantics with `\` as escape.
        fn like_match(p: &str, s: &str) -> bool {
            let p: Vec<char> = p.chars().collect();
            let s: Vec<char> = s.chars().collect();
            fn go(p: &[char], s: &[char]) -> bool {
                match p.first() {
                    None => s.is_empty(),
                    Some('%') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
                    Some('_') => !s.is_empty() && go(&p[1..], &s[1..]),
                    Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
                    Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
                }
            }
            go(&p, &s)
        }

        /// Reference GLOB semantics for `*`, `?` and one-character classes `[x]`.
        fn glob_match(p: &str, s: &str) -> bool {
            let p: Vec<char> = p.chars().collect();
            let s: Vec<char> = s.chars().collect();
            fn go(p: &[char], s: &[char]) -> bool {
                match p.first() {
                    None => s.is_empty(),
                    Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
                    Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
                    Some('[') if p.len() >= 3 && p[2] == ']' => s.first() == Some(&p[1]) && go(&p[3..], &s[1..]),
                    Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
                }
            }
            go(&p, &s)
        }
    }
}
