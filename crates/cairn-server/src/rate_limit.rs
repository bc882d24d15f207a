//! Rate limiting per principal and per client address.
//!
//! Every subject — an account (`principal:<account id>`) or, for requests that end up
//! unauthenticated, a client address (`ip:<address>`, IPv6 by /64) — may make
//! `rate_limit_requests` requests per window of `rate_limit_window` seconds. The window starts
//! with the subject's first request. The request that goes over is answered `429` with
//! `Retry-After`, and the subject is refused for `rate_limit_block_secs`; after that it gets a
//! fresh window. Counted responses carry `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (IETF RateLimit header fields draft). `rate_limit_requests = 0` turns
//! limiting off.
//!
//! [`by_address`] runs before authentication: it refuses a blocked address before anything
//! else runs, and counts the request against the address. [`by_principal`] runs after
//! authentication: it gives the address its count back (the request is the principal's) and
//! counts it against the account instead. So an authenticated request costs its account one
//! request and its address nothing, and a flood of bad credentials or login attempts from one
//! address is blocked by address.
//!
//! Counters live in memory, in a sharded map of bounded size (expired windows are evicted
//! first; past the cap, the smallest counts go). With PostgreSQL, replicas share budgets
//! through the table `rate_limits`: each counts locally and, every [`FLUSH_INTERVAL`], adds
//! what it counted to the shared row and learns every replica's total and any block set
//! elsewhere; decisions use the last known shared total plus the local count. A request never
//! waits for the database. The price is a bounded overshoot: within one interval a subject
//! can spend, on each of N replicas, what it has left of the budget, so at most about
//! (N − 1) × its remaining budget more than the limit, and a block set by one replica is
//! enforced by the others within one interval.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_store::rate_limit::{RateCount, RateDelta};
use cairn_store::{AuditContext, Backend, Store, StoreError};

use crate::app::AppState;
use crate::auth::{Caller, request_context};
use crate::error::ApiError;
use crate::settings::Settings;

/// How often a replica adds its counts to the shared rows (PostgreSQL only).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Most subjects kept in memory by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How often old shared rows are deleted.
const PRUNE_EVERY: u32 = 60;

/// Blocks set by other replicas are looked up with this much overlap, so clocks a little
/// apart do not hide one.
const POLL_OVERLAP_MS: i64 = 5_000;

const SHARDS: usize = 16;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Limiting is off.
    Unlimited,
    /// Counted and allowed.
    Allowed {
        /// Requests per window.
        limit: u32,
        /// Requests left in this window.
        remaining: u32,
        /// Seconds until the window ends.
        reset_secs: u64,
    },
    /// Refused.
    Limited {
        /// Requests per window.
        limit: u32,
        /// Seconds until the block ends.
        retry_after_secs: u64,
        /// This request started the block.
        newly_blocked: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    /// When the current window started (ms).
    window_start: i64,
    /// Every replica's count in this window as last read from the database.
    shared: i64,
    /// Counted here since the last flush (negative after give-backs of flushed counts).
    pending: i64,
    blocked_until: Option<i64>,
    /// A block set here that the database has not seen yet.
    block_unflushed: bool,
    /// Changes when the window restarts here, so a flush of the old window is not applied to
    /// the new one.
    generation: u64,
}

impl Entry {
    fn new(now: i64) -> Self {
        Self { window_start: now, shared: 0, pending: 0, blocked_until: None, block_unflushed: false, generation: 0 }
    }

    fn blocked(&self, now: i64) -> Option<i64> {
        self.blocked_until.filter(|&until| until > now)
    }

    /// Over when not blocked and the window has passed, or a block has ended.
    fn expired(&self, now: i64, window_ms: i64) -> bool {
        match self.blocked_until {
            Some(until) => until <= now,
            None => self.window_start + window_ms <= now,
        }
    }

    fn restart(&mut self, now: i64) {
        *self = Self { generation: self.generation.wrapping_add(1), ..Self::new(now) };
    }

    fn count(&self) -> i64 {
        self.shared + self.pending
    }
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<String, Entry>,
}

/// Request counters: in memory, and shared with other replicas through PostgreSQL.
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limit: u32,
    window_ms: i64,
    block_ms: i64,
    shard_capacity: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    store: Store,
    /// Counts go to the database (PostgreSQL).
    shared: bool,
    /// When this replica last looked for blocks set elsewhere (ms).
    last_poll: AtomicI64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.inner.limit)
            .field("window_ms", &self.inner.window_ms)
            .field("block_ms", &self.inner.block_ms)
            .field("shared", &self.inner.shared)
            .field("subjects", &self.len())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter for these settings. On PostgreSQL it starts the task that shares counts
    /// (when called inside a Tokio runtime); the task ends with the limiter.
    pub fn new(store: Store, settings: &Settings) -> Self {
        Self::with_capacity(store, settings, DEFAULT_CAPACITY)
    }

    /// Like [`RateLimiter::new`], keeping at most about `capacity` subjects in memory.
    pub fn with_capacity(store: Store, settings: &Settings, capacity: usize) -> Self {
        let shared = store.backend() == Backend::Postgres;
        let secs_to_ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let inner = Arc::new(Inner {
            limit: settings.rate_limit_requests,
            window_ms: secs_to_ms(settings.rate_limit_window).max(1),
            block_ms: secs_to_ms(settings.rate_limit_block_secs).max(1),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            // The first look-up finds every block in force, so a replica that starts during
            // one refuses the subject from its first flush on.
            last_poll: AtomicI64::new(0),
            store,
            shared,
        });
        if inner.shared
            && inner.limit > 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(share_counts(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Whether requests are limited at all.
    pub fn enabled(&self) -> bool {
        self.inner.limit > 0
    }

    /// Subjects currently held in memory.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    /// Whether no subject is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one request of `subject` at `now` (ms) and says whether it may proceed. A
    /// blocked subject's requests are refused without being counted.
    pub fn check(&self, subject: &str, now: i64) -> Decision {
        let inner = &*self.inner;
        if inner.limit == 0 {
            return Decision::Unlimited;
        }
        let limit = i64::from(inner.limit);
        let mut shard = inner.shard(subject);
        if !shard.entries.contains_key(subject) && shard.entries.len() >= inner.shard_capacity {
            inner.make_room(&mut shard, now);
        }
        let entry = shard.entries.entry(subject.to_owned()).or_insert_with(|| Entry::new(now));
        if let Some(until) = entry.blocked(now) {
            return Decision::Limited {
                limit: inner.limit,
                retry_after_secs: ceil_secs(until - now),
                newly_blocked: false,
            };
        }
        if entry.expired(now, inner.window_ms) {
            entry.restart(now);
        }
        if entry.count() + 1 > limit {
            entry.blocked_until = Some(now + inner.block_ms);
            entry.block_unflushed = true;
            return Decision::Limited {
                limit: inner.limit,
                retry_after_secs: ceil_secs(inner.block_ms),
                newly_blocked: true,
            };
        }
        entry.pending += 1;
        let remaining = u32::try_from((limit - entry.count()).max(0)).unwrap_or(0);
        let reset_secs = ceil_secs(entry.window_start + inner.window_ms - now);
        Decision::Allowed { limit: inner.limit, remaining, reset_secs }
    }

    /// Gives back one request counted for `subject` (it turned out to be someone else's).
    pub fn uncount(&self, subject: &str) {
        if self.inner.limit == 0 {
            return;
        }
        if let Some(entry) = self.inner.shard(subject).entries.get_mut(subject) {
            entry.pending -= 1;
        }
    }

    /// Adds the local counts to the shared rows and learns every replica's totals and blocks
    /// (PostgreSQL; a no-op on SQLite). Runs every [`FLUSH_INTERVAL`] on its own; tests call it
    /// to sync at a known moment.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}

impl Inner {
    fn shard(&self, subject: &str) -> MutexGuard<'_, Shard> {
        let i = usize::try_from(self.hasher.hash_one(subject) % SHARDS as u64).unwrap_or(0);
        lock(&self.shards[i])
    }

    /// Evicts expired windows; if that is not enough, keeps the blocked subjects and the
    /// busiest ones and drops the rest down to three quarters of the capacity (so the next
    /// sweeps are far apart).
    fn make_room(&self, shard: &mut Shard, now: i64) {
        shard.entries.retain(|_, e| !e.expired(now, self.window_ms));
        if shard.entries.len() < self.shard_capacity {
            return;
        }
        let keep = self.shard_capacity * 3 / 4;
        let mut ranked: Vec<(bool, i64, String)> =
            shard.entries.iter().map(|(k, e)| (e.blocked(now).is_some(), e.count(), k.clone())).collect();
        // Most worth keeping first: blocked, then by count.
        ranked.sort_unstable_by_key(|&(blocked, count, _)| std::cmp::Reverse((blocked, count)));
        for (_, _, key) in ranked.into_iter().skip(keep) {
            shard.entries.remove(&key);
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if !self.shared || self.limit == 0 {
            return Ok(());
        }
        // Snapshot what to send; the locks are not held across the database call.
        let mut deltas = Vec::new();
        let mut generations = Vec::new();
        for shard in &self.shards {
            for (subject, e) in &lock(shard).entries {
                if e.pending != 0 || e.block_unflushed {
                    deltas.push(RateDelta {
                        subject: subject.clone(),
                        delta: e.pending,
                        blocked_until: e.block_unflushed.then_some(e.blocked_until).flatten(),
                    });
                    generations.push(e.generation);
                }
            }
        }
        if !deltas.is_empty() {
            let rows = self.store.add_rate_counts(self.window_ms, &deltas).await?;
            for ((sent, generation), row) in deltas.iter().zip(generations).zip(rows) {
                let mut shard = self.shard(&sent.subject);
                let Some(e) = shard.entries.get_mut(&sent.subject) else { continue };
                if e.generation != generation {
                    // The window restarted here meanwhile: what was sent belonged to the old one.
                    continue;
                }
                e.pending -= sent.delta;
                if e.blocked_until == sent.blocked_until {
                    e.block_unflushed = false;
                }
                adopt(e, &row);
            }
        }
        let now = self.store.now();
        let since = self.last_poll.swap(now, Ordering::Relaxed).saturating_sub(POLL_OVERLAP_MS);
        for row in self.store.recent_rate_blocks(since).await? {
            let mut shard = self.shard(&row.subject);
            if !shard.entries.contains_key(&row.subject) && shard.entries.len() >= self.shard_capacity {
                self.make_room(&mut shard, now);
            }
            let e = shard.entries.entry(row.subject.clone()).or_insert_with(|| Entry::new(row.window_start));
            adopt(e, &row);
        }
        Ok(())
    }
}

/// Takes the shared state of a subject into its local entry.
fn adopt(e: &mut Entry, row: &RateCount) {
    e.window_start = row.window_start;
    e.shared = row.count;
    e.blocked_until = match (e.blocked_until, row.blocked_until) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
}

/// Shares counts every [`FLUSH_INTERVAL`] and prunes old rows, until the limiter is dropped.
async fn share_counts(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u32;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.flush().await {
            tracing::warn!(error = %e, "could not share rate-limit counts");
        }
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = inner.store.prune_rate_counts(inner.window_ms).await
        {
            tracing::warn!(error = %e, "could not prune rate-limit counts");
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard leaves counters, not invariants: keep going.
    shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// The subject of an address: IPv4 as is, IPv6 by its /64 (one host usually holds a whole
/// /64), IPv4-mapped IPv6 as IPv4.
pub fn address_subject(addr: Option<IpAddr>) -> String {
    match addr {
        None => "ip:unknown".to_owned(),
        Some(IpAddr::V4(a)) => format!("ip:{a}"),
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = a.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The subject of an account.
pub fn principal_subject(account_id: &str) -> String {
    format!("principal:{account_id}")
}

/// The address count of a request, until authentication shows whose the request is.
#[derive(Debug, Clone)]
struct AddressCharge {
    subject: String,
    given_back: Arc<AtomicBool>,
}

/// Middleware on every `/api` route, outside authentication: refuses blocked addresses and
/// counts the request against its address.
pub async fn by_address(State(state): State<AppState>, mut req: Request, next: Next) -> Response<Body> {
    let limiter = &state.rate_limits;
    if !limiter.enabled() {
        return next.run(req).await;
    }
    let addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let subject = address_subject(addr);
    match limiter.check(&subject, state.store.now()) {
        Decision::Unlimited => next.run(req).await,
        Decision::Limited { limit, retry_after_secs, newly_blocked } => {
            if newly_blocked {
                let (parts, _) = req.into_parts();
                let mut ctx = request_context(&parts);
                ctx.actor = "anonymous".into();
                audit_block(&state, ctx, subject);
            }
            state.metrics.rate_limited("address");
            too_many_requests(limit, retry_after_secs)
        }
        Decision::Allowed { limit, remaining, reset_secs } => {
            let given_back = Arc::new(AtomicBool::new(false));
            req.extensions_mut().insert(AddressCharge { subject, given_back: given_back.clone() });
            let mut resp = next.run(req).await;
            // An authenticated request carries its principal's budget instead.
            if !given_back.load(Ordering::Acquire) {
                set_budget(resp.headers_mut(), limit, remaining, reset_secs);
            }
            resp
        }
    }
}

/// Middleware on authenticated routes, after authentication: moves the request's count from
/// its address to its principal.
pub async fn by_principal(State(state): State<AppState>, req: Request, next: Next) -> Response<Body> {
    let limiter = &state.rate_limits;
    if !limiter.enabled() {
        return next.run(req).await;
    }
    if let Some(charge) = req.extensions().get::<AddressCharge>()
        && !charge.given_back.swap(true, Ordering::AcqRel)
    {
        limiter.uncount(&charge.subject);
    }
    let Some(caller) = req.extensions().get::<Caller>() else {
        // Authentication always sets the caller; without one the handler refuses anyway.
        return next.run(req).await;
    };
    let subject = principal_subject(&caller.principal.user_id);
    match limiter.check(&subject, state.store.now()) {
        Decision::Unlimited => next.run(req).await,
        Decision::Limited { limit, retry_after_secs, newly_blocked } => {
            if newly_blocked {
                audit_block(&state, caller.audit.clone(), subject);
            }
            state.metrics.rate_limited("principal");
            too_many_requests(limit, retry_after_secs)
        }
        Decision::Allowed { limit, remaining, reset_secs } => {
            let mut resp = next.run(req).await;
            set_budget(resp.headers_mut(), limit, remaining, reset_secs);
            resp
        }
    }
}

/// Records the start of a block in the audit log, off the request path.
fn audit_block(state: &AppState, ctx: AuditContext, subject: String) {
    tracing::warn!(subject = %subject, "rate limit exceeded; blocking");
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.record_event(&ctx, "rate_limit.block", &subject, "blocked").await {
            tracing::warn!(error = %e, "could not audit a rate-limit block");
        }
    });
}

fn set_budget(headers: &mut HeaderMap, limit: u32, remaining: u32, reset_secs: u64) {
    headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(reset_secs));
}

/// `429` in the JSON error shape, with `Retry-After`.
fn too_many_requests(limit: u32, retry_after_secs: u64) -> Response<Body> {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; try again in {retry_after_secs} s"),
    )
    .into_response();
    let headers = resp.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    set_budget(headers, limit, 0, retry_after_secs);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limiter(limit: u32, window: u64, block: u64, capacity: usize) -> (tempfile::TempDir, RateLimiter) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, &cairn_store::DbOptions::default()).await.expect("open");
        let settings = Settings {
            rate_limit_requests: limit,
            rate_limit_window: window,
            rate_limit_block_secs: block,
            ..Settings::default()
        };
        (dir, RateLimiter::with_capacity(store, &settings, capacity))
    }

    #[tokio::test]
    async fn counts_blocks_and_restarts_after_the_block() {
        let (_dir, l) = limiter(3, 60, 10, 1000).await;
        let t = 1_000_000;
        for (i, left) in [2, 1, 0].into_iter().enumerate() {
            let now = t + i64::try_from(i).expect("small") * 1000;
            let reset = 60 - u64::try_from(i).expect("small");
            assert_eq!(l.check("a", now), Decision::Allowed { limit: 3, remaining: left, reset_secs: reset });
        }
        assert_eq!(l.check("a", t + 2500), Decision::Limited { limit: 3, retry_after_secs: 10, newly_blocked: true });
        assert_eq!(l.check("a", t + 4000), Decision::Limited { limit: 3, retry_after_secs: 9, newly_blocked: false });
        // Another subject has its own budget.
        assert!(matches!(l.check("b", t + 4000), Decision::Allowed { remaining: 2, .. }));
        // The block ends: a fresh window.
        assert_eq!(l.check("a", t + 12_500), Decision::Allowed { limit: 3, remaining: 2, reset_secs: 60 });
    }

    #[tokio::test]
    async fn a_window_ends_and_given_back_requests_do_not_count() {
        let (_dir, l) = limiter(2, 10, 5, 1000).await;
        assert!(matches!(l.check("a", 0), Decision::Allowed { remaining: 1, .. }));
        l.uncount("a");
        assert!(matches!(l.check("a", 1), Decision::Allowed { remaining: 1, .. }));
        assert!(matches!(l.check("a", 2), Decision::Allowed { remaining: 0, .. }));
        assert!(matches!(l.check("a", 10_000), Decision::Allowed { remaining: 1, reset_secs: 10, .. }));
    }

    #[tokio::test]
    async fn zero_turns_limiting_off() {
        let (_dir, l) = limiter(0, 10, 5, 1000).await;
        for i in 0..10_000 {
            assert_eq!(l.check("a", i), Decision::Unlimited);
        }
        assert!(l.is_empty());
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_addresses() {
        let (_dir, l) = limiter(5, 3600, 300, 1600).await;
        // A blocked subject survives the flood.
        for _ in 0..6 {
            l.check("ip:attacker", 0);
        }
        for i in 0..200_000i64 {
            l.check(&format!("ip:10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255), i / 100);
            if i % 10_000 == 0 {
                assert!(l.len() <= 1600 + SHARDS, "{} subjects held", l.len());
            }
        }
        assert!(l.len() <= 1600 + SHARDS, "{} subjects held", l.len());
        assert!(matches!(l.check("ip:attacker", 2000), Decision::Limited { .. }));
        // Expired windows go first: once they are over, newcomers evict them.
        let later = 3600 * 1000 + 200_000;
        for i in 0..1000i64 {
            l.check(&format!("ip:192.168.{}.{}", i >> 8, i & 255), later);
        }
        assert!(l.len() <= 1600 + SHARDS);
    }

    #[test]
    fn addresses_group_ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().expect("ip");
        assert_eq!(address_subject(Some(a)), address_subject(Some(b)));
        assert_eq!(address_subject(Some(a)), "ip:2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(address_subject(Some(mapped)), "ip:192.0.2.7");
        assert_eq!(address_subject(None), "ip:unknown");
    }
}
