//! `cairn push ns/name ./dir`: hash a directory, upload only the parts the server lacks,
//! commit a version. Re-running the same command after an interruption resumes it: the
//! server reports the parts it already holds.
//!
//! With `--sign-key`, the pusher signs what they push (the model and the manifest digest)
//! with their own Ed25519 key; the server checks the signature and keeps it beside its own,
//! so `cairn verify --signer-key` can later show that the key holder vouched for these bytes under
//! this model name (the statement does not name the version, and anyone may copy a published
//! signature onto another push of the same bytes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_api_types as api;
use cairn_audit::SigningKey;
use cairn_audit::statement::{PushStatement, SignatureEnvelope};
use cairn_client::{Client, ClientError, PartSpec, part_range};
use cairn_core::manifest::{FileEntry, Manifest};
use clap::Args;
use indicatif::ProgressBar;

use super::UsageError;
use crate::progress::{Bars, human_bytes};
use crate::tree::{self, LocalFile};

/// Flags of `cairn push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// namespace/name of an existing model
    model: String,
    /// The directory whose files become the new version
    dir: PathBuf,
    /// Tag the version, KEY=VALUE (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Point this alias at the new version (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    aliases: Vec<String>,
    /// Description of the version
    #[arg(long, default_value = "")]
    description: String,
    /// Where the version came from (URI)
    #[arg(long, default_value = "")]
    source: String,
    /// Training run id
    #[arg(long, default_value = "")]
    run_id: String,
    /// Metadata as a JSON object, or @FILE to read it from a file
    #[arg(long)]
    metadata: Option<String>,
    /// Files hashed and parts uploaded at the same time
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Attach this model card to the new version (card source .yaml, canonical JSON or a
    /// Hugging Face README.md); it is checked before anything is uploaded
    #[arg(long, value_name = "FILE")]
    card: Option<PathBuf>,
    /// Evaluation results merged into the card (.json, .yaml, .csv; repeatable; needs --card)
    #[arg(long = "eval", value_name = "RESULTS", requires = "card")]
    eval: Vec<PathBuf>,
    /// Semantic version label of the new version (e.g. 1.4.2)
    #[arg(long, value_name = "X.Y.Z")]
    semver: Option<String>,
    /// The code commit the model was built from
    #[arg(long, value_name = "SHA", default_value = "")]
    code_commit: String,
    /// The training job that produced it
    #[arg(long, value_name = "ID", default_value = "")]
    training_job: String,
    #[command(flatten)]
    lineage: super::lineage::LineageFlags,
    /// Sign the push with this Ed25519 private key (PKCS#8 PEM, made by `cairn keygen`)
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Print the new version as JSON on stdout
    #[arg(long)]
    json: bool,
    /// No progress bars
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Runs `cairn push`.
pub async fn run(args: PushArgs) -> ExitCode {
    match push(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// How often a part is tried before the push gives up, and the first pause between tries.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

async fn push(args: PushArgs) -> anyhow::Result<()> {
    let tags = super::parse_tags(&args.tags)?;
    let metadata = super::parse_metadata(args.metadata.as_deref())?;
    let lineage = args.lineage.inputs()?;
    // Read before any work, so a wrong key file fails at once.
    let sign_key = args.sign_key.as_deref().map(read_sign_key).transpose()?;
    // A broken card or results file fails before any upload.
    let card = match &args.card {
        Some(path) => {
            let policy = super::governance::input_policy()?;
            let mut put = super::governance::load_card(path, &policy)?;
            put.results = super::governance::merge_results(&args.eval, &policy)?;
            Some(put)
        }
        None => None,
    };
    let client = super::client()?;
    let bars = Bars::new(args.quiet);
    let jobs = usize::from(args.jobs);

    let dir = args.dir.clone();
    let walked = tokio::task::spawn_blocking(move || tree::walk(&dir))
        .await
        .context("the directory walk stopped")?
        .map_err(|e| UsageError(format!("{e:#}")))?;
    for s in &walked.skipped {
        bars.println(&format!("skipped {}: {}", s.path, s.reason));
    }
    let files = walked.files;
    let total: u64 = files.iter().map(|f| f.size).sum();

    // Hash every file, `jobs` at a time, off the async workers.
    let bar = bars.total("hashing", total);
    let hashed = {
        let (files, bar) = (files.clone(), bar.clone());
        tokio::task::spawn_blocking(move || hash_all(&files, jobs, &bar)).await.context("hashing stopped")??
    };
    bar.finish_and_clear();
    let entries: Vec<FileEntry> = files
        .iter()
        .zip(&hashed)
        .map(|(f, sha)| FileEntry { path: f.path.clone(), size: f.size, sha256: sha.clone() })
        .collect();
    let manifest =
        Manifest::new(entries).map_err(|e| UsageError(format!("cannot push {}: {e}", args.dir.display())))?;
    let digest = manifest.digest();

    let request = api::UploadRequest {
        files: manifest
            .files()
            .iter()
            .map(|f| api::FileInfo { path: f.path.to_string(), size: f.size, sha256: f.sha256.clone() })
            .collect(),
    };
    let status = retry(|| client.create_upload(&args.model, &request)).await.map_err(|e| match e.code() {
        Some("not_found") => anyhow::Error::new(e)
            .context(format!("cannot push to {}: create the model first with `cairn models create`", args.model)),
        _ => anyhow::Error::new(e).context(format!("cannot start the upload to {}", args.model)),
    })?;

    // `manifest.files()` is sorted by path and so is `files`: a zip pairs each entry with
    // its own file. Checked, because a mismatch would send the wrong bytes.
    if !manifest.files().iter().zip(&files).all(|(e, f)| e.path == f.path) {
        bail!("internal error: the hashed files and the manifest are not in the same order");
    }
    // One local file per distinct digest is enough to send its bytes.
    let by_sha: HashMap<&str, &LocalFile> =
        manifest.files().iter().zip(&files).map(|(e, f)| (e.sha256.as_str(), f)).collect();
    let present: HashSet<&str> = status.blobs.iter().filter(|b| b.present).map(|b| b.sha256.as_str()).collect();
    let (mut skipped_files, mut skipped_bytes) = (0u64, 0u64);
    for f in manifest.files() {
        if present.contains(f.sha256.as_str()) {
            skipped_files += 1;
            skipped_bytes += f.size;
        }
    }
    if skipped_files > 0 {
        bars.println(&format!("{skipped_files} files ({}) already on the server, skipped", human_bytes(skipped_bytes)));
    }

    let work = plan(&status, &by_sha)?;
    if work.resumed_parts > 0 {
        bars.println(&format!(
            "resuming: {} parts ({}) already uploaded",
            work.resumed_parts,
            human_bytes(work.resumed_bytes)
        ));
    }
    upload(&client, &status, work.parts, &bars, jobs).await?;

    let signatures = sign_key.iter().map(|key| sign_push(&args.model, &digest, key)).collect();
    let commit = api::CommitRequest {
        description: args.description,
        source: args.source,
        run_id: args.run_id,
        metadata,
        tags,
        aliases: args.aliases,
        signatures,
        semver: args.semver,
        code_commit: args.code_commit,
        training_job: args.training_job,
        lineage,
    };
    let version = retry(|| client.commit_upload(&status.upload_id, &commit)).await?;
    if !version.digest.is_empty() && version.digest != digest {
        bail!(
            "the server recorded digest {} for {}:{}, but the files pushed give {digest}",
            version.digest,
            version.model,
            version.version
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&version)?);
    } else {
        println!(
            "Pushed {}:{} ({} files, {}), digest {digest}",
            version.model,
            version.version,
            manifest.files().len(),
            human_bytes(manifest.total_size())
        );
        if let Some(key) = &sign_key {
            println!("Signed by {}", key.public().key_id());
        }
        // What artifact scanning found; a push never fails on it (policies decide).
        if let Ok(scan) = client.version_scan(&version.model, &version.version.to_string()).await
            && scan.summary.scanned
        {
            println!("{}", super::scan::one_line(&scan, &format!("{}:{}", version.model, version.version)));
        }
    }
    if let Some(put) = card {
        let reference = format!("{}:{}", version.model, version.version);
        match client.put_card(&version.model, &version.version.to_string(), &put).await {
            Ok(info) if !args.json => {
                println!("Attached card {} ({})", info.source_name, info.digest);
                super::card::print_completeness(&info);
            }
            Ok(_) => {}
            Err(e) => {
                let mut attach = format!(
                    "cairn card attach {reference} {}",
                    args.card.as_deref().unwrap_or(std::path::Path::new("CARD")).display()
                );
                for r in &args.eval {
                    attach.push_str(&format!(" --eval {}", r.display()));
                }
                return Err(anyhow::Error::new(e)
                    .context(format!("{reference} was pushed, but without its card; attach it with `{attach}`")));
            }
        }
    }
    Ok(())
}

/// Reads the pusher's private key (`--sign-key`); a bad file is the user's to fix (exit 2).
fn read_sign_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read the signing key {}: {e}", path.display())))?;
    SigningKey::from_pem(&text)
        .map_err(|e| UsageError(format!("{}: {e} (make one with `cairn keygen -o FILE`)", path.display())).into())
}

/// The pusher's signature over `{"type":"cairn.push/v1","model":…,"manifest_digest":…}`.
fn sign_push(model: &str, digest: &str, key: &SigningKey) -> api::Signature {
    let env = SignatureEnvelope::sign("user", &PushStatement::new(model, digest), key);
    api::Signature {
        kind: env.kind,
        statement: env.statement,
        key_id: env.key_id,
        public_key: env.public_key,
        signature: env.signature,
    }
}

/// Hashes `files` on `jobs` threads; the digests come back in the order of `files`.
pub(crate) fn hash_all(files: &[LocalFile], jobs: usize, bar: &ProgressBar) -> anyhow::Result<Vec<String>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; files.len()]);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.min(files.len()).max(1))
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else { return Ok(()) };
                        let (sha, size) = tree::hash_file(&f.disk, |n| bar.inc(n))?;
                        if size != f.size {
                            bail!("{} changed while it was read ({} bytes, then {size})", f.path, f.size);
                        }
                        results.lock().expect("no worker panics while holding the lock")[i] = Some(sha);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let results = results.into_inner().expect("all workers are done");
    Ok(results.into_iter().map(|r| r.expect("every index was hashed")).collect())
}

/// One part to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartJob {
    sha256: String,
    blob_size: u64,
    part: u64,
    len: u64,
    /// Path in the version (for messages and the file bar).
    name: String,
    disk: PathBuf,
    /// How many parts of this blob are to be sent in this run.
    blob_parts_to_send: u64,
}

#[derive(Debug, Default)]
struct Plan {
    parts: Vec<PartJob>,
    resumed_parts: u64,
    resumed_bytes: u64,
}

/// The parts still missing on the server, in path order.
fn plan(status: &api::UploadStatus, by_sha: &HashMap<&str, &LocalFile>) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let mut blobs: Vec<&api::BlobStatus> = status.blobs.iter().filter(|b| !b.present).collect();
    let name = |b: &api::BlobStatus| by_sha.get(b.sha256.as_str()).map(|f| f.path.to_string()).unwrap_or_default();
    blobs.sort_by_key(|b| name(b));
    for b in blobs {
        let Some(file) = by_sha.get(b.sha256.as_str()) else {
            bail!("the server asks for blob {}, which is not one of the files declared", b.sha256);
        };
        if b.size != file.size {
            bail!("the server expects {} bytes for {}, the file has {}", b.size, file.path, file.size);
        }
        let received: HashSet<u32> = b.parts_received.iter().copied().collect();
        let mut missing = Vec::new();
        for n in 0..u64::from(b.parts) {
            let range = part_range(b.size, status.part_size, n).with_context(|| {
                format!(
                    "the server says {} has {} parts of {} bytes, but it is {} bytes long",
                    file.path, b.parts, status.part_size, b.size
                )
            })?;
            let len = range.end - range.start;
            if u32::try_from(n).is_ok_and(|n| received.contains(&n)) {
                plan.resumed_parts += 1;
                plan.resumed_bytes += len;
            } else {
                missing.push((n, len));
            }
        }
        let count = missing.len() as u64;
        plan.parts.extend(missing.into_iter().map(|(part, len)| PartJob {
            sha256: b.sha256.clone(),
            blob_size: b.size,
            part,
            len,
            name: file.path.to_string(),
            disk: file.disk.clone(),
            blob_parts_to_send: count,
        }));
    }
    Ok(plan)
}

/// A per-file bar and how many of its parts are still on their way.
struct FileBar {
    bar: ProgressBar,
    parts_left: u64,
}

/// Sends the parts, `jobs` at a time, each retried with backoff when the failure is
/// transient. The first failure that is not stops the push.
async fn upload(
    client: &Client,
    status: &api::UploadStatus,
    parts: Vec<PartJob>,
    bars: &Bars,
    jobs: usize,
) -> anyhow::Result<()> {
    if parts.is_empty() {
        return Ok(());
    }
    let total_bytes: u64 = parts.iter().map(|p| p.len).sum();
    let total = bars.total("uploading", total_bytes);
    let file_bars: Arc<Mutex<BTreeMap<String, FileBar>>> = Arc::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for job in parts {
        let permit = sem.clone().acquire_owned().await.context("the upload was stopped")?;
        // Stop early when a part has already failed for good.
        while let Some(done) = tasks.try_join_next() {
            done.context("an upload task stopped")??;
        }
        let (client, upload_id, part_size) = (client.clone(), status.upload_id.clone(), status.part_size);
        let (total, file_bars, bars) = (total.clone(), file_bars.clone(), bars.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let file_bar = {
                let mut map = file_bars.lock().expect("no panics while holding the lock");
                let entry = map
                    .entry(job.sha256.clone())
                    .or_insert_with(|| FileBar { bar: bars.file(&job.name, 0), parts_left: job.blob_parts_to_send });
                entry.bar.inc_length(job.len);
                entry.bar.clone()
            };
            let spec = PartSpec {
                upload_id: &upload_id,
                sha256: &job.sha256,
                blob_size: job.blob_size,
                part: job.part,
                part_size,
            };
            send_part(&client, spec, &job, &total, &file_bar).await?;
            let mut map = file_bars.lock().expect("no panics while holding the lock");
            if let Some(fb) = map.get_mut(&job.sha256) {
                fb.parts_left -= 1;
                if fb.parts_left == 0 {
                    fb.bar.finish_and_clear();
                    map.remove(&job.sha256);
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("an upload task stopped")??;
    }
    total.finish_and_clear();
    Ok(())
}

async fn send_part(
    client: &Client,
    spec: PartSpec<'_>,
    job: &PartJob,
    total: &ProgressBar,
    file_bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut pause = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = Arc::new(AtomicU64::new(0));
        let progress = {
            let (sent, total, file_bar) = (sent.clone(), total.clone(), file_bar.clone());
            Arc::new(move |n: u64| {
                sent.fetch_add(n, Ordering::Relaxed);
                total.inc(n);
                file_bar.inc(n);
            })
        };
        match client.put_part(spec, &job.disk, Some(progress)).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                // Take back what this attempt counted, so the bars do not overshoot.
                let n = sent.load(Ordering::Relaxed);
                total.set_position(total.position().saturating_sub(n));
                file_bar.set_position(file_bar.position().saturating_sub(n));
                if e.code() == Some("digest_mismatch") {
                    bail!(
                        "the server received bytes for {} that do not match its SHA-256: did the file change \
                         during the push? Run the push again.",
                        job.name
                    );
                }
                if !e.is_transient() || attempt == ATTEMPTS {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot upload part {} of {} (attempt {attempt} of {ATTEMPTS})",
                        job.part, job.name
                    )));
                }
                total.println(format!("retrying part {} of {} in {pause:?}: {e}", job.part, job.name));
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Runs `f` until it succeeds or fails for a reason that trying again will not fix.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::manifest::FilePath;

    fn local(path: &str, size: u64) -> LocalFile {
        LocalFile { path: FilePath::parse(path).unwrap(), disk: PathBuf::from(path), size }
    }

    fn blob(sha: &str, size: u64, present: bool, parts: u32, received: &[u32]) -> api::BlobStatus {
        api::BlobStatus { sha256: sha.into(), size, present, parts, parts_received: received.to_vec() }
    }

    #[test]
    fn plans_only_missing_parts() {
        let (a, b, c) = (local("a.bin", 25), local("b.bin", 10), local("c.bin", 0));
        let by_sha: HashMap<&str, &LocalFile> = [("aa", &a), ("bb", &b), ("cc", &c)].into_iter().collect();
        let status = api::UploadStatus {
            upload_id: "u".into(),
            expires_at: 0,
            part_size: 10,
            blobs: vec![blob("aa", 25, false, 3, &[1]), blob("bb", 10, true, 1, &[]), blob("cc", 0, false, 1, &[])],
        };
        let plan = plan(&status, &by_sha).unwrap();
        let got: Vec<(&str, u64, u64, u64)> =
            plan.parts.iter().map(|p| (p.name.as_str(), p.part, p.len, p.blob_parts_to_send)).collect();
        assert_eq!(got, [("a.bin", 0, 10, 2), ("a.bin", 2, 5, 2), ("c.bin", 0, 0, 1)]);
        assert_eq!((plan.resumed_parts, plan.resumed_bytes), (1, 10));

        // A part count that does not fit the size is the server's mistake, not ours to guess.
        let mut bad = status.clone();
        bad.blobs[0].parts = 4;
        assert!(super::plan(&bad, &by_sha).is_err());
        let mut unknown = status;
        unknown.blobs[0].sha256 = "dd".into();
        assert!(super::plan(&unknown, &by_sha).is_err());
    }

    #[tokio::test]
    async fn retries_only_what_may_succeed_later() {
        let api_error = |status| ClientError::Api { status, code: "x".into(), message: "m".into() };
        let calls = std::cell::Cell::new(0);
        let r = retry(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 2 { Err(api_error(503)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        calls.set(0);
        let r: Result<(), _> = retry(|| {
            calls.set(calls.get() + 1);
            async { Err(api_error(400)) }
        })
        .await;
        assert_eq!(r.unwrap_err().status(), Some(400));
        assert_eq!(calls.get(), 1, "a refused request is not sent again");
    }

    #[test]
    fn hashes_in_parallel_in_order() {
        let d = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..9u8 {
            let p = d.path().join(format!("f{i}"));
            std::fs::write(&p, vec![i; usize::from(i) * 1000]).unwrap();
            files.push(LocalFile {
                path: FilePath::parse(&format!("f{i}")).unwrap(),
                disk: p,
                size: u64::from(i) * 1000,
            });
        }
        let bar = ProgressBar::hidden();
        let out = hash_all(&files, 3, &bar).unwrap();
        for (f, h) in files.iter().zip(&out) {
            assert_eq!(h, &tree::hash_file(&f.disk, |_| {}).unwrap().0);
        }
        assert_eq!(bar.position(), 36_000);
        files[2].size = 1;
        assert!(hash_all(&files, 3, &bar).unwrap_err().to_string().contains("changed"));
    }
}
