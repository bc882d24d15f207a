//! Lineage: what a version was made from (docs/SUPPLY_CHAIN.md).
//!
//! A version has upstream inputs of four kinds — datasets, training runs, code commits and
//! base models (another Cairn version, or an external model such as a Hugging Face repo) —
//! recorded at push time or later. Here they are parsed and checked; the store keeps them as
//! edges and walks them up and down.

use std::collections::BTreeMap;
use std::fmt;

use crate::name::{NameError, VersionRef};

/// Deepest walk a query may ask for.
pub const MAX_DEPTH: u32 = 50;
/// Depth of a walk when the caller does not say.
pub const DEFAULT_DEPTH: u32 = 10;
/// Most inputs recorded in one request.
pub const MAX_INPUTS: usize = 100;
/// Most parameters of one run.
pub const MAX_RUN_PARAMS: usize = 500;

/// An input that fails the rules, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineageError(pub String);

impl From<NameError> for LineageError {
    fn from(e: NameError) -> Self {
        Self(e.to_string())
    }
}

/// The kind of an upstream input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputKind {
    /// A dataset.
    Dataset,
    /// A training run.
    Run,
    /// A code commit.
    Code,
    /// A base model the version was derived from (fine-tuned, distilled, quantised …).
    BaseModel,
}

impl InputKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Run => "run",
            Self::Code => "code",
            Self::BaseModel => "base_model",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "dataset" => Self::Dataset,
            "run" => Self::Run,
            "code" => Self::Code,
            "base_model" => Self::BaseModel,
            _ => return None,
        })
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dataset a version was trained or evaluated on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataset {
    /// Its name (`imagenet-1k`).
    pub name: String,
    /// Its version or snapshot (`2012`, a DVC tag …), or empty.
    pub version: String,
    /// Where it lives (`s3://…`, `hf://datasets/…`), or empty.
    pub uri: String,
    /// A digest of its content (`sha256:<hex>`, `md5:<hex>` …), or empty.
    pub digest: String,
}

/// The training run that produced a version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Run {
    /// Where it ran (`mlflow`, `sagemaker`, `kubeflow`, `slurm` …).
    pub platform: String,
    /// Its id on that platform.
    pub id: String,
    /// A link to it, or empty.
    pub uri: String,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
}

/// The code a version was built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Code {
    /// The repository (`https://github.com/org/repo`).
    pub repository: String,
    /// The full commit id (40 or 64 hex digits), lower case.
    pub commit: String,
}

/// A model a version derives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseModel {
    /// A version in this registry (an alias or label is resolved to its number when recorded).
    Registry(VersionRef),
    /// A model elsewhere, by an id with a scheme (`hf:meta-llama/Llama-3.1-8B`,
    /// `https://…`), and optionally its revision.
    External {
        /// The id, scheme included.
        id: String,
        /// A revision (commit, tag, branch), or empty.
        revision: String,
    },
}

/// One upstream input of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A dataset.
    Dataset(Dataset),
    /// A training run.
    Run(Run),
    /// A code commit.
    Code(Code),
    /// A base model.
    BaseModel(BaseModel),
}

impl Upstream {
    /// Its kind.
    pub fn kind(&self) -> InputKind {
        match self {
            Self::Dataset(_) => InputKind::Dataset,
            Self::Run(_) => InputKind::Run,
            Self::Code(_) => InputKind::Code,
            Self::BaseModel(_) => InputKind::BaseModel,
        }
    }

    /// Checks every field; the error names the input and the field.
    pub fn check(&self) -> Result<(), LineageError> {
        match self {
            Self::Dataset(d) => {
                text("dataset name", &d.name, 1, 200)?;
                text("dataset version", &d.version, 0, 200)?;
                token("dataset uri", &d.uri, 2048)?;
                digest("dataset digest", &d.digest)
            }
            Self::Run(r) => {
                if r.platform.is_empty()
                    || r.platform.len() > 64
                    || !r.platform.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
                {
                    return Err(LineageError(format!(
                        "run platform {:?} must be 1 to 64 lower-case letters, digits, '-', '_' or '.' (e.g. mlflow, sagemaker)",
                        clip(&r.platform)
                    )));
                }
                text("run id", &r.id, 1, 256)?;
                token("run uri", &r.uri, 2048)?;
                if r.params.len() > MAX_RUN_PARAMS {
                    return Err(LineageError(format!("a run may have at most {MAX_RUN_PARAMS} parameters")));
                }
                for (k, v) in &r.params {
                    param(k, v)?;
                }
                Ok(())
            }
            Self::Code(c) => {
                token("code repository", &c.repository, 2048)?;
                if c.repository.is_empty() {
                    return Err(LineageError("code repository must not be empty".into()));
                }
                if !((c.commit.len() == 40 || c.commit.len() == 64)
                    && c.commit.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                {
                    return Err(LineageError(format!(
                        "code commit {:?} must be a full commit id: 40 (or 64) lower-case hex digits",
                        clip(&c.commit)
                    )));
                }
                Ok(())
            }
            Self::BaseModel(BaseModel::Registry(_)) => Ok(()),
            Self::BaseModel(BaseModel::External { id, revision }) => {
                token("base model id", id, 512)?;
                if !has_scheme(id) {
                    return Err(LineageError(format!(
                        "external base model {:?} needs a scheme, e.g. hf:org/name or https://…",
                        clip(id)
                    )));
                }
                token("base model revision", revision, 200)
            }
        }
    }

    /// Parses a dataset as the CLI takes it: `name[@version]`, or `key=value` pairs separated
    /// by commas (`name=imagenet,version=2012,uri=s3://data/imagenet,digest=sha256:…`).
    pub fn parse_dataset(s: &str) -> Result<Self, LineageError> {
        let d = if s.contains('=') {
            let mut d = Dataset::default();
            for (k, v) in pairs(s)? {
                match k {
                    "name" => d.name = v.into(),
                    "version" => d.version = v.into(),
                    "uri" => d.uri = v.into(),
                    "digest" => d.digest = v.into(),
                    _ => return Err(unknown_key("dataset", k, "name, version, uri, digest")),
                }
            }
            d
        } else {
            let (name, version) = s.split_once('@').unwrap_or((s, ""));
            Dataset { name: name.into(), version: version.into(), ..Dataset::default() }
        };
        let up = Self::Dataset(d);
        up.check()?;
        Ok(up)
    }

    /// Parses a run: `platform:id`, or `key=value` pairs (`platform=…,id=…,uri=…,param.lr=0.1`).
    pub fn parse_run(s: &str) -> Result<Self, LineageError> {
        let r = if s.contains('=') {
            let mut r = Run::default();
            for (k, v) in pairs(s)? {
                match k {
                    "platform" => r.platform = v.into(),
                    "id" => r.id = v.into(),
                    "uri" => r.uri = v.into(),
                    _ => match k.strip_prefix("param.") {
                        Some(p) => {
                            r.params.insert(p.into(), v.into());
                        }
                        None => return Err(unknown_key("run", k, "platform, id, uri, param.NAME")),
                    },
                }
            }
            r
        } else {
            let Some((platform, id)) = s.split_once(':') else {
                return Err(LineageError(format!("run {:?} must be written PLATFORM:ID, e.g. mlflow:4f2a…", clip(s))));
            };
            Run { platform: platform.into(), id: id.into(), ..Run::default() }
        };
        let up = Self::Run(r);
        up.check()?;
        Ok(up)
    }

    /// Parses code: `REPOSITORY@COMMIT`, or `repository=…,commit=…`.
    pub fn parse_code(s: &str) -> Result<Self, LineageError> {
        let c = if s.contains('=') && !s.contains("://") {
            let mut c = Code::default();
            for (k, v) in pairs(s)? {
                match k {
                    "repository" | "repo" => c.repository = v.into(),
                    "commit" => c.commit = v.to_ascii_lowercase(),
                    _ => return Err(unknown_key("code", k, "repository, commit")),
                }
            }
            c
        } else {
            let Some((repository, commit)) = s.rsplit_once('@') else {
                return Err(LineageError(format!(
                    "code {:?} must be written REPOSITORY@COMMIT, e.g. https://github.com/org/repo@<40 hex digits>",
                    clip(s)
                )));
            };
            Code { repository: repository.into(), commit: commit.to_ascii_lowercase() }
        };
        let up = Self::Code(c);
        up.check()?;
        Ok(up)
    }

    /// Parses a base model: a version here (`ns/name:3`, `ns/name@alias`, `ns/name:1.4.2`) or
    /// an external id with a scheme and an optional `@revision` (`hf:org/name@main`).
    pub fn parse_base_model(s: &str) -> Result<Self, LineageError> {
        let up = if has_scheme(s) {
            // `@` introduces a revision only after the last path segment's start.
            let last = s.rfind('/').unwrap_or(0);
            let (id, revision) = match s[last..].find('@') {
                Some(at) => (&s[..last + at], &s[last + at + 1..]),
                None => (s, ""),
            };
            Self::BaseModel(BaseModel::External { id: id.into(), revision: revision.into() })
        } else {
            let r = VersionRef::parse(s).map_err(|e| {
                LineageError(format!(
                    "{e}; a base model in this registry is written namespace/name:VERSION or namespace/name@ALIAS, \
                     one elsewhere with a scheme (hf:org/name, https://…)"
                ))
            })?;
            Self::BaseModel(BaseModel::Registry(r))
        };
        up.check()?;
        Ok(up)
    }
}

/// `hf:org/name`, `https://…`: a scheme of letters, digits, `+`, `-`, `.` before the first `:`,
/// and no `/` before it (so `ns/name:3` has none).
fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && !rest.is_empty()
                && scheme.as_bytes()[0].is_ascii_alphabetic()
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }
        None => false,
    }
}

fn pairs(s: &str) -> Result<Vec<(&str, &str)>, LineageError> {
    s.split(',')
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| LineageError(format!("{:?} is not a key=value pair", clip(p))))
        })
        .collect()
}

fn unknown_key(what: &str, key: &str, known: &str) -> LineageError {
    LineageError(format!("unknown {what} field {:?} (known: {known})", clip(key)))
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// A run parameter: a name as [`text`] (at most 250 bytes), a value of at most 6000 bytes
/// without NUL (MLflow's limits; values may span lines).
fn param(k: &str, v: &str) -> Result<(), LineageError> {
    text("run parameter name", k, 1, 250)?;
    if v.len() > 6000 || v.contains('\0') {
        return Err(LineageError(format!(
            "run parameter {:?}: the value must be at most 6000 bytes, without NUL",
            clip(k)
        )));
    }
    Ok(())
}

impl Run {
    /// Drops the parameters that break the rules and keeps at most [`MAX_RUN_PARAMS`]: for runs
    /// copied from another system (MLflow), whose parameters the user did not type here.
    pub fn keep_valid_params(&mut self) {
        self.params.retain(|k, v| param(k, v).is_ok());
        while self.params.len() > MAX_RUN_PARAMS {
            self.params.pop_last();
        }
    }
}

/// Free text of `min..=max` bytes without control characters or surrounding whitespace.
fn text(field: &str, v: &str, min: usize, max: usize) -> Result<(), LineageError> {
    if v.len() < min {
        return Err(LineageError(format!("{field} must not be empty")));
    }
    if v.len() > max || v.chars().any(char::is_control) || v.trim() != v {
        return Err(LineageError(format!(
            "{field} {:?} must be at most {max} bytes, without control characters or surrounding spaces",
            clip(v)
        )));
    }
    Ok(())
}

/// A URI-like value: at most `max` bytes, no whitespace or control characters (may be empty).
fn token(field: &str, v: &str, max: usize) -> Result<(), LineageError> {
    if v.len() > max || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LineageError(format!(
            "{field} {:?} must be at most {max} bytes, without spaces or control characters",
            clip(v)
        )));
    }
    Ok(())
}

/// Empty, or `algorithm:hex` (`sha256:…`, `md5:…`): 1–16 lower-case letters and digits, then
/// 32 to 128 lower-case hex digits.
fn digest(field: &str, v: &str) -> Result<(), LineageError> {
    if v.is_empty() {
        return Ok(());
    }
    let ok = v.split_once(':').is_some_and(|(alg, hex)| {
        (1..=16).contains(&alg.len())
            && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && (32..=128).contains(&hex.len())
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !ok {
        return Err(LineageError(format!(
            "{field} {:?} must be written algorithm:hex, e.g. sha256:<64 lower-case hex digits>",
            clip(v)
        )));
    }
    Ok(())
}

/// Which way a walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards what a version was made from.
    Up,
    /// Towards what was made from it.
    Down,
}

impl Direction {
    /// Parses `up` or `down`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" | "upstream" => Some(Self::Up),
            "down" | "downstream" => Some(Self::Down),
            _ => None,
        }
    }

    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Checks a requested depth (1 to [`MAX_DEPTH`]), defaulting to [`DEFAULT_DEPTH`].
pub fn depth(requested: Option<u32>) -> Result<u32, LineageError> {
    match requested {
        None => Ok(DEFAULT_DEPTH),
        Some(d @ 1..=MAX_DEPTH) => Ok(d),
        Some(d) => Err(LineageError(format!("depth must be between 1 and {MAX_DEPTH} (got {d})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::VersionSelector;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn datasets_short_and_long() {
        let Upstream::Dataset(d) = Upstream::parse_dataset("imagenet-1k@2012").unwrap() else { panic!() };
        assert_eq!((d.name.as_str(), d.version.as_str()), ("imagenet-1k", "2012"));
        let digest = format!("sha256:{}", "ab".repeat(32));
        let Upstream::Dataset(d) =
            Upstream::parse_dataset(&format!("name=web text,version=v2,uri=s3://b/web,digest={digest}")).unwrap()
        else {
            panic!()
        };
        assert_eq!(d, Dataset { name: "web text".into(), version: "v2".into(), uri: "s3://b/web".into(), digest });
        assert!(Upstream::parse_dataset("imagenet").is_ok());
        for bad in ["", "@v1", "name=x,colour=red", "name=x,digest=sha256:xyz", "name=x,uri=s3://a b", "name=x,nopair"]
        {
            assert!(Upstream::parse_dataset(bad).is_err(), "{bad}");
        }
        assert!(Upstream::parse_dataset(&"n".repeat(201)).is_err());
        assert!(Upstream::parse_dataset("bad\u{7}name").is_err());
    }

    #[test]
    fn runs() {
        let Upstream::Run(r) = Upstream::parse_run("mlflow:4f2a9c").unwrap() else { panic!() };
        assert_eq!((r.platform.as_str(), r.id.as_str()), ("mlflow", "4f2a9c"));
        let Upstream::Run(r) = Upstream::parse_run("platform=sagemaker,id=job-7,param.lr=0.01,param.epochs=3").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.params.get("lr").map(String::as_str), Some("0.01"));
        assert_eq!(r.params.len(), 2);
        for bad in ["mlflow", "MLflow:1", ":1", "mlflow:", "platform=x,id=1,lr=3", "platform=x,id=1,param. a=1"] {
            assert!(Upstream::parse_run(bad).is_err(), "{bad}");
        }
        let mut copied = Run { platform: "mlflow".into(), id: "1".into(), ..Run::default() };
        copied.params.insert("ok".into(), "multi\nline".into());
        copied.params.insert(" padded".into(), "x".into());
        copied.params.insert("nul".into(), "a\0b".into());
        for i in 0..600 {
            copied.params.insert(format!("p{i:03}"), "1".into());
        }
        copied.keep_valid_params();
        assert_eq!(copied.params.len(), MAX_RUN_PARAMS);
        assert!(copied.params.contains_key("ok") && !copied.params.contains_key(" padded"));
        assert!(Upstream::Run(copied).check().is_ok());
    }

    #[test]
    fn code() {
        let Upstream::Code(c) =
            Upstream::parse_code(&format!("https://github.com/org/repo@{}", SHA.to_uppercase())).unwrap()
        else {
            panic!()
        };
        assert_eq!((c.repository.as_str(), c.commit.as_str()), ("https://github.com/org/repo", SHA));
        assert!(Upstream::parse_code(&format!("repository=git@host:org/r.git,commit={SHA}")).is_ok());
        assert!(Upstream::parse_code("https://github.com/org/repo@abc123").is_err());
        assert!(Upstream::parse_code("https://github.com/org/repo").is_err());
        assert!(Upstream::parse_code(&format!("@{SHA}")).is_err());
    }

    #[test]
    fn base_models() {
        let Upstream::BaseModel(BaseModel::Registry(r)) = Upstream::parse_base_model("team/llm:3").unwrap() else {
            panic!()
        };
        assert_eq!(r.selector, VersionSelector::Number(3));
        assert!(matches!(
            Upstream::parse_base_model("team/llm@production").unwrap(),
            Upstream::BaseModel(BaseModel::Registry(_))
        ));
        assert_eq!(
            Upstream::parse_base_model("hf:meta-llama/Llama-3.1-8B@main").unwrap(),
            Upstream::BaseModel(BaseModel::External {
                id: "hf:meta-llama/Llama-3.1-8B".into(),
                revision: "main".into()
            })
        );
        assert_eq!(
            Upstream::parse_base_model("https://example.org/m/v1").unwrap(),
            Upstream::BaseModel(BaseModel::External { id: "https://example.org/m/v1".into(), revision: String::new() })
        );
        // A bare org/name is ambiguous: the error says how to write either.
        let e = Upstream::parse_base_model("meta-llama/llama").unwrap_err();
        assert!(e.0.contains("hf:org/name"), "{e}");
        assert!(Upstream::parse_base_model("hf:").is_err());
        assert!(Upstream::parse_base_model("hf:a b").is_err());
    }

    #[test]
    fn depths_and_directions() {
        assert_eq!(depth(None).unwrap(), DEFAULT_DEPTH);
        assert_eq!(depth(Some(50)).unwrap(), 50);
        assert!(depth(Some(0)).is_err() && depth(Some(51)).is_err());
        assert_eq!(Direction::parse("upstream"), Some(Direction::Up));
        assert_eq!(Direction::parse("sideways"), None);
        for k in [InputKind::Dataset, InputKind::Run, InputKind::Code, InputKind::BaseModel] {
            assert_eq!(InputKind::parse(k.as_str()), Some(k));
        }
    }
}
