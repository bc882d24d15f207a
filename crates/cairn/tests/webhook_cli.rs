//! The real `cairn` binary against a real server: `webhook add` (the secret printed once,
//! with a warning), `list` (never the secret), `ping`, `deliveries`, `remove`, and the exit
//! code of a refused event name.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_test_utils::{Backend, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

fn cairn(s: &TestServer, config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(config);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CAIRN_CONFIG_DIR", config).env("CAIRN_URL", &s.url).env("CAIRN_TOKEN", &s.token);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> Output {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    o
}

async fn add_list_ping_remove(s: &TestServer) {
    let cfg = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| cairn(s, cfg.path(), args);
    let team = cairn_core::Namespace::parse("team").unwrap();
    s.state.store.create_namespace(&cairn_store::AuditContext::system(), &team, "").await.unwrap();

    let out =
        ok(run(&["webhook", "add", "team", "--url", "https://93.184.215.14/hook", "--event", "version.approved"]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let secret = stdout.lines().find_map(|l| l.strip_prefix("Signing secret: ")).unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{stdout}");
    assert!(stderr.contains("never shown again"), "{stderr}");
    let id = stdout.split_whitespace().nth(2).unwrap().to_owned();

    let out = ok(run(&["webhook", "list", "team"]));
    let listed = text(&out);
    assert!(listed.contains(&id) && listed.contains("version.approved"), "{listed}");
    assert!(!listed.contains(&secret));
    let out = ok(run(&["webhook", "list", "team", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["webhooks"][0]["id"], id.as_str());

    let out = ok(run(&["webhook", "ping", &id]));
    assert!(text(&out).contains("Queued ping delivery"), "{}", text(&out));
    let out = ok(run(&["webhook", "deliveries", &id, "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deliveries"][0]["event"], "ping");

    // An unknown event is refused by the server: exit 2.
    let out = run(&["webhook", "add", "team", "--url", "https://93.184.215.14/h", "--event", "version.exploded"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Neither a namespace nor --global: a usage error.
    let out = run(&["webhook", "add", "--url", "https://93.184.215.14/h", "--event", "*"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    ok(run(&["webhook", "remove", &id]));
    let out = run(&["webhook", "deliveries", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_add_list_ping_remove() {
    if let Some(s) = TestServer::start(Backend::Sqlite, "sqlite_add_list_ping_remove").await {
        add_list_ping_remove(&s).await;
        s.stop().await;
    }
}
