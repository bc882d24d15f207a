//! `cairn push` and `cairn pull`, the real binary against a real server (SQLite, a small
//! part size so that multi-part files stay small): round trips by number and by alias,
//! deduplication, an interrupted push resumed, a corrupt partial download detected.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_api_types as api;
use cairn_core::manifest::{FileEntry, FilePath, Manifest};
use cairn_test_utils::{Backend, TestServer};
use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
/// The smallest part size the server allows: files of a few hundred KiB have several parts.
const PART: u64 = 64 * 1024;

async fn server(test: &str) -> TestServer {
    let s = TestServer::start_with(Backend::Sqlite, test, |s| s.upload_part_size = PART)
        .await
        .expect("SQLite is always available");
    s.client().create_model(&api::CreateModel { name: "team/model".into(), ..Default::default() }).await.unwrap();
    s
}

/// Runs the CLI against `s` (off the async workers, which serve its requests).
async fn cairn(s: &TestServer, args: &[&str]) -> Output {
    let (url, token) = (s.url.clone(), s.token.clone());
    let cfg = s.data_dir.path().join("cli-config");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("CAIRN_CONFIG_DIR", cfg)
            .env("CAIRN_URL", url)
            .env("CAIRN_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status, text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

/// Bytes that differ at every offset, so a misplaced part cannot go unnoticed.
fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31).wrapping_add(i >> 8) as u8) ^ seed).collect()
}

/// A model directory: nested small files, an empty file, a duplicate, a file of several
/// parts whose last part is short.
fn model_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("tokenizer/extra")).unwrap();
    std::fs::write(p.join("config.json"), br#"{"layers": 12}"#).unwrap();
    std::fs::write(p.join("tokenizer/vocab.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(p.join("tokenizer/extra/empty"), "").unwrap();
    std::fs::write(p.join("tokenizer/extra/copy.json"), br#"{"layers": 12}"#).unwrap();
    std::fs::write(p.join("weights.bin"), pattern(3 * PART + 1234, 7)).unwrap();
    d
}

/// Every regular file under `root`, relative path → bytes.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn go(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if e.file_type().unwrap().is_dir() {
                go(&e.path(), &child, out);
            } else {
                out.push((child, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    go(root, "", &mut out);
    out.sort();
    out
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The manifest `cairn push` should build for `root`.
fn manifest_of(root: &Path) -> Manifest {
    Manifest::new(
        tree(root)
            .into_iter()
            .map(|(p, b)| FileEntry { path: FilePath::parse(&p).unwrap(), size: b.len() as u64, sha256: sha(&b) })
            .collect(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_by_number_and_alias() {
    let s = server("push_then_pull_by_number_and_alias").await;
    let src = model_dir();
    let expected = manifest_of(src.path());
    let dir = src.path().to_str().unwrap();

    let out = cairn(
        &s,
        &["push", "team/model", dir, "--tag", "task=ner", "--alias", "champion", "--description", "first", "--json"],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["digest"], expected.digest());
    assert_eq!(v["file_count"], 5);
    assert_eq!(v["size"], expected.total_size());
    assert_eq!(v["tags"]["task"], "ner");
    assert_eq!(v["aliases"][0], "champion");
    assert_eq!(v["description"], "first");
    // Progress bars never reach a pipe.
    assert!(!text(&out.stderr).contains("[="), "{}", text(&out.stderr));

    let work = tempfile::tempdir().unwrap();
    let by_number = work.path().join("by-number");
    let out = cairn(&s, &["pull", "team/model:1", "-o", by_number.to_str().unwrap()]).await;
    let stdout = ok(&out);
    assert!(stdout.contains(&expected.digest()), "{stdout}");
    assert_eq!(tree(&by_number), tree(src.path()));

    let by_alias = work.path().join("by-alias");
    let out = cairn(&s, &["pull", "team/model@champion", "-o", by_alias.to_str().unwrap(), "--jobs", "1"]).await;
    ok(&out);
    assert_eq!(tree(&by_alias), tree(src.path()));

    // Pushing the same tree again sends nothing and gives a new version with the same digest.
    let out = cairn(&s, &["push", "team/model", dir, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["digest"], expected.digest());
    let err = text(&out.stderr);
    assert!(err.contains("5 files (") && err.contains("already on the server, skipped"), "{err}");

    // Pulling into a directory that already has the files downloads nothing; the newest
    // version is the default.
    let out = cairn(&s, &["pull", "team/model", "-o", by_number.to_str().unwrap(), "--json"]).await;
    let summary: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(summary["version"], 2);
    assert_eq!(summary["downloaded"], 0);
    assert_eq!(summary["already_present"], 5);
    assert_eq!(tree(&by_number), tree(src.path()));

    // A changed local file is replaced by the version's bytes.
    std::fs::write(by_number.join("config.json"), "changed").unwrap();
    let out = cairn(&s, &["pull", "team/model:2", "-o", by_number.to_str().unwrap(), "--json"]).await;
    let summary: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(summary["downloaded"], 1);
    assert_eq!(tree(&by_number), tree(src.path()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_push_resumes() {
    let s = server("an_interrupted_push_resumes").await;
    let src = model_dir();
    let expected = manifest_of(src.path());
    let c = s.client();
    // A first push that declared the files and sent two of the four parts of the big file,
    // then died.
    let request = api::UploadRequest {
        files: expected
            .files()
            .iter()
            .map(|f| api::FileInfo { path: f.path.to_string(), size: f.size, sha256: f.sha256.clone() })
            .collect(),
    };
    let status = c.create_upload("team/model", &request).await.unwrap();
    assert_eq!(status.part_size, PART);
    let big = expected.files().iter().find(|f| f.path.as_str() == "weights.bin").unwrap();
    for part in [0, 2] {
        let spec = cairn_client::PartSpec {
            upload_id: &status.upload_id,
            sha256: &big.sha256,
            blob_size: big.size,
            part,
            part_size: status.part_size,
        };
        let accepted = c.put_part(spec, &src.path().join("weights.bin"), None).await.unwrap();
        assert!(!accepted.complete);
        assert_eq!(accepted.parts, 4);
    }

    let out = cairn(&s, &["push", "team/model", src.path().to_str().unwrap()]).await;
    let stdout = ok(&out);
    let err = text(&out.stderr);
    assert!(err.contains("resuming: 2 parts"), "{err}");
    assert!(stdout.contains("Pushed team/model:1") && stdout.contains(&expected.digest()), "{stdout}");

    let pulled = tempfile::tempdir().unwrap();
    ok(&cairn(&s, &["pull", "team/model:1", "-o", pulled.path().to_str().unwrap()]).await);
    assert_eq!(tree(pulled.path()), tree(src.path()));

    // An upload that is abandoned is gone; everything is present already.
    let abandoned = c.create_upload("team/model", &request).await.unwrap();
    assert!(abandoned.blobs.iter().all(|b| b.present), "{abandoned:?}");
    c.abort_upload(&abandoned.upload_id).await.unwrap();
    assert_eq!(c.upload_status(&abandoned.upload_id).await.unwrap_err().status(), Some(404));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_partial_download_is_detected() {
    let s = server("a_corrupt_partial_download_is_detected").await;
    let src = model_dir();
    ok(&cairn(&s, &["push", "team/model", src.path().to_str().unwrap(), "--quiet"]).await);
    let out_dir = tempfile::tempdir().unwrap();
    let out: PathBuf = out_dir.path().join("m");
    std::fs::create_dir_all(&out).unwrap();
    let weights = std::fs::read(src.path().join("weights.bin")).unwrap();

    // A partial holding the right first part resumes and completes.
    std::fs::write(out.join("weights.bin.cairn-partial"), &weights[..PART as usize]).unwrap();
    ok(&cairn(&s, &["pull", "team/model:1", "-o", out.to_str().unwrap()]).await);
    assert_eq!(tree(&out), tree(src.path()));

    // A partial whose bytes were damaged: the resumed download cannot match the SHA-256.
    std::fs::remove_file(out.join("weights.bin")).unwrap();
    let mut bad = weights[..PART as usize + 10].to_vec();
    bad[100] ^= 0xff;
    std::fs::write(out.join("weights.bin.cairn-partial"), &bad).unwrap();
    let o = cairn(&s, &["pull", "team/model:1", "-o", out.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("weights.bin") && text(&o.stderr).contains("SHA-256"), "{}", text(&o.stderr));
    assert!(!out.join("weights.bin.cairn-partial").exists());
    assert!(!out.join("weights.bin").exists());
    // The next pull starts over and succeeds.
    ok(&cairn(&s, &["pull", "team/model:1", "-o", out.to_str().unwrap()]).await);
    assert_eq!(tree(&out), tree(src.path()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_exit_2() {
    let s = server("bad_input_is_refused_with_exit_2").await;
    let src = model_dir();
    let dir = src.path().to_str().unwrap();
    // No such model: the message says how to create it.
    let o = cairn(&s, &["push", "team/ghost", dir]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("cairn models create"), "{}", text(&o.stderr));
    // Not a directory; a bad reference; a version that does not exist.
    let o = cairn(&s, &["push", "team/model", &format!("{dir}/config.json")]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(cairn(&s, &["pull", "team-model"]).await.status.code(), Some(2));
    assert_eq!(cairn(&s, &["pull", "team/model:9"]).await.status.code(), Some(2));
    assert_eq!(cairn(&s, &["pull", "team/model"]).await.status.code(), Some(2), "no versions yet");
    #[cfg(unix)]
    {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), src.path().join("leak")).unwrap();
        let o = cairn(&s, &["push", "team/model", dir]).await;
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains("leak") && text(&o.stderr).contains("outside"), "{}", text(&o.stderr));
        // Nothing was committed.
        assert_eq!(s.client().get_model("team/model").await.unwrap().latest_version, 0);
    }
    s.stop().await;
}

/// With the default part size (16 MiB), so that a real part goes through the server's body
/// limits and timeouts: a file of one full part and one byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_part_size_round_trip() {
    let s = TestServer::start(Backend::Sqlite, "default_part_size_round_trip").await.expect("SQLite");
    s.client().create_model(&api::CreateModel { name: "team/big".into(), ..Default::default() }).await.unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("model.bin"), pattern(16 * 1024 * 1024 + 1, 3)).unwrap();
    let out = cairn(&s, &["push", "team/big", src.path().to_str().unwrap(), "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["digest"], manifest_of(src.path()).digest());
    let pulled = tempfile::tempdir().unwrap();
    ok(&cairn(&s, &["pull", "team/big:1", "-o", pulled.path().to_str().unwrap()]).await);
    assert_eq!(tree(pulled.path()), tree(src.path()));
    s.stop().await;
}

/// The same round trip on PostgreSQL with model files in S3 (the embedded S3-compatible
/// server) and encrypted at rest: a multi-part file and small files, pushed, pulled back
/// by alias, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_on_s3_encrypted() {
    use cairn_test_utils::{BlobBackend, Storage};
    let storage = Storage { blobs: BlobBackend::S3, encrypted: true };
    let Some(s) = TestServer::start_with_storage(Backend::Postgres, storage, "push_and_pull_on_s3_encrypted", |st| {
        st.upload_part_size = 5 * 1024 * 1024;
    })
    .await
    else {
        return;
    };
    s.client().create_model(&api::CreateModel { name: "team/model".into(), ..Default::default() }).await.unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("weights")).unwrap();
    std::fs::write(src.path().join("weights/model.bin"), pattern(11 * 1024 * 1024 + 7, 3)).unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"layers\": 2}").unwrap();
    std::fs::write(src.path().join("empty.txt"), b"").unwrap();
    let expected = manifest_of(src.path());
    let out = cairn(&s, &["push", "team/model", src.path().to_str().unwrap(), "--alias", "prod", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["digest"], expected.digest());
    let dest = tempfile::tempdir().unwrap();
    let out_dir = dest.path().join("pulled");
    ok(&cairn(&s, &["pull", "team/model@prod", "-o", out_dir.to_str().unwrap()]).await);
    assert_eq!(tree(&out_dir), tree(src.path()));
    // At rest the bytes are not the plaintext.
    let digest = sha(&pattern(11 * 1024 * 1024 + 7, 3));
    let stored = s.stored_blob_path(&digest);
    let raw = std::fs::read(&stored).unwrap();
    assert!(raw.starts_with(b"CAIRNENC"), "stored encrypted at {}", stored.display());
    s.stop().await;
}
