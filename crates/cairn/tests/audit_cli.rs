//! `cairn verify`, `cairn keygen`, `cairn push --sign-key` and `cairn audit …`: the real
//! binary against a real server, on SQLite and PostgreSQL.
//!
//! Versions: verified online (downloaded, or against a directory) and offline from a saved
//! signed manifest; a changed byte, an extra or missing file, an edited manifest, a wrong
//! server key and a missing push signature all fail with exit 1 and name what differs.
//! Audit: the export verifies, and fails once one byte of an event changes; the live
//! database verifies, and fails at the event edited behind the server's back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn_api_types as api;
use cairn_test_utils::{Backend, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
/// The smallest part size the server allows: the weights file has several parts.
const PART: u64 = 64 * 1024;
/// Nothing listens here: commands that must not use the network get it as server URL.
const NOWHERE: &str = "http://127.0.0.1:9";

async fn server(backend: Backend, test: &str) -> Option<TestServer> {
    let s = TestServer::start_with(backend, test, |s| s.upload_part_size = PART).await?;
    s.client().create_model(&api::CreateModel { name: "team/model".into(), ..Default::default() }).await.unwrap();
    Some(s)
}

/// How to run the binary.
struct Run<'a> {
    s: &'a TestServer,
    /// Working directory (and CLI config directory).
    cwd: &'a Path,
}

impl Run<'_> {
    async fn at(&self, url: &str, args: &[&str], stdin: Option<PathBuf>) -> Output {
        let (url, token, cwd) = (url.to_owned(), self.s.token.clone(), self.cwd.to_path_buf());
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(BIN);
            cmd.args(&args).current_dir(&cwd);
            for (k, _) in std::env::vars() {
                if k.starts_with("CAIRN_") {
                    cmd.env_remove(k);
                }
            }
            cmd.env("CAIRN_CONFIG_DIR", &cwd).env("CAIRN_URL", url).env("CAIRN_TOKEN", token);
            match stdin {
                Some(f) => cmd.stdin(std::fs::File::open(f).unwrap()),
                None => cmd.stdin(Stdio::null()),
            };
            cmd.output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn cairn(&self, args: &[&str]) -> Output {
        self.at(&self.s.url, args, None).await
    }

    /// Without a reachable server.
    async fn offline(&self, args: &[&str]) -> Output {
        self.at(NOWHERE, args, None).await
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\n{}", o.status, text(o));
    text(o)
}

#[track_caller]
fn exits(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    text(o)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Nested files, an empty one, and weights of several parts.
fn model_dir(root: &Path) -> PathBuf {
    let d = root.join("model");
    std::fs::create_dir_all(d.join("tokenizer/extra")).unwrap();
    std::fs::write(d.join("config.json"), br#"{"layers": 12}"#).unwrap();
    std::fs::write(d.join("tokenizer/vocab.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(d.join("tokenizer/extra/empty"), "").unwrap();
    let weights: Vec<u8> = (0..3 * PART + 1234).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect();
    std::fs::write(d.join("weights.bin"), weights).unwrap();
    d
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

/// The server's public key, as an auditor would keep it.
fn server_key(s: &TestServer, dir: &Path) -> PathBuf {
    let path = dir.join("server.pub");
    std::fs::write(&path, s.state.signing_key.public().to_pem()).unwrap();
    path
}

async fn versions_verify(backend: Backend, test: &str) {
    let Some(s) = server(backend, test).await else { return };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let run = Run { s: &s, cwd: w };
    let src = model_dir(w);
    let server_pub = server_key(&s, w);
    let (alice, bob) = (w.join("alice.pem"), w.join("bob.pem"));
    let (alice_pub, bob_pub) = (w.join("alice.pem.pub"), w.join("bob.pem.pub"));

    // Keys: made once, never overwritten.
    assert!(ok(&run.offline(&["keygen", "-o", p(&alice)]).await).contains("Key id: ed25519:"));
    ok(&run.offline(&["keygen", "-o", p(&bob)]).await);
    assert!(exits(&run.offline(&["keygen", "-o", p(&alice)]).await, 2).contains("already exists"));
    assert!(
        exits(&run.cairn(&["push", "team/model", p(&src), "--sign-key", p(&alice_pub)]).await, 2).contains("PKCS#8")
    );

    let out = ok(&run.cairn(&["push", "team/model", p(&src), "--sign-key", p(&alice)]).await);
    assert!(out.contains("Signed by ed25519:"), "{out}");

    // Online, downloading the server's copy; the server's key is taken from the server.
    let out = ok(&run.cairn(&["verify", "team/model:1"]).await);
    assert!(out.contains("not pinned") && out.contains("match the manifest") && out.contains("verified"), "{out}");
    let o = run.cairn(&["verify", "team/model:1", "--json", "--public-key", p(&server_pub)]).await;
    let out = ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["ok"].as_bool(), v["version"].as_i64()), (Some(true), Some(1)), "{out}");

    // Against the directory, pinned, with the pusher's key; the signed manifest is saved.
    let manifest = w.join("model-1.json");
    let out = ok(&run
        .cairn(&[
            "verify",
            "team/model:1",
            "--dir",
            p(&src),
            "--public-key",
            p(&server_pub),
            "--signer-key",
            p(&alice_pub),
            "--save-manifest",
            p(&manifest),
        ])
        .await);
    assert!(!out.contains("not pinned") && out.contains("push signature"), "{out}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(doc["format"], "cairn.signed-manifest/v1");
    assert_eq!(doc["signatures"].as_array().unwrap().len(), 2, "the server's and alice's");

    // Another signer, another server key: refused.
    let out = exits(&run.cairn(&["verify", "team/model:1", "--signer-key", p(&bob_pub)]).await, 1);
    assert!(out.contains("did not sign"), "{out}");
    let out = exits(&run.cairn(&["verify", "team/model:1", "--public-key", p(&bob_pub)]).await, 1);
    assert!(out.contains("no valid server signature by a trusted key"), "{out}");
    exits(&run.cairn(&["verify", "team/model"]).await, 2);
    exits(&run.cairn(&["verify", "team/model:9"]).await, 2);

    // Offline: the right key passes, another fails, none is refused.
    let offline = |dir: PathBuf, manifest: PathBuf, key: PathBuf| {
        let signer = alice_pub.clone();
        let run = &run;
        async move {
            run.offline(&[
                "verify",
                "--manifest",
                p(&manifest),
                "--dir",
                p(&dir),
                "--public-key",
                p(&key),
                "--signer-key",
                p(&signer),
            ])
            .await
        }
    };
    ok(&offline(src.clone(), manifest.clone(), server_pub.clone()).await);
    exits(&offline(src.clone(), manifest.clone(), bob_pub.clone()).await, 1);
    exits(&run.offline(&["verify", "--manifest", p(&manifest), "--dir", p(&src)]).await, 2);

    // One changed byte, online and offline, names the file.
    let changed = w.join("changed");
    copy_tree(&src, &changed);
    flip_byte(&changed.join("weights.bin"), 100_000);
    let out = exits(&run.cairn(&["verify", "team/model:1", "--dir", p(&changed)]).await, 1);
    assert!(out.contains("weights.bin: changed"), "{out}");
    let out = exits(&offline(changed, manifest.clone(), server_pub.clone()).await, 1);
    assert!(out.contains("weights.bin: changed"), "{out}");

    // An extra file, a missing file.
    let extra = w.join("extra");
    copy_tree(&src, &extra);
    std::fs::write(extra.join("tokenizer/notes.txt"), "hi").unwrap();
    let out = exits(&run.cairn(&["verify", "team/model:1", "--dir", p(&extra)]).await, 1);
    assert!(out.contains("tokenizer/notes.txt: extra"), "{out}");
    let missing = w.join("missing");
    copy_tree(&src, &missing);
    std::fs::remove_file(missing.join("config.json")).unwrap();
    let out = exits(&offline(missing, manifest.clone(), server_pub.clone()).await, 1);
    assert!(out.contains("config.json: missing"), "{out}");

    // An edited manifest: a size changed (and the directory made to match it).
    let mut edited: Value = doc.clone();
    let files = edited["manifest"]["files"].as_array_mut().unwrap();
    let i = files.iter().position(|f| f["path"] == "config.json").unwrap();
    files[i]["size"] = Value::from(files[i]["size"].as_u64().unwrap() + 1);
    let edited_path = w.join("edited.json");
    std::fs::write(&edited_path, serde_json::to_string(&edited).unwrap()).unwrap();
    let grown = w.join("grown");
    copy_tree(&src, &grown);
    std::fs::write(grown.join("config.json"), br#"{"layers": 12} "#).unwrap();
    let out = exits(&offline(grown, edited_path.clone(), server_pub.clone()).await, 1);
    assert!(out.contains("manifest") && out.contains("FAILED"), "{out}");
    exits(&offline(src.clone(), edited_path.clone(), server_pub.clone()).await, 1);
    std::fs::write(&edited_path, "{\"format\":\"cairn.signed-manifest/v1\"}").unwrap();
    exits(&offline(src.clone(), edited_path, server_pub.clone()).await, 2);

    // A version pushed without a signature has no push signature to find.
    std::fs::write(src.join("config.json"), br#"{"layers": 24}"#).unwrap();
    ok(&run.cairn(&["push", "team/model", p(&src)]).await);
    ok(&run.cairn(&["verify", "team/model:2", "--dir", p(&src), "--public-key", p(&server_pub)]).await);
    let out = exits(&run.cairn(&["verify", "team/model:2", "--signer-key", p(&alice_pub)]).await, 1);
    assert!(out.contains("did not sign"), "{out}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_verify_on_sqlite() {
    versions_verify(Backend::Sqlite, "versions_verify_on_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_verify_on_postgres() {
    versions_verify(Backend::Postgres, "versions_verify_on_postgres").await;
}

/// Runs `sql` on the server's database behind its back.
async fn tamper(s: &TestServer, sql: &'static str) {
    let mut tx = s.state.store.db().begin().await.unwrap();
    assert_eq!(tx.conn().execute(sql, vec![]).await.unwrap(), 1);
    tx.commit().await.unwrap();
}

async fn audit_chain(backend: Backend, test: &str) {
    let Some(s) = server(backend, test).await else { return };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let run = Run { s: &s, cwd: w };
    let src = model_dir(w);
    let server_pub = server_key(&s, w);
    ok(&run.offline(&["keygen", "-o", p(&w.join("other.pem"))]).await);
    let other_pub = w.join("other.pem.pub");
    ok(&run.cairn(&["push", "team/model", p(&src)]).await);

    let out = ok(&run.cairn(&["audit", "status"]).await);
    assert!(out.contains("head:") && out.contains("signing key:"), "{out}");
    let out = ok(&run.cairn(&["audit", "checkpoint"]).await);
    assert!(out.contains("Checkpoint at event"), "{out}");
    let out = ok(&run.cairn(&["audit", "list", "--action", "model.create"]).await);
    assert!(out.contains("model.create") && out.contains("model:team/model"), "{out}");
    let all: Value =
        serde_json::from_slice(&run.cairn(&["audit", "list", "--all", "--limit", "2", "--json"]).await.stdout).unwrap();
    assert!(all["events"].as_array().unwrap().len() >= 3, "{all}");
    exits(&run.cairn(&["audit", "list", "--since", "yesterday"]).await, 2);

    // The export verifies, with the header's key (warned) or the pinned one.
    let export = w.join("audit.jsonl");
    let out = ok(&run.cairn(&["audit", "export", "-o", p(&export)]).await);
    assert!(out.contains("Exported"), "{out}");
    assert!(!w.join("audit.jsonl.cairn-partial").exists());
    let out = ok(&run.cairn(&["audit", "verify", "--file", p(&export)]).await);
    assert!(out.contains("not pinned") && out.contains("intact"), "{out}");
    let out = ok(&run.cairn(&["audit", "verify", "--file", p(&export), "--public-key", p(&server_pub)]).await);
    assert!(!out.contains("not pinned"), "{out}");
    ok(&run
        .at(&s.url, &["audit", "verify", "--file", "-", "--public-key", p(&server_pub)], Some(export.clone()))
        .await);
    let out = exits(&run.cairn(&["audit", "verify", "--file", p(&export), "--public-key", p(&other_pub)]).await, 1);
    assert!(out.contains("untrusted_key"), "{out}");

    // One byte of an event changed.
    let text_in = std::fs::read_to_string(&export).unwrap();
    let line = text_in.lines().find(|l| l.starts_with("{\"event\"") && l.contains("model:team/model")).unwrap();
    let forged = line.replacen("model:team/model", "model:team/modem", 1);
    let tampered = w.join("tampered.jsonl");
    std::fs::write(&tampered, text_in.replacen(line, &forged, 1)).unwrap();
    let out = exits(&run.cairn(&["audit", "verify", "--file", p(&tampered), "--public-key", p(&server_pub)]).await, 1);
    assert!(out.contains("BROKEN at event"), "{out}");
    std::fs::write(&tampered, "not an export\n").unwrap();
    exits(&run.cairn(&["audit", "verify", "--file", p(&tampered)]).await, 2);

    // The live database, with the settings of `cairn serve`.
    let data_dir = s.data_dir.path().to_path_buf();
    let call = |extra: &'static [&'static str]| {
        let (run, url, dir) = (&run, s.database_url.clone(), data_dir.clone());
        async move {
            let mut args = vec!["audit", "verify", "--data-dir", p(&dir), "--database-url", &url];
            args.extend_from_slice(extra);
            run.offline(&args).await
        }
    };
    let out = ok(&call(&[]).await);
    assert!(out.contains("not pinned") && out.contains("intact"), "{out}");
    let out = ok(&call(&["--public-key", "server.pub"]).await);
    assert!(!out.contains("not pinned"), "{out}");
    let out = exits(&call(&["--public-key", "other.pem.pub"]).await, 1);
    assert!(out.contains("untrusted_key"), "{out}");

    tamper(&s, "UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 3").await;
    let out = exits(&call(&["--public-key", "server.pub"]).await, 1);
    assert!(out.contains("event 3"), "{out}");
    let report: Value = serde_json::from_slice(&call(&["--json"]).await.stdout).unwrap();
    assert_eq!(report["first_break"]["seq"], 3, "{report}");
    assert_eq!(report["first_break"]["kind"], "edited", "{report}");

    // No database where the settings point: refused, and none is created.
    let empty = w.join("no-data");
    let out = exits(&run.offline(&["audit", "verify", "--data-dir", p(&empty)]).await, 2);
    assert!(out.contains("no database"), "{out}");
    assert!(!empty.join("cairn.db").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_on_sqlite() {
    audit_chain(Backend::Sqlite, "audit_chain_on_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_on_postgres() {
    audit_chain(Backend::Postgres, "audit_chain_on_postgres").await;
}
