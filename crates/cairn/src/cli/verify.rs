//! `cairn verify`: check that a version is what the registry signed, and that a directory
//! (or the registry's own copy) holds exactly its files. And `cairn keygen`, which makes the
//! key pair a pusher signs with (`cairn push --sign-key`).
//!
//! Online, the version's manifest, file list and signatures come from the server; offline,
//! from a signed-manifest document saved earlier with `--save-manifest`:
//!
//! ```text
//! {"format":"cairn.signed-manifest/v1","model":"ns/name","version":N,"digest":"sha256:…",
//!  "manifest":{"files":[{"path":…,"sha256":…,"size":…}],"schema":"cairn.manifest/v1"},
//!  "signatures":[{"kind":"server"|"user","statement":…,"key_id":…,"public_key":…,"signature":…}]}
//! ```
//!
//! The digest is always recomputed from the manifest's files; the signatures must cover that
//! digest, this model and this version number; the server's signature must be by a trusted
//! key (`--public-key`, else the keys the server publishes, with a warning); each
//! `--signer-key` must have signed the push. Every difference is printed; the exit status is
//! 0 when there is none, 1 otherwise, 2 for input that cannot be read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cairn_api_types as api;
use cairn_audit::PublicKey;
use cairn_audit::statement::{PUSH_TYPE, PushStatement, SignatureEnvelope, VERSION_TYPE, VersionStatement};
use cairn_client::Client;
use cairn_core::manifest::{FileEntry, FilePath, Manifest, SCHEMA};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::UsageError;
use super::audit::{read_public_keys, warn_not_pinned};
use crate::progress::{Bars, human_bytes};
use crate::tree::{self, LocalFile};

/// The format name of a signed-manifest document.
pub const SIGNED_MANIFEST_FORMAT: &str = "cairn.signed-manifest/v1";

/// A version's manifest with its signatures, enough to verify a directory offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedManifest {
    /// Always [`SIGNED_MANIFEST_FORMAT`].
    format: String,
    /// `namespace/name`.
    model: String,
    /// The version number.
    version: i64,
    /// `sha256:` and the hex SHA-256 of the canonical manifest.
    digest: String,
    /// The manifest.
    manifest: ManifestDoc,
    /// The server's signature, then the pusher's.
    signatures: Vec<api::Signature>,
}

/// The canonical manifest as a JSON object (the fields in the canonical order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDoc {
    files: Vec<ManifestFile>,
    schema: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    path: String,
    sha256: String,
    size: u64,
}

impl ManifestDoc {
    fn of(m: &Manifest) -> Self {
        Self {
            files: m
                .files()
                .iter()
                .map(|f| ManifestFile { path: f.path.to_string(), sha256: f.sha256.clone(), size: f.size })
                .collect(),
            schema: SCHEMA.to_owned(),
        }
    }

    /// The checked manifest these files make.
    fn manifest(&self) -> anyhow::Result<Manifest> {
        if self.schema != SCHEMA {
            bail!("unknown manifest schema {:?} (expected {SCHEMA})", self.schema);
        }
        let entries = self
            .files
            .iter()
            .map(|f| Ok(FileEntry { path: FilePath::parse(&f.path)?, size: f.size, sha256: f.sha256.clone() }))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Manifest::new(entries)?)
    }
}

/// Flags of `cairn verify`.
#[derive(Args, Debug)]
#[command(after_help = "Exit status: 0 everything checks, 1 a difference (each is printed), 2 bad input.\n\n\
                        Examples:\n  \
                        cairn verify team/model:3                      # download every file and check it\n  \
                        cairn verify team/model:3 --dir ./model --public-key cairn-signing.pub \\\n      \
                        --signer-key alice.pub --save-manifest model-3.json\n  \
                        cairn verify --manifest model-3.json --dir ./model --public-key cairn-signing.pub   # offline")]
pub struct VerifyArgs {
    /// namespace/name:VERSION or namespace/name@ALIAS
    #[arg(value_name = "MODEL:VERSION", required_unless_present = "manifest", conflicts_with = "manifest")]
    reference: Option<String>,
    /// Verify offline against a signed manifest saved with --save-manifest (needs --dir and --public-key)
    #[arg(long, value_name = "FILE", requires = "dir")]
    manifest: Option<PathBuf>,
    /// Check the files in this directory (else download the server's copy and check it)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Trust server signatures by this key (SPKI PEM, or the raw key in base64 or hex); repeatable
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Require a valid push signature by this key (a `cairn keygen` .pub file); repeatable
    #[arg(long = "signer-key", value_name = "FILE")]
    signer_keys: Vec<PathBuf>,
    /// Write the signed manifest to FILE once everything checks, for `--manifest` later
    #[arg(long, value_name = "FILE", conflicts_with = "manifest")]
    save_manifest: Option<PathBuf>,
    /// Files hashed at the same time
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
    /// No progress bars
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Flags of `cairn keygen`.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  cairn keygen -o ~/.config/cairn/alice.pem\n  \
                        cairn push team/model ./model --sign-key ~/.config/cairn/alice.pem\n  \
                        cairn verify team/model:4 --signer-key ~/.config/cairn/alice.pem.pub")]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600); the public key goes to FILE.pub
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
}

/// One thing checked.
#[derive(Debug, Clone, Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

/// What was checked, printed as it goes unless the result is wanted as JSON.
#[derive(Debug, Default)]
struct Checks {
    items: Vec<Check>,
    json: bool,
}

impl Checks {
    fn record(&mut self, check: &str, ok: bool, detail: String) {
        if !self.json {
            println!("{:<8}{check}: {detail}", if ok { "ok" } else { "FAILED" });
        }
        self.items.push(Check { check: check.to_owned(), ok, detail });
    }

    fn pass(&mut self, check: &str, detail: String) {
        self.record(check, true, detail);
    }

    fn fail(&mut self, check: &str, detail: String) {
        self.record(check, false, detail);
    }

    fn ok(&self) -> bool {
        self.items.iter().all(|c| c.ok)
    }
}

/// Runs `cairn verify`.
pub async fn run(args: VerifyArgs) -> ExitCode {
    match verify(args).await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

/// `ns/name:3` or `ns/name@alias` → (`ns/name`, `3` | `@alias`).
fn parse_reference(s: &str) -> Result<(String, String), UsageError> {
    let bad = || UsageError(format!("{s:?} must be written namespace/name:VERSION or namespace/name@ALIAS"));
    let (model, version) = if let Some((m, a)) = s.split_once('@') {
        (m, format!("@{a}"))
    } else if let Some((m, v)) = s.split_once(':') {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        (m, v.to_owned())
    } else {
        return Err(bad());
    };
    match model.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') && version != "@" => {
            Ok((model.to_owned(), version))
        }
        _ => Err(bad()),
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let pinned = read_public_keys(&args.public_keys)?;
    let signers = args
        .signer_keys
        .iter()
        .map(|p| read_signer_key(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UsageError(format!("--signer-key: {e}")))?;
    let mut checks = Checks { json: args.json, ..Checks::default() };
    let (doc, manifest) = match (&args.manifest, &args.reference) {
        (Some(file), _) => {
            if pinned.is_empty() {
                bail!(UsageError(
                    "offline verification needs --public-key FILE: the registry's signing key, kept apart from the \
                     registry (nothing else can vouch for the manifest without the network)"
                        .into()
                ));
            }
            let doc = read_signed_manifest(file)?;
            let manifest = doc
                .manifest
                .manifest()
                .map_err(|e| UsageError(format!("{}: the manifest is not valid: {e:#}", file.display())))?;
            let digest = manifest.digest();
            if digest == doc.digest {
                checks.pass("manifest", format!("{} files, digest {digest}", manifest.files().len()));
            } else {
                checks.fail(
                    "manifest",
                    format!("the files listed give digest {digest}, the document says {}", doc.digest),
                );
            }
            check_signatures(&doc.model, doc.version, &digest, &doc.signatures, &pinned, &signers, &mut checks);
            (doc, manifest)
        }
        (None, Some(reference)) => {
            let (model, version) = parse_reference(reference)?;
            let client = super::client()?;
            let trusted = if pinned.is_empty() {
                let published = client.signing_keys().await.context("cannot read the server's signing keys")?;
                let keys: Vec<PublicKey> =
                    published.keys.iter().filter_map(|k| PublicKey::parse(&k.public_key).ok()).collect();
                warn_not_pinned(&format!("{}/.well-known/cairn/signing-keys", client.base_url()), &keys);
                keys
            } else {
                pinned
            };
            let Some((doc, manifest)) = fetch_version(&client, &model, &version, &mut checks).await? else {
                return finish(&checks, None);
            };
            check_signatures(&model, doc.version, &doc.digest, &doc.signatures, &trusted, &signers, &mut checks);
            if args.dir.is_none() {
                download_and_check(&client, &doc, &manifest, args.quiet, &mut checks).await?;
            }
            (doc, manifest)
        }
        (None, None) => bail!(UsageError("name a version (namespace/name:VERSION) or give --manifest FILE".into())),
    };
    if let Some(dir) = &args.dir {
        check_dir(dir, &manifest, usize::from(args.jobs), args.quiet, &mut checks).await?;
    }
    if let Some(path) = &args.save_manifest {
        if checks.ok() {
            let text = serde_json::to_string_pretty(&doc)? + "\n";
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            if !args.json {
                println!("saved the signed manifest to {}", path.display());
            }
        } else {
            eprintln!("not saving {}: the version did not verify", path.display());
        }
    }
    finish(&checks, Some(&doc))
}

/// Prints the JSON result and picks the exit code.
fn finish(checks: &Checks, doc: Option<&SignedManifest>) -> anyhow::Result<ExitCode> {
    let ok = checks.ok();
    if checks.json {
        super::print_json(&serde_json::json!({
            "model": doc.map(|d| d.model.as_str()),
            "version": doc.map(|d| d.version),
            "digest": doc.map(|d| d.digest.as_str()),
            "ok": ok,
            "checks": checks.items,
        }))?;
    } else if ok {
        println!("verified");
    } else {
        let n = checks.items.iter().filter(|c| !c.ok).count();
        println!("NOT VERIFIED: {n} problem(s) above");
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn read_signer_key(path: &Path) -> Result<PublicKey, cairn_audit::KeyError> {
    PublicKey::read(path)
}

fn read_signed_manifest(file: &Path) -> anyhow::Result<SignedManifest> {
    let text = std::fs::read_to_string(file).map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    let doc: SignedManifest = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not a signed manifest: {e}", file.display())))?;
    if doc.format != SIGNED_MANIFEST_FORMAT {
        bail!(UsageError(format!(
            "{}: unknown format {:?} (expected {SIGNED_MANIFEST_FORMAT})",
            file.display(),
            doc.format
        )));
    }
    Ok(doc)
}

/// The version's signatures, file list and canonical manifest from the server, checked
/// against one another. `None` when no manifest could be made of them.
async fn fetch_version(
    client: &Client,
    model: &str,
    version: &str,
    checks: &mut Checks,
) -> anyhow::Result<Option<(SignedManifest, Manifest)>> {
    let sigs = client.version_signatures(model, version).await?;
    if sigs.model != model {
        checks.fail("version", format!("asked for {model}, the server answered for {}", sigs.model));
    }
    if !version.starts_with('@') && version.parse::<i64>().ok() != Some(sigs.version) {
        checks.fail("version", format!("asked for version {version}, the server answered for {}", sigs.version));
    }
    // By number from here on, so an alias that moves cannot mix two versions.
    let number = sigs.version.to_string();
    let listing = client.list_version_files(model, &number).await?;
    let served = client.get_manifest(model, &number).await?;
    let served_digest = format!("sha256:{}", hex::encode(Sha256::digest(&served)));
    let parsed = serde_json::from_slice::<ManifestDoc>(&served)
        .map_err(anyhow::Error::from)
        .and_then(|d| d.manifest())
        .and_then(|m| {
            if m.canonical_json().as_bytes() == served.as_slice() {
                Ok(m)
            } else {
                bail!("it is not in canonical form")
            }
        });
    let manifest = match parsed {
        Ok(m) => m,
        Err(e) => {
            checks.fail("manifest", format!("the manifest the server sent is not valid: {e:#}"));
            return Ok(None);
        }
    };
    if served_digest != sigs.digest {
        checks.fail(
            "manifest",
            format!("the manifest hashes to {served_digest}, the version's digest is {}", sigs.digest),
        );
    } else if listing.digest != sigs.digest {
        checks.fail(
            "manifest",
            format!("the file list names digest {}, the version's is {}", listing.digest, sigs.digest),
        );
    } else if listing.files.len() != manifest.files().len()
        || listing
            .files
            .iter()
            .zip(manifest.files())
            .any(|(l, m)| l.path != m.path.as_str() || l.size != m.size || l.sha256 != m.sha256)
    {
        checks.fail("manifest", "the file list differs from the manifest".into());
    } else {
        checks.pass(
            "manifest",
            format!(
                "{model}:{} has {} files ({}), digest {served_digest}",
                sigs.version,
                manifest.files().len(),
                human_bytes(manifest.total_size())
            ),
        );
    }
    let doc = SignedManifest {
        format: SIGNED_MANIFEST_FORMAT.into(),
        model: model.to_owned(),
        version: sigs.version,
        digest: served_digest,
        manifest: ManifestDoc::of(&manifest),
        signatures: sigs.signatures,
    };
    Ok(Some((doc, manifest)))
}

fn envelope(s: &api::Signature) -> SignatureEnvelope {
    SignatureEnvelope {
        kind: s.kind.clone(),
        statement: s.statement.clone(),
        key_id: s.key_id.clone(),
        public_key: s.public_key.clone(),
        signature: s.signature.clone(),
    }
}

/// Checks every signature against this model, version and digest: each must be valid;
/// one server signature must be by a `trusted` key; each of `signers` must have signed the
/// push.
fn check_signatures(
    model: &str,
    version: i64,
    digest: &str,
    signatures: &[api::Signature],
    trusted: &[PublicKey],
    signers: &[PublicKey],
    checks: &mut Checks,
) {
    let mut server_ok = false;
    let mut pushers: Vec<PublicKey> = Vec::new();
    for s in signatures {
        let env = envelope(s);
        match s.kind.as_str() {
            "server" => {
                let what = "server signature";
                let statement = match serde_json::from_str::<VersionStatement>(&s.statement) {
                    Ok(st) => st,
                    Err(e) => {
                        checks.fail(what, format!("by {}: the statement is not a version statement: {e}", s.key_id));
                        continue;
                    }
                };
                if statement.r#type != VERSION_TYPE
                    || statement.model != model
                    || statement.version != version
                    || statement.manifest_digest != digest
                {
                    checks.fail(
                        what,
                        format!(
                            "by {}: it is about {}:{} with digest {} ({}), not {model}:{version} with digest {digest}",
                            s.key_id, statement.model, statement.version, statement.manifest_digest, statement.r#type
                        ),
                    );
                    continue;
                }
                let Some(key) = env.verify_self() else {
                    checks.fail(what, format!("by {}: the signature does not verify", s.key_id));
                    continue;
                };
                if trusted.contains(&key) {
                    server_ok = true;
                    checks.pass(what, format!("by {} over {model}:{version} {digest}", key.key_id()));
                } else if !checks.json {
                    eprintln!("note: a server signature by {}, a key that is not trusted here", key.key_id());
                }
            }
            "user" => {
                let what = "push signature";
                let statement = match serde_json::from_str::<PushStatement>(&s.statement) {
                    Ok(st) => st,
                    Err(e) => {
                        checks.fail(what, format!("by {}: the statement is not a push statement: {e}", s.key_id));
                        continue;
                    }
                };
                if statement.r#type != PUSH_TYPE || statement.model != model || statement.manifest_digest != digest {
                    checks.fail(
                        what,
                        format!(
                            "by {}: it is about {} with digest {} ({}), not {model} with digest {digest}",
                            s.key_id, statement.model, statement.manifest_digest, statement.r#type
                        ),
                    );
                    continue;
                }
                match env.verify_self() {
                    Some(key) => {
                        checks.pass(what, format!("by {} over {model} {digest}", key.key_id()));
                        pushers.push(key);
                    }
                    None => checks.fail(what, format!("by {}: the signature does not verify", s.key_id)),
                }
            }
            other => checks.fail("signature", format!("by {}: unknown kind {other:?}", s.key_id)),
        }
    }
    if !server_ok {
        let ids: Vec<String> = trusted.iter().map(PublicKey::key_id).collect();
        checks.fail(
            "server signature",
            format!(
                "no valid server signature by a trusted key ({})",
                if ids.is_empty() { "none given".to_owned() } else { ids.join(", ") }
            ),
        );
    }
    for signer in signers {
        if !pushers.contains(signer) {
            checks.fail("signer", format!("{} did not sign this push", signer.key_id()));
        }
    }
}

/// Downloads every file of the version and checks its size and SHA-256 against the
/// manifest, streaming (nothing is written to disk).
async fn download_and_check(
    client: &Client,
    doc: &SignedManifest,
    manifest: &Manifest,
    quiet: bool,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let bars = Bars::new(quiet || checks.json);
    let total = bars.total("downloading", manifest.total_size());
    let version = doc.version.to_string();
    let mut bad = 0usize;
    for entry in manifest.files() {
        let mut dl = client.download_file(&doc.model, &version, &entry.path, 0).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = dl.chunk().await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            total.inc(chunk.len() as u64);
        }
        let sha = hex::encode(hasher.finalize());
        if size != entry.size || sha != entry.sha256 {
            bad += 1;
            total.suspend(|| {
                checks.fail(
                    entry.path.as_str(),
                    format!(
                        "the server's copy has {size} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                        entry.size, entry.sha256
                    ),
                );
            });
        }
    }
    total.finish_and_clear();
    if bad == 0 {
        checks.pass(
            "files",
            format!(
                "the server's {} files ({}) match the manifest",
                manifest.files().len(),
                human_bytes(manifest.total_size())
            ),
        );
    }
    Ok(())
}

/// Checks that `dir` holds exactly the manifest's files: none missing, none changed, none
/// extra.
async fn check_dir(
    dir: &Path,
    manifest: &Manifest,
    jobs: usize,
    quiet: bool,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let root = dir.to_path_buf();
    let walked = tokio::task::spawn_blocking(move || tree::walk(&root))
        .await
        .context("the directory walk stopped")?
        .map_err(|e| UsageError(format!("cannot check {}: {e:#}", dir.display())))?;
    for s in &walked.skipped {
        if !checks.json {
            eprintln!("note: ignored {}: {}", s.path, s.reason);
        }
    }
    let local: BTreeMap<&str, &LocalFile> = walked.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let expected: BTreeSet<&str> = manifest.files().iter().map(|f| f.path.as_str()).collect();
    let mut bad = 0usize;
    let mut to_hash: Vec<(LocalFile, &FileEntry)> = Vec::new();
    for entry in manifest.files() {
        match local.get(entry.path.as_str()) {
            None => {
                bad += 1;
                checks.fail(entry.path.as_str(), "missing".into());
            }
            Some(f) if f.size != entry.size => {
                bad += 1;
                checks
                    .fail(entry.path.as_str(), format!("changed: {} bytes, the manifest says {}", f.size, entry.size));
            }
            Some(f) => to_hash.push(((*f).clone(), entry)),
        }
    }
    for f in &walked.files {
        if !expected.contains(f.path.as_str()) {
            bad += 1;
            checks.fail(f.path.as_str(), format!("extra: {} bytes that are not part of the version", f.size));
        }
    }
    let bars = Bars::new(quiet || checks.json);
    let files: Vec<LocalFile> = to_hash.iter().map(|(f, _)| f.clone()).collect();
    let bar = bars.total("hashing", files.iter().map(|f| f.size).sum());
    let hashed = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || super::push::hash_all(&files, jobs, &bar))
            .await
            .context("hashing stopped")??
    };
    bar.finish_and_clear();
    for ((_, entry), sha) in to_hash.iter().zip(&hashed) {
        if *sha != entry.sha256 {
            bad += 1;
            checks.fail(entry.path.as_str(), format!("changed: SHA-256 {sha}, the manifest says {}", entry.sha256));
        }
    }
    if bad == 0 {
        checks.pass(
            "files",
            format!(
                "{} holds exactly the {} files ({}) of the manifest",
                dir.display(),
                manifest.files().len(),
                human_bytes(manifest.total_size())
            ),
        );
    }
    Ok(())
}

/// Runs `cairn keygen`.
pub fn keygen(args: KeygenArgs) -> ExitCode {
    match write_key_pair(&args.output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

fn write_key_pair(path: &Path) -> anyhow::Result<()> {
    let mut public_path = path.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    for p in [path, public_path.as_path()] {
        if std::fs::symlink_metadata(p).is_ok() {
            bail!(UsageError(format!("{} already exists: not overwriting a key", p.display())));
        }
    }
    let key = cairn_audit::SigningKey::generate();
    let pem = key.to_pem()?;
    write_new(path, pem.as_bytes(), true)?;
    if let Err(e) = write_new(&public_path, key.public().to_pem().as_bytes(), false) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    println!(
        "Wrote the private key to {} (keep it secret) and the public key to {}",
        path.display(),
        public_path.display()
    );
    println!("Key id: {}", key.public().key_id());
    Ok(())
}

/// Writes a file that must not exist yet; a private one readable by its owner only.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(|e| UsageError(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_audit::SigningKey;

    #[test]
    fn references() {
        assert_eq!(parse_reference("a/b:3").unwrap(), ("a/b".into(), "3".into()));
        assert_eq!(parse_reference("a/b@prod").unwrap(), ("a/b".into(), "@prod".into()));
        for bad in ["a/b", "a", "a/b:", "a/b:x", "a/b@", "/b:1", "a/:1", "a/b/c:1"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }

    fn sig<T: Serialize>(kind: &str, st: &T, key: &SigningKey) -> api::Signature {
        let e = SignatureEnvelope::sign(kind, st, key);
        api::Signature {
            kind: e.kind,
            statement: e.statement,
            key_id: e.key_id,
            public_key: e.public_key,
            signature: e.signature,
        }
    }

    fn failures(c: &Checks) -> Vec<String> {
        c.items.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.check, c.detail)).collect()
    }

    #[test]
    fn signatures_must_match_the_version_and_be_trusted() {
        let (server, alice, bob) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
        let digest = format!("sha256:{}", "a".repeat(64));
        let sigs = vec![
            sig("server", &VersionStatement::new("t/m", 2, &digest, 1), &server),
            sig("user", &PushStatement::new("t/m", &digest), &alice),
        ];
        fn run(
            model: &str,
            version: i64,
            digest: &str,
            sigs: &[api::Signature],
            trusted: &[PublicKey],
            signers: &[PublicKey],
        ) -> Vec<String> {
            let mut c = Checks { json: true, ..Checks::default() };
            check_signatures(model, version, digest, sigs, trusted, signers, &mut c);
            failures(&c)
        }
        let (sp, ap, bp) = (server.public(), alice.public(), bob.public());
        assert!(run("t/m", 2, &digest, &sigs, &[sp], &[ap]).is_empty());
        assert_eq!(run("t/m", 2, &digest, &sigs, &[bp], &[]).len(), 1, "an untrusted server key");
        assert_eq!(run("t/m", 2, &digest, &sigs, &[sp], &[bp]).len(), 1, "bob did not sign");
        assert!(!run("t/m", 3, &digest, &sigs, &[sp], &[]).is_empty(), "another version");
        assert!(!run("t/x", 2, &digest, &sigs, &[sp], &[]).is_empty(), "another model");
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(!run("t/m", 2, &other, &sigs, &[sp], &[]).is_empty(), "another digest");
        let mut forged = sigs.clone();
        forged[1].statement = forged[1].statement.replace("t/m", "t/m ");
        assert!(!run("t/m", 2, &digest, &forged, &[sp], &[]).is_empty(), "an edited statement");
    }

    #[test]
    fn signed_manifests_round_trip_and_refuse_unknown_fields() {
        let m =
            Manifest::new(vec![FileEntry { path: FilePath::parse("a/b").unwrap(), size: 3, sha256: "c".repeat(64) }])
                .unwrap();
        let doc = ManifestDoc::of(&m);
        assert_eq!(serde_json::to_string(&doc).unwrap(), m.canonical_json(), "the object is the canonical manifest");
        assert_eq!(doc.manifest().unwrap(), m);
        let text = serde_json::to_string(&doc).unwrap().replace("\"size\":3", "\"size\":3,\"x\":1");
        assert!(serde_json::from_str::<ManifestDoc>(&text).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn keygen_writes_a_private_key_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k.pem");
        write_key_pair(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let key = SigningKey::from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(PublicKey::read(&d.path().join("k.pem.pub")).unwrap(), key.public());
        let err = write_key_pair(&path).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
    }
}
