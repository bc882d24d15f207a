//! Rate limits and security headers over a real socket, on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use cairn_server::Settings;
use cairn_store::AuditContext;
use cairn_store::audit::AuditQuery;
use cairn_store::rate_limit::RateDelta;
use cairn_store::user::{NewApiKey, NewUser};
use cairn_test_utils::{Backend, TestServer};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const LIMIT: u32 = 5;
const WINDOW: u64 = 60;
const BLOCK: u64 = 2;

fn small_limits(s: &mut Settings) {
    s.rate_limit_requests = LIMIT;
    s.rate_limit_window = WINDOW;
    s.rate_limit_block_secs = BLOCK;
}

async fn start(backend: Backend, test: &str) -> Option<TestServer> {
    TestServer::start_with(backend, test, small_limits).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header is text"))
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name).unwrap_or_else(|| panic!("{} without {name}", self.status)).parse().expect("a number")
    }
}

async fn send(url: &str, method: Method, path: &str, token: Option<&str>, body: Option<String>) -> Answer {
    let mut req = reqwest::Client::new().request(method, format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Answer { status, headers, body }
}

async fn list_models(url: &str, token: Option<&str>) -> Answer {
    send(url, Method::GET, "/api/v1/models", token, None).await
}

/// A second administrator with an API key; returns (account id, token). A service account,
/// so that its key works without MFA.
async fn second_principal(s: &TestServer) -> (String, String) {
    let ctx = AuditContext::system();
    let user = s
        .state
        .store
        .create_user(
            &ctx,
            &NewUser { username: "second".into(), password_hash: None, is_admin: true, kind: "service".into() },
        )
        .await
        .expect("create user");
    let token = cairn_server::auth::generate_token();
    s.state
        .store
        .create_api_key(
            &ctx,
            &NewApiKey {
                user_id: user.id.clone(),
                name: "second".into(),
                token_hash: cairn_server::auth::hash_token(&token),
                scopes: "read write admin".into(),
                expires_at: None,
                namespaces: String::new(),
                bootstrap: false,
            },
        )
        .await
        .expect("create key");
    (user.id, token)
}

/// Uses up the budget of `token`: the remaining count goes down to 0, the next request is
/// refused with `429` and a `Retry-After` of the whole block.
async fn exhaust(url: &str, token: Option<&str>, ok: StatusCode) {
    for left in (0..LIMIT).rev() {
        let a = list_models(url, token).await;
        assert_eq!(a.status, ok, "{:?}", a.body);
        assert_eq!(a.number("ratelimit-limit"), u64::from(LIMIT));
        assert_eq!(a.number("ratelimit-remaining"), u64::from(left));
        let reset = a.number("ratelimit-reset");
        assert!((WINDOW - 5..=WINDOW).contains(&reset), "RateLimit-Reset {reset}");
    }
    assert_limited(&list_models(url, token).await, BLOCK);
}

fn assert_limited(a: &Answer, block_left: u64) {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", a.body);
    assert_eq!(a.body["error"]["code"], "rate_limited", "{:?}", a.body);
    assert!(a.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    let retry = a.number("retry-after");
    assert!(retry.abs_diff(block_left) <= 1, "Retry-After {retry}, expected {block_left}");
    assert_eq!(a.number("ratelimit-remaining"), 0);
    assert_eq!(a.number("ratelimit-limit"), u64::from(LIMIT));
    assert_security_headers(a);
}

/// Polls until a request passes again; returns how long that took.
async fn wait_until_allowed(url: &str, token: Option<&str>, ok: StatusCode) -> (Duration, Answer) {
    let t0 = Instant::now();
    loop {
        let a = list_models(url, token).await;
        if a.status != StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(a.status, ok, "{:?}", a.body);
            return (t0.elapsed(), a);
        }
        assert!(t0.elapsed() < Duration::from_secs(BLOCK + 5), "still refused after the block");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn principal_is_limited_and_passes_after_the_block(s: &TestServer) {
    exhaust(&s.url, Some(&s.token), StatusCode::OK).await;
    // Refused requests are not counted and do not extend the block.
    let a = list_models(&s.url, Some(&s.token)).await;
    assert_limited(&a, BLOCK);
    let (waited, a) = wait_until_allowed(&s.url, Some(&s.token), StatusCode::OK).await;
    assert!(waited >= Duration::from_millis(BLOCK * 1000 - 1200), "passed again after {waited:?}");
    // A fresh window.
    assert_eq!(a.number("ratelimit-remaining"), u64::from(LIMIT - 1));
}

async fn principals_have_separate_budgets(s: &TestServer) {
    let (_, other) = second_principal(s).await;
    exhaust(&s.url, Some(&s.token), StatusCode::OK).await;
    let a = list_models(&s.url, Some(&other)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.number("ratelimit-remaining"), u64::from(LIMIT - 1));
    // The first is still refused.
    assert_limited(&list_models(&s.url, Some(&s.token)).await, BLOCK);
}

async fn bad_keys_are_blocked_by_address(s: &TestServer) {
    let bad = "cairn_not-a-key-of-this-server-at-all-000000000";
    exhaust(&s.url, Some(bad), StatusCode::UNAUTHORIZED).await;
    // The address is refused before anything else runs, whatever the request carries.
    assert_limited(&list_models(&s.url, None).await, BLOCK);
    assert_limited(&list_models(&s.url, Some(&s.token)).await, BLOCK);
    let (_, a) = wait_until_allowed(&s.url, Some(bad), StatusCode::UNAUTHORIZED).await;
    assert_eq!(a.number("ratelimit-remaining"), u64::from(LIMIT - 1));
    let a = list_models(&s.url, Some(&s.token)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    // The block was audited (off the request path: poll).
    let query = AuditQuery { action: Some("rate_limit.block".into()), limit: 10, ..AuditQuery::default() };
    let t0 = Instant::now();
    loop {
        let events = s.state.store.list_audit_events(&query).await.expect("audit").items;
        if let Some(e) = events.first() {
            assert_eq!(e.target, "ip:127.0.0.1");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no audit event for the block");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn many_authenticated_requests_leave_the_address_alone(s: &TestServer) {
    let (_, other) = second_principal(s).await;
    // Four principals' worth of requests from one address, none refused.
    for _ in 0..LIMIT - 1 {
        assert_eq!(list_models(&s.url, Some(&s.token)).await.status, StatusCode::OK);
        assert_eq!(list_models(&s.url, Some(&other)).await.status, StatusCode::OK);
    }
    // The address still has its whole budget for unauthenticated requests.
    let a = list_models(&s.url, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.number("ratelimit-remaining"), u64::from(LIMIT - 1));
}

fn assert_security_headers(a: &Answer) {
    let expect = [
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expect {
        assert_eq!(a.header(name), Some(value), "{} response: {name}", a.status);
    }
    assert!(a.header("server").is_none(), "{} response has a Server header", a.status);
    assert!(a.header("strict-transport-security").is_none(), "HSTS without TLS");
}

async fn every_response_has_security_headers(s: &TestServer) {
    let cases = [
        (Method::GET, "/api/v1/models", Some(s.token.as_str()), None, StatusCode::OK),
        (Method::GET, "/api/v1/models", None, None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/no/such/route", None, None, StatusCode::NOT_FOUND),
        (Method::GET, "/api/v1/models/team/missing", Some(s.token.as_str()), None, StatusCode::NOT_FOUND),
        (Method::PUT, "/healthz", None, None, StatusCode::METHOD_NOT_ALLOWED),
        (
            Method::POST,
            "/api/v1/models",
            Some(s.token.as_str()),
            Some(format!(r#"{{"name":"team/big","description":"{}"}}"#, "x".repeat(4096))),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (Method::GET, "/healthz", None, None, StatusCode::OK),
    ];
    for (method, path, token, body, status) in cases {
        let a = send(&s.url, method.clone(), path, token, body).await;
        assert_eq!(a.status, status, "{method} {path}: {:?}", a.body);
        assert_security_headers(&a);
        if status.is_client_error() {
            assert!(a.body["error"]["code"].is_string(), "{method} {path}: {:?}", a.body);
        }
    }
}

/// The shared counters' rules in SQL, which the limiter applies to its local copy too: counts
/// add up within a window, a block stays until it ends, and then a new window starts.
async fn shared_counts_follow_the_window_rules(s: &TestServer) {
    let store = &s.state.store;
    let window = 60_000;
    let add = |delta: i64, blocked_until: Option<i64>| {
        let d = RateDelta { subject: "ip:192.0.2.1".into(), delta, blocked_until };
        async move { store.add_rate_counts(window, &[d]).await.expect("add").remove(0) }
    };
    let first = add(3, None).await;
    assert_eq!((first.count, first.blocked_until), (3, None));
    let until = store.now() + 300;
    let blocked = add(2, Some(until)).await;
    assert_eq!((blocked.count, blocked.blocked_until, blocked.window_start), (5, Some(until), first.window_start));
    // A shorter block from another replica does not shorten it; counts still add up.
    let again = add(1, Some(until - 200)).await;
    assert_eq!((again.count, again.blocked_until), (6, Some(until)));
    let blocks = store.recent_rate_blocks(first.window_start).await.expect("blocks");
    assert!(blocks.iter().any(|b| b.subject == "ip:192.0.2.1"), "{blocks:?}");
    // Pruning keeps live windows and blocks.
    store.prune_rate_counts(window).await.expect("prune");
    assert!(store.rate_count("ip:192.0.2.1").await.expect("read").is_some());
    while store.now() <= until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The block is over: a new window.
    let fresh = add(1, None).await;
    assert_eq!((fresh.count, fresh.blocked_until), (1, None));
    assert!(fresh.window_start > first.window_start);
    assert!(store.recent_rate_blocks(first.window_start).await.expect("blocks").is_empty());
    // A given-back count never makes a new window negative.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let back = [RateDelta { subject: "ip:192.0.2.1".into(), delta: -1, blocked_until: None }];
    assert_eq!(store.add_rate_counts(1, &back).await.expect("add")[0].count, 0);
    // Windows that are over are pruned.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.prune_rate_counts(1).await.expect("prune") >= 1);
    assert!(store.rate_count("ip:192.0.2.1").await.expect("read").is_none());
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(s) = super::start(super::Backend::Sqlite, stringify!($name)).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(s) = super::start(super::Backend::Postgres, stringify!($name)).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
    };
}

both!(
    principal_is_limited_and_passes_after_the_block,
    principals_have_separate_budgets,
    bad_keys_are_blocked_by_address,
    many_authenticated_requests_leave_the_address_alone,
    shared_counts_follow_the_window_rules,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_security_headers() {
    let tweak = |s: &mut Settings| s.max_json_bytes = 1024;
    if let Some(s) = TestServer::start_with(Backend::Sqlite, "security_headers", tweak).await {
        every_response_has_security_headers(&s).await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_security_headers() {
    let tweak = |s: &mut Settings| s.max_json_bytes = 1024;
    if let Some(s) = TestServer::start_with(Backend::Postgres, "security_headers", tweak).await {
        every_response_has_security_headers(&s).await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_limiting_off() {
    let tweak = |s: &mut Settings| s.rate_limit_requests = 0;
    if let Some(s) = TestServer::start_with(Backend::Sqlite, "limiting_off", tweak).await {
        for _ in 0..50 {
            let a = list_models(&s.url, None).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED);
            assert!(a.header("ratelimit-limit").is_none());
        }
        s.stop().await;
    }
}

/// Two replicas on one PostgreSQL database share one budget per principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_share_one_budget() {
    let Some(a) = start(Backend::Postgres, "replicas_share_one_budget").await else { return };
    let url = a.database_url.clone();
    let token = a.token.clone();
    let b = TestServer::start_with(Backend::Postgres, "replicas_share_one_budget", |s| {
        small_limits(s);
        s.database_url = Some(url);
        s.bootstrap_admin_token = Some(token);
    })
    .await
    .expect("second replica");
    let admin_id = a.state.store.find_user("admin").await.expect("find").expect("admin").id;
    let subject = cairn_server::rate_limit::principal_subject(&admin_id);

    // Three requests on A reach the database on their own within a flush interval, without
    // any request writing.
    for _ in 0..3 {
        assert_eq!(list_models(&a.url, Some(&a.token)).await.status, StatusCode::OK);
    }
    let t0 = Instant::now();
    loop {
        let row = a.state.store.rate_count(&subject).await.expect("read");
        if row.as_ref().is_some_and(|r| r.count == 3) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "counts not shared: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // B has not synced yet: it counts locally; once synced it knows A's three.
    let first = list_models(&b.url, Some(&a.token)).await;
    assert_eq!(first.status, StatusCode::OK);
    b.state.rate_limits.flush().await.expect("flush B");
    let fifth = list_models(&b.url, Some(&a.token)).await;
    assert_eq!(fifth.status, StatusCode::OK);
    assert_eq!(fifth.number("ratelimit-remaining"), 0, "B counts A's requests");
    assert_limited(&list_models(&b.url, Some(&a.token)).await, BLOCK);

    // The block B set reaches A through the database.
    b.state.rate_limits.flush().await.expect("flush B");
    a.state.rate_limits.flush().await.expect("flush A");
    assert_limited(&list_models(&a.url, Some(&a.token)).await, BLOCK);
    let row = a.state.store.rate_count(&subject).await.expect("read").expect("row");
    assert!(row.blocked_until.is_some(), "{row:?}");

    // After the block both pass again.
    wait_until_allowed(&a.url, Some(&a.token), StatusCode::OK).await;
    assert_eq!(list_models(&b.url, Some(&a.token)).await.status, StatusCode::OK);
    b.stop().await;
    a.stop().await;
}
