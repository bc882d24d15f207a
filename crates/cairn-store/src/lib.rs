//! Metadata persistence for Cairn: SQLite (embedded default) and PostgreSQL.
//!
//! [`Store`] is the one repository of the registry. Every method that changes state opens a
//! transaction, makes the change, writes its audit event (actor, action, target,
//! before/after, time, request id) and commits — so no write exists without its record.
//! SQL lives only in this crate; it is written once and runs on both backends through
//! [`db::Db`]. The same test suite (`tests/store.rs`) runs against both.
//!
//! This crate knows nothing of HTTP: callers pass validated names from `cairn-core` and an
//! [`AuditContext`] describing who is acting.

pub mod artifact;
pub mod audit;
pub mod backup;
pub mod db;
pub mod deploy;
mod error;
pub mod eval_job;
pub mod evaluation;
pub mod gdpr;
pub mod grant;
pub mod inbox;
pub mod lifecycle;
pub mod lineage;
pub mod lockout;
pub mod mfa;
pub mod model;
pub mod namespace;
mod nodelay;
mod page;
pub mod policy;
pub mod rate_limit;
pub mod retention;
pub mod scan;
pub mod secret;
pub mod server_flags;
pub mod session;
pub mod signatures;
mod tag;
pub mod tracking;
pub mod user;
pub mod version;
pub mod webhook;

use std::sync::Arc;

pub use db::{Backend, Db, DbOptions, Param};
pub use error::StoreError;
pub use page::{Cursor, CursorKey, Page};

/// Who performs a change, recorded with it.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// `user:<name>` or `system`.
    pub actor: String,
    /// The API key used, if any.
    pub key_id: Option<String>,
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

impl AuditContext {
    /// The server itself (bootstrap, maintenance).
    pub fn system() -> Self {
        Self { actor: "system".into(), ..Self::default() }
    }
}

/// A source of the current time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc();
        i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// The registry's metadata store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    clock: Arc<dyn Clock>,
    signer: Option<Arc<cairn_audit::SigningKey>>,
}

impl Store {
    /// Connects, and applies migrations.
    pub async fn open(url: &str, opts: &DbOptions) -> Result<Self, StoreError> {
        let db = Db::connect(url, opts).await?;
        db.migrate().await?;
        let store = Self { db, clock: Arc::new(SystemClock), signer: None };
        store.seal_legacy_events().await?;
        Ok(store)
    }

    /// Connects to an existing database without applying migrations or writing anything
    /// (for verification tools that must not change what they check).
    pub async fn open_existing(url: &str, opts: &DbOptions) -> Result<Self, StoreError> {
        let db = Db::connect(url, opts).await?;
        Ok(Self { db, clock: Arc::new(SystemClock), signer: None })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Signs every version committed from now on with `key` (see [`signatures`]).
    pub fn with_signer(mut self, key: Arc<cairn_audit::SigningKey>) -> Self {
        self.signer = Some(key);
        self
    }

    /// The key versions are signed with, if any.
    pub fn signer(&self) -> Option<&Arc<cairn_audit::SigningKey>> {
        self.signer.as_ref()
    }

    /// The underlying pools.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// The store clock's current time, in milliseconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.db.read().await?;
        let _: (i64,) = c.conn().fetch_one("SELECT CAST(1 AS BIGINT)", vec![]).await?;
        Ok(())
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
