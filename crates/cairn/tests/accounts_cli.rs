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

/// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) written here from the RFCs, independent of the
/// server's implementation.
mod totp {
    fn sha1(data: &[u8]) -> [u8; 20] {
        let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
        let mut msg = data.to_vec();
        let bits = (data.len() as u64) * 8;
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bits.to_be_bytes());
        for block in msg.chunks(64) {
            let mut w = [0u32; 80];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
            }
            for i in 16..80 {
                w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            for (i, wi) in w.iter().enumerate() {
                let (f, k) = match i {
                    0..=19 => ((b & c) | (!b & d), 0x5A827999),
                    20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                    40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                    _ => (b ^ c ^ d, 0xCA62C1D6),
                };
                let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
                e = d;
                d = c;
                c = b.rotate_left(30);
                b = a;
                a = t;
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
                *x = x.wrapping_add(y);
            }
        }
        let mut out = [0u8; 20];
        for (i, x) in h.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
        }
        out
    }

    fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..20].copy_from_slice(&sha1(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(sha1(&inner)).collect();
        sha1(&outer)
    }

    fn base32(s: &str) -> Vec<u8> {
        let (mut out, mut acc, mut n) = (Vec::new(), 0u64, 0);
        for c in s.trim_end_matches('=').chars() {
            let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c.to_ascii_uppercase()).expect("base32") as u64;
            acc = (acc << 5) | v;
            n += 5;
            if n >= 8 {
                n -= 8;
                out.push((acc >> n) as u8);
            }
        }
        out
    }

    /// The code of time step `step` for a base32 secret.
    pub fn code(secret: &str, step: u64) -> String {
        let mac = hmac_sha1(&base32(secret), &step.to_be_bytes());
        let off = usize::from(mac[19] & 0x0f);
        let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
        format!("{:06}", bin % 1_000_000)
    }

    pub fn step_now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 30
    }

    #[test]
    fn rfc_6238_vectors() {
        // The SHA-1 seed "12345678901234567890", 8-digit vectors cut to their last 6 digits.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(code(secret, 59 / 30), "287082");
        assert_eq!(code(secret, 1111111109 / 30), "081804");
        assert_eq!(code(secret, 1234567890 / 30), "005924");
    }
}

/// `cairn login --password` for an account with MFA: the code is asked for (here: the second
/// line of stdin) and the session is stepped up before the key is made.
async fn password_login_with_mfa(s: &TestServer) {
    let admin = s.client();
    let password = "an even sturdier passphrase";
    admin
        .create_user(&cairn_api_types::CreateUser {
            username: "erin".into(),
            password: Some(password.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (session, _) =
        cairn_client::Client::new(&s.url, None).unwrap().login_password("erin", password, None).await.unwrap();
    let enrolment = session.begin_totp_enrolment().await.unwrap();
    let step = totp::step_now();
    session.confirm_totp(&totp::code(&enrolment.secret, step)).await.unwrap();
    session.logout_session().await.unwrap();

    let cfg = tempfile::tempdir().unwrap();
    let login = ["login", "--password", "--username", "erin", "--password-stdin"];
    // A wrong code: refused, nothing stored.
    let out = cairn(s, cfg.path(), None, &login, Some(&format!("{password}\n000000\n")));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!cfg.path().join("credentials.toml").exists());
    // The next step's code (one step of clock skew is accepted; the current one was used).
    let code = totp::code(&enrolment.secret, step + 1);
    let out = ok(cairn(s, cfg.path(), None, &login, Some(&format!("{password}\n{code}\n"))));
    assert!(text(&out).contains("as erin with a new API key"), "{}", text(&out));
    let me = json(&ok(cairn(s, cfg.path(), None, &["whoami", "--json"], None)));
    assert_eq!((me["username"].as_str(), me["mfa_enabled"].as_bool()), (Some("erin"), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_with_mfa_on_sqlite() {
    let Some(s) = TestServer::start(Backend::Sqlite, "password_login_with_mfa_on_sqlite").await else { return };
    password_login_with_mfa(&s).await;
    s.stop().await;
}
