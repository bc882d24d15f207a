//! The crate's one error type. The CLI maps it to exit code 2 (usage or input error).

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading inputs or rendering a card.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// A file could not be parsed; `line` and `column` are 1-based when known.
    #[error("{}: {message}", location(file, *line, *column))]
    Parse { file: PathBuf, line: Option<u64>, column: Option<u64>, message: String },
    #[error("{}: cannot read: {source}", file.display())]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{}: file is larger than the limit of {limit} bytes (raise it with --max-input-size)", file.display())]
    TooLarge { file: PathBuf, limit: u64 },
    #[error("{}: file type not allowed (allowed: {allowed})", file.display())]
    BadExtension { file: PathBuf, allowed: String },
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn location(file: &Path, line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", file.display()),
        (Some(l), None) => format!("{}:{l}", file.display()),
        _ => file.display().to_string(),
    }
}

impl CardError {
    pub(crate) fn parse(file: &Path, line: Option<u64>, column: Option<u64>, message: impl Into<String>) -> Self {
        CardError::Parse { file: file.to_path_buf(), line, column, message: message.into() }
    }

    pub(crate) fn io(file: &Path, source: std::io::Error) -> Self {
        CardError::Io { file: file.to_path_buf(), source }
    }

    pub(crate) fn from_json(file: &Path, e: serde_json::Error) -> Self {
        let msg = e.to_string();
        // serde_json appends " at line X column Y"; we print the location in front instead.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        if e.line() == 0 {
            Self::parse(file, None, None, format!("invalid JSON: {msg}"))
        } else {
            Self::parse(file, Some(e.line() as u64), Some(e.column() as u64), format!("invalid JSON: {msg}"))
        }
    }

    pub(crate) fn from_yaml(file: &Path, e: serde_saphyr::Error, line_offset: u64) -> Self {
        let inner = e.without_snippet();
        let loc = inner.location();
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        match loc {
            Some(l) if l.line() > 0 => {
                Self::parse(file, Some(l.line() + line_offset), Some(l.column()), format!("invalid YAML: {msg}"))
            }
            _ => Self::parse(file, None, None, format!("invalid YAML: {msg}")),
        }
    }
}

pub type Result<T, E = CardError> = std::result::Result<T, E>;
