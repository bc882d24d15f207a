//! The real `cairn admin` beside a running server, on SQLite and PostgreSQL: fsck exits 0 on
//! a sound store and 1 (naming the version) once a blob is damaged; gc refuses a grace period
//! below the upload lifetime and rotate-key refuses to run without a key file (exit 2).

use std::path::Path;
use std::process::{Command, Output};

use cairn_api_types as api;
use cairn_client::PartSpec;
use cairn_test_utils::{Backend, TestServer};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// `cairn admin ARGS` on the server's data dir and database, with nothing from the
/// environment or a stray `cairn.toml` in the way.
fn admin(s: &TestServer, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(s.data_dir.path())
        .arg("--database-url")
        .arg(&s.database_url)
        .current_dir(s.data_dir.path())
        .env("CAIRN_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") && k != "CAIRN_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Pushes one small file as version 1 of `team/m`; returns its digest.
async fn push(s: &TestServer, dir: &Path) -> String {
    let data = b"weights of a very small model\n";
    let file = dir.join("w.bin");
    std::fs::write(&file, data).unwrap();
    let sha256 = hex::encode(Sha256::digest(data));
    let client = s.client();
    client.create_model(&api::CreateModel { name: "team/m".into(), ..Default::default() }).await.unwrap();
    let files = vec![api::FileInfo { path: "w.bin".into(), size: data.len() as u64, sha256: sha256.clone() }];
    let status = client.create_upload("team/m", &api::UploadRequest { files }).await.unwrap();
    let spec = PartSpec {
        upload_id: &status.upload_id,
        sha256: &sha256,
        blob_size: data.len() as u64,
        part: 0,
        part_size: status.part_size,
    };
    client.put_part(spec, &file, None).await.unwrap();
    client.commit_upload(&status.upload_id, &api::CommitRequest::default()).await.unwrap();
    sha256
}

async fn fsck_exit_codes(backend: Backend, test: &str) {
    let Some(s) = TestServer::start(backend, test).await else { return };
    let work = tempfile::tempdir().unwrap();
    let digest = push(&s, work.path()).await;

    let out = admin(&s, &["fsck"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = admin(&s, &["fsck", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], 1, "{report}");

    let stored = s.data_dir.path().join("blobs").join("sha256").join(&digest[..2]).join(&digest);
    let mut raw = std::fs::read(&stored).unwrap();
    raw[3] ^= 0x01;
    std::fs::write(&stored, &raw).unwrap();
    let out = admin(&s, &["fsck"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&digest) && stdout.contains("team/m:1 w.bin"), "{stdout}");

    let out = admin(&s, &["gc", "--grace-secs", "60"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("upload lifetime"), "{}", text(&out));
    let out = admin(&s, &["gc", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("would delete 0 unused blobs"), "{}", text(&out));
    let out = admin(&s, &["rotate-key"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("CAIRN_ENCRYPTION_KEY_FILE"), "{}", text(&out));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_fsck_on_sqlite() {
    fsck_exit_codes(Backend::Sqlite, "admin_fsck_on_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_fsck_on_postgres() {
    fsck_exit_codes(Backend::Postgres, "admin_fsck_on_postgres").await;
}

/// `cairn admin gdpr ARGS` against the server, with the admin key.
fn gdpr(s: &TestServer, config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["admin", "gdpr"]).args(args).current_dir(config).env("CAIRN_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") && k != "CAIRN_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CAIRN_URL", &s.url).env("CAIRN_TOKEN", &s.token).env("CAIRN_CONFIG_DIR", config);
    cmd.output().unwrap()
}

/// The data-subject commands end to end: an owner-only export naming the person, a
/// correction, an erasure that needs `--yes`, after which the person is gone from the
/// export and the audit chain still verifies; every request is in the log.
async fn gdpr_commands(backend: Backend, test: &str) {
    let Some(s) = TestServer::start(backend, test).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let user = api::CreateUser {
        username: "alice".into(),
        password: Some("a long and unusual passphrase".into()),
        email: Some("alice@example.org".into()),
        display_name: Some("Alice Liddell".into()),
        ..api::CreateUser::default()
    };
    s.client().create_user(&user).await.unwrap();

    let file = dir.path().join("alice.json");
    let out = gdpr(&s, dir.path(), &["export", "alice", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(exported.contains("alice@example.org") && exported.contains("Alice Liddell"), "{exported}");
    assert!(!exported.contains("$argon2"), "no password hash in an export");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let out = gdpr(&s, dir.path(), &["rectify", "alice", "--email", "a.liddell@example.org"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = gdpr(&s, dir.path(), &["erase", "alice"]);
    assert_eq!(out.status.code(), Some(2), "erasure needs --yes: {}", text(&out));
    let out = gdpr(&s, dir.path(), &["erase", "alice", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("erased:"), "{}", text(&out));
    let out = gdpr(&s, dir.path(), &["export", "alice"]);
    assert_ne!(out.status.code(), Some(0), "the account is gone: {}", text(&out));

    let out = gdpr(&s, dir.path(), &["requests", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stdout);
    for kind in ["access", "rectification", "erasure"] {
        assert!(log.contains(kind), "{kind} missing from the request log: {log}");
    }
    assert!(!log.contains("alice"), "the log names the pseudonym, not the person: {log}");
    let out = gdpr(&s, dir.path(), &["inventory"]);
    assert!(out.status.success() && text(&out).contains("audit_events"), "{}", text(&out));

    let key = s.state.signing_key.public();
    let report = s.state.store.verify_audit_chain(vec![key]).await.unwrap();
    assert!(report.ok() && report.erased > 0, "{report:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_gdpr_on_sqlite() {
    gdpr_commands(Backend::Sqlite, "admin_gdpr_on_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_gdpr_on_postgres() {
    gdpr_commands(Backend::Postgres, "admin_gdpr_on_postgres").await;
}
