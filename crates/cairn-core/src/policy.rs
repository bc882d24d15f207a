//! Policies: declarative rules that a version's facts must satisfy before it may enter a
//! lifecycle stage.
//!
//! A policy is a YAML or JSON document ([`PolicyDoc`]) with a scope (which namespaces, risk
//! tiers and target stages it covers) and a list of rules. Each rule holds a condition over a
//! *facts document*, a JSON object the server assembles for one version (model, version, card,
//! metrics, evaluations, signatures, lineage; see `docs/POLICIES.md`).
//!
//! [`PolicyDoc::parse`] refuses anything malformed with a message that names the rule and says
//! what to write instead; [`PolicyDoc::compile`] turns a document into a [`CompiledPolicy`]
//! with its field paths split and regexes built, so that [`evaluate`] and [`decide`] never
//! compile, allocate the facts, or fail at run time on a bad policy.
//!
//! Evaluation fails closed: a missing field or a value of the wrong type never makes a rule
//! pass, even under `not` (negation is pushed down to the checks, where "missing" stays a
//! failure whichever way the check is turned).
//!
//! This module is pure: no I/O, no clock, no storage. Loading the active policies, the facts
//! and the exceptions is the server's job.

use std::collections::HashSet;
use std::fmt;
use std::io;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::lifecycle::{RiskTier, Stage};
use crate::name::Namespace;

/// Largest policy document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most rules in one policy.
pub const MAX_RULES: usize = 100;
/// Deepest nesting of `all`/`any`/`not` (a lone check is depth 1).
pub const MAX_DEPTH: usize = 16;
/// Most condition nodes (checks and groups) in one policy.
pub const MAX_CONDITIONS: usize = 1000;
/// Most segments in a field path.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Longest policy name or rule id.
pub const MAX_NAME_LEN: usize = 64;
/// Size limit for a compiled regex (`regex::RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest string `matches_regex` examines; longer values are an evaluation error.
pub const MAX_REGEX_INPUT_BYTES: usize = 1 << 20;
/// Most values in an `in`/`not_in` list.
pub const MAX_LIST_VALUES: usize = 1000;
/// Longest description or message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// How many characters of a value a message shows.
const MAX_SHOWN_CHARS: usize = 200;
/// How many characters a generated message may have.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Why a policy document was refused. Every message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document is over [`MAX_DOCUMENT_BYTES`].
    #[error("the policy document is {size} bytes; the limit is {limit} bytes (split it into several policies)")]
    TooLarge { size: usize, limit: usize },
    /// The document is not well-formed YAML or JSON, or does not have the policy's shape.
    #[error("the policy document is not valid {format}: {message}")]
    Syntax { format: &'static str, message: String },
    /// Something outside the rules is wrong (name, scope, rule count).
    #[error("policy {policy:?}: {reason}")]
    Invalid { policy: String, reason: String },
    /// A rule is wrong.
    #[error("policy {policy:?}, rule {rule:?}: {reason}")]
    Rule { policy: String, rule: String, reason: String },
}

/// How serious a policy's failures are; shown to reviewers, does not change blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!("unknown severity {other:?} (expected low, medium, high or critical)")),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failing rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// The version may not enter the stage (unless the policy is waived for it).
    Block,
    /// Shown to the people acting on the version; does not block.
    Warn,
    /// Sent to the model's owners; does not block.
    Notify,
}

impl RuleAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Block => "block",
            RuleAction::Warn => "warn",
            RuleAction::Notify => "notify",
        }
    }
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
    Contains,
    NotContains,
    Exists,
    NotExists,
    In,
    NotIn,
    MatchesRegex,
    LengthEquals,
    LengthGreaterThan,
    LengthLessThan,
}

impl Op {
    /// Every operator, in documentation order.
    pub const ALL: &'static [Op] = &[
        Op::Equals,
        Op::NotEquals,
        Op::GreaterThan,
        Op::GreaterThanOrEqual,
        Op::LessThan,
        Op::LessThanOrEqual,
        Op::Contains,
        Op::NotContains,
        Op::Exists,
        Op::NotExists,
        Op::In,
        Op::NotIn,
        Op::MatchesRegex,
        Op::LengthEquals,
        Op::LengthGreaterThan,
        Op::LengthLessThan,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEquals => "not_equals",
            Op::GreaterThan => "greater_than",
            Op::GreaterThanOrEqual => "greater_than_or_equal",
            Op::LessThan => "less_than",
            Op::LessThanOrEqual => "less_than_or_equal",
            Op::Contains => "contains",
            Op::NotContains => "not_contains",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::MatchesRegex => "matches_regex",
            Op::LengthEquals => "length_equals",
            Op::LengthGreaterThan => "length_greater_than",
            Op::LengthLessThan => "length_less_than",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy document, as written by its author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Lower-case letters, digits, `-`, `_` and `.`, starting with a letter or digit; at most
    /// 64 characters. Applying a document with an existing name makes a new version.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub severity: Severity,
    /// Which versions the policy covers; missing means all.
    #[serde(default)]
    pub scope: PolicyScope,
    pub rules: Vec<Rule>,
}

/// Which versions a policy covers. Every list is optional; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyScope {
    /// Exact namespace names, or `"*"` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The model's risk tier.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "wire_list")]
    pub risk_tiers: Vec<RiskTier>,
    /// The stage the version is about to enter.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "wire_list")]
    pub stages: Vec<Stage>,
}

impl PolicyScope {
    /// Whether a version of a model in `namespace` with `risk`, about to enter `target`, is
    /// covered.
    pub fn applies(&self, namespace: &str, risk: RiskTier, target: Stage) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == "*" || n == namespace))
            && (self.risk_tiers.is_empty() || self.risk_tiers.contains(&risk))
            && (self.stages.is_empty() || self.stages.contains(&target))
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the policy; same characters as a policy name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub action: RuleAction,
    /// Shown when the rule fails, instead of the generated sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub condition: Condition,
}

/// A condition over the facts: a check of one field, or a combination of conditions.
///
/// On the wire a check is `{field, op, value}` and a combination is `{all: [..]}`,
/// `{any: [..]}` or `{not: {..}}`; mixing the two shapes in one mapping is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCondition", into = "RawCondition")]
pub enum Condition {
    /// A check of one field. `value` is absent for `exists` and `not_exists`.
    Leaf { field: String, op: Op, value: Option<Value> },
    /// Every condition holds.
    All(Vec<Condition>),
    /// At least one condition holds.
    Any(Vec<Condition>),
    /// The condition does not hold (a missing field still fails).
    Not(Box<Condition>),
}

/// The wire shape of a condition: one struct so that `deny_unknown_fields` names typos and
/// the errors say which key is missing, which an untagged enum cannot do.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not: Option<Box<Condition>>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        let is_check = raw.field.is_some() || raw.op.is_some() || raw.value.is_some();
        let groups = usize::from(raw.all.is_some()) + usize::from(raw.any.is_some()) + usize::from(raw.not.is_some());
        if is_check && groups > 0 {
            return Err("a condition is either a check (field, op, value) or one of all/any/not, not both; \
                 move the check into the all/any list"
                .into());
        }
        if groups > 1 {
            return Err("use only one of all, any, not in a condition; nest them to combine".into());
        }
        if let Some(all) = raw.all {
            return Ok(Condition::All(all));
        }
        if let Some(any) = raw.any {
            return Ok(Condition::Any(any));
        }
        if let Some(not) = raw.not {
            return Ok(Condition::Not(not));
        }
        let Some(field) = raw.field else {
            return Err(if is_check {
                "the check has no field; add one, e.g. field: metrics.accuracy".into()
            } else {
                "a condition needs field and op (a check), or one of all, any, not".into()
            });
        };
        let Some(op) = raw.op else {
            return Err(format!("the check on {} has no op; add one of: {}", shown_str(&field), op_names()));
        };
        Ok(Condition::Leaf { field, op, value: raw.value })
    }
}

impl From<Condition> for RawCondition {
    fn from(c: Condition) -> Self {
        let mut raw = RawCondition { field: None, op: None, value: None, all: None, any: None, not: None };
        match c {
            Condition::Leaf { field, op, value } => {
                raw.field = Some(field);
                raw.op = Some(op);
                raw.value = value;
            }
            Condition::All(v) => raw.all = Some(v),
            Condition::Any(v) => raw.any = Some(v),
            Condition::Not(c) => raw.not = Some(c),
        }
        raw
    }
}

fn op_names() -> String {
    Op::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ")
}

/// Lifecycle enums in scope lists: parsed on the way in, with an error naming the choices.
trait WireName: Copy + Sized + 'static {
    const WHAT: &'static str;
    const ALL: &'static [Self];
    fn wire(self) -> &'static str;
    fn from_wire(s: &str) -> Option<Self>;
}

impl WireName for Stage {
    const WHAT: &'static str = "stage";
    const ALL: &'static [Self] = Stage::ALL;
    fn wire(self) -> &'static str {
        self.as_str()
    }
    fn from_wire(s: &str) -> Option<Self> {
        Stage::parse(s)
    }
}

impl WireName for RiskTier {
    const WHAT: &'static str = "risk tier";
    const ALL: &'static [Self] = RiskTier::ALL;
    fn wire(self) -> &'static str {
        self.as_str()
    }
    fn from_wire(s: &str) -> Option<Self> {
        RiskTier::parse(s)
    }
}

mod wire_list {
    use super::*;

    #[allow(clippy::ptr_arg)] // serde's `with` passes `&Vec<T>`
    pub fn serialize<T: WireName, S: Serializer>(values: &Vec<T>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|v| v.wire()))
    }

    pub fn deserialize<'de, T: WireName, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| {
                T::from_wire(n).ok_or_else(|| {
                    let allowed: Vec<_> = T::ALL.iter().map(|v| v.wire()).collect();
                    serde::de::Error::custom(format!(
                        "unknown {} {}; use one of: {}",
                        T::WHAT,
                        shown_str(n),
                        allowed.join(", ")
                    ))
                })
            })
            .collect()
    }
}

impl PolicyDoc {
    /// Parses and validates a policy document: JSON if its first non-blank character is `{`,
    /// YAML otherwise.
    pub fn parse(text: &str) -> Result<PolicyDoc, PolicyError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(PolicyError::TooLarge { size: text.len(), limit: MAX_DOCUMENT_BYTES });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let doc: PolicyDoc = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| PolicyError::Syntax { format: "JSON", message: bounded(e.to_string()) })?
        } else {
            serde_saphyr::from_str_with_options(text, yaml_options())
                .map_err(|e| PolicyError::Syntax { format: "YAML", message: bounded(e.to_string()) })?
        };
        doc.validate()?;
        Ok(doc)
    }

    /// Checks everything [`PolicyDoc::parse`] checks after reading the text; for documents
    /// built in code.
    pub fn validate(&self) -> Result<(), PolicyError> {
        compile_rules(self).map(|_| ())
    }

    /// Validates the document and prepares it for evaluation (paths split, regexes built).
    pub fn compile(self) -> Result<CompiledPolicy, PolicyError> {
        let rules = compile_rules(&self)?;
        Ok(CompiledPolicy { doc: self, rules })
    }
}

/// Conservative limits against alias bombs and deep nesting; a policy is small.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::Options {
        budget: Some(serde_saphyr::Budget {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            // A condition nested MAX_DEPTH deep is about 2 * MAX_DEPTH + 6 YAML levels.
            max_depth: 64,
            max_documents: 1,
            max_nodes: 100_000,
            max_total_scalar_bytes: MAX_DOCUMENT_BYTES,
            ..serde_saphyr::Budget::default()
        }),
        alias_limits: serde_saphyr::options::AliasLimits {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        // `no` and `on` stay strings: `in: [no, se]` lists country codes, not booleans.
        strict_booleans: true,
        with_snippet: false,
        ..serde_saphyr::Options::default()
    }
}

/// A validated policy ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    doc: PolicyDoc,
    /// One per rule of `doc`, in the same order.
    rules: Vec<Node>,
}

impl CompiledPolicy {
    /// The document it was compiled from.
    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.doc.name
    }

    /// Gives the document back.
    pub fn into_doc(self) -> PolicyDoc {
        self.doc
    }
}

#[derive(Debug, Clone)]
enum Node {
    Check(Box<Check>),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

#[derive(Debug, Clone)]
struct Check {
    field: String,
    path: Vec<Segment>,
    op: Op,
    expect: Expect,
}

#[derive(Debug, Clone)]
struct Segment {
    key: String,
    index: Option<usize>,
}

#[derive(Debug, Clone)]
enum Expect {
    Nothing,
    Value(Value),
    Number(f64),
    List(Vec<Value>),
    Regex(Regex),
    Length(u64),
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty; use lower-case letters, digits, '-', '_' and '.'"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("the {what} {} is longer than {MAX_NAME_LEN} characters", shown_str(s)));
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!("the {what} {} must start with a lower-case letter or a digit", shown_str(s)));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the {what} {} contains {c:?}; use lower-case letters, digits, '-', '_' and '.'",
            shown_str(s)
        ));
    }
    Ok(())
}

fn check_text(what: &str, s: Option<&String>) -> Result<(), String> {
    match s {
        Some(s) if s.chars().count() > MAX_TEXT_CHARS => {
            Err(format!("the {what} is longer than {MAX_TEXT_CHARS} characters; shorten it"))
        }
        _ => Ok(()),
    }
}

fn compile_rules(doc: &PolicyDoc) -> Result<Vec<Node>, PolicyError> {
    let policy = doc.name.chars().take(MAX_NAME_LEN + 16).collect::<String>();
    let invalid = |reason: String| PolicyError::Invalid { policy: policy.clone(), reason };
    check_name("policy name", &doc.name).map_err(invalid)?;
    check_text("description", doc.description.as_ref()).map_err(invalid)?;
    for ns in &doc.scope.namespaces {
        if ns != "*" {
            Namespace::parse(ns)
                .map_err(|e| invalid(format!("scope.namespaces: {e}; list exact namespace names, or \"*\"")))?;
        }
    }
    if doc.rules.is_empty() {
        return Err(invalid("has no rules; add at least one under rules:".into()));
    }
    if doc.rules.len() > MAX_RULES {
        return Err(invalid(format!(
            "has {} rules; the limit is {MAX_RULES} (split it into several policies)",
            doc.rules.len()
        )));
    }
    let mut ids = HashSet::new();
    let mut count = 0;
    let mut compiled = Vec::with_capacity(doc.rules.len());
    for (i, rule) in doc.rules.iter().enumerate() {
        let rule_err = |reason: String| PolicyError::Rule {
            policy: policy.clone(),
            rule: if rule.id.is_empty() {
                format!("#{}", i + 1)
            } else {
                rule.id.chars().take(MAX_NAME_LEN + 16).collect()
            },
            reason,
        };
        check_name("rule id", &rule.id).map_err(rule_err)?;
        if !ids.insert(rule.id.as_str()) {
            return Err(rule_err("another rule has the same id; give each rule its own".into()));
        }
        check_text("description", rule.description.as_ref()).map_err(rule_err)?;
        check_text("message", rule.message.as_ref()).map_err(rule_err)?;
        compiled.push(compile_node(&rule.condition, 1, &mut count).map_err(rule_err)?);
    }
    Ok(compiled)
}

fn compile_node(c: &Condition, depth: usize, count: &mut usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err(format!("conditions are nested more than {MAX_DEPTH} deep; flatten them (all and any take lists)"));
    }
    *count += 1;
    if *count > MAX_CONDITIONS {
        return Err(format!("the policy has more than {MAX_CONDITIONS} conditions; split it into several policies"));
    }
    let group = |name: &str, list: &[Condition], count: &mut usize| -> Result<Vec<Node>, String> {
        if list.is_empty() {
            return Err(format!("{name}: has an empty list; give it at least one condition"));
        }
        list.iter().map(|c| compile_node(c, depth + 1, count)).collect()
    };
    Ok(match c {
        Condition::Leaf { field, op, value } => Node::Check(Box::new(compile_check(field, *op, value.as_ref())?)),
        Condition::All(list) => Node::All(group("all", list, count)?),
        Condition::Any(list) => Node::Any(group("any", list, count)?),
        Condition::Not(inner) => Node::Not(Box::new(compile_node(inner, depth + 1, count)?)),
    })
}

fn compile_path(field: &str) -> Result<Vec<Segment>, String> {
    let hint = "write dot-separated names of letters, digits, '_' and '-', e.g. metrics.accuracy";
    if field.is_empty() {
        return Err(format!("the field is empty; {hint}"));
    }
    let parts: Vec<&str> = field.split('.').collect();
    if parts.len() > MAX_PATH_SEGMENTS {
        return Err(format!("the field {} has more than {MAX_PATH_SEGMENTS} segments", shown_str(field)));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            if part.is_empty() {
                return Err(format!("the field {} has an empty segment {}; {hint}", shown_str(field), i + 1));
            }
            if let Some(c) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))) {
                return Err(format!("the field {} contains {c:?}; {hint}", shown_str(field)));
            }
            Ok(Segment { key: part.to_owned(), index: part.parse().ok() })
        })
        .collect()
}

fn compile_check(field: &str, op: Op, value: Option<&Value>) -> Result<Check, String> {
    let path = compile_path(field)?;
    let on = || format!("op {op} on {field}");
    let expect = match op {
        Op::Exists | Op::NotExists => match value {
            None => Expect::Nothing,
            Some(_) => return Err(format!("{} takes no value; remove value", on())),
        },
        Op::Equals | Op::NotEquals => match value {
            Some(v) => Expect::Value(v.clone()),
            None => {
                return Err(format!(
                    "{} needs a value, e.g. value: \"mit\" (to test for a missing field use exists or not_exists)",
                    on()
                ));
            }
        },
        Op::GreaterThan | Op::GreaterThanOrEqual | Op::LessThan | Op::LessThanOrEqual => {
            match value.and_then(Value::as_f64) {
                Some(n) => Expect::Number(n),
                None => return Err(format!("{} needs a number in value, e.g. value: 0.9{}", on(), found_value(value))),
            }
        }
        Op::Contains | Op::NotContains => match value {
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => Expect::Value(v.clone()),
            _ => {
                return Err(format!(
                    "{} needs a string, number or boolean in value, e.g. value: nlp{}",
                    on(),
                    found_value(value)
                ));
            }
        },
        Op::In | Op::NotIn => match value {
            Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_LIST_VALUES => {
                if let Some(bad) = list.iter().find(|v| !is_scalar(v)) {
                    return Err(format!(
                        "{} takes a list of strings, numbers or booleans; {} is {}",
                        on(),
                        shown(bad),
                        kind(bad)
                    ));
                }
                Expect::List(list.clone())
            }
            Some(Value::Array(list)) if list.len() > MAX_LIST_VALUES => {
                return Err(format!("{} has {} values; the limit is {MAX_LIST_VALUES}", on(), list.len()));
            }
            _ => {
                return Err(format!(
                    "{} needs a non-empty list in value, e.g. value: [apache-2.0, mit]{}",
                    on(),
                    found_value(value)
                ));
            }
        },
        Op::MatchesRegex => match value {
            Some(Value::String(pattern)) => {
                let regex = RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("{}: the regex {} does not compile: {e}", on(), shown_str(pattern)))?;
                Expect::Regex(regex)
            }
            _ => {
                return Err(format!(
                    "{} needs a regex string in value, e.g. value: '^v[0-9]+$'{}",
                    on(),
                    found_value(value)
                ));
            }
        },
        Op::LengthEquals | Op::LengthGreaterThan | Op::LengthLessThan => match value.and_then(Value::as_u64) {
            Some(n) => Expect::Length(n),
            None => {
                return Err(format!(
                    "{} needs a non-negative whole number in value, e.g. value: 1{}",
                    on(),
                    found_value(value)
                ));
            }
        },
    };
    Ok(Check { field: field.to_owned(), path, op, expect })
}

fn found_value(value: Option<&Value>) -> String {
    match value {
        None => " (there is none)".into(),
        Some(v) => format!(" (found {}, {})", shown(v), kind(v)),
    }
}

/// How one rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The condition holds.
    Pass,
    /// The condition does not hold, or a field it needs is missing or of the wrong type.
    Fail,
    /// The condition could not be evaluated; this blocks whatever the rule's action.
    Error,
}

/// The result of one rule of one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleResult {
    pub rule_id: String,
    pub action: RuleAction,
    pub outcome: Outcome,
    /// Why the rule failed (the rule's own message if it has one); empty when it passed.
    pub message: String,
}

/// Evaluates every rule of `policy` against `facts`, in rule order. Never fails: problems
/// with the facts are failures (or errors) of the rules concerned.
pub fn evaluate(policy: &CompiledPolicy, facts: &Value) -> Vec<RuleResult> {
    policy
        .doc
        .rules
        .iter()
        .zip(&policy.rules)
        .map(|(rule, node)| {
            let (outcome, message) = match eval(node, facts, false) {
                Truth::True => (Outcome::Pass, String::new()),
                Truth::False(why) => (Outcome::Fail, rule.message.clone().unwrap_or_else(|| bounded(why))),
                Truth::Error(why) => (
                    Outcome::Error,
                    match &rule.message {
                        Some(m) => bounded(format!("{m} (could not evaluate: {why})")),
                        None => bounded(format!("could not evaluate: {why}")),
                    },
                ),
            };
            RuleResult { rule_id: rule.id.clone(), action: rule.action, outcome, message }
        })
        .collect()
}

/// The result of one rule, in the context of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyResult {
    pub policy: String,
    pub policy_version: i64,
    pub severity: Severity,
    pub rule_id: String,
    pub action: RuleAction,
    pub outcome: Outcome,
    pub message: String,
    /// The policy has an approved exception for this version: its failures do not block.
    pub waived: bool,
}

impl PolicyResult {
    /// Whether this result stops the version: a failed `block` rule or an evaluation error,
    /// not waived.
    pub fn blocks(&self) -> bool {
        !self.waived
            && match self.outcome {
                Outcome::Pass => false,
                Outcome::Fail => self.action == RuleAction::Block,
                Outcome::Error => true,
            }
    }
}

/// What the policies say about one version entering one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Some result [blocks](PolicyResult::blocks).
    pub blocked: bool,
    /// Every rule of every policy in scope, by policy name (then version), then rule order.
    pub results: Vec<PolicyResult>,
}

impl Decision {
    /// The results that block.
    pub fn blocking(&self) -> impl Iterator<Item = &PolicyResult> {
        self.results.iter().filter(|r| r.blocks())
    }
}

/// Evaluates every policy whose scope covers a version of a model in `namespace` with `risk`
/// entering `target`. `policies` pairs each policy with its stored version number; `waived`
/// says whether a policy (by name) has an approved exception for this version, and is asked
/// once per policy in scope.
pub fn decide(
    policies: &[(i64, &CompiledPolicy)],
    facts: &Value,
    namespace: &str,
    risk: RiskTier,
    target: Stage,
    waived: &dyn Fn(&str) -> bool,
) -> Decision {
    let mut in_scope: Vec<&(i64, &CompiledPolicy)> =
        policies.iter().filter(|(_, p)| p.doc.scope.applies(namespace, risk, target)).collect();
    in_scope.sort_by(|a, b| a.1.doc.name.cmp(&b.1.doc.name).then(a.0.cmp(&b.0)));
    let mut results = Vec::new();
    for (version, policy) in in_scope {
        let is_waived = waived(&policy.doc.name);
        results.extend(evaluate(policy, facts).into_iter().map(|r| PolicyResult {
            policy: policy.doc.name.clone(),
            policy_version: *version,
            severity: policy.doc.severity,
            rule_id: r.rule_id,
            action: r.action,
            outcome: r.outcome,
            message: r.message,
            waived: is_waived,
        }));
    }
    let blocked = results.iter().any(PolicyResult::blocks);
    Decision { blocked, results }
}

enum Truth {
    True,
    /// Does not hold, or could not be known (missing field, wrong type); the text says which.
    False(String),
    Error(String),
}

/// Evaluates `node`, negated if `negate`. Negation is pushed down to the checks (De Morgan),
/// so a missing field fails under `not` as well, and messages read "must not …".
fn eval(node: &Node, facts: &Value, negate: bool) -> Truth {
    match node {
        Node::Check(check) => eval_check(check, facts, negate),
        Node::Not(inner) => eval(inner, facts, !negate),
        Node::All(list) if !negate => eval_all(list, facts, false),
        Node::Any(list) if negate => eval_all(list, facts, true),
        Node::Any(list) | Node::All(list) => eval_any(list, facts, negate),
    }
}

fn eval_all(list: &[Node], facts: &Value, negate: bool) -> Truth {
    for node in list {
        match eval(node, facts, negate) {
            Truth::True => {}
            other => return other,
        }
    }
    Truth::True
}

fn eval_any(list: &[Node], facts: &Value, negate: bool) -> Truth {
    let mut reasons = Vec::new();
    let mut error = None;
    for node in list {
        match eval(node, facts, negate) {
            Truth::True => return Truth::True,
            Truth::False(why) => reasons.push(why),
            Truth::Error(why) => {
                error.get_or_insert(why);
            }
        }
    }
    match error {
        Some(why) => Truth::Error(why),
        None if reasons.len() == 1 => Truth::False(reasons.remove(0)),
        None => Truth::False(format!("none of the alternatives holds: {}", reasons.join("; or "))),
    }
}

fn resolve<'a>(facts: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(facts, |v, seg| match v {
        Value::Object(map) => map.get(&seg.key),
        Value::Array(items) => seg.index.and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Why a check could not be decided either way.
enum Fault {
    /// Missing or of the wrong type: the check fails, negated or not.
    Unknown(String),
    Error(String),
}

fn eval_check(check: &Check, facts: &Value, negate: bool) -> Truth {
    let raw = resolve(facts, &check.path);
    match test(check, raw) {
        Ok(holds) if holds != negate => Truth::True,
        Ok(_) => Truth::False(explain(check, raw, negate)),
        Err(Fault::Unknown(why)) => Truth::False(why),
        Err(Fault::Error(why)) => Truth::Error(why),
    }
}

/// Whether the check holds for the value found at its path (`None`: nothing there).
fn test(check: &Check, raw: Option<&Value>) -> Result<bool, Fault> {
    let field = &check.field;
    let actual = raw.filter(|v| !v.is_null());
    let present = || {
        actual.ok_or_else(|| {
            Fault::Unknown(match raw {
                Some(_) => format!("{field} is null"),
                None => format!("{field} is missing"),
            })
        })
    };
    let mismatch = |v: &Value, expected: &str| Fault::Unknown(format!("{field} is {}, expected {expected}", kind(v)));
    match (&check.expect, check.op) {
        (Expect::Nothing, Op::Exists) => Ok(actual.is_some()),
        (Expect::Nothing, _) => Ok(actual.is_none()),
        (Expect::Value(want), Op::Equals | Op::NotEquals) => {
            let v = present()?;
            if !same_kind(v, want) {
                return Err(mismatch(v, kind(want)));
            }
            Ok(value_eq(v, want) == (check.op == Op::Equals))
        }
        (Expect::Number(want), op) => {
            let v = present()?;
            let n = v.as_f64().ok_or_else(|| mismatch(v, "a number"))?;
            Ok(match op {
                Op::GreaterThan => n > *want,
                Op::GreaterThanOrEqual => n >= *want,
                Op::LessThan => n < *want,
                _ => n <= *want,
            })
        }
        (Expect::Value(want), op) => {
            let v = present()?;
            let found = match (v, want) {
                (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
                (Value::String(_), _) => return Err(mismatch(v, &format!("a list (to contain {})", kind(want)))),
                (Value::Array(items), _) => items.iter().any(|i| value_eq(i, want)),
                _ => return Err(mismatch(v, "a string or a list")),
            };
            Ok(found == (op == Op::Contains))
        }
        (Expect::List(list), op) => {
            let v = present()?;
            if !is_scalar(v) || !list.iter().any(|w| same_kind(v, w)) {
                return Err(mismatch(v, kind(&list[0])));
            }
            Ok(list.iter().any(|w| value_eq(v, w)) == (op == Op::In))
        }
        (Expect::Regex(regex), _) => {
            let v = present()?;
            let s = v.as_str().ok_or_else(|| mismatch(v, "a string"))?;
            if s.len() > MAX_REGEX_INPUT_BYTES {
                return Err(Fault::Error(format!(
                    "{field} is {} bytes long; matches_regex examines at most {MAX_REGEX_INPUT_BYTES} bytes",
                    s.len()
                )));
            }
            Ok(regex.is_match(s))
        }
        (Expect::Length(want), op) => {
            let v = present()?;
            let len = length(v).ok_or_else(|| mismatch(v, "a string, a list or an object"))?;
            Ok(match op {
                Op::LengthEquals => len == *want,
                Op::LengthGreaterThan => len > *want,
                _ => len < *want,
            })
        }
    }
}

fn length(v: &Value) -> Option<u64> {
    let n = match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => return None,
    };
    u64::try_from(n).ok()
}

/// The sentence for a check that came out the wrong way: `field must … (found …)`.
fn explain(check: &Check, raw: Option<&Value>, negate: bool) -> String {
    let field = &check.field;
    let positive = !negate;
    let want = match &check.expect {
        Expect::Nothing => String::new(),
        Expect::Value(v) => shown(v),
        Expect::Number(n) => format_number(*n),
        Expect::List(list) => shown(&Value::Array(list.clone())),
        Expect::Regex(r) => format!("/{}/", truncate(r.as_str())),
        Expect::Length(n) => n.to_string(),
    };
    let phrase = match (check.op, positive) {
        (Op::Equals, true) | (Op::NotEquals, false) => format!("must equal {want}"),
        (Op::Equals, false) | (Op::NotEquals, true) => format!("must not equal {want}"),
        (Op::GreaterThan, true) => format!("must be greater than {want}"),
        (Op::GreaterThan, false) => format!("must be less than or equal to {want}"),
        (Op::GreaterThanOrEqual, true) => format!("must be greater than or equal to {want}"),
        (Op::GreaterThanOrEqual, false) => format!("must be less than {want}"),
        (Op::LessThan, true) => format!("must be less than {want}"),
        (Op::LessThan, false) => format!("must be greater than or equal to {want}"),
        (Op::LessThanOrEqual, true) => format!("must be less than or equal to {want}"),
        (Op::LessThanOrEqual, false) => format!("must be greater than {want}"),
        (Op::Contains, true) | (Op::NotContains, false) => format!("must contain {want}"),
        (Op::Contains, false) | (Op::NotContains, true) => format!("must not contain {want}"),
        (Op::Exists, true) | (Op::NotExists, false) => "must be present".into(),
        (Op::Exists, false) | (Op::NotExists, true) => "must be absent".into(),
        (Op::In, true) | (Op::NotIn, false) => format!("must be one of {want}"),
        (Op::In, false) | (Op::NotIn, true) => format!("must not be one of {want}"),
        (Op::MatchesRegex, true) => format!("must match {want}"),
        (Op::MatchesRegex, false) => format!("must not match {want}"),
        (Op::LengthEquals, true) => format!("must have length {want}"),
        (Op::LengthEquals, false) => format!("must not have length {want}"),
        (Op::LengthGreaterThan, true) => format!("must have length greater than {want}"),
        (Op::LengthGreaterThan, false) => format!("must have length at most {want}"),
        (Op::LengthLessThan, true) => format!("must have length less than {want}"),
        (Op::LengthLessThan, false) => format!("must have length at least {want}"),
    };
    let found = match raw {
        None => "it is missing".to_owned(),
        Some(Value::Null) => "it is null".to_owned(),
        Some(v) if matches!(check.expect, Expect::Length(_)) => match length(v) {
            Some(n) => format!("found length {n}"),
            None => format!("found {}", shown(v)),
        },
        Some(v) => format!("found {}", shown(v)),
    };
    format!("{field} {phrase} ({found})")
}

fn format_number(n: f64) -> String {
    match serde_json::Number::from_f64(n) {
        Some(num) => Value::Number(num).to_string(),
        None => n.to_string(),
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| value_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Writes at most `limit` bytes, then refuses, so showing a huge value costs little.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(io::Error::other("full"));
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A value as compact JSON, cut to about [`MAX_SHOWN_CHARS`] characters.
fn shown(v: &Value) -> String {
    let mut w = LimitedWriter { buf: Vec::new(), limit: MAX_SHOWN_CHARS * 4 };
    let complete = serde_json::to_writer(&mut w, v).is_ok();
    let text = match std::str::from_utf8(&w.buf) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&w.buf[..e.valid_up_to()]).unwrap_or_default(),
    };
    let cut = truncate(text);
    if complete || cut.ends_with('…') { cut } else { format!("{cut}…") }
}

fn shown_str(s: &str) -> String {
    format!("{:?}", truncate(s))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn bounded(s: String) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn facts() -> Value {
        json!({
            "model": {"name": "team/fraud", "namespace": "team", "risk_tier": "high", "owners": ["olga"], "tags": {"k": "v"}},
            "version": {"number": 3, "semver": "1.4.2", "stage": "staging", "target_stage": "approved_prod",
                        "tags": {}, "files": 12, "size_bytes": 1234, "submitted_by": "sam"},
            "card": {"license": "mit", "model_name": "fraud", "tags": ["nlp", "fraud"], "empty": null},
            "card_completeness": {"huggingface": 0.95, "eu-ai-act": 0.6},
            "metrics": {"accuracy": 0.93, "toxicity": 0.004, "name": "acc"},
            "evaluations": {"safety": {"passed": true, "metrics": {"accuracy": 0.93}}},
            "signatures": {"server": true, "users": ["ed25519:abc"], "count": 1},
            "lineage": {"datasets": [], "base_models": [], "runs": []}
        })
    }

    fn compile(condition: Value) -> CompiledPolicy {
        let doc =
            json!({"name": "p", "severity": "low", "rules": [{"id": "r", "action": "block", "condition": condition}]});
        PolicyDoc::parse(&doc.to_string()).unwrap().compile().unwrap()
    }

    fn run(condition: Value) -> RuleResult {
        evaluate(&compile(condition), &facts()).remove(0)
    }

    fn check(field: &str, op: &str, value: Value) -> RuleResult {
        let mut c = json!({"field": field, "op": op});
        if !value.is_null() {
            c["value"] = value;
        }
        run(c)
    }

    fn passes(field: &str, op: &str, value: Value) {
        let r = check(field, op, value.clone());
        assert_eq!(r.outcome, Outcome::Pass, "{field} {op} {value}: {}", r.message);
    }

    fn fails(field: &str, op: &str, value: Value) -> String {
        let r = check(field, op, value.clone());
        assert_eq!(r.outcome, Outcome::Fail, "{field} {op} {value} should fail");
        assert!(!r.message.is_empty());
        r.message
    }

    fn parse_err(text: &str) -> String {
        PolicyDoc::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn equality_operators() {
        passes("card.license", "equals", json!("mit"));
        passes("version.number", "equals", json!(3.0));
        passes("signatures.server", "equals", json!(true));
        passes("card.tags", "equals", json!(["nlp", "fraud"]));
        let m = fails("card.license", "equals", json!("apache-2.0"));
        assert_eq!(m, r#"card.license must equal "apache-2.0" (found "mit")"#);
        passes("card.license", "not_equals", json!("gpl-3.0"));
        fails("card.license", "not_equals", json!("mit"));
        // A different type is a failure whichever way round.
        let m = fails("version.number", "equals", json!("3"));
        assert_eq!(m, "version.number is a number, expected a string");
        fails("version.number", "not_equals", json!("3"));
    }

    #[test]
    fn comparison_operators() {
        passes("metrics.accuracy", "greater_than", json!(0.9));
        fails("metrics.accuracy", "greater_than", json!(0.93));
        passes("metrics.accuracy", "greater_than_or_equal", json!(0.93));
        let m = fails("metrics.accuracy", "greater_than_or_equal", json!(0.95));
        assert_eq!(m, "metrics.accuracy must be greater than or equal to 0.95 (found 0.93)");
        passes("metrics.toxicity", "less_than", json!(0.01));
        fails("metrics.toxicity", "less_than", json!(0.004));
        passes("version.files", "less_than_or_equal", json!(12));
        fails("version.files", "less_than_or_equal", json!(11));
        assert_eq!(fails("metrics.name", "greater_than", json!(1)), "metrics.name is a string, expected a number");
        assert_eq!(fails("metrics.f1", "less_than", json!(1)), "metrics.f1 is missing");
        assert_eq!(fails("card.empty", "less_than", json!(1)), "card.empty is null");
    }

    #[test]
    fn contains_operators() {
        passes("card.license", "contains", json!("mi"));
        fails("card.license", "contains", json!("apache"));
        passes("card.tags", "contains", json!("nlp"));
        let m = fails("card.tags", "contains", json!("vision"));
        assert_eq!(m, r#"card.tags must contain "vision" (found ["nlp","fraud"])"#);
        passes("card.tags", "not_contains", json!("vision"));
        fails("card.tags", "not_contains", json!("nlp"));
        passes("card.license", "not_contains", json!("gpl"));
        fails("metrics.accuracy", "contains", json!("9"));
        fails("metrics.accuracy", "not_contains", json!("9"));
        fails("card.license", "contains", json!(1));
        fails("card.missing", "not_contains", json!("x"));
    }

    #[test]
    fn existence_operators() {
        passes("card.license", "exists", Value::Null);
        passes("lineage.datasets", "exists", Value::Null);
        assert_eq!(fails("card.licence", "exists", Value::Null), "card.licence must be present (it is missing)");
        assert_eq!(fails("card.empty", "exists", Value::Null), "card.empty must be present (it is null)");
        passes("card.licence", "not_exists", Value::Null);
        passes("card.empty", "not_exists", Value::Null);
        passes("scan.findings", "not_exists", Value::Null);
        assert_eq!(fails("card.license", "not_exists", Value::Null), r#"card.license must be absent (found "mit")"#);
        // Paths go through arrays by index, and into keys with '-'.
        passes("model.owners.0", "equals", json!("olga"));
        passes("card_completeness.eu-ai-act", "less_than", json!(0.7));
        fails("model.owners.1", "exists", Value::Null);
        fails("model.owners.x", "exists", Value::Null);
        fails("card.license.x", "exists", Value::Null);
    }

    #[test]
    fn membership_operators() {
        passes("card.license", "in", json!(["apache-2.0", "mit"]));
        let m = fails("card.license", "in", json!(["apache-2.0", "bsd-3-clause"]));
        assert_eq!(m, r#"card.license must be one of ["apache-2.0","bsd-3-clause"] (found "mit")"#);
        passes("version.number", "in", json!([1, 2, 3]));
        passes("card.license", "not_in", json!(["gpl-3.0"]));
        fails("card.license", "not_in", json!(["gpl-3.0", "mit"]));
        fails("version.number", "not_in", json!(["a", "b"]));
        fails("card.tags", "in", json!(["nlp"]));
        fails("card.nothing", "not_in", json!(["x"]));
    }

    #[test]
    fn regex_operator() {
        passes("version.semver", "matches_regex", json!(r"^\d+\.\d+\.\d+$"));
        let m = fails("version.semver", "matches_regex", json!("^2\\."));
        assert_eq!(m, r#"version.semver must match /^2\./ (found "1.4.2")"#);
        fails("version.number", "matches_regex", json!("3"));
        fails("version.nothing", "matches_regex", json!("3"));
    }

    #[test]
    fn length_operators() {
        passes("card.tags", "length_equals", json!(2));
        passes("card.license", "length_equals", json!(3));
        passes("model.tags", "length_equals", json!(1));
        assert_eq!(fails("card.tags", "length_equals", json!(3)), "card.tags must have length 3 (found length 2)");
        passes("signatures.users", "length_greater_than", json!(0));
        fails("lineage.datasets", "length_greater_than", json!(0));
        passes("lineage.runs", "length_less_than", json!(1));
        fails("card.tags", "length_less_than", json!(2));
        assert_eq!(
            fails("version.files", "length_equals", json!(2)),
            "version.files is a number, expected a string, a list or an object"
        );
        // Characters, not bytes.
        let p = compile(json!({"field": "s", "op": "length_equals", "value": 2}));
        assert_eq!(evaluate(&p, &json!({"s": "éé"}))[0].outcome, Outcome::Pass);
    }

    #[test]
    fn nested_conditions() {
        let ok = json!({"all": [
            {"field": "metrics.accuracy", "op": "greater_than_or_equal", "value": 0.9},
            {"any": [
                {"field": "evaluations.safety.passed", "op": "equals", "value": true},
                {"not": {"field": "version.tags.waive-safety", "op": "not_exists"}}
            ]}
        ]});
        assert_eq!(run(ok).outcome, Outcome::Pass);
        let r = run(json!({"all": [
            {"field": "metrics.accuracy", "op": "greater_than", "value": 0.5},
            {"field": "metrics.toxicity", "op": "less_than", "value": 0.001}
        ]}));
        assert_eq!(r.outcome, Outcome::Fail);
        assert_eq!(r.message, "metrics.toxicity must be less than 0.001 (found 0.004)");
        let r = run(json!({"any": [
            {"field": "card.license", "op": "equals", "value": "x"},
            {"field": "card.license", "op": "equals", "value": "y"}
        ]}));
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(r.message.starts_with("none of the alternatives holds"), "{}", r.message);
        assert!(r.message.contains("\"y\""), "{}", r.message);
        let r = run(json!({"not": {"field": "card.license", "op": "in", "value": ["mit"]}}));
        assert_eq!(r.message, r#"card.license must not be one of ["mit"] (found "mit")"#);
        assert_eq!(run(json!({"not": {"not": {"field": "card.license", "op": "exists"}}})).outcome, Outcome::Pass);
        // De Morgan: not(any) is all of the negations.
        let r = run(json!({"not": {"any": [
            {"field": "metrics.toxicity", "op": "greater_than", "value": 0.1},
            {"field": "metrics.accuracy", "op": "less_than", "value": 0.95}
        ]}}));
        assert_eq!(r.message, "metrics.accuracy must be greater than or equal to 0.95 (found 0.93)");
    }

    #[test]
    fn missing_and_mistyped_fields_fail_even_under_not() {
        for c in [
            json!({"not": {"field": "metrics.f1", "op": "greater_than", "value": 0.5}}),
            json!({"not": {"field": "metrics.name", "op": "less_than", "value": 0.5}}),
            json!({"not": {"not": {"field": "metrics.f1", "op": "greater_than", "value": 0.5}}}),
            json!({"not": {"all": [{"field": "scan.clean", "op": "equals", "value": true}]}}),
            json!({"not": {"field": "scan.findings", "op": "length_greater_than", "value": 0}}),
        ] {
            let r = run(c.clone());
            assert_eq!(r.outcome, Outcome::Fail, "{c}");
        }
        assert_eq!(
            run(json!({"not": {"field": "metrics.f1", "op": "greater_than", "value": 0.5}})).message,
            "metrics.f1 is missing"
        );
        // Non-object facts are just missing fields.
        let p = compile(json!({"field": "a.b", "op": "equals", "value": 1}));
        for facts in [json!(null), json!(1), json!("a"), json!([1]), json!({"a": [1]})] {
            assert_eq!(evaluate(&p, &facts)[0].outcome, Outcome::Fail);
        }
    }

    #[test]
    fn rule_message_replaces_the_generated_one() {
        let p = PolicyDoc::parse(
            "name: p\nseverity: low\nrules:\n  - id: r\n    action: warn\n    message: name a licence\n    condition: {field: card.x, op: exists}\n",
        )
        .unwrap()
        .compile()
        .unwrap();
        let r = &evaluate(&p, &facts())[0];
        assert_eq!((r.outcome, r.action, r.message.as_str()), (Outcome::Fail, RuleAction::Warn, "name a licence"));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let p = compile(json!({"field": "s", "op": "equals", "value": "x"}));
        let r = &evaluate(&p, &json!({"s": "é".repeat(10_000)}))[0];
        assert!(r.message.chars().count() < 300, "{}", r.message);
        assert!(r.message.contains('…'));
        let r = &evaluate(&p, &json!({"s": vec!["a"; 10_000]}))[0];
        assert!(r.message.len() < 300, "{}", r.message);
    }

    #[test]
    fn huge_regex_input_is_an_error() {
        let p = compile(json!({"field": "s", "op": "matches_regex", "value": "a"}));
        let r = &evaluate(&p, &json!({"s": "b".repeat(MAX_REGEX_INPUT_BYTES + 1)}))[0];
        assert_eq!(r.outcome, Outcome::Error);
        assert!(r.message.contains("could not evaluate"), "{}", r.message);
    }

    #[test]
    fn scope_matching() {
        let all = PolicyScope::default();
        assert!(all.applies("x", RiskTier::Low, Stage::Draft));
        let s = PolicyScope {
            namespaces: vec!["team-a".into(), "team-b".into()],
            risk_tiers: vec![RiskTier::Medium, RiskTier::High],
            stages: vec![Stage::ApprovedProd, Stage::Production],
        };
        assert!(s.applies("team-a", RiskTier::High, Stage::Production));
        assert!(!s.applies("team-c", RiskTier::High, Stage::Production));
        assert!(!s.applies("team-a", RiskTier::Low, Stage::Production));
        assert!(!s.applies("team-a", RiskTier::High, Stage::Staging));
        let star = PolicyScope { namespaces: vec!["*".into()], stages: vec![Stage::Staging], ..Default::default() };
        assert!(star.applies("anything", RiskTier::Low, Stage::Staging));
        assert!(!star.applies("anything", RiskTier::Low, Stage::Production));
    }

    const EXAMPLE_YAML: &str = r#"
name: require-licence
description: Production models need an approved licence
severity: high
scope:
  namespaces: [team-a, "*"]
  risk_tiers: [medium, high]
  stages: [approved_prod, production]
rules:
  - id: licence-present
    description: the card names a licence
    action: block
    message: "The card must name a licence (card.license)"
    condition:
      field: card.license
      op: exists
  - id: licence-allowed
    action: block
    condition:
      field: card.license
      op: in
      value: [apache-2.0, mit, bsd-3-clause, no]
  - id: accuracy
    action: block
    condition:
      all:
        - {field: metrics.accuracy, op: greater_than_or_equal, value: 0.9}
        - {field: version.files, op: less_than, value: 100}
        - any:
            - {field: evaluations.safety.passed, op: equals, value: true}
            - not: {field: version.tags.waive-safety, op: not_exists}
"#;

    const EXAMPLE_JSON: &str = r#"
  {"name": "require-licence", "description": "Production models need an approved licence", "severity": "high",
   "scope": {"namespaces": ["team-a", "*"], "risk_tiers": ["medium", "high"], "stages": ["approved_prod", "production"]},
   "rules": [
     {"id": "licence-present", "description": "the card names a licence", "action": "block",
      "message": "The card must name a licence (card.license)", "condition": {"field": "card.license", "op": "exists"}},
     {"id": "licence-allowed", "action": "block",
      "condition": {"field": "card.license", "op": "in", "value": ["apache-2.0", "mit", "bsd-3-clause", "no"]}},
     {"id": "accuracy", "action": "block", "condition": {"all": [
        {"field": "metrics.accuracy", "op": "greater_than_or_equal", "value": 0.9},
        {"field": "version.files", "op": "less_than", "value": 100},
        {"any": [{"field": "evaluations.safety.passed", "op": "equals", "value": true},
                 {"not": {"field": "version.tags.waive-safety", "op": "not_exists"}}]}]}}]}"#;

    #[test]
    fn yaml_and_json_parse_to_the_same_document() {
        let yaml = PolicyDoc::parse(EXAMPLE_YAML).unwrap();
        let json = PolicyDoc::parse(EXAMPLE_JSON).unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml.severity, Severity::High);
        assert_eq!(yaml.scope.stages, vec![Stage::ApprovedProd, Stage::Production]);
        // Round trip through the wire form.
        let again = PolicyDoc::parse(&serde_json::to_string(&yaml).unwrap()).unwrap();
        assert_eq!(again, yaml);
        let results = evaluate(&yaml.compile().unwrap(), &facts());
        assert!(results.iter().all(|r| r.outcome == Outcome::Pass), "{results:?}");
    }

    #[test]
    fn the_examples_in_the_documentation_parse() {
        let page = include_str!("../../../docs/POLICIES.md");
        let mut found = 0;
        for block in page.split("```").skip(1).step_by(2) {
            let (lang, body) = block.split_once('\n').unwrap_or((block, ""));
            if matches!(lang, "yaml" | "json") && body.starts_with("name:") || body.starts_with("{\"name\"") {
                let doc = PolicyDoc::parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
                let results = evaluate(&doc.compile().unwrap(), &facts());
                assert!(!results.is_empty());
                found += 1;
            }
        }
        assert_eq!(found, 5);
        // The operator table's examples.
        let mut examples = 0;
        for line in page.lines().filter(|l| l.starts_with("| `")) {
            if let Some((_, rest)) = line.split_once("`{field:") {
                let condition = format!("{{field:{}}}", rest.split("}`").next().unwrap_or_default());
                PolicyDoc::parse(&rule_yaml(&condition)).unwrap_or_else(|e| panic!("{e}\n{condition}"));
                examples += 1;
            }
        }
        assert_eq!(examples, Op::ALL.len());
    }

    fn rule_yaml(condition: &str) -> String {
        format!("name: p\nseverity: low\nrules:\n  - id: r\n    action: block\n    condition: {condition}\n")
    }

    #[test]
    fn refuses_typos_and_unknown_fields() {
        let e = parse_err("name: p\nseverity: low\nrulez: []\n");
        assert!(e.contains("rulez"), "{e}");
        let e = parse_err(
            "name: p\nseverity: low\nrules:\n  - id: r\n    acton: block\n    condition: {field: a, op: exists}\n",
        );
        assert!(e.contains("acton"), "{e}");
        let e = parse_err(&rule_yaml("{feild: a, op: exists}"));
        assert!(e.contains("feild") && e.contains("field"), "{e}");
        let e = parse_err(r#"{"name": "p", "severity": "low", "scope": {"stage": ["production"]}, "rules": []}"#);
        assert!(e.contains("stage"), "{e}");
        let e = parse_err(&rule_yaml("{field: a, op: gt, value: 1}"));
        assert!(e.contains("gt") && e.contains("greater_than"), "{e}");
        let e = parse_err("name: p\nseverity: severe\nrules: []\n");
        assert!(e.contains("severe") && e.contains("critical"), "{e}");
        let e = parse_err(&rule_yaml("{field: a, value: 1}"));
        assert!(e.contains("no op"), "{e}");
        let e = parse_err(&rule_yaml("{op: exists}"));
        assert!(e.contains("no field"), "{e}");
        let e = parse_err(&rule_yaml("{field: a, op: exists, all: [{field: b, op: exists}]}"));
        assert!(e.contains("not both"), "{e}");
        let e = parse_err(&rule_yaml("{all: [{field: b, op: exists}], any: [{field: b, op: exists}]}"));
        assert!(e.contains("only one of"), "{e}");
        let e = parse_err(&rule_yaml("{}"));
        assert!(e.contains("needs field and op"), "{e}");
        let e = parse_err(&rule_yaml("{all: []}"));
        assert!(e.contains("empty list"), "{e}");
    }

    #[test]
    fn refuses_bad_names_scope_and_rule_counts() {
        let e = parse_err("name: Bad Name\nseverity: low\nrules: []\n");
        assert!(e.contains("' '") || e.contains("lower-case"), "{e}");
        let e = parse_err("name: p\nseverity: low\nrules: []\n");
        assert!(e.contains("no rules"), "{e}");
        let e = parse_err("name: p\nseverity: low\nscope: {stages: [prod]}\nrules: []\n");
        assert!(e.contains("unknown stage \"prod\"") && e.contains("approved_prod"), "{e}");
        let e = parse_err("name: p\nseverity: low\nscope: {risk_tiers: [extreme]}\nrules: []\n");
        assert!(e.contains("unknown risk tier") && e.contains("low, medium, high"), "{e}");
        let e = parse_err(
            "name: p\nseverity: low\nscope: {namespaces: [Team]}\nrules:\n  - {id: r, action: warn, condition: {field: a, op: exists}}\n",
        );
        assert!(e.contains("scope.namespaces"), "{e}");
        let rule = "  - {id: r, action: warn, condition: {field: a, op: exists}}\n";
        let e = parse_err(&format!("name: p\nseverity: low\nrules:\n{rule}{rule}"));
        assert!(e.contains("rule \"r\"") && e.contains("same id"), "{e}");
        let e = parse_err(
            "name: p\nseverity: low\nrules:\n  - {id: R!, action: warn, condition: {field: a, op: exists}}\n",
        );
        assert!(e.contains("rule id"), "{e}");
        let many: String = (0..=MAX_RULES)
            .map(|i| format!("  - {{id: r{i}, action: warn, condition: {{field: a, op: exists}}}}\n"))
            .collect();
        let e = parse_err(&format!("name: p\nseverity: low\nrules:\n{many}"));
        assert!(e.contains("101 rules"), "{e}");
    }

    #[test]
    fn refuses_wrong_value_shapes() {
        let cases = [
            ("{field: a, op: exists, value: 1}", "takes no value"),
            ("{field: a, op: not_exists, value: x}", "takes no value"),
            ("{field: a, op: equals}", "needs a value"),
            ("{field: a, op: greater_than, value: '0.9'}", "needs a number"),
            ("{field: a, op: less_than_or_equal}", "needs a number"),
            ("{field: a, op: contains, value: [x]}", "string, number or boolean"),
            ("{field: a, op: in, value: mit}", "non-empty list"),
            ("{field: a, op: not_in, value: []}", "non-empty list"),
            ("{field: a, op: in, value: [[x]]}", "list of strings"),
            ("{field: a, op: matches_regex, value: 1}", "regex string"),
            ("{field: a, op: matches_regex, value: '(unclosed'}", "does not compile"),
            ("{field: a, op: matches_regex, value: 'a{1000}{1000}'}", "does not compile"),
            ("{field: a, op: length_equals, value: -1}", "non-negative whole number"),
            ("{field: a, op: length_greater_than, value: 1.5}", "non-negative whole number"),
            ("{field: a, op: length_less_than, value: x}", "non-negative whole number"),
            ("{field: '', op: exists}", "field is empty"),
            ("{field: 'a..b', op: exists}", "empty segment"),
            ("{field: 'a b', op: exists}", "contains ' '"),
        ];
        for (condition, expected) in cases {
            let e = parse_err(&rule_yaml(condition));
            assert!(e.contains(expected), "{condition}: {e}");
            assert!(e.contains("rule \"r\""), "{condition}: {e}");
        }
        let long_path = vec!["a"; MAX_PATH_SEGMENTS + 1].join(".");
        let e = parse_err(&rule_yaml(&format!("{{field: {long_path}, op: exists}}")));
        assert!(e.contains("segments"), "{e}");
    }

    #[test]
    fn refuses_deep_nesting_and_too_many_conditions() {
        let mut c = json!({"field": "a", "op": "exists"});
        for _ in 0..MAX_DEPTH {
            c = json!({"not": c});
        }
        let doc = json!({"name": "p", "severity": "low", "rules": [{"id": "r", "action": "block", "condition": c}]});
        let e = parse_err(&doc.to_string());
        assert!(e.contains("nested more than 16"), "{e}");
        // One less is fine.
        let mut c = json!({"field": "a", "op": "exists"});
        for _ in 1..MAX_DEPTH {
            c = json!({"not": c});
        }
        let doc = json!({"name": "p", "severity": "low", "rules": [{"id": "r", "action": "block", "condition": c}]});
        PolicyDoc::parse(&doc.to_string()).unwrap();
        // Very deep input is refused by the parsers' own limits, without overflowing the stack.
        let deep = format!("{}{}", "{\"not\": ".repeat(5000), "}".repeat(5000));
        let doc = format!(
            r#"{{"name": "p", "severity": "low", "rules": [{{"id": "r", "action": "block", "condition": {deep}}}]}}"#
        );
        parse_err(&doc);
        let deep = format!("{}{}", "{not: ".repeat(5000), "}".repeat(5000));
        parse_err(&rule_yaml(&deep));
        let list: Vec<Value> = (0..MAX_CONDITIONS).map(|_| json!({"field": "a", "op": "exists"})).collect();
        let doc = json!({"name": "p", "severity": "low", "rules": [{"id": "r", "action": "block", "condition": {"all": list}}]});
        let e = parse_err(&doc.to_string());
        assert!(e.contains("more than 1000 conditions"), "{e}");
    }

    #[test]
    fn refuses_oversized_and_malformed_documents() {
        let big = format!("name: p\nseverity: low\ndescription: {}\nrules: []\n", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(PolicyDoc::parse(&big), Err(PolicyError::TooLarge { .. })));
        let e = parse_err("name: p\nseverity: low\nrules: [\n");
        assert!(e.starts_with("the policy document is not valid YAML"), "{e}");
        let e = parse_err("name: p\n  severity: low\n");
        assert!(e.contains("YAML"), "{e}");
        let e = parse_err(r#"{"name": "p", "severity": "low", "rules": [}"#);
        assert!(e.starts_with("the policy document is not valid JSON") && e.contains("line 1"), "{e}");
        let e = parse_err("name: p\nname: q\nseverity: low\nrules: []\n");
        assert!(e.contains("YAML"), "{e}");
        parse_err("");
        parse_err("- a list\n");
        parse_err("just text");
        parse_err("\u{feff}{}");
        // An alias bomb (a million strings from a few lines) is stopped by the replay limits.
        let mut bomb = String::from("[&a [x, x, x, x, x, x, x, x, x, x]");
        for name in ['b', 'c', 'd', 'e', 'f', 'g'] {
            let prev = (name as u8 - 1) as char;
            bomb.push_str(&format!(", &{name} [{}]", vec![format!("*{prev}"); 10].join(", ")));
        }
        bomb.push(']');
        let e = parse_err(&rule_yaml(&format!("{{field: a, op: equals, value: {bomb}}}")));
        assert!(e.contains("YAML") && e.contains("alias"), "{e}");
    }

    fn policy(name: &str, rules: &[(&str, &str, Value)]) -> CompiledPolicy {
        let rules: Vec<Value> =
            rules.iter().map(|(id, action, c)| json!({"id": id, "action": action, "condition": c})).collect();
        PolicyDoc::parse(&json!({"name": name, "severity": "medium", "rules": rules}).to_string())
            .unwrap()
            .compile()
            .unwrap()
    }

    fn failing() -> Value {
        json!({"field": "card.license", "op": "equals", "value": "x"})
    }

    fn erroring() -> Value {
        json!({"field": "big", "op": "matches_regex", "value": "a"})
    }

    #[test]
    fn decide_blocks_on_failed_block_rules_only() {
        let warn = policy("b-warn", &[("w", "warn", failing()), ("n", "notify", failing())]);
        let block = policy(
            "a-block",
            &[("ok", "block", json!({"field": "card.license", "op": "exists"})), ("b", "block", failing())],
        );
        let facts = facts();
        let never = |_: &str| false;
        let d = decide(&[(1, &warn)], &facts, "team", RiskTier::High, Stage::Production, &never);
        assert!(!d.blocked);
        assert_eq!(d.results.len(), 2);
        let d = decide(&[(2, &warn), (7, &block)], &facts, "team", RiskTier::High, Stage::Production, &never);
        assert!(d.blocked);
        let order: Vec<_> =
            d.results.iter().map(|r| (r.policy.as_str(), r.policy_version, r.rule_id.as_str())).collect();
        assert_eq!(order, [("a-block", 7, "ok"), ("a-block", 7, "b"), ("b-warn", 2, "w"), ("b-warn", 2, "n")]);
        assert_eq!(d.blocking().map(|r| r.rule_id.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(d.results[1].severity, Severity::Medium);
        // A waiver lifts the block and is recorded on the results.
        let asked = std::cell::RefCell::new(Vec::new());
        let waive = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            name == "a-block"
        };
        let d = decide(&[(2, &warn), (7, &block)], &facts, "team", RiskTier::High, Stage::Production, &waive);
        assert!(!d.blocked);
        assert!(d.results[1].waived && d.results[1].outcome == Outcome::Fail);
        assert!(!d.results[2].waived);
        assert_eq!(asked.into_inner(), ["a-block", "b-warn"]);
    }

    #[test]
    fn decide_errors_always_block_unless_waived() {
        let p = policy("p", &[("e", "notify", erroring())]);
        let facts = json!({"big": "b".repeat(MAX_REGEX_INPUT_BYTES + 1)});
        let d = decide(&[(1, &p)], &facts, "team", RiskTier::Low, Stage::Staging, &|_| false);
        assert!(d.blocked);
        assert_eq!(d.results[0].outcome, Outcome::Error);
        let d = decide(&[(1, &p)], &facts, "team", RiskTier::Low, Stage::Staging, &|_| true);
        assert!(!d.blocked);
    }

    #[test]
    fn decide_skips_policies_out_of_scope() {
        let doc = PolicyDoc::parse(&format!(
            "name: prod-only\nseverity: critical\nscope: {{stages: [production], namespaces: [team]}}\nrules:\n  - id: b\n    action: block\n    condition: {}\n",
            failing()
        ))
        .unwrap();
        let p = doc.compile().unwrap();
        let facts = facts();
        let d = decide(&[(1, &p)], &facts, "team", RiskTier::Low, Stage::Staging, &|_| false);
        assert!(!d.blocked && d.results.is_empty());
        let d = decide(&[(1, &p)], &facts, "other", RiskTier::Low, Stage::Production, &|_| false);
        assert!(!d.blocked && d.results.is_empty());
        let d = decide(&[(1, &p)], &facts, "team", RiskTier::Low, Stage::Production, &|_| false);
        assert!(d.blocked);
    }

    #[test]
    fn fifty_policies_of_five_rules() {
        let policies: Vec<CompiledPolicy> = (0..50)
            .map(|i| {
                policy(
                    &format!("policy-{i:02}"),
                    &[
                        (
                            "licence",
                            "block",
                            json!({"field": "card.license", "op": "in", "value": ["mit", "apache-2.0"]}),
                        ),
                        (
                            "accuracy",
                            "block",
                            json!({"field": "metrics.accuracy", "op": "greater_than_or_equal", "value": 0.9}),
                        ),
                        (
                            "semver",
                            "warn",
                            json!({"field": "version.semver", "op": "matches_regex", "value": r"^\d+\.\d+\.\d+$"}),
                        ),
                        (
                            "signed",
                            "block",
                            json!({"field": "signatures.users", "op": "length_greater_than", "value": 0}),
                        ),
                        (
                            "safety",
                            "notify",
                            json!({"any": [
                            {"field": "evaluations.safety.passed", "op": "equals", "value": true},
                            {"not": {"field": "version.tags.waive-safety", "op": "not_exists"}}]}),
                        ),
                    ],
                )
            })
            .collect();
        let refs: Vec<(i64, &CompiledPolicy)> = policies.iter().map(|p| (1, p)).collect();
        let facts = facts();
        let d = decide(&refs, &facts, "team", RiskTier::High, Stage::ApprovedProd, &|_| false);
        assert_eq!(d.results.len(), 250);
        assert!(!d.blocked, "{:?}", d.blocking().next());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9é.]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c0-2]{1,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn evaluation_never_panics(facts in arb_json()) {
            let fields = ["a", "a.b", "a.0", "b.c.a", "c", "0.a"];
            let ops: Vec<(Op, Value)> = vec![
                (Op::Equals, json!("x")), (Op::NotEquals, json!(1)), (Op::GreaterThan, json!(0.5)),
                (Op::GreaterThanOrEqual, json!(-1)), (Op::LessThan, json!(1e300)), (Op::LessThanOrEqual, json!(0)),
                (Op::Contains, json!("a")), (Op::NotContains, json!(true)), (Op::Exists, Value::Null),
                (Op::NotExists, Value::Null), (Op::In, json!(["a", 1, true])), (Op::NotIn, json!([2])),
                (Op::MatchesRegex, json!("^[a-z]+$")), (Op::LengthEquals, json!(1)),
                (Op::LengthGreaterThan, json!(0)), (Op::LengthLessThan, json!(3)),
            ];
            let mut rules = Vec::new();
            for (i, (op, value)) in ops.iter().enumerate() {
                let field = fields[i % fields.len()];
                let leaf = if value.is_null() { json!({"field": field, "op": op}) } else { json!({"field": field, "op": op, "value": value}) };
                rules.push(json!({"id": format!("r{i}"), "action": "block", "condition": leaf.clone()}));
                rules.push(json!({"id": format!("n{i}"), "action": "warn", "condition": {"not": {"any": [leaf, {"field": "c", "op": "exists"}]}}}));
            }
            let doc = json!({"name": "p", "severity": "low", "rules": rules});
            let p = PolicyDoc::parse(&doc.to_string()).unwrap().compile().unwrap();
            let results = evaluate(&p, &facts);
            prop_assert_eq!(results.len(), ops.len() * 2);
            for r in results {
                prop_assert!(r.outcome == Outcome::Pass || !r.message.is_empty());
            }
        }
    }
}
