//! Evidence bundles (docs/AUDIT.md#evidence-bundles): one `tar.gz` that proves what a version
//! is and how it got where it is, checkable offline with the registry's public key alone.
//!
//! ```text
//! index.json       {"format":"cairn.evidence/v1","model":…,"version":…,"digest":…,
//!                   "created_at":…,"key_id":…,"public_key":…,"members":[{"name","size","sha256"}…]}
//! index.sig        {"key_id":…,"signature":…}   Ed25519 over the exact bytes of index.json
//! manifest.json    the canonical manifest; its SHA-256 is the version's digest
//! signatures.json  the version's signatures (the registry's, the pusher's)
//! audit.jsonl      an audit export from a signed checkpoint to a signed checkpoint: the events
//!                  about this version in full, the others in between redacted
//! …                card renderings, evaluations, lineage, lifecycle, policy results, scan, ML-BOM
//! ```
//!
//! Reading is defensive: only regular files with plain names (no `..`, no absolute paths, no
//! links), each listed once in the index, in bounded sizes, so a hostile archive can neither
//! write outside anything nor exhaust memory or disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::keys::{PublicKey, SigningKey};
use crate::statement::SignatureEnvelope;

/// The format name in the index.
pub const FORMAT: &str = "cairn.evidence/v1";
/// The index member.
pub const INDEX: &str = "index.json";
/// Its signature.
pub const INDEX_SIG: &str = "index.sig";
/// Most members a bundle may have.
pub const MAX_MEMBERS: usize = 64;
/// Largest member read into memory (everything but the audit export).
pub const MAX_SMALL: u64 = 64 << 20;
/// Largest audit export.
pub const MAX_AUDIT: u64 = 4 << 30;

/// One member as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its name in the archive.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes (hex).
    pub sha256: String,
}

/// The index: what the bundle is about and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    /// `namespace/name`.
    pub model: String,
    /// The version number.
    pub version: i64,
    /// `sha256:<hex>` of the version's manifest.
    pub digest: String,
    /// When the bundle was made (ms since the Unix epoch).
    pub created_at: i64,
    /// The registry key that signed the index.
    pub key_id: String,
    /// That key (SPKI PEM), for information: verification trusts only keys it is given.
    pub public_key: String,
    /// Every other member, in archive order.
    pub members: Vec<Member>,
}

/// `index.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSignature {
    /// The key that signed.
    pub key_id: String,
    /// The signature over `index.json`'s bytes.
    pub signature: String,
}

/// Checks a member name: `name` or `dir/name`, of letters, digits, `.`, `-`, `_`, no `..`.
pub fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    (1..=2).contains(&parts.len())
        && name.len() <= 120
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        })
}

fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}

fn append(builder: &mut tar::Builder<impl Write>, name: &str, size: u64, data: impl Read) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data)
}

/// Writes a bundle of the files `members` (archive name, file on disk), with an index
/// about `model`:`version` signed by `key`. Files are streamed, never held in memory.
pub fn write(
    out: impl Write,
    model: &str,
    version: i64,
    digest: &str,
    created_at: i64,
    members: &[(String, std::path::PathBuf)],
    key: &SigningKey,
) -> io::Result<()> {
    let mut listed = Vec::with_capacity(members.len());
    for (name, path) in members {
        if !valid_name(name) || name == INDEX || name == INDEX_SIG {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad member name {name:?}")));
        }
        let (size, sha256) = sha256_file(path)?;
        listed.push(Member { name: name.clone(), size, sha256 });
    }
    let public = key.public();
    let index = Index {
        format: FORMAT.into(),
        model: model.into(),
        version,
        digest: digest.into(),
        created_at,
        key_id: public.key_id(),
        public_key: public.to_pem(),
        members: listed,
    };
    let index_bytes = serde_json::to_vec_pretty(&index).map_err(io::Error::other)?;
    let sig = IndexSignature { key_id: public.key_id(), signature: key.sign(&index_bytes) };
    let sig_bytes = serde_json::to_vec_pretty(&sig).map_err(io::Error::other)?;
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    append(&mut builder, INDEX, index_bytes.len() as u64, &index_bytes[..])?;
    append(&mut builder, INDEX_SIG, sig_bytes.len() as u64, &sig_bytes[..])?;
    for (m, (_, path)) in index.members.iter().zip(members) {
        append(&mut builder, &m.name, m.size, std::fs::File::open(path)?.take(m.size))?;
    }
    builder.into_inner()?.finish()?.flush()
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// `namespace/name` (from the index).
    pub model: String,
    /// The version number.
    pub version: i64,
    /// The manifest digest.
    pub digest: String,
    /// Each check and whether it passed, in order.
    pub checks: Vec<(String, bool)>,
    /// Audit events about the version carried in full, verified in the chain.
    pub audit_events: u64,
    /// What failed, in words.
    pub problems: Vec<String>,
}

impl BundleReport {
    /// Everything checked out.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.checks.is_empty() && self.checks.iter().all(|c| c.1)
    }

    fn check(&mut self, what: impl Into<String>, passed: bool, problem: impl FnOnce() -> String) {
        if !passed {
            self.problems.push(problem());
        }
        self.checks.push((what.into(), passed));
    }
}

/// Why a bundle could not be read at all (as opposed to read and found wrong).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a gzip'd tar, cut short, or an I/O error.
    #[error("cannot read the bundle: {0}")]
    Io(#[from] io::Error),
    /// The archive breaks the rules (a link, a bad name, too big, too many members).
    #[error("unsafe or malformed bundle: {0}")]
    Unsafe(String),
}

fn read_small(entry: &mut impl Read, size: u64, name: &str) -> Result<Vec<u8>, BundleError> {
    if size > MAX_SMALL {
        return Err(BundleError::Unsafe(format!("{name} is {size} bytes, more than {MAX_SMALL}")));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.take(size).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Verifies a bundle read from `input` against the `trusted` registry keys: the index
/// signature, every member's size and SHA-256 against the index (none missing, none extra),
/// the manifest against the digest, the registry's signature of the version, and the audit
/// export (its chain and signed checkpoints). Unsafe archives are refused before anything is
/// trusted.
pub fn verify(mut input: impl Read, trusted: &[PublicKey]) -> Result<BundleReport, BundleError> {
    // The gzip header is the one this module writes (no name, no time): a byte changed there
    // would not change the content, but it is still a changed bundle.
    let mut head = [0u8; 10];
    input.read_exact(&mut head)?;
    if head[..] != gzip_header()[..] {
        return Err(BundleError::Unsafe("not a bundle as cairn writes them (gzip header)".into()));
    }
    let reader = io::BufReader::new((&head[..]).chain(input));
    let mut archive = tar::Archive::new(flate2::bufread::GzDecoder::new(reader));
    let mut report = BundleReport::default();
    let mut index: Option<(Index, Vec<u8>)> = None;
    let mut index_sig: Option<Vec<u8>> = None;
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut audit: Option<tempfile::NamedTempFile> = None;
    let mut total: u64 = 0;
    for (i, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        if i >= MAX_MEMBERS + 2 {
            return Err(BundleError::Unsafe(format!("more than {} members", MAX_MEMBERS + 2)));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BundleError::Unsafe(format!(
                "member {i} is a {:?}, not a regular file (links and directories are refused)",
                entry.header().entry_type()
            )));
        }
        let name = entry.path()?.to_str().map(str::to_owned).unwrap_or_default();
        if !valid_name(&name) {
            return Err(BundleError::Unsafe(format!("member name {name:?} is not allowed")));
        }
        if !seen.insert(name.clone()) {
            return Err(BundleError::Unsafe(format!("{name} appears twice")));
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if total > MAX_AUDIT + MAX_SMALL * MAX_MEMBERS as u64 {
            return Err(BundleError::Unsafe("the bundle is larger than any this registry writes".into()));
        }
        match (i, name.as_str()) {
            (0, INDEX) => {
                let bytes = read_small(&mut entry, size, INDEX)?;
                let parsed: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| BundleError::Unsafe(format!("index.json is not a valid index: {e}")))?;
                if parsed.format != FORMAT {
                    return Err(BundleError::Unsafe(format!("unknown bundle format {:?}", parsed.format)));
                }
                index = Some((parsed, bytes));
            }
            (1, INDEX_SIG) => index_sig = Some(read_small(&mut entry, size, INDEX_SIG)?),
            (0 | 1, _) => return Err(BundleError::Unsafe("a bundle starts with index.json and index.sig".into())),
            (_, "audit.jsonl") => {
                if size > MAX_AUDIT {
                    return Err(BundleError::Unsafe(format!("audit.jsonl is {size} bytes, more than {MAX_AUDIT}")));
                }
                let mut tmp = tempfile::NamedTempFile::new()?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut left = size;
                while left > 0 {
                    let n = entry.read(&mut buf[..usize::try_from(left.min(1 << 16)).unwrap_or(1 << 16)])?;
                    if n == 0 {
                        return Err(BundleError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "audit.jsonl is cut short",
                        )));
                    }
                    h.update(&buf[..n]);
                    tmp.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                small.insert(name.clone(), hex::encode(h.finalize()).into_bytes());
                audit = Some(tmp);
            }
            _ => {
                let bytes = read_small(&mut entry, size, &name)?;
                small.insert(name, bytes);
            }
        }
    }
    // Read on to the end of the gzip stream, so its checksum and length are checked too, and
    // refuse anything after it.
    let mut decoder = archive.into_inner();
    let padding = io::copy(&mut (&mut decoder).take(1 << 20), &mut io::sink())?;
    if padding == 1 << 20 {
        return Err(BundleError::Unsafe("data after the end of the archive".into()));
    }
    if !io::BufRead::fill_buf(&mut decoder.into_inner())?.is_empty() {
        return Err(BundleError::Unsafe("bytes after the end of the compressed bundle".into()));
    }
    let Some((index, index_bytes)) = index else {
        return Err(BundleError::Unsafe("no index.json".into()));
    };
    report.model.clone_from(&index.model);
    report.version = index.version;
    report.digest.clone_from(&index.digest);

    // The index is signed by a trusted key.
    let sig: Option<IndexSignature> = index_sig.and_then(|b| serde_json::from_slice(&b).ok());
    let signed = sig.as_ref().is_some_and(|s| {
        s.key_id == index.key_id
            && trusted.iter().any(|k| k.key_id() == s.key_id && k.verify(&index_bytes, &s.signature))
    });
    report.check("index signed by a trusted registry key", signed, || {
        format!("index.sig is missing, invalid, or by a key not given (index says {})", index.key_id)
    });

    // Every member matches the index; nothing is missing or extra.
    let listed: BTreeSet<&str> = index.members.iter().map(|m| m.name.as_str()).collect();
    for m in &index.members {
        let got = small.get(&m.name);
        let sha = match (m.name.as_str(), got) {
            ("audit.jsonl", Some(h)) => Some(String::from_utf8_lossy(h).into_owned()),
            (_, Some(b)) => Some(hex::encode(Sha256::digest(b))),
            (_, None) => None,
        };
        let size_ok = m.name == "audit.jsonl" || got.is_some_and(|b| b.len() as u64 == m.size);
        report.check(
            format!("{} matches the index", m.name),
            sha.as_deref() == Some(m.sha256.as_str()) && size_ok,
            || match sha {
                None => format!("{} is listed in the index but missing", m.name),
                Some(_) => format!("{} differs from what the index records", m.name),
            },
        );
    }
    for extra in small.keys().filter(|n| !listed.contains(n.as_str())) {
        report.problems.push(format!("{extra} is not listed in the index"));
    }

    // The manifest is the version's.
    let manifest_ok = small
        .get("manifest.json")
        .is_some_and(|b| format!("sha256:{}", hex::encode(Sha256::digest(b))) == index.digest);
    report.check("manifest digest is the version's", manifest_ok, || {
        format!("manifest.json does not hash to {}", index.digest)
    });

    // The registry signed this version.
    let envelopes: Vec<SignatureEnvelope> =
        small.get("signatures.json").and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    let version_signed = envelopes.iter().filter(|e| e.kind == "server").any(|e| {
        let statement: serde_json::Value = serde_json::from_str(&e.statement).unwrap_or_default();
        e.verify_self().is_some_and(|k| trusted.iter().any(|t| t.key_id() == k.key_id()))
            && statement["model"] == index.model.as_str()
            && statement["version"] == index.version
            && statement["manifest_digest"] == index.digest.as_str()
    });
    report.check("version signed by a trusted registry key", version_signed, || {
        "signatures.json holds no valid registry signature over this model, version and digest".into()
    });

    // The audit trail verifies on its own, from signed checkpoint to signed checkpoint.
    match audit {
        Some(tmp) => {
            let file = std::fs::File::open(tmp.path())?;
            let r = crate::export::verify_export(BufReader::new(file), trusted.to_vec());
            let (ok, why, events) = match r {
                Ok(r) => (r.ok() && r.checkpoints > 0, format!("{:?}", r.first_break), r.events),
                Err(e) => (false, e.to_string(), 0),
            };
            report.audit_events = events;
            report.check("audit trail verifies to a signed checkpoint", ok, || {
                format!("audit.jsonl does not verify: {why}")
            });
        }
        None => report.check("audit trail present", false, || "no audit.jsonl".into()),
    }
    Ok(report)
}

/// The 10-byte gzip header [`write`] produces.
fn gzip_header() -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(b"");
    e.finish().unwrap_or_default().into_iter().take(10).collect()
}

/// Reads and verifies the bundle file at `path`.
pub fn verify_file(path: &Path, trusted: &[PublicKey]) -> Result<BundleReport, BundleError> {
    verify(BufReader::new(std::fs::File::open(path)?), trusted)
}
