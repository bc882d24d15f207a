//! The server killed with SIGKILL in the middle of an upload: after a restart no partial
//! blob is visible, the database is consistent, and the upload resumes where it stopped.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_test_utils::random_token;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
const PART: usize = 64 * 1024;

fn start(dir: &Path, token: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("CAIRN_BOOTSTRAP_ADMIN_TOKEN", token)
        .env("CAIRN_BOOTSTRAP_ADMIN_PASSWORD", "an admin password")
        .env("CAIRN_UPLOAD_PART_SIZE", PART.to_string())
        .env_remove("CAIRN_DATABASE_URL")
        .env_remove("CAIRN_BLOB_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let host = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(&host, "GET", "/readyz", None, &[]).map(|r| r.0).ok() != Some(200) {
        assert!(Instant::now() < deadline, "server did not become ready: {}", log_of(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, host)
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// A minimal HTTP/1.1 exchange on std only.
fn http(host: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> std::io::Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(host)?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn json_call(host: &str, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    http(host, method, path, Some(token), body.to_string().as_bytes()).unwrap()
}

fn put_part(host: &str, token: &str, id: &str, digest: &str, n: usize, data: &[u8]) -> (u16, Value) {
    let path = format!("/api/v1/uploads/{id}/blobs/{digest}/parts/{n}");
    http(host, "PUT", &path, Some(token), &data[n * PART..((n + 1) * PART).min(data.len())]).unwrap()
}

#[test]
fn sigkill_mid_upload_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let data: Vec<u8> = (0..(4 * PART) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = hex::encode(Sha256::digest(&data));
    let (mut child, host) = start(dir.path(), &token);
    let (st, v) = json_call(&host, &token, "POST", "/api/v1/models", json!({"name": "team/killed"}));
    assert_eq!(st, 201, "{v}");
    let files = json!({"files": [{"path": "w.bin", "size": data.len(), "sha256": digest}]});
    let (st, status) = json_call(&host, &token, "POST", "/api/v1/models/team/killed/uploads", files);
    assert_eq!(st, 201, "{status}");
    let id = status["upload_id"].as_str().unwrap().to_owned();
    for n in 0..2 {
        assert_eq!(put_part(&host, &token, &id, &digest, n, &data).0, 200);
    }
    // Part 2 is half sent when the server dies.
    let mut s = std::net::TcpStream::connect(&host).unwrap();
    write!(
        s,
        "PUT /api/v1/uploads/{id}/blobs/{digest}/parts/2 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {PART}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&data[2 * PART..2 * PART + PART / 2]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(s);

    let (mut child, host) = start(dir.path(), &token);
    let blob_file = dir.path().join("blobs").join("sha256").join(&digest[..2]).join(&digest);
    assert!(!blob_file.exists(), "no partial blob may be visible");
    let (st, status) = json_call(&host, &token, "GET", &format!("/api/v1/uploads/{id}"), Value::Null);
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["blobs"][0]["parts_received"], json!([0, 1]), "only whole parts count: {status}");
    assert_eq!(status["blobs"][0]["present"], false);
    let (st, v) = json_call(&host, &token, "POST", &format!("/api/v1/uploads/{id}/commit"), json!({}));
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("missing_blobs")), "{v}");
    for n in 2..4 {
        let (st, v) = put_part(&host, &token, &id, &digest, n, &data);
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = json_call(&host, &token, "POST", &format!("/api/v1/uploads/{id}/commit"), json!({}));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert!(blob_file.exists());
    // The stored bytes are the uploaded ones.
    let mut s = std::net::TcpStream::connect(&host).unwrap();
    write!(
        s,
        "GET /api/v1/models/team/killed/versions/1/files/w.bin HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    assert_eq!(&raw[split..], data.as_slice());
    child.kill().unwrap();
    child.wait().unwrap();
}
