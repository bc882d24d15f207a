//! Version manifests: the files of a version (path, size, SHA-256) as canonical JSON whose
//! own SHA-256 is the version digest. See `docs/ARTIFACTS.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The schema name written into every manifest.
pub const SCHEMA: &str = "cairn.manifest/v1";
/// Most files one version may hold.
pub const MAX_FILES: usize = 100_000;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest path segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why a path or a file list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A path breaks a rule.
    #[error("invalid path {path:?}: {reason}")]
    Path {
        /// The path as given (control characters escaped by Debug).
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Not 64 lower-case hex characters.
    #[error("invalid sha256 {0:?} for {1:?}: expected 64 lower-case hex characters")]
    Digest(String, String),
    /// Two files collide.
    #[error("paths {0:?} and {1:?} collide: {2}")]
    Clash(String, String, &'static str),
    /// Too many files.
    #[error("a version holds at most {MAX_FILES} files, this one has {0}")]
    TooMany(usize),
}

/// A validated relative file path (`/`-separated, no `.`/`..`, no backslash or control
/// characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FilePath(String);

impl FilePath {
    /// Checks `s` against the path rules.
    pub fn parse(s: &str) -> Result<Self, ManifestError> {
        let bad = |reason| Err(ManifestError::Path { path: s.to_owned(), reason });
        if s.is_empty() {
            return bad("empty");
        }
        if s.len() > MAX_PATH_BYTES {
            return bad("longer than 1024 bytes");
        }
        if s.contains('\\') {
            return bad("contains a backslash; use '/' as separator");
        }
        if s.chars().any(char::is_control) {
            return bad("contains a control character");
        }
        if s.starts_with('/') {
            return bad("absolute; paths are relative to the version's root");
        }
        if s.len() >= 2 && s.as_bytes()[1] == b':' && s.as_bytes()[0].is_ascii_alphabetic() {
            return bad("starts with a drive letter");
        }
        for seg in s.split('/') {
            match seg {
                "" => return bad("has an empty segment ('//' or a trailing '/')"),
                "." | ".." => return bad("has a '.' or '..' segment"),
                _ if seg.len() > MAX_SEGMENT_BYTES => return bad("has a segment longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// True if `s` is 64 lower-case hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path.
    pub path: FilePath,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// The files of a version, checked and sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    files: Vec<FileEntry>,
}

impl Manifest {
    /// Checks a file list: digests, duplicate and case-clashing paths, a file that is also
    /// another's directory, the file count. Sorts by path (byte order).
    pub fn new(mut files: Vec<FileEntry>) -> Result<Self, ManifestError> {
        if files.len() > MAX_FILES {
            return Err(ManifestError::TooMany(files.len()));
        }
        for f in &files {
            if !is_sha256_hex(&f.sha256) {
                return Err(ManifestError::Digest(f.sha256.clone(), f.path.0.clone()));
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut folded: BTreeMap<String, &str> = BTreeMap::new();
        for f in &files {
            if let Some(prev) = folded.insert(f.path.0.to_lowercase(), &f.path.0) {
                let why = if prev == f.path.0 { "the same path twice" } else { "they differ only in letter case" };
                return Err(ManifestError::Clash(prev.to_owned(), f.path.0.clone(), why));
            }
        }
        let paths: BTreeSet<&str> = folded.values().copied().collect();
        let dirs: BTreeMap<String, &str> = files
            .iter()
            .flat_map(|f| {
                let p = f.path.as_str();
                p.match_indices('/').map(move |(i, _)| (p[..i].to_lowercase(), p))
            })
            .collect();
        for p in &paths {
            if let Some(child) = dirs.get(&p.to_lowercase()) {
                return Err(ManifestError::Clash(
                    (*p).to_owned(),
                    (*child).to_owned(),
                    "a file cannot also be a directory",
                ));
            }
        }
        Ok(Self { files })
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Total size of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The canonical JSON bytes: keys sorted, no whitespace.
    pub fn canonical_json(&self) -> String {
        let mut out = String::with_capacity(64 + self.files.len() * 120);
        out.push_str("{\"files\":[");
        for (i, f) in self.files.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"path\":");
            out.push_str(&serde_json::to_string(f.path.as_str()).unwrap_or_default());
            out.push_str(",\"sha256\":\"");
            out.push_str(&f.sha256);
            out.push_str("\",\"size\":");
            out.push_str(&f.size.to_string());
            out.push('}');
        }
        out.push_str("],\"schema\":\"");
        out.push_str(SCHEMA);
        out.push_str("\"}");
        out
    }

    /// The version digest: `sha256:` + hex SHA-256 of [`Self::canonical_json`].
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.canonical_json().as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, size: u64) -> FileEntry {
        FileEntry { path: FilePath::parse(p).unwrap(), size, sha256: "a".repeat(64) }
    }

    #[test]
    fn good_paths() {
        for p in ["a", "config.json", "weights/model-00001.safetensors", "a b/ü.txt", ".hidden", "a/..b", "...x"] {
            assert!(FilePath::parse(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn bad_paths() {
        let long = "x".repeat(256);
        let longer = format!("{}/y", "x/".repeat(600));
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "..",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "a\nb",
            "C:\\x",
            "c:x",
            &long,
            &longer,
        ] {
            assert!(FilePath::parse(p).is_err(), "{p:?} should be refused");
        }
    }

    #[test]
    fn serde_validates_paths() {
        let bad: Result<FileEntry, _> = serde_json::from_str(r#"{"path":"../x","size":1,"sha256":"00"}"#);
        assert!(bad.unwrap_err().to_string().contains("'..'"));
    }

    #[test]
    fn clashes_are_refused() {
        assert!(matches!(Manifest::new(vec![entry("a", 1), entry("a", 1)]), Err(ManifestError::Clash(..))));
        assert!(matches!(
            Manifest::new(vec![entry("README.md", 1), entry("readme.md", 1)]),
            Err(ManifestError::Clash(..))
        ));
        assert!(matches!(Manifest::new(vec![entry("a", 1), entry("a/b", 1)]), Err(ManifestError::Clash(..))));
        assert!(matches!(Manifest::new(vec![entry("A/b", 1), entry("a", 1)]), Err(ManifestError::Clash(..))));
        assert!(Manifest::new(vec![entry("a/b", 1), entry("a/c", 1), entry("ab", 1)]).is_ok());
        let mut bad = entry("x", 1);
        bad.sha256 = "A".repeat(64);
        assert!(matches!(Manifest::new(vec![bad]), Err(ManifestError::Digest(..))));
    }

    #[test]
    fn canonical_form_is_sorted_and_stable() {
        let m1 = Manifest::new(vec![entry("b/\"q\".bin", 2), entry("a.json", 1)]).unwrap();
        let m2 = Manifest::new(vec![entry("a.json", 1), entry("b/\"q\".bin", 2)]).unwrap();
        let a = "a".repeat(64);
        assert_eq!(
            m1.canonical_json(),
            format!(
                r#"{{"files":[{{"path":"a.json","sha256":"{a}","size":1}},{{"path":"b/\"q\".bin","sha256":"{a}","size":2}}],"schema":"cairn.manifest/v1"}}"#
            )
        );
        assert_eq!(m1.digest(), m2.digest());
        assert_eq!(m1.total_size(), 3);
        // The canonical form is valid JSON that parses back to the same files.
        let v: serde_json::Value = serde_json::from_str(&m1.canonical_json()).unwrap();
        assert_eq!(v["files"][1]["path"], "b/\"q\".bin");
        let empty = Manifest::default();
        assert_eq!(empty.canonical_json(), r#"{"files":[],"schema":"cairn.manifest/v1"}"#);
        assert_eq!(
            empty.digest(),
            format!("sha256:{}", hex::encode(Sha256::digest(br#"{"files":[],"schema":"cairn.manifest/v1"}"#)))
        );
    }

    #[test]
    fn too_many_files() {
        let files: Vec<FileEntry> = (0..=MAX_FILES).map(|i| entry(&format!("f{i}"), 0)).collect();
        assert!(matches!(Manifest::new(files), Err(ManifestError::TooMany(_))));
    }
}
