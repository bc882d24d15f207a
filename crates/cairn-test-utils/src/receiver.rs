//! A webhook receiver for tests: an HTTP server on 127.0.0.1 that records what it is sent
//! and can be told to fail, and the signature check a real receiver would make.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// What the receiver saw.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Received>,
    fail_next: usize,
}

/// A tiny HTTP receiver on 127.0.0.1 that records requests and answers 500 while told to.
#[derive(Clone)]
pub struct Receiver {
    /// Where it listens (`http://127.0.0.1:<port>/hook`).
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    /// Starts a receiver.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move {
                    let mut s = shared.lock().unwrap();
                    s.got.push(Received { headers, body, at: Instant::now() });
                    if s.fail_next > 0 {
                        s.fail_next -= 1;
                        (AxumStatus::INTERNAL_SERVER_ERROR, "not now")
                    } else {
                        (AxumStatus::NO_CONTENT, "")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/hook"), state }
    }

    /// Answers 500 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Everything received so far.
    pub fn got(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// Waits (up to 30 s) until `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "the receiver got {} of {n} requests in time", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks a delivery as a receiver would: signature over `"{timestamp}.{body}"`, a fresh
/// timestamp. Returns the parsed body.
pub fn verify(r: &Received, secret: &str) -> Value {
    let header = |name: &str| r.headers.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap().to_owned();
    let timestamp: i64 = header("cairn-webhook-timestamp").parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - timestamp).abs() < 300, "timestamp {timestamp} is not within 5 minutes of {now}");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header("cairn-webhook-signature"), expected, "signature");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(header("cairn-webhook-id"), body["id"].as_str().unwrap());
    assert_eq!(header("cairn-event"), body["event"].as_str().unwrap());
    assert!(header("user-agent").starts_with("cairn-webhooks/"));
    assert_eq!(header("content-type"), "application/json");
    body
}
