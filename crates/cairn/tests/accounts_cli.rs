//! The real `cairn` binary against a real server: `whoami`, `keys create|list|rotate|revoke`
//! (the key close to expiry warns on stderr; rotating the key in use stores the new one),
//! `admin users …` and `admin grants …` round trips, with their exit codes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_test_utils::{Backend, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// `cairn ARGS` against `s`, with `token` as CAIRN_TOKEN (or the stored credentials of
/// `config` when `None`), feeding `stdin` when given.
fn cairn(s: &TestServer, config: &Path, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(config);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CAIRN_CONFIG_DIR", config).env("CAIRN_URL", &s.url);
    if let Some(t) = token {
        cmd.env("CAIRN_TOKEN", t);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> Output {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

async fn round_trip(s: &TestServer) {
    let cfg = tempfile::tempdir().unwrap();
    let dir = cfg.path();
    let admin = Some(s.token.as_str());
    let run = |token: Option<&str>, args: &[&str]| cairn(s, dir, token, args, None);

    // whoami
    let out = ok(run(admin, &["whoami"]));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.contains("admin (person)") && t.contains("Roles:       admin") && t.contains("API key:"), "{t}");
    let me = json(&ok(run(admin, &["whoami", "--json"])));
    assert_eq!((me["username"].as_str(), me["is_admin"].as_bool()), (Some("admin"), Some(true)));

    // admin users and grants
    ok(run(admin, &["admin", "users", "create", "ci", "--service", "--display-name", "CI robot"]));
    let out = ok(run(admin, &["admin", "grants", "add", "ci", "model_owner"]));
    assert!(text(&out).contains("Granted model_owner to ci globally"), "{}", text(&out));
    let grants = json(&ok(run(admin, &["admin", "grants", "list", "--username", "ci", "--json"])));
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1);
    assert_eq!(grants["grants"][0]["role"], "model_owner");
    let grant_id = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let out = ok(run(admin, &["admin", "grants", "list"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID"), "{}", text(&out));

    // keys create --for a service account; a key close to expiry warns on stderr.
    let key = json(&ok(run(
        admin,
        &[
            "keys",
            "create",
            "--name",
            "ci-key",
            "--scope",
            "read",
            "--scope",
            "write",
            "--for",
            "ci",
            "--expires-in-days",
            "3",
            "--json",
        ],
    )));
    let (key_id, token) = (key["id"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned());
    assert_eq!(key["scopes"], serde_json::json!(["read", "write"]));
    let out = ok(run(Some(&token), &["whoami"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: this API key expires in 2 day(s)"), "no expiry warning: {err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ci (service account)"));
    // Without the warning for a long-lived key.
    let out = ok(run(admin, &["whoami"]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", text(&out));

    // keys list
    let own = json(&ok(run(Some(&token), &["keys", "list", "--json"])));
    assert_eq!(own["keys"].as_array().unwrap().len(), 1);
    assert_eq!(own["keys"][0]["id"], key_id.as_str());
    let out = ok(run(admin, &["keys", "list", "--all"]));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.starts_with("ID") && table.contains("ci-key") && table.contains(&key_id), "{table}");
    assert!(!table.contains(&token));
    assert_eq!(run(Some(&token), &["keys", "list", "--all"]).status.code(), Some(1), "a non-admin listed all keys");

    // keys rotate: the key in use, stored by `cairn login`, is replaced in the credentials file.
    ok(cairn(s, dir, None, &["login", "--token-stdin"], Some(&format!("{token}\n"))));
    let stored = || std::fs::read_to_string(dir.join("credentials.toml")).unwrap();
    assert!(stored().contains(&token));
    let out = ok(run(None, &["keys", "rotate", &key_id, "--overlap-secs", "0"]));
    assert!(text(&out).contains("is the one this CLI uses now"), "{}", text(&out));
    assert!(!stored().contains(&token), "the old key is still stored");
    let me = json(&ok(run(None, &["whoami", "--json"])));
    let new_id = me["key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, key_id);
    assert_eq!(run(Some(&token), &["whoami"]).status.code(), Some(1), "the old key outlived a zero overlap");
    let listed = json(&ok(run(admin, &["keys", "list", "--username", "ci", "--json"])));
    let old = listed["keys"].as_array().unwrap().iter().find(|k| k["id"] == key_id.as_str()).unwrap().clone();
    assert_eq!(old["replaced_by"], new_id.as_str());

    // keys revoke
    let out = ok(run(admin, &["keys", "revoke", &new_id]));
    assert!(text(&out).contains(&format!("Revoked API key {new_id}")));
    let out = run(None, &["whoami"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("revoked"), "{}", text(&out));

    // Administrators make keys for service accounts only.
    ok(cairn(s, dir, admin, &["admin", "users", "create", "alice", "--password-stdin"], Some("a sturdy passphrase\n")));
    let out = run(admin, &["keys", "create", "--name", "x", "--scope", "read", "--for", "alice"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("service accounts"), "{}", text(&out));

    // admin users
    let out = ok(run(admin, &["admin", "users", "list"]));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.starts_with("USERNAME") && t.contains("alice") && t.contains("model_owner"), "{t}");
    let alice = json(&ok(run(admin, &["admin", "users", "show", "alice", "--json"])));
    assert_eq!((alice["kind"].as_str(), alice["disabled"].as_bool()), (Some("user"), Some(false)));
    ok(run(admin, &["admin", "users", "disable", "alice"]));
    assert_eq!(json(&ok(run(admin, &["admin", "users", "show", "alice", "--json"])))["disabled"], true);
    ok(run(admin, &["admin", "users", "enable", "alice"]));
    assert_eq!(json(&ok(run(admin, &["admin", "users", "show", "alice", "--json"])))["disabled"], false);
    let out =
        cairn(s, dir, admin, &["admin", "users", "set-password", "alice", "--password-stdin"], Some("qwerty123456\n"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("common"), "{}", text(&out));
    ok(cairn(
        s,
        dir,
        admin,
        &["admin", "users", "set-password", "alice", "--password-stdin"],
        Some("another sturdy passphrase\n"),
    ));
    // A password never comes from a flag, and no terminal means no prompt.
    assert_eq!(run(admin, &["admin", "users", "set-password", "alice", "--password", "x"]).status.code(), Some(2));
    let out = run(admin, &["admin", "users", "set-password", "alice"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--password-stdin"), "{}", text(&out));
    assert_eq!(run(admin, &["admin", "users", "delete", "alice"]).status.code(), Some(2));
    ok(run(admin, &["admin", "users", "delete", "alice", "--yes"]));
    assert_eq!(run(admin, &["admin", "users", "show", "alice"]).status.code(), Some(2));
    assert_eq!(run(admin, &["admin", "users", "delete", "admin", "--yes"]).status.code(), Some(2));

    // admin grants remove
    ok(run(admin, &["admin", "grants", "remove", &grant_id]));
    let grants = json(&ok(run(admin, &["admin", "grants", "list", "--username", "ci", "--json"])));
    assert!(grants["grants"].as_array().unwrap().is_empty());
    assert_eq!(run(admin, &["admin", "grants", "add", "ci", "emperor"]).status.code(), Some(2));

    // Usage errors: 2.
    assert_eq!(run(admin, &["keys", "create", "--name", "n"]).status.code(), Some(2));
    assert_eq!(run(admin, &["keys", "create", "--name", "n", "--scope", "root"]).status.code(), Some(2));
    // Every changed thing is in the audit log, and no token or password is.
    let events = s.client().list_audit_events(&[("limit", "1000")]).await.unwrap().events;
    let all = serde_json::to_string(&events).unwrap();
    for secret in [token.as_str(), "a sturdy passphrase", "another sturdy passphrase"] {
        assert!(!all.contains(secret), "{secret} is in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_cli_on_sqlite() {
    let Some(s) = TestServer::start(Backend::Sqlite, "accounts_cli_on_sqlite").await else { return };
    round_trip(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_cli_on_postgres() {
    let Some(s) = TestServer::start(Backend::Postgres, "accounts_cli_on_postgres").await else { return };
    round_trip(&s).await;
    s.stop().await;
}

#[test]
fn help_covers_the_account_commands() {
    for args in [
        &["--help"][..],
        &["whoami", "--help"],
        &["keys", "--help"],
        &["keys", "create", "--help"],
        &["keys", "rotate", "--help"],
        &["admin", "users", "--help"],
        &["admin", "users", "create", "--help"],
        &["admin", "grants", "--help"],
        &["login", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(t.contains("Usage:"), "{args:?}: {t}");
    }
    let top = String::from_utf8_lossy(&Command::new(BIN).arg("--help").output().unwrap().stdout).into_owned();
    assert!(top.contains("  whoami") && top.contains("  keys"), "{top}");
    let login =
        String::from_utf8_lossy(&Command::new(BIN).args(["login", "--help"]).output().unwrap().stdout).into_owned();
    assert!(login.contains("--password") && login.contains("--password-stdin"), "{login}");
}

/// `cairn login --password`: logs in, makes an API key for the CLI with the session, stores
/// it, and ends the session.
async fn password_login(s: &TestServer) {
    let admin = s.client();
    admin
        .create_user(&cairn_api_types::CreateUser {
            username: "dana".into(),
            password: Some("a sturdy passphrase of hers".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_grant(&cairn_api_types::CreateRoleGrant {
            username: "dana".into(),
            role: "model_owner".into(),
            namespace: None,
        })
        .await
        .unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let login = ["login", "--password", "--username", "dana", "--password-stdin"];

    // A wrong password: refused, nothing stored.
    let out = cairn(s, cfg.path(), None, &login, Some("not the password\n"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("invalid username or password"), "{}", text(&out));
    assert!(!cfg.path().join("credentials.toml").exists());

    let out = ok(cairn(s, cfg.path(), None, &login, Some("a sturdy passphrase of hers\n")));
    assert!(text(&out).contains("as dana with a new API key"), "{}", text(&out));
    let stored = std::fs::read_to_string(cfg.path().join("credentials.toml")).unwrap();
    assert!(stored.contains("cairn_") && !stored.contains("passphrase"), "{stored}");
    let me = json(&ok(cairn(s, cfg.path(), None, &["whoami", "--json"], None)));
    assert_eq!(me["username"], "dana");
    assert_eq!(me["scopes"], serde_json::json!(["read", "write"]));
    assert!(me["key_id"].is_string());
    // The key works for what dana may do; the session that made it is gone.
    ok(cairn(s, cfg.path(), None, &["models", "create", "team/by-dana"], None));
    let keys = json(&ok(cairn(s, cfg.path(), None, &["keys", "list", "--json"], None)));
    assert!(keys["keys"][0]["name"].as_str().unwrap().starts_with("cairn-cli@"), "{keys}");
    let ended = s.client().list_audit_events(&[("action", "auth.logout"), ("actor", "user:dana")]).await.unwrap();
    assert_eq!(ended.events.len(), 1, "cairn login left its session open");

    // An administrator without MFA is told to enrol first, and gets no key.
    let other = tempfile::tempdir().unwrap();
    let out = cairn(
        s,
        other.path(),
        None,
        &["login", "--password", "--username", "admin", "--password-stdin"],
        Some("test-admin-password\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("enrol"), "{}", text(&out));
    assert!(!other.path().join("credentials.toml").exists());
    // Without a terminal and without --password-stdin there is nothing to ask on.
    let out = cairn(s, other.path(), None, &["login", "--password", "--username", "dana"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_on_sqlite() {
    let Some(s) = TestServer::start(Backend::Sqlite, "password_login_on_sqlite").await else { return };
    password_login(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_on_postgres() {
    let Some(s) = TestServer::start(Backend::Postgres, "password_login_on_postgres").await else { return };
    password_login(&s).await;
    s.stop().await;
}
