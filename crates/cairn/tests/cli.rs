//! The real `cairn` binary: `serve`, `login`, `models …`, exit codes, graceful shutdown,
//! and two server processes sharing one PostgreSQL.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_test_utils::{Backend, database_url, random_token, require_all};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &Path, database_url: &str, token: &str) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .env("CAIRN_BOOTSTRAP_ADMIN_TOKEN", token)
            .env("CAIRN_BOOTSTRAP_ADMIN_PASSWORD", "an admin password")
            .env("CAIRN_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            // A file, not a pipe: nobody reads the log while the server runs, and a full
            // pipe would block the server's logging.
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut server = Self { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::blocking_get(&format!("{}/readyz", server.url)).unwrap_or(false) {
                break;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("server exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod reqwest {
    /// GET that returns whether the status was 2xx (tiny blocking client on std only).
    pub fn blocking_get(url: &str) -> std::io::Result<bool> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let mut s = std::net::TcpStream::connect(host)?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 2"))
    }
}

fn cairn(config_dir: &Path, url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("CAIRN_CONFIG_DIR", config_dir).env("CAIRN_URL", url).env_remove("CAIRN_TOKEN");
    if let Some(t) = token {
        cmd.env("CAIRN_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_lists_only_working_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    // DESIGN.md's contract, and the commands added since.
    for cmd in [
        "serve", "login", "logout", "models", "push", "pull", "card", "admin", "audit", "evidence", "verify", "keygen",
        "scan", "sbom", "lineage", "env", "deploy", "rollback",
    ] {
        assert!(text.contains(&format!("  {cmd} ")), "{cmd} missing from --help:\n{text}");
    }
    let bad = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn cli_round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let token = random_token();
    let db = format!("sqlite://{}", dir.path().join("cairn.db").display());
    let server = Server::start(dir.path(), &db, &token);

    // login stores the credentials with mode 0600 after checking them.
    let mut login = Command::new(BIN)
        .args(["login", "--url", &server.url, "--token-stdin"])
        .env("CAIRN_CONFIG_DIR", cfg.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(login.stdin.take().unwrap(), "{token}").unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let cred = cfg.path().join("credentials.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(std::fs::read_to_string(&cred).unwrap().contains(&token));

    // A wrong key is refused and nothing is stored.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["login", "--url", &server.url, "--token", "cairn_wrong"])
        .env("CAIRN_CONFIG_DIR", other.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!other.path().join("credentials.toml").exists());

    // From here on the stored credentials are used (no CAIRN_TOKEN).
    let run = |args: &[&str]| cairn(cfg.path(), &server.url, None, args);
    let out = run(&["models", "create", "team/clf", "--description", "a classifier", "--tag", "task=ner"]);
    assert!(out.status.success(), "{:?}", out);
    let out = run(&[
        "models",
        "versions",
        "create",
        "team/clf",
        "--source",
        "s3://b/1",
        "--metadata",
        r#"{"f1":0.91}"#,
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["metadata"]["f1"], 0.91);
    assert!(run(&["models", "versions", "create", "team/clf"]).status.success());
    assert!(run(&["models", "aliases", "set", "team/clf@champion", "2"]).status.success());
    let out = run(&["models", "versions", "show", "team/clf@champion", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 2);
    let out = run(&["models", "list"]);
    let text = stdout(&out);
    assert!(text.starts_with("MODEL"), "{text}");
    assert!(text.contains("team/clf") && text.contains("task=ner"), "{text}");
    let out = run(&["models", "list", "--json", "--filter", "tags.task = 'ner'"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["models"].as_array().unwrap().len(), 1);
    let out = run(&["models", "versions", "list", "team/clf"]);
    assert!(stdout(&out).contains("@champion"));

    // Exit codes: 2 for input the server refuses, and for missing confirmation.
    assert_eq!(run(&["models", "create", "Bad Name"]).status.code(), Some(2));
    assert_eq!(run(&["models", "show", "team/ghost"]).status.code(), Some(2));
    assert_eq!(run(&["models", "list", "--filter", "name = "]).status.code(), Some(2));
    assert_eq!(run(&["models", "delete", "team/clf"]).status.code(), Some(2));
    assert!(run(&["models", "delete", "team/clf", "--yes"]).status.success());
    // Unreachable server: 1.
    let out = cairn(cfg.path(), "http://127.0.0.1:9", Some(&token), &["models", "list"]);
    assert_eq!(out.status.code(), Some(1));

    assert!(run(&["logout"]).status.success());
    assert!(!cred.exists());
    let status = server.stop();
    assert!(status.success(), "server exited with {status:?} on SIGTERM");
}

#[test]
fn serve_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\ncolour = \"red\"\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("CAIRN_BOOTSTRAP_ADMIN_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// 32 concurrent creators spread over two server processes on one PostgreSQL get
/// versions exactly 1..32.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_one_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database_url(Backend::Postgres, dir.path(), "two_processes_share_one_postgres").await else {
        assert!(!require_all());
        return;
    };
    let token = random_token();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (a, b) = {
        let (db1, db2, t1, t2) = (db.clone(), db.clone(), token.clone(), token.clone());
        let p1 = d1.path().to_path_buf();
        let p2 = d2.path().to_path_buf();
        let a = tokio::task::spawn_blocking(move || Server::start(&p1, &db1, &t1)).await.unwrap();
        let b = tokio::task::spawn_blocking(move || Server::start(&p2, &db2, &t2)).await.unwrap();
        (a, b)
    };
    let ca = cairn_client::Client::new(&a.url, Some(token.clone())).unwrap();
    let cb = cairn_client::Client::new(&b.url, Some(token.clone())).unwrap();
    ca.create_model(&cairn_api_types::CreateModel { name: "team/shared".into(), ..Default::default() }).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(
            async move { c.create_version("team/shared", &Default::default()).await.unwrap().version },
        ));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=32).collect::<Vec<i64>>());
    assert_eq!(cb.get_model("team/shared").await.unwrap().latest_version, 32);
    // A page token from one replica is accepted by the other.
    for i in 0..3 {
        ca.create_model(&cairn_api_types::CreateModel { name: format!("team/p{i}"), ..Default::default() })
            .await
            .unwrap();
    }
    let first = ca.list_models(&cairn_client::ListOptions { limit: Some(2), ..Default::default() }).await.unwrap();
    let second = cb
        .list_models(&cairn_client::ListOptions {
            limit: Some(2),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.models.len(), 2);
    tokio::task::spawn_blocking(move || {
        assert!(a.stop().success());
        assert!(b.stop().success());
    })
    .await
    .unwrap();
}

/// A newcomer's first start, with nothing configured: the password and an admin API key are
/// printed once on the terminal, the key works, and a second start prints neither.
#[test]
fn first_start_prints_a_working_admin_key_once() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let start = || {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("CAIRN_BOOTSTRAP_ADMIN_TOKEN")
            .env_remove("CAIRN_BOOTSTRAP_ADMIN_PASSWORD")
            .env_remove("CAIRN_DATABASE_URL")
            .env("CAIRN_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::blocking_get(&format!("{url}/readyz")).unwrap_or(false) {
            assert!(child.try_wait().unwrap().is_none(), "server exited");
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let stderr = child.stderr.take().unwrap();
        (Server { child, url }, stderr)
    };
    let (server, stderr) = start();
    // Read the terminal output on a thread, so a missing line fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut password, mut key) = (None, None);
    loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("the first start should print its secrets");
        if let Some(p) = line.split("with password: ").nth(1) {
            password = Some(p.trim().to_owned());
        }
        if let Some(k) = line.split("days): ").nth(1) {
            key = Some(k.trim().to_owned());
        }
        if line.contains("shown only this once") {
            break;
        }
    }
    let password = password.expect("password printed");
    let key = key.expect("key printed");
    assert!(key.starts_with("cairn_") && key.len() > 40, "{key}");
    let out = cairn(cfg.path(), &server.url, Some(&key), &["models", "create", "team/first"]);
    assert!(out.status.success(), "{out:?}");
    // Neither secret is in the log lines that follow.
    assert!(server.stop().success());
    reader.join().unwrap();
    let rest: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert!(!rest.contains(&key) && !rest.contains(&password), "secret in the log");

    let (server, stderr) = start();
    assert!(server.stop().success());
    let mut text = String::new();
    use std::io::Read;
    BufReader::new(stderr).read_to_string(&mut text).unwrap();
    assert!(!text.contains("password:") && !text.contains("API key"), "second start printed secrets: {text}");
}

/// SIGTERM while the server is still starting (its port bound, the database being opened)
/// stops it in order, exit 0: the handler is in place before the port is, so the signal's
/// default action (ending the process at once) never applies once anyone can connect.
#[test]
fn sigterm_while_starting_stops_in_order() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("CAIRN_BOOTSTRAP_ADMIN_TOKEN", random_token())
            .env("CAIRN_BOOTSTRAP_ADMIN_PASSWORD", "an admin password")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "server exited before listening");
            assert!(Instant::now() < deadline, "server did not listen");
            std::thread::sleep(Duration::from_millis(1));
        }
        let server = Server { child, url: format!("http://127.0.0.1:{port}") };
        let status = server.stop();
        assert!(status.success(), "{status:?}");
    }
}

/// SIGTERM lets a request that is already in flight finish, then the server exits 0.
#[test]
fn sigterm_finishes_in_flight_requests() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let db = format!("sqlite://{}", dir.path().join("cairn.db").display());
    let server = Server::start(dir.path(), &db, &token);
    let host = server.url.strip_prefix("http://").unwrap().to_owned();
    let body = r#"{"name": "team/inflight", "description": "sent slowly"}"#;
    let mut s = std::net::TcpStream::connect(&host).unwrap();
    write!(
        s,
        "POST /api/v1/models HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Shutdown starts while the request body is still arriving.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    // The model was committed before the process ended.
    let again = Server::start(dir.path(), &db, &token);
    let out = cairn(dir.path(), &again.url, Some(&token), &["models", "show", "team/inflight", "--json"]);
    assert!(out.status.success(), "{out:?}");
}
