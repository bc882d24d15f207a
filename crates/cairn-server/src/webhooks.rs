//! Webhook delivery (docs/WEBHOOKS.md): the worker that posts due deliveries, their
//! signature, and the checks that keep hooks from reaching the server's own network.
//!
//! The worker polls the delivery log every `webhook_poll_ms`, claims a bounded batch with a
//! lease (so replicas never post one delivery twice), posts up to [`CONCURRENCY`] at once with
//! a [`REQUEST_TIMEOUT`], follows no redirect, reads at most [`MAX_RESPONSE_BYTES`] of an
//! answer, and records the outcome: a 2xx is delivered; anything else is retried after
//! `webhook_retry_base_secs × 2^(attempt-1)` (at most an hour) until `webhook_max_attempts`,
//! then the delivery is `failed`. Secrets are never logged.
//!
//! Destinations are checked twice: when a hook is created ([`check_destination`]) and at every
//! delivery, where a DNS resolver ([`PublicResolver`]) drops every private, loopback,
//! link-local, unique-local, unspecified or multicast address, so that a name that later
//! resolves elsewhere (DNS rebinding) still cannot reach them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;
use tokio::sync::watch;

use cairn_store::Store;
use cairn_store::webhook::DueDelivery;

use crate::settings::Settings;

/// How long one delivery request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries posted at once by one worker.
pub const CONCURRENCY: usize = 8;
/// Deliveries claimed per poll.
pub const BATCH: usize = 32;
/// The most of a receiver's answer that is read.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_SECS: u64 = 3600;
/// How long a claimed delivery is kept from other workers: longer than any attempt takes.
const LEASE_MS: i64 = 60_000;

/// Header names of a delivery.
pub mod headers {
    /// The delivery's id; the same on every retry (receivers deduplicate with it).
    pub const ID: &str = "cairn-webhook-id";
    /// Unix seconds when this attempt was signed.
    pub const TIMESTAMP: &str = "cairn-webhook-timestamp";
    /// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
    pub const SIGNATURE: &str = "cairn-webhook-signature";
    /// The event name.
    pub const EVENT: &str = "cairn-event";
}

/// A new signing secret: `whsec_` and 32 random bytes in base64url.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    format!("whsec_{}", URL_SAFE_NO_PAD.encode(key))
}

/// The `Cairn-Webhook-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body posted for a delivery: `{"id", "event", "created_at", "data"}`.
pub fn body(delivery: &DueDelivery) -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({
        "id": delivery.id,
        "event": delivery.event,
        "created_at": delivery.created_at,
        "data": data,
    }))
    .unwrap_or_default()
}

/// Whether hooks must not reach `ip`: loopback, private (RFC 1918), shared (RFC 6598),
/// link-local (with cloud metadata at 169.254.169.254), unique-local IPv6, unspecified,
/// broadcast, multicast, reserved, and IPv4 addresses carried in IPv6.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
                // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
                // addresses can lead to an IPv4 address inside.
                || v6.segments()[..6].iter().all(|s| *s == 0)
                || (v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0])
                || first == 0x2002
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// A DNS resolver that drops every address hooks must not reach (unless `allow_private`),
/// and fails when none is left.
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver {
    /// Keep private addresses too (`webhook_allow_private_networks`).
    pub allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_public(&host, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

async fn resolve_public(
    host: &str,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    let kept: Vec<SocketAddr> = all.iter().copied().filter(|a| allow_private || !is_forbidden(a.ip())).collect();
    if kept.is_empty() {
        return Err(if all.is_empty() {
            format!("{host} does not resolve").into()
        } else {
            format!("{host} resolves only to private, loopback or link-local addresses, which webhooks may not reach")
                .into()
        });
    }
    Ok(kept)
}

/// Checks the shape of a hook's URL: `http` or `https`, a host, no user name or password;
/// and, unless `allow_private`, that a literal IP host is public. Returns the parsed URL.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("the webhook URL is not a valid URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the webhook URL has no host".into());
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("webhook URLs must be http or https, not {}", parsed.scheme()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("webhook URLs must not carry a user name or password; the signature authenticates Cairn".into());
    }
    if let Some(ip) = literal_ip(&parsed)
        && !allow_private
        && is_forbidden(ip)
    {
        return Err(private_refusal(&ip.to_string()));
    }
    Ok(parsed)
}

/// The host of `url` when it is an IP address (the URL parser has normalised forms such as
/// `0x7f000001` already).
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn private_refusal(host: &str) -> String {
    format!(
        "{host} is a private, loopback or link-local address, which webhooks may not reach \
         (an administrator can allow it with CAIRN_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true)"
    )
}

/// Checks a destination when a hook is created: its URL ([`check_url`]) and, for a host name,
/// that it resolves to public addresses only.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let parsed = check_url(url, allow_private)?;
    if literal_ip(&parsed).is_none()
        && !allow_private
        && let Some(host) = parsed.host_str()
    {
        let all: Vec<SocketAddr> =
            tokio::net::lookup_host((host, 0)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        if all.is_empty() {
            return Err(format!("{host} does not resolve"));
        }
        if all.iter().any(|a| is_forbidden(a.ip())) {
            return Err(private_refusal(host));
        }
    }
    Ok(parsed)
}

/// How the worker runs (from [`Settings`]).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Time between polls when there is nothing to do.
    pub poll: Duration,
    /// First retry delay, in seconds.
    pub retry_base_secs: u64,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Allow private destinations.
    pub allow_private: bool,
}

impl WorkerConfig {
    /// The worker the settings describe.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            poll: Duration::from_millis(settings.webhook_poll_ms.max(1)),
            retry_base_secs: settings.webhook_retry_base_secs,
            max_attempts: settings.webhook_max_attempts.max(1),
            allow_private: settings.webhook_allow_private_networks,
        }
    }

    /// The delay before the attempt after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        Duration::from_secs(self.retry_base_secs.saturating_mul(factor).min(MAX_BACKOFF_SECS))
    }
}

/// A running delivery worker.
#[derive(Debug)]
pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts a worker on `store`.
    pub fn spawn(store: Store, config: WorkerConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(deliver_forever(store, config, stopped));
        Self { stop, task }
    }

    /// Stops taking new deliveries, and waits for those in flight (at most their timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The HTTP client of deliveries: no redirects, no proxies (they would bypass the address
/// checks), the filtering resolver, a timeout.
pub fn client(allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .dns_resolver(Arc::new(PublicResolver { allow_private }))
        .user_agent(concat!("cairn-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the webhook HTTP client builds with static settings")
}

async fn deliver_forever(store: Store, config: WorkerConfig, mut stopped: watch::Receiver<bool>) {
    let http = client(config.allow_private);
    loop {
        if *stopped.borrow() {
            return;
        }
        let handled = match run_once(&store, &http, &config).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery: could not claim deliveries");
                0
            }
        };
        // A full batch means more may be due: go again at once.
        if handled < BATCH {
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(config.poll) => {}
            }
        }
    }
}

/// Claims one batch of due deliveries and posts them; returns how many were claimed.
pub async fn run_once(
    store: &Store,
    http: &reqwest::Client,
    config: &WorkerConfig,
) -> Result<usize, cairn_store::StoreError> {
    let due = store.claim_due_deliveries(store.now(), LEASE_MS, BATCH).await?;
    let n = due.len();
    futures::stream::iter(due)
        .for_each_concurrent(CONCURRENCY, |d| async move {
            let outcome = attempt(http, &d, config.allow_private).await;
            if let Err(e) = record(store, config, &d, outcome).await {
                tracing::warn!(error = %e, delivery = %d.id, "webhook delivery: could not record the outcome");
            }
        })
        .await;
    Ok(n)
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Refused(u16, String),
    Failed(String),
}

async fn attempt(http: &reqwest::Client, d: &DueDelivery, allow_private: bool) -> Outcome {
    // Literal IP hosts never reach the resolver: check them here, at every attempt.
    if let Err(e) = check_url(&d.url, allow_private) {
        return Outcome::Failed(e);
    }
    let body = body(d);
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let request = http
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(headers::ID, &d.id)
        .header(headers::TIMESTAMP, timestamp.to_string())
        .header(headers::SIGNATURE, sign(&d.secret, timestamp, &body))
        .header(headers::EVENT, &d.event)
        .body(body);
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(describe(&e)),
    };
    let status = response.status();
    // Read a little of the answer (for the log), never more.
    let mut head = Vec::new();
    while head.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BYTES - head.len())]),
            _ => break,
        }
    }
    drop(response);
    if status.is_success() {
        Outcome::Delivered(status.as_u16())
    } else {
        let text = String::from_utf8_lossy(&head);
        let text: String = text.chars().take(200).collect();
        Outcome::Refused(status.as_u16(), format!("the receiver answered {status}: {text}"))
    }
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut out = if e.is_timeout() {
        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn record(
    store: &Store,
    config: &WorkerConfig,
    d: &DueDelivery,
    outcome: Outcome,
) -> Result<(), cairn_store::StoreError> {
    let now = store.now();
    let (status, error) = match outcome {
        Outcome::Delivered(status) => {
            tracing::debug!(delivery = %d.id, webhook = %d.webhook_id, status, "webhook delivered");
            return store.record_delivery_success(&d.id, i64::from(status), now).await;
        }
        Outcome::Refused(status, e) => (Some(i64::from(status)), e),
        Outcome::Failed(e) => (None, e),
    };
    let attempt = u32::try_from(d.attempts.saturating_add(1)).unwrap_or(u32::MAX);
    let next = (attempt < config.max_attempts).then(|| {
        let delay = i64::try_from(config.backoff(attempt).as_millis()).unwrap_or(i64::MAX);
        now.saturating_add(delay)
    });
    if next.is_none() {
        tracing::warn!(delivery = %d.id, webhook = %d.webhook_id, attempt, error = %error, "webhook delivery failed; giving up");
    } else {
        tracing::info!(delivery = %d.id, webhook = %d.webhook_id, attempt, error = %error, "webhook delivery failed; will retry");
    }
    store.record_delivery_failure(&d.id, status, &error, now, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "203.0.113.9"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://93.184.215.14/hook", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/hook", true).is_ok());
        for bad in [
            "ftp://example.org/x",
            "https://user:pw@example.org/x",
            "https://user@example.org/x",
            "http://127.0.0.1/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f000001/x",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn signature_matches_the_documented_recipe() {
        // HMAC-SHA256("whsec_test", "1700000000.{}") computed independently.
        let sig = sign("whsec_test", 1_700_000_000, b"{}");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
        assert_eq!(sig, sign("whsec_test", 1_700_000_000, b"{}"));
        assert_ne!(sig, sign("whsec_test", 1_700_000_001, b"{}"));
        assert!(generate_secret().starts_with("whsec_") && generate_secret().len() == 6 + 43);
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let c =
            WorkerConfig { poll: Duration::from_secs(1), retry_base_secs: 10, max_attempts: 8, allow_private: false };
        let secs: Vec<u64> = (1..=10).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
    }
}
