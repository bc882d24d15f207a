//! `cairn pull ns/name[:version|@alias]`: download a version's files into a directory.
//!
//! A file already there with the right size and SHA-256 is kept. Otherwise it is downloaded
//! into `<path>.cairn-partial` (resumed from the partial's length after re-hashing what it
//! holds), verified while it streams, synced, and renamed into place only when its SHA-256
//! matches. A mismatch removes the partial and fails the pull (exit 1).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_api_types as api;
use cairn_client::{Client, ListOptions};
use cairn_core::manifest::{FileEntry, FilePath, Manifest};
use clap::Args;
use indicatif::ProgressBar;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::UsageError;
use crate::progress::{Bars, human_bytes};
use crate::tree;

/// Flags of `cairn pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// namespace/name (the newest version), namespace/name:VERSION or namespace/name@ALIAS
    #[arg(value_name = "MODEL[:VERSION|@ALIAS]")]
    reference: String,
    /// Directory to write the files into [default: ./NAME]
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Files downloaded at the same time
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
    /// No progress bars
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Runs `cairn pull`.
pub async fn run(args: PullArgs) -> ExitCode {
    match pull(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// A file whose bytes do not match its SHA-256 (exit 1).
#[derive(Debug)]
struct Mismatch {
    path: String,
    expected: String,
    got: String,
    size: u64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: downloaded {} bytes with SHA-256 {}, expected {}; the partial download was removed, \
             run the pull again",
            self.path, self.size, self.got, self.expected
        )
    }
}

impl std::error::Error for Mismatch {}

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// `ns/name`, `ns/name:3`, `ns/name@alias` → (`ns/name`, `None` | `3` | `@alias`).
fn parse_reference(s: &str) -> Result<(String, Option<String>), UsageError> {
    let bad =
        || UsageError(format!("{s:?} must be written namespace/name, namespace/name:VERSION or namespace/name@ALIAS"));
    let (model, version) = if let Some((m, a)) = s.split_once('@') {
        if a.is_empty() {
            return Err(bad());
        }
        (m, Some(format!("@{a}")))
    } else if let Some((m, v)) = s.split_once(':') {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        (m, Some(v.to_owned()))
    } else {
        (s, None)
    };
    match model.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((model.to_owned(), version))
        }
        _ => Err(bad()),
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Already there with the right bytes.
    Present,
    /// Downloaded (perhaps resumed).
    Downloaded,
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let (model, version) = parse_reference(&args.reference)?;
    let client = super::client()?;
    let bars = Bars::new(args.quiet);

    // Resolve an alias (or "newest") to a number once, so every request reads the same
    // version even if the alias moves during the pull.
    let number = match version {
        Some(v) => client.get_version(&model, &v).await?.version,
        None => {
            let opts = ListOptions { limit: Some(1), ..Default::default() };
            let list = client.list_versions(&model, &opts).await?;
            match list.versions.first() {
                Some(v) => v.version,
                None => bail!(UsageError(format!("{model} has no versions yet"))),
            }
        }
    };
    let out = match args.output {
        Some(o) => o,
        None => PathBuf::from(model.rsplit('/').next().unwrap_or(&model)),
    };
    let version = number.to_string();
    let Pulled { listing, manifest, out, present, present_bytes, downloaded, downloaded_bytes } =
        pull_into(&client, &model, number, &out, args.jobs, &bars).await?;

    if args.json {
        let summary = serde_json::json!({
            "model": model,
            "version": number,
            "digest": listing.digest,
            "directory": out,
            "files": manifest.files().len(),
            "size": manifest.total_size(),
            "downloaded": downloaded,
            "downloaded_bytes": downloaded_bytes,
            "already_present": present,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        if present > 0 {
            bars.println(&format!("{present} files ({}) already present, kept", human_bytes(present_bytes)));
        }
        println!(
            "Pulled {model}:{version} into {} ({} files, {} downloaded), digest {}",
            out.display(),
            manifest.files().len(),
            human_bytes(downloaded_bytes),
            listing.digest
        );
    }
    Ok(())
}

/// What [`pull_into`] did.
pub struct Pulled {
    /// The server's file list.
    pub listing: api::VersionFiles,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The directory, canonical.
    pub out: PathBuf,
    /// Files already there and kept.
    pub present: u64,
    /// Their bytes.
    pub present_bytes: u64,
    /// Files downloaded.
    pub downloaded: u64,
    /// Their bytes.
    pub downloaded_bytes: u64,
}

/// Downloads version `number` of `model` into `out` (created if needed), `jobs` files at a
/// time, each verified while it streams, and checks the whole tree against the version's
/// digest. Files already there with the right digest are kept.
pub async fn pull_into(
    client: &Client,
    model: &str,
    number: i64,
    out: &Path,
    jobs: u16,
    bars: &Bars,
) -> anyhow::Result<Pulled> {
    let version = number.to_string();
    let listing = client.list_version_files(model, &version).await?;
    let manifest = checked_manifest(&listing)?;

    tokio::fs::create_dir_all(out).await.with_context(|| format!("cannot create {}", out.display()))?;
    let out = out.canonicalize().with_context(|| format!("cannot resolve {}", out.display()))?;

    let total = bars.total("downloading", manifest.total_size());
    let sem = Arc::new(tokio::sync::Semaphore::new(usize::from(jobs)));
    let mut tasks = tokio::task::JoinSet::new();
    for entry in manifest.files().iter().cloned() {
        let permit = sem.clone().acquire_owned().await.context("the pull was stopped")?;
        let (client, model, version, out, total, bars) =
            (client.clone(), model.to_owned(), version.clone(), out.clone(), total.clone(), bars.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let r = fetch_file(&client, &model, &version, &out, &entry, &total, &bars).await;
            (entry, r)
        });
    }
    let (mut present, mut present_bytes, mut downloaded, mut downloaded_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut failures: Vec<anyhow::Error> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (entry, r) = done.context("a download task stopped")?;
        match r {
            Ok(Outcome::Present) => {
                present += 1;
                present_bytes += entry.size;
            }
            Ok(Outcome::Downloaded) => {
                downloaded += 1;
                downloaded_bytes += entry.size;
            }
            Err(e) => {
                bars.println(&format!("error: {e:#}"));
                failures.push(e);
            }
        }
    }
    total.finish_and_clear();
    if let Some(first) = failures.into_iter().next() {
        // The first failure decides the exit code; all were printed above.
        return Err(first.context(format!("the pull of {model}:{version} is incomplete")));
    }

    // The whole tree against the version digest: the manifest the server serves must be
    // exactly the canonical form of the files just verified.
    let served = client.get_manifest(model, &version).await?;
    let served_digest = format!("sha256:{}", hex::encode(Sha256::digest(&served)));
    if served != manifest.canonical_json().as_bytes() || served_digest != listing.digest {
        bail!(
            "the manifest of {model}:{version} ({served_digest}) does not match its files ({}); the files on disk \
             are verified one by one but do not form the version the server describes",
            manifest.digest()
        );
    }

    Ok(Pulled { listing, manifest, out, present, present_bytes, downloaded, downloaded_bytes })
}

/// The server's file list as a checked manifest whose digest is the one it announced.
fn checked_manifest(listing: &api::VersionFiles) -> anyhow::Result<Manifest> {
    let entries = listing
        .files
        .iter()
        .map(|f| {
            let path = FilePath::parse(&f.path).with_context(|| "the server sent a file path that is not allowed")?;
            Ok(FileEntry { path, size: f.size, sha256: f.sha256.clone() })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = Manifest::new(entries).context("the server sent a file list that is not a valid manifest")?;
    if manifest.digest() != listing.digest {
        bail!("the server's file list gives digest {}, not the {} it announced", manifest.digest(), listing.digest);
    }
    Ok(manifest)
}

async fn fetch_file(
    client: &Client,
    model: &str,
    version: &str,
    out: &Path,
    entry: &FileEntry,
    total: &ProgressBar,
    bars: &Bars,
) -> anyhow::Result<Outcome> {
    let dest = tree::destination(out, &entry.path)?;
    let parent = dest.parent().context("a file path always has a parent")?.to_path_buf();
    tokio::fs::create_dir_all(&parent).await.with_context(|| format!("cannot create {}", parent.display()))?;
    tree::check_inside(out, &parent)?;

    if already_there(&dest, entry).await? {
        total.inc(entry.size);
        return Ok(Outcome::Present);
    }
    let partial = tree::partial_path(&dest);
    let bar = bars.file(entry.path.as_str(), entry.size);
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match download(client, model, version, entry, &partial, total, &bar).await {
            Ok(()) => break,
            Err(e) => {
                // Take back what this file counted: the next attempt re-reads the partial.
                total.set_position(total.position().saturating_sub(bar.position()));
                bar.set_position(0);
                let transient = e.downcast_ref::<cairn_client::ClientError>().is_some_and(|c| c.is_transient());
                if !transient || attempt == ATTEMPTS {
                    bar.finish_and_clear();
                    return Err(e);
                }
                bars.println(&format!("retrying {} in {pause:?}: {e:#}", entry.path));
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
    bar.finish_and_clear();
    let f = tokio::fs::File::open(&partial).await.with_context(|| format!("cannot open {}", partial.display()))?;
    f.sync_all().await.with_context(|| format!("cannot sync {}", partial.display()))?;
    drop(f);
    tokio::fs::rename(&partial, &dest).await.with_context(|| format!("cannot move {} into place", dest.display()))?;
    sync_dir(&parent).await;
    Ok(Outcome::Downloaded)
}

/// Whether `dest` already holds exactly the file's bytes.
async fn already_there(dest: &Path, entry: &FileEntry) -> anyhow::Result<bool> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(m) if m.is_file() && m.len() == entry.size => {
            let d = dest.to_path_buf();
            let (sha, _) = tokio::task::spawn_blocking(move || tree::hash_file(&d, |_| {})).await??;
            Ok(sha == entry.sha256)
        }
        Ok(m) if m.is_dir() => {
            bail!("{} is a directory, where the version has a file", dest.display())
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dest.display())),
    }
}

/// Where a download starts: the hash state and length of the partial's bytes, or a fresh
/// start when there is no partial or it is longer than the file (then it is truncated).
fn resume_point(partial: &Path, size: u64) -> anyhow::Result<(Sha256, u64)> {
    let file = match std::fs::File::open(partial) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Sha256::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", partial.display())),
    };
    let len = file.metadata()?.len();
    if len > size {
        std::fs::remove_file(partial).with_context(|| format!("cannot remove {}", partial.display()))?;
        return Ok((Sha256::new(), 0));
    }
    let mut hasher = Sha256::new();
    let mut reader = std::io::Read::take(file, len);
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n =
            std::io::Read::read(&mut reader, &mut buf).with_context(|| format!("cannot read {}", partial.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copied += n as u64;
    }
    Ok((hasher, copied))
}

/// Brings the partial up to the file's full length, then checks its SHA-256 over all of it.
async fn download(
    client: &Client,
    model: &str,
    version: &str,
    entry: &FileEntry,
    partial: &Path,
    total: &ProgressBar,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let p = partial.to_path_buf();
    let size = entry.size;
    let (mut hasher, mut have) = tokio::task::spawn_blocking(move || resume_point(&p, size)).await??;
    bar.set_position(have);
    total.inc(have);
    if have == 0 {
        // Also an empty file: the partial must exist to be renamed into place.
        tokio::fs::File::create(partial).await.with_context(|| format!("cannot write {}", partial.display()))?;
    }
    if have < entry.size {
        let mut dl = client.download_file(model, version, &entry.path, have).await?;
        if dl.offset != have {
            // The server sent the whole file: start over.
            total.set_position(total.position().saturating_sub(have));
            hasher = Sha256::new();
            have = 0;
            bar.set_position(0);
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(have == 0)
            .open(partial)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        if have > 0 {
            use tokio::io::AsyncSeekExt;
            f.seek(std::io::SeekFrom::Start(have)).await?;
        }
        while let Some(chunk) = dl.chunk().await? {
            if have + chunk.len() as u64 > entry.size {
                drop(f);
                let _ = tokio::fs::remove_file(partial).await;
                bail!("the server sent more than the {} bytes of {}", entry.size, entry.path);
            }
            f.write_all(&chunk).await.with_context(|| format!("cannot write {}", partial.display()))?;
            hasher.update(&chunk);
            have += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
            total.inc(chunk.len() as u64);
        }
        f.flush().await?;
    }
    if have != entry.size {
        bail!(cairn_client::ClientError::Protocol(format!(
            "the download of {} ended after {have} of {} bytes",
            entry.path, entry.size
        )));
    }
    let got = hex::encode(hasher.finalize());
    if got != entry.sha256 {
        let _ = tokio::fs::remove_file(partial).await;
        bail!(Mismatch { path: entry.path.to_string(), expected: entry.sha256.clone(), got, size: have });
    }
    Ok(())
}

/// Makes a rename durable (best effort: not every platform can sync a directory).
async fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(parse_reference("a/b").unwrap(), ("a/b".into(), None));
        assert_eq!(parse_reference("a/b:3").unwrap(), ("a/b".into(), Some("3".into())));
        assert_eq!(parse_reference("a/b@prod").unwrap(), ("a/b".into(), Some("@prod".into())));
        for bad in ["a", "a/b:", "a/b:x", "a/b@", "/b", "a/", "a/b/c", "a/b:-1"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn resume_point_hashes_the_partial() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.cairn-partial");
        // No partial: start at 0.
        let (h, n) = resume_point(&p, 10).unwrap();
        assert_eq!((hex::encode(h.finalize()), n), (sha(b""), 0));
        // A partial: its bytes are hashed and the download goes on from its end.
        std::fs::write(&p, b"hello").unwrap();
        let (mut h, n) = resume_point(&p, 10).unwrap();
        assert_eq!(n, 5);
        h.update(b"world");
        assert_eq!(hex::encode(h.finalize()), sha(b"helloworld"));
        // A partial longer than the file cannot be a prefix of it: removed, start over.
        std::fs::write(&p, b"hello world, longer").unwrap();
        let (_, n) = resume_point(&p, 10).unwrap();
        assert_eq!(n, 0);
        assert!(!p.exists());
    }

    #[tokio::test]
    async fn a_corrupt_complete_partial_is_removed_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let partial = d.path().join("f.cairn-partial");
        std::fs::write(&partial, b"hellx").unwrap();
        let entry = FileEntry { path: FilePath::parse("f").unwrap(), size: 5, sha256: sha(b"hello") };
        // The partial is complete, so no request is made: the client can point anywhere.
        let client = Client::new("http://127.0.0.1:9", None).unwrap();
        let (total, bar) = (ProgressBar::hidden(), ProgressBar::hidden());
        let err = download(&client, "a/b", "1", &entry, &partial, &total, &bar).await.unwrap_err();
        assert!(err.downcast_ref::<Mismatch>().is_some(), "{err:#}");
        assert!(!partial.exists());
        // The right bytes pass.
        std::fs::write(&partial, b"hello").unwrap();
        download(&client, "a/b", "1", &entry, &partial, &total, &bar).await.unwrap();
        assert!(partial.exists());
    }

    #[tokio::test]
    async fn existing_files_are_checked_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("f");
        let entry = FileEntry { path: FilePath::parse("f").unwrap(), size: 5, sha256: sha(b"hello") };
        assert!(!already_there(&dest, &entry).await.unwrap());
        std::fs::write(&dest, b"hellx").unwrap();
        assert!(!already_there(&dest, &entry).await.unwrap());
        std::fs::write(&dest, b"hello").unwrap();
        assert!(already_there(&dest, &entry).await.unwrap());
    }

    #[test]
    fn manifests_from_the_server_are_checked() {
        let files = vec![api::FileInfo { path: "a".into(), size: 5, sha256: sha(b"hello") }];
        let m = Manifest::new(vec![FileEntry { path: FilePath::parse("a").unwrap(), size: 5, sha256: sha(b"hello") }])
            .unwrap();
        let good = api::VersionFiles { digest: m.digest(), files: files.clone() };
        assert_eq!(checked_manifest(&good).unwrap(), m);
        let wrong_digest = api::VersionFiles { digest: format!("sha256:{}", "0".repeat(64)), files };
        assert!(checked_manifest(&wrong_digest).is_err());
        let escape = api::VersionFiles {
            digest: good.digest.clone(),
            files: vec![api::FileInfo { path: "../etc/passwd".into(), size: 5, sha256: sha(b"hello") }],
        };
        assert!(checked_manifest(&escape).is_err());
    }
}
