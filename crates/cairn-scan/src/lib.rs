//! Artifact scanning. Model files are code: a pickle can run anything when it is loaded. This
//! crate reads a file's bytes — never loading, importing or executing anything — and reports
//! what a loader would do that it should not:
//!
//! - pickle opcode streams (plain pickle, joblib, dill, legacy and zip PyTorch checkpoints,
//!   NumPy object arrays, `.npz`) and the globals they import ([`pickle::classify`]);
//! - Keras `Lambda` layers in `.keras` archives and `.h5` files;
//! - well-formedness of safetensors, GGUF and ONNX files (offsets in bounds, no overlap, sane
//!   sizes), and ONNX external data that points outside the model;
//! - secrets in text files (the card secret scanner) and licence files mapped to SPDX ids.
//!
//! Everything streams from a [`Source`] through a bounded buffer, so memory does not grow with
//! the file.

pub mod formats;
pub mod license;
pub mod pickle;
pub mod source;

use serde::{Deserialize, Serialize};

pub use source::{Reader, Source};

#[cfg(unix)]
pub use source::FileSource;

/// Bumped whenever a rule changes, so stored results from an older scanner can be told apart
/// (and reused only when they came from this one).
pub const SCANNER: &str = "cairn-scan/1";

/// How bad a finding is (`low < medium < high < critical`): the policy engine's severity.
pub use cairn_core::policy::Severity;

/// One thing a file would do on loading that it should not, or a way it is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `pickle.unsafe_import`, `keras.lambda_layer`, `secret.aws-access-key`.
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    /// What the rule matched (an import such as `os.system`), empty when nothing to name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// Where in the file (an archive entry and/or a byte offset, or a line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What a file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Pickle,
    Pytorch,
    Numpy,
    Zip,
    Keras,
    KerasH5,
    Safetensors,
    Gguf,
    Onnx,
    Text,
    License,
    Other,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pickle => "pickle",
            Self::Pytorch => "pytorch",
            Self::Numpy => "numpy",
            Self::Zip => "zip",
            Self::Keras => "keras",
            Self::KerasH5 => "keras_h5",
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
            Self::Onnx => "onnx",
            Self::Text => "text",
            Self::License => "license",
            Self::Other => "other",
        }
    }
}

/// Whether the whole file was examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Read to the end (or to every part a loader reads).
    Scanned,
    /// A format the scanner does not examine (weights in a raw format, images, …).
    Skipped,
    /// The file could not be read to the end: it is malformed, or outgrew a limit. Findings
    /// up to that point are kept; `error` says where and why.
    Incomplete,
}

/// The result for one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    pub format: Format,
    pub status: Status,
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Every distinct global a pickle in the file imports (`module.name`), for review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<String>,
    /// The SPDX id of a licence file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileReport {
    pub fn new(format: Format) -> Self {
        Self { format, status: Status::Scanned, findings: Vec::new(), imports: Vec::new(), license: None, error: None }
    }

    pub fn skipped() -> Self {
        Self { status: Status::Skipped, ..Self::new(Format::Other) }
    }

    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Marks the report incomplete with `why`, keeping what was found.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.status = Status::Incomplete;
        self.error = Some(why.into());
    }
}

/// The scanner, holding its compiled rules; cheap to share between threads.
#[derive(Default)]
pub struct Scanner {
    secrets: cairn_card::secrets::Scanner,
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans one file. `path` is its path in the model directory (the extension and name
    /// decide how it is read, together with its first bytes).
    pub fn scan(&self, path: &str, src: &dyn Source) -> FileReport {
        let mut head = [0u8; 16];
        let n = read_head(src, &mut head);
        let format = formats::detect(path, &head[..n]);
        let mut report = FileReport::new(format);
        let mut r = Reader::new(src);
        match format {
            Format::Pickle => formats::pickle_file(&mut r, &mut report),
            Format::Pytorch | Format::Zip | Format::Keras => formats::archive(&mut r, &mut report),
            Format::Numpy => formats::numpy(&mut r, "", &mut report),
            Format::KerasH5 => formats::keras_h5(&mut r, &mut report),
            Format::Safetensors => formats::safetensors(&mut r, &mut report),
            Format::Gguf => formats::gguf(&mut r, &mut report),
            Format::Onnx => formats::onnx(&mut r, &mut report),
            Format::Text => formats::text(&self.secrets, path, &mut r, &mut report),
            Format::License => {
                formats::text(&self.secrets, path, &mut r, &mut report);
                report.license = license::detect_file(src);
            }
            Format::Other => report.status = Status::Skipped,
        }
        report
    }
}

fn read_head(src: &dyn Source, head: &mut [u8]) -> usize {
    let mut got = 0;
    while got < head.len() {
        match src.read_at(got as u64, &mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}
