//! `cairn serve` as operators run it, through the real binary: HTTPS with a generated
//! certificate (TLS 1.2 and 1.3, HSTS, the HTTP→HTTPS redirect, certificate reload on SIGHUP
//! and on file change without dropping open connections), the refusal of plain HTTP on
//! public addresses, draining on SIGTERM, `cairn admin check-config`, and
//! `cairn admin maintenance`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
const TOKEN: &str = "serve-ops-admin-token-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `cairn` command with a clean environment for settings.
fn cairn(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") {
            c.env_remove(k);
        }
    }
    c
}

fn spawn_serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
    let mut c = cairn(dir);
    c.arg("serve").args(args).arg("--data-dir").arg(dir.join("data"));
    c.env("CAIRN_BOOTSTRAP_ADMIN_TOKEN", TOKEN).env("CAIRN_BOOTSTRAP_ADMIN_PASSWORD", "an admin password");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().unwrap();
    assert!(st.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 request on std: status line and the whole answer.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::Write as _;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    (raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0), raw)
}

/// A test CA and certificates for `127.0.0.1` and `localhost` signed by it.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Cairn test CA");
        Self { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes a new server certificate (common name `cn`) and its key; returns the
    /// certificate's DER.
    fn issue(&self, cn: &str, cert_file: &Path, key_file: &Path) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Written beside and renamed, as certificate tools do: never a half file.
        write_atomically(key_file, key.serialize_pem().as_bytes());
        write_atomically(cert_file, cert.pem().as_bytes());
        cert.der().to_vec()
    }

    fn connector(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

async fn tls_connect(connector: &TlsConnector, port: u16) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    connector.connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp).await
}

fn peer_cert(conn: &TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c: &CertificateDer<'_>| c.to_vec()).unwrap()
}

/// One keep-alive HTTP/1.1 GET on an open TLS connection: the head of the answer (status
/// line and headers). Bodies of the probes are small; the whole answer is read by length.
async fn tls_get(conn: &mut TlsStream<tokio::net::TcpStream>, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                return head.to_owned();
            }
        }
    }
}

async fn wait_https_ready(connector: &TlsConnector, port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = tls_connect(connector, port).await
            && tls_get(&mut c, "/readyz").await.starts_with("HTTP/1.1 200")
        {
            return;
        }
        assert!(Instant::now() < deadline, "HTTPS server not ready: {}", log_of(dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a new connection is served `want`.
async fn wait_for_cert(connector: &TlsConnector, port: u16, want: &[u8], what: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = tls_connect(connector, port).await.unwrap();
        if peer_cert(&c) == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: new connections still get the old certificate: {}", log_of(dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_hsts_redirect_and_certificate_reload_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let pki = Pki::new();
    let first = pki.issue("cairn-1", &cert_file, &key_file);
    let (port, plain) = (free_port(), free_port());
    let mut child = spawn_serve(
        dir.path(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[
            ("CAIRN_TLS_CERT_FILE", cert_file.to_str().unwrap()),
            ("CAIRN_TLS_KEY_FILE", key_file.to_str().unwrap()),
            ("CAIRN_TLS_RELOAD_SECS", "1"),
            ("CAIRN_TLS_REDIRECT_LISTEN", &format!("127.0.0.1:{plain}")),
        ],
    );
    let modern = pki.connector(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    wait_https_ready(&modern, port, dir.path()).await;

    // TLS 1.3 and 1.2 both work; every answer carries HSTS.
    let mut kept = tls_connect(&modern, port).await.unwrap();
    assert_eq!(kept.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(peer_cert(&kept), first);
    let head = tls_get(&mut kept, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("strict-transport-security: max-age=63072000; includesubdomains"),
        "{head}"
    );
    let tls12 = pki.connector(&[&rustls::version::TLS12]);
    let mut old = tls_connect(&tls12, port).await.unwrap();
    assert_eq!(old.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let suite = old.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert!(format!("{suite:?}").contains("GCM") || format!("{suite:?}").contains("CHACHA20"), "{suite:?}");
    assert!(tls_get(&mut old, "/healthz").await.starts_with("HTTP/1.1 200"));
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert_eq!(http(port, "GET", "/healthz", None, "").0, 0);

    // The plain listener only redirects, keeping path and query.
    let (st, raw) = http(plain, "GET", "/ui/models?q=bert", None, "");
    assert_eq!(st, 308, "{raw}");
    assert!(raw.contains(&format!("location: https://127.0.0.1:{port}/ui/models?q=bert")), "{raw}");

    // SIGHUP: new connections get the new certificate; the open one keeps working.
    let second = pki.issue("cairn-2", &cert_file, &key_file);
    signal(&child, "HUP");
    wait_for_cert(&modern, port, &second, "after SIGHUP", dir.path()).await;
    assert!(tls_get(&mut kept, "/healthz").await.starts_with("HTTP/1.1 200"), "the open connection was dropped");
    assert_eq!(peer_cert(&kept), first);

    // A changed file is picked up without a signal.
    let third = pki.issue("cairn-3", &cert_file, &key_file);
    wait_for_cert(&modern, port, &third, "after a file change", dir.path()).await;

    // A broken file is refused and the current certificate stays.
    std::fs::write(&cert_file, "not a certificate").unwrap();
    signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_of(dir.path()).contains("could not reload the TLS certificate") {
        assert!(Instant::now() < deadline, "{}", log_of(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = tls_connect(&modern, port).await.unwrap();
    assert_eq!(peer_cert(&c), third);
    assert!(tls_get(&mut kept, "/healthz").await.starts_with("HTTP/1.1 200"));

    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", log_of(dir.path()));
}

#[test]
fn plain_http_on_a_public_address_needs_tls_or_insecure_http() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_serve(dir.path(), &["--listen", &format!("0.0.0.0:{port}")], &[]);
    let st = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(2));
    let log = log_of(dir.path());
    assert!(log.contains("refusing to serve plain HTTP") && log.contains("--insecure-http"), "{log}");
    assert!(log.contains("CAIRN_TLS_CERT_FILE"), "{log}");
    assert!(!dir.path().join("data").exists(), "nothing was created before the refusal");

    let mut child = spawn_serve(dir.path(), &["--listen", &format!("0.0.0.0:{port}"), "--insecure-http"], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/readyz", None, "").0 != 200 {
        assert!(Instant::now() < deadline, "{}", log_of(dir.path()));
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());

    // A certificate file that is not one stops the start, naming the setting.
    std::fs::write(dir.path().join("bad.pem"), "garbage").unwrap();
    let bad = dir.path().join("bad.pem");
    let mut child = spawn_serve(
        dir.path(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[("CAIRN_TLS_CERT_FILE", bad.to_str().unwrap()), ("CAIRN_TLS_KEY_FILE", bad.to_str().unwrap())],
    );
    assert!(!wait_exit(&mut child, Duration::from_secs(30)).success());
    assert!(log_of(dir.path()).contains("tls_cert_file (CAIRN_TLS_CERT_FILE)"), "{}", log_of(dir.path()));
}

#[test]
fn sigterm_drains_readiness_first_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_serve(
        dir.path(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[("CAIRN_SHUTDOWN_DRAIN_SECS", "3"), ("CAIRN_SHUTDOWN_GRACE_SECS", "5")],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/readyz", None, "").0 != 200 {
        assert!(Instant::now() < deadline, "{}", log_of(dir.path()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let signalled = Instant::now();
    signal(&child, "TERM");
    // While draining: not ready, but alive and still answering requests.
    let deadline = Instant::now() + Duration::from_secs(2);
    let (st, raw) = loop {
        let (st, raw) = http(port, "GET", "/readyz", None, "");
        if st == 503 || Instant::now() > deadline {
            break (st, raw);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st, 503, "{raw}");
    assert!(raw.contains("draining"), "{raw}");
    assert_eq!(http(port, "GET", "/healthz", None, "").0, 200);
    assert_eq!(http(port, "GET", "/api/v1/models", Some(TOKEN), "").0, 200);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{}", log_of(dir.path()));
    assert!(signalled.elapsed() >= Duration::from_secs(3), "stopped before the drain time");
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = cairn(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn check_config_validates_without_starting_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-created");
    let data_arg = data.to_str().unwrap();
    let ok = run(dir.path(), &["admin", "check-config", "--data-dir", data_arg], &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("configuration OK"), "{}", text(&ok));
    assert!(!data.exists(), "check-config wrote nothing");

    let pki = Pki::new();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    pki.issue("cairn", &cert, &key);
    let tls_ok = run(
        dir.path(),
        &["admin", "check-config", "--data-dir", data_arg],
        &[("CAIRN_TLS_CERT_FILE", cert.to_str().unwrap()), ("CAIRN_TLS_KEY_FILE", key.to_str().unwrap())],
    );
    assert_eq!(tls_ok.status.code(), Some(0), "{}", text(&tls_ok));
    assert!(text(&tls_ok).contains("https://127.0.0.1:8080"), "{}", text(&tls_ok));

    let bad: [(&[(&str, &str)], &str); 5] = [
        (&[("CAIRN_MAX_JSON_BYTES", "lots")], "max_json_bytes"),
        (&[("CAIRN_TLS_CERT_FILE", cert.to_str().unwrap())], "tls_key_file"),
        (
            &[("CAIRN_TLS_CERT_FILE", key.to_str().unwrap()), ("CAIRN_TLS_KEY_FILE", key.to_str().unwrap())],
            "tls_cert_file",
        ),
        (&[("CAIRN_LISTEN", "0.0.0.0:8080")], "CAIRN_LISTEN"),
        (&[("CAIRN_METRICS_TOKEN", "short")], "metrics_token"),
    ];
    for (env, name) in bad {
        let o = run(dir.path(), &["admin", "check-config", "--data-dir", data_arg], env);
        assert_eq!(o.status.code(), Some(2), "{env:?}: {}", text(&o));
        assert!(text(&o).contains(name), "{env:?} should name {name}: {}", text(&o));
    }
    std::fs::write(dir.path().join("cairn.toml"), "listen = \"127.0.0.1:9000\"\nmax_json_byte = 5000\n").unwrap();
    let o = run(dir.path(), &["admin", "check-config", "--data-dir", data_arg], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("max_json_byte"), "{}", text(&o));
    std::fs::remove_file(dir.path().join("cairn.toml")).unwrap();

    let o = run(
        dir.path(),
        &["admin", "check-config", "--connect", "--data-dir", data_arg],
        &[("CAIRN_DATABASE_URL", "postgres://cairn:secret-pw@127.0.0.1:1/cairn")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not reachable") && !text(&o).contains("secret-pw"), "{}", text(&o));
}

#[test]
fn maintenance_mode_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_serve(dir.path(), &["--listen", &format!("127.0.0.1:{port}")], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/readyz", None, "").0 != 200 {
        assert!(Instant::now() < deadline, "{}", log_of(dir.path()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let data: PathBuf = dir.path().join("data");
    let admin = |args: &[&str]| {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", data.to_str().unwrap()]);
        run(dir.path(), &all, &[])
    };
    let empty = admin(&["maintenance", "on", "--message", " "]);
    assert_eq!(empty.status.code(), Some(2), "{}", text(&empty));
    let on = admin(&["maintenance", "on", "--message", "upgrading the database"]);
    assert_eq!(on.status.code(), Some(0), "{}", text(&on));
    assert!(text(&on).contains("ON"), "{}", text(&on));
    let create = || http(port, "POST", "/api/v1/models", Some(TOKEN), r#"{"name": "ops/while-maintained"}"#);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (st, raw) = loop {
        let (st, raw) = create();
        if st == 503 || Instant::now() > deadline {
            break (st, raw);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st, 503, "{raw}");
    assert!(raw.contains("upgrading the database") && raw.to_ascii_lowercase().contains("retry-after:"), "{raw}");
    assert_eq!(http(port, "GET", "/api/v1/models", Some(TOKEN), "").0, 200);
    let status = admin(&["maintenance", "status"]);
    assert!(text(&status).contains("upgrading the database"), "{}", text(&status));
    let off = admin(&["maintenance", "off"]);
    assert_eq!(off.status.code(), Some(0), "{}", text(&off));
    let deadline = Instant::now() + Duration::from_secs(5);
    while create().0 != 201 {
        assert!(Instant::now() < deadline, "writes still refused after maintenance off");
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
