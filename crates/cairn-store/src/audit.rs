//! The audit record of every change, hash-chained (docs/AUDIT.md). Events are written by the
//! store's own mutation methods, inside the transaction of the change they describe.
//!
//! Sealing an event into the chain gives it the next sequence number and its hash, under the
//! lock of the single `audit_head` row, so the order is total and gapless:
//! - on SQLite the one writer (`BEGIN IMMEDIATE`, also across processes) already serialises
//!   transactions, so an event is sealed as it is written;
//! - on PostgreSQL events are written unsealed, in the transaction of their change, and
//!   sealed by [`seal_committed`] in the background once that transaction has committed
//!   ([`Sealer`]): one sealer at a time seals, in one statement, every event committed so
//!   far, so writers never hold the chain's lock across their own commit, nor wait for it.
//!   Reading the chain waits for what this process committed to be sealed first.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt as _;

use cairn_audit::chain::{EventDetails, parse_hash};
use cairn_audit::{Anchor, AuditRecord, Checkpoint, DetailsCheck, Hash, Report, Verifier, check_details};
use serde::Serialize;

use crate::db::{Backend, Conn};
use crate::{AuditContext, Cursor, CursorKey, Page, Store, StoreError, params};

/// One audit event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    /// Sequence number in the chain.
    pub id: i64,
    /// When, in ms since the epoch.
    pub occurred_at: i64,
    /// Who.
    pub actor: String,
    /// With which API key.
    pub key_id: Option<String>,
    /// What (`model.create`, `version.delete`, …).
    pub action: String,
    /// On what (`model:team/x`, `version:team/x:3`, …).
    pub target: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// State before (JSON), if any.
    pub before_state: Option<String>,
    /// State after (JSON), if any.
    pub after_state: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The client address.
    pub source_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The event's chain hash (hex).
    pub hash: String,
}

/// Set only by `bench/auditcost` to measure what chaining costs: events are then written as
/// before the chain existed (no sequence number, no hashes). Nothing in the server sets it.
static UNCHAINED: AtomicBool = AtomicBool::new(false);

/// For the chaining benchmark only: writes events of this whole process unchained while
/// `on`. Never call this in a server: events written meanwhile are outside the chain.
#[doc(hidden)]
pub fn set_unchained_for_benchmarks(on: bool) {
    UNCHAINED.store(on, Ordering::SeqCst);
}

const EVENT_COLUMNS: &str = "seq AS id, occurred_at, actor, key_id, action, target, outcome, before_state, \
     after_state, request_id, source_ip, user_agent, hash";

/// Writes one event on `conn` (which should be the transaction of the change).
pub(crate) async fn record(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    action: &str,
    target: &str,
    before: Option<&impl Serialize>,
    after: Option<&impl Serialize>,
) -> Result<(), StoreError> {
    record_outcome(conn, ctx, now, action, target, "success", before, after).await
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_outcome(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    action: &str,
    target: &str,
    outcome: &str,
    before: Option<&impl Serialize>,
    after: Option<&impl Serialize>,
) -> Result<(), StoreError> {
    let details = EventDetails {
        actor: ctx.actor.clone(),
        key_id: ctx.key_id.clone(),
        target: target.to_owned(),
        before: before.map(json),
        after: after.map(json),
        request_id: ctx.request_id.clone(),
        source_ip: ctx.source_ip.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    let unchained = UNCHAINED.load(Ordering::Relaxed);
    match conn.backend() {
        Backend::Sqlite if !unchained => {
            let (seq, prev) = match conn.sqlite_chain().and_then(|chain| chain.head) {
                Some(known) => known,
                None => head(conn, false).await?,
            };
            let rec = AuditRecord::seal(&prev, seq + 1, now, action.to_owned(), outcome.to_owned(), details);
            match conn.sqlite_chain() {
                // Sent with the transaction's next statement or its COMMIT, in the same call.
                Some(chain) => {
                    chain.head = Some((rec.seq, parse_hash(&rec.hash).unwrap_or(prev)));
                    chain.defer(INSERT_AT_HEAD, insert_params(&rec));
                    Ok(())
                }
                None => insert_at_head(conn, &rec).await,
            }
        }
        Backend::Sqlite | Backend::Postgres => {
            conn.execute(
                "INSERT INTO audit_events (occurred_at, actor, key_id, action, target, outcome, \
                 before_state, after_state, request_id, source_ip, user_agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                params![
                    now,
                    details.actor,
                    details.key_id,
                    action,
                    details.target,
                    outcome,
                    details.before,
                    details.after,
                    details.request_id,
                    details.source_ip,
                    details.user_agent
                ],
            )
            .await?;
            conn.wrote_unsealed_event();
            Ok(())
        }
    }
}

async fn head(conn: &mut Conn<'_>, lock: bool) -> Result<(i64, Hash), StoreError> {
    let sql = if lock && conn.backend() == Backend::Postgres {
        "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT seq, hash FROM audit_head WHERE id = 1"
    };
    let (seq, hash): (i64, String) = conn.fetch_one(sql, vec![]).await?;
    let hash = parse_hash(&hash).ok_or_else(|| StoreError::Invalid("the audit chain head is not a hash".into()))?;
    Ok((seq, hash))
}

async fn set_head(conn: &mut Conn<'_>, seq: i64, hash: &str) -> Result<(), StoreError> {
    conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", params![seq, hash]).await?;
    if let Some(chain) = conn.sqlite_chain() {
        chain.head = parse_hash(hash).map(|h| (seq, h));
    }
    Ok(())
}

/// Appends one sealed event and moves the head to it (SQLite); `$1` and `$15` (sequence and
/// hash) are bound in both statements.
const INSERT_AT_HEAD: &str = "INSERT INTO audit_events (seq, occurred_at, actor, key_id, action, target, outcome, \
     before_state, after_state, request_id, source_ip, user_agent, salt, details_digest, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15); \
     UPDATE audit_head SET seq = $1, hash = $15 WHERE id = 1";

fn insert_params(r: &AuditRecord) -> Vec<crate::db::Param> {
    let d = &r.details;
    params![
        r.seq,
        r.time,
        &d.actor,
        d.key_id.clone(),
        &r.action,
        &d.target,
        &r.outcome,
        d.before.clone(),
        d.after.clone(),
        d.request_id.clone(),
        d.source_ip.clone(),
        d.user_agent.clone(),
        r.salt.clone(),
        &r.details_digest,
        &r.hash
    ]
}

fn check_appended(changed: u64) -> Result<(), StoreError> {
    if changed != 2 {
        // The head row is missing: a damaged database, not the caller's input.
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "appending to the audit chain changed {changed} rows, not 2"
        ))));
    }
    Ok(())
}

/// What a SQLite write transaction knows of the audit chain, and the statements it has
/// deferred. Its one writer holds the database's write lock from `BEGIN IMMEDIATE` to the
/// `COMMIT`, so nothing else moves the chain's head meanwhile: the head is read with the
/// `BEGIN`, or, for a transaction that joins an open commit group (`db::Writer`), taken from
/// the transaction before it in the group; and the events the transaction seals — like other statements whose result it does not
/// need — wait to go with its next statement or its `COMMIT`, all in one call. On the single
/// writer every call to the connection's thread is a round trip that every other writer
/// queues behind; an audited change that records its event last makes none for it.
#[derive(Debug, Default)]
pub struct SqliteChain {
    /// The head, counting the deferred events, once known.
    head: Option<(i64, Hash)>,
    /// Statements not sent yet, in order, each with its own `$1…$n`.
    deferred: Vec<crate::db::Deferred>,
    /// A statement without parameters or rows to send before anything else, with the
    /// transaction's first call (the savepoint of a transaction that joins a commit group).
    prefix: Option<&'static str>,
    /// How many of the first `deferred` are the statements of a batched commit group's
    /// earlier members (see `db::Writer`), still unsent.
    inherited: usize,
    /// The transaction has made a call.
    sent: bool,
}

impl SqliteChain {
    /// Knowing the head as the transaction's `BEGIN` read it (`None`: read when needed).
    pub(crate) fn new(head: Option<(i64, String)>) -> Self {
        Self {
            head: head.and_then(|(seq, hash)| parse_hash(&hash).map(|h| (seq, h))),
            deferred: Vec::new(),
            prefix: None,
            inherited: 0,
            sent: false,
        }
    }

    /// Knowing the head as a transaction before this one in the same commit group left it.
    /// `prefix` goes first, with the transaction's first call.
    pub(crate) fn continuing(head: Option<(i64, Hash)>, prefix: &'static str) -> Self {
        Self { head, deferred: Vec::new(), prefix: Some(prefix), inherited: 0, sent: false }
    }

    /// Knowing the head as a batched commit group's members before this one left it, with
    /// their statements still to send first.
    pub(crate) fn inheriting(head: Option<(i64, Hash)>, pending: Vec<crate::db::Deferred>) -> Self {
        Self { head, inherited: pending.len(), deferred: pending, prefix: None, sent: false }
    }

    /// Takes every statement not sent yet (a batched transaction hands them to its group).
    pub(crate) fn take_deferred(&mut self) -> Vec<crate::db::Deferred> {
        self.inherited = 0;
        std::mem::take(&mut self.deferred)
    }

    /// How many parameters the statements not sent yet take.
    pub(crate) fn deferred_params(&self) -> usize {
        self.deferred.iter().map(|(_, p)| p.len()).sum()
    }

    /// If the transaction has made no call, the statements it inherited (its own dropped).
    pub(crate) fn unsent_inherited(&mut self) -> Option<Vec<crate::db::Deferred>> {
        if self.sent {
            return None;
        }
        self.deferred.truncate(self.inherited);
        self.inherited = 0;
        Some(std::mem::take(&mut self.deferred))
    }

    /// Notes that the transaction makes a call.
    pub(crate) fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// The head, counting the deferred events, if known.
    pub(crate) fn head(&self) -> Option<(i64, Hash)> {
        self.head
    }

    /// Whether the prefix is still to be sent (the transaction has sent nothing).
    pub(crate) fn prefix_pending(&self) -> bool {
        self.prefix.is_some()
    }

    /// Holds a statement back until the transaction's next call. Its errors surface there.
    pub(crate) fn defer(&mut self, sql: impl Into<std::borrow::Cow<'static, str>>, params: Vec<crate::db::Param>) {
        self.deferred.push((sql.into(), params));
    }

    /// The deferred statements and then `tail`, as one batch with its parameters numbered
    /// on from each other's.
    fn batch(&mut self, tail: &str) -> (String, Vec<crate::db::Param>) {
        self.sent = true;
        self.inherited = 0;
        let mut sql = String::new();
        let mut params = Vec::new();
        if let Some(prefix) = self.prefix.take() {
            sql.push_str(prefix);
            sql.push_str(";\n");
        }
        for (stmt, p) in self.deferred.drain(..) {
            sql.push_str(&crate::db::shift_placeholders(&stmt, params.len()));
            sql.push_str(";\n");
            params.extend(p);
        }
        sql.push_str(tail);
        (sql, params)
    }

    /// Sends the deferred statements, before a statement that may depend on them. The head
    /// row's presence, which [`INSERT_AT_HEAD`] relies on, was established when this
    /// transaction read the head (a missing row fails that read).
    pub(crate) async fn flush(&mut self, c: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
        if self.deferred.is_empty() && self.prefix.is_none() {
            return Ok(());
        }
        let (sql, params) = self.batch("");
        crate::db::sqlite_execute(c, sqlx::AssertSqlSafe(sql), params).await?;
        Ok(())
    }

    /// `sql` (a query whose rows the caller wants) with `params`, after the prefix and the
    /// deferred statements, as one call: they return no rows, so the rows are the query's.
    /// (A statement whose count of changed rows the caller wants is sent on its own: SQLite
    /// reports the count of the last change for a statement that changes nothing, and sqlx
    /// adds up the counts of a call's statements.) A query with a literal that starts with `$` is sent on its own after
    /// them, since renumbering its placeholders could touch the literal.
    pub(crate) async fn before_query(
        &mut self,
        c: &mut sqlx::SqliteConnection,
        sql: sqlx::SqlStr,
        params: Vec<crate::db::Param>,
    ) -> Result<(sqlx::SqlStr, Vec<crate::db::Param>), StoreError> {
        if self.deferred.is_empty() && self.prefix.is_none() {
            return Ok((sql, params));
        }
        if sql.as_str().contains("'$") {
            self.flush(c).await?;
            return Ok((sql, params));
        }
        let (mut batch, mut all) = self.batch("");
        batch.push_str(&crate::db::shift_placeholders(sql.as_str(), all.len()));
        all.extend(params);
        Ok((sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(batch)), all))
    }

    /// Sends the deferred statements and then `tail` (the transaction's end: `COMMIT`, the
    /// release of its savepoint, or nothing) in one call; nothing at all when both are empty.
    pub(crate) async fn finish(&mut self, c: &mut sqlx::SqliteConnection, tail: &str) -> Result<(), StoreError> {
        if self.deferred.is_empty() && tail.is_empty() {
            return Ok(());
        }
        let (sql, params) = self.batch(tail);
        crate::db::sqlite_execute(c, sqlx::AssertSqlSafe(sql), params).await?;
        Ok(())
    }
}

/// Appends a sealed event and moves the head to it (SQLite), outside a write transaction's
/// [`SqliteChain`].
async fn insert_at_head(conn: &mut Conn<'_>, r: &AuditRecord) -> Result<(), StoreError> {
    check_appended(conn.execute(INSERT_AT_HEAD, insert_params(r)).await?)
}

/// An unsealed row.
#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    occurred_at: i64,
    actor: String,
    key_id: Option<String>,
    action: String,
    target: String,
    outcome: String,
    before_state: Option<String>,
    after_state: Option<String>,
    request_id: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
}

/// Seals every unsealed event `conn` sees, in the order they were written, under the head
/// row's lock. On SQLite, where the one writer serialises transactions, this runs inside the
/// transaction that wrote them (for events written before the chain existed).
async fn seal_pending(conn: &mut Conn<'_>) -> Result<(), StoreError> {
    if UNCHAINED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let pending: Vec<Pending> = conn
        .fetch_all(
            "SELECT id, occurred_at, actor, key_id, action, target, outcome, before_state, after_state, \
             request_id, source_ip, user_agent FROM audit_events WHERE seq IS NULL ORDER BY id",
            vec![],
        )
        .await?;
    if pending.is_empty() {
        return Ok(());
    }
    let (mut seq, mut prev) = head(conn, true).await?;
    let mut last = String::new();
    for p in pending {
        seq += 1;
        let rec = p.seal(&prev, seq);
        conn.execute(
            "UPDATE audit_events SET seq = $1, salt = $2, details_digest = $3, hash = $4 WHERE id = $5 AND seq IS NULL",
            params![seq, rec.salt, &rec.details_digest, &rec.hash, p.id],
        )
        .await?;
        prev = parse_hash(&rec.hash).unwrap_or(prev);
        last = rec.hash;
    }
    set_head(conn, seq, &last).await
}

impl Pending {
    fn seal(&self, prev: &Hash, seq: i64) -> AuditRecord {
        let details = EventDetails {
            actor: self.actor.clone(),
            key_id: self.key_id.clone(),
            target: self.target.clone(),
            before: self.before_state.clone(),
            after: self.after_state.clone(),
            request_id: self.request_id.clone(),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
        };
        AuditRecord::seal(prev, seq, self.occurred_at, self.action.clone(), self.outcome.clone(), details)
    }
}

/// Sealing on PostgreSQL, per process, in the background: a transaction that committed
/// events only counts itself and wakes the sealer task ([`Sealer::committed`]); its request is
/// answered once its own commit is durable, without waiting for the chain. The task seals
/// everything committed so far, one sealing at a time, so the commits of a busy moment are
/// sealed together. Whatever reads the chain first waits until every event this process
/// committed before is sealed ([`Sealer::settle`]), so nobody reads the chain without an event
/// whose change they have seen answered.
#[derive(Debug)]
pub struct Sealer {
    pool: sqlx::PgPool,
    /// Commits with events, counted by this process.
    committed: std::sync::atomic::AtomicU64,
    /// How many of them a finished sealing covers.
    covered: std::sync::atomic::AtomicU64,
    /// One sealing at a time in this process (the advisory lock orders processes).
    run: tokio::sync::Mutex<()>,
    /// Wakes the background task.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// The background task is running.
    started: AtomicBool,
}

impl Sealer {
    pub(crate) fn new(pool: sqlx::PgPool) -> Self {
        Self {
            pool,
            committed: std::sync::atomic::AtomicU64::new(0),
            covered: std::sync::atomic::AtomicU64::new(0),
            run: tokio::sync::Mutex::new(()),
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            started: AtomicBool::new(false),
        }
    }

    /// A transaction that wrote events has committed: the background task seals them soon.
    /// Returns at once.
    pub(crate) fn committed(self: &std::sync::Arc<Self>) {
        self.committed.fetch_add(1, Ordering::SeqCst);
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(seal_in_background(std::sync::Arc::downgrade(self), self.wake.clone()));
        }
        self.wake.notify_one();
    }

    /// Returns once every event committed before the call is sealed: this process's, which
    /// it seals now if the background task has not yet, and any another process left unsealed
    /// (a replica between its commit and its sealing, or one stopped there). One query when
    /// there is nothing to seal.
    pub(crate) async fn settle(&self) -> Result<(), StoreError> {
        let wanted = self.committed.load(Ordering::SeqCst);
        if self.covered.load(Ordering::SeqCst) < wanted {
            return self.seal_up_to(wanted).await;
        }
        let (pending,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq IS NULL)")
            .fetch_one(&self.pool)
            .await?;
        if pending {
            // Left by another process: sealed now, whatever this process has counted.
            self.seal_up_to(u64::MAX).await?;
        }
        Ok(())
    }

    /// Seals, unless a sealing that covers the first `wanted` commits has finished meanwhile.
    async fn seal_up_to(&self, wanted: u64) -> Result<(), StoreError> {
        let _turn = self.run.lock().await;
        if self.covered.load(Ordering::SeqCst) >= wanted {
            return Ok(());
        }
        // Every commit counted so far is done: this sealing, which reads what is pending
        // after this point, covers them all.
        let covers = self.committed.load(Ordering::SeqCst);
        seal_committed(&self.pool).await?;
        self.covered.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        // The background task wakes, finds the sealer gone, and ends.
        self.wake.notify_one();
    }
}

/// How long the background sealer lets commits gather before it seals them.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(50);

/// The background sealer: one sealing per wake-up, covering every commit before it. A
/// sealing that fails leaves its events for the next wake-up, the checkpoint timer or the
/// next start. Ends with its sealer (the database closed).
async fn seal_in_background(sealer: std::sync::Weak<Sealer>, wake: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        // The commits of the next few milliseconds join this sealing: fewer, larger sealings
        // (each is a transaction with its own WAL flush). Nobody waits for it: a read of the
        // chain seals what it needs at once.
        tokio::time::sleep(COALESCE).await;
        let Some(sealer) = sealer.upgrade() else { return };
        if sealer.pool.is_closed() {
            return;
        }
        let wanted = sealer.committed.load(Ordering::SeqCst);
        if let Err(e) = sealer.seal_up_to(wanted).await {
            tracing::warn!(error = %e, "could not seal audit events; the next sealing will");
        }
    }
}

/// The chain head and one pending event (none when nothing is pending).
#[derive(sqlx::FromRow)]
struct PendingWithHead {
    head_seq: i64,
    head_hash: String,
    id: Option<i64>,
    occurred_at: Option<i64>,
    actor: Option<String>,
    key_id: Option<String>,
    action: Option<String>,
    target: Option<String>,
    outcome: Option<String>,
    before_state: Option<String>,
    after_state: Option<String>,
    request_id: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
}

impl PendingWithHead {
    fn pending(self) -> Option<Pending> {
        Some(Pending {
            id: self.id?,
            occurred_at: self.occurred_at?,
            actor: self.actor?,
            key_id: self.key_id,
            action: self.action?,
            target: self.target?,
            outcome: self.outcome?,
            before_state: self.before_state,
            after_state: self.after_state,
            request_id: self.request_id,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
        })
    }
}

/// The advisory lock that makes one PostgreSQL sealer run at a time (any value unique to
/// this use; "cairn" in ASCII).
const SEAL_LOCK: i64 = 0x63_6169_726e;

/// Seals every committed, unsealed event on PostgreSQL, in the order they were written, in
/// batches of its own transactions: called right after each transaction that wrote events
/// commits (and at start, and before each checkpoint).
///
/// Sealers take turns on an advisory lock, which costs no write when there is nothing to
/// seal; whoever holds it reads what is pending *after* getting it (a fresh snapshot, so
/// every commit before, including the previous sealer's, is seen), then locks the head row,
/// assigns the next sequence numbers and hashes in one statement and moves the head. Writers
/// never hold the chain's lock across their own commit, so their commits group; one sealer
/// seals what several writers committed meanwhile. Returns how many events it sealed.
pub(crate) async fn seal_committed(pool: &sqlx::PgPool) -> Result<u64, StoreError> {
    const BATCH: i64 = 5_000;
    if UNCHAINED.load(Ordering::Relaxed) {
        return Ok(0);
    }
    let mut total = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SEAL_LOCK).execute(&mut *tx).await?;
        // The head is read with what is pending, in one statement. No row lock is needed
        // on it: only the advisory lock's holder moves `seq`/`hash` (a pruning moves only the
        // anchor columns, and an UPDATE re-reads the row it waited for).
        let rows: Vec<PendingWithHead> = sqlx::query_as(
            "SELECT h.seq AS head_seq, h.hash AS head_hash, e.id, e.occurred_at, e.actor, e.key_id, e.action, \
             e.target, e.outcome, e.before_state, e.after_state, e.request_id, e.source_ip, e.user_agent \
             FROM audit_head h LEFT JOIN LATERAL (SELECT * FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT $1) e \
             ON true WHERE h.id = 1 ORDER BY e.id",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Invalid("the audit chain has no head row".into()));
        };
        let mut seq = first.head_seq;
        let mut prev = parse_hash(&first.head_hash)
            .ok_or_else(|| StoreError::Invalid("the audit chain head is not a hash".into()))?;
        let pending: Vec<Pending> = rows.into_iter().filter_map(PendingWithHead::pending).collect();
        if pending.is_empty() {
            tx.commit().await?;
            return Ok(total);
        }
        let n = pending.len();
        let (mut ids, mut seqs, mut salts, mut digests, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for p in &pending {
            seq += 1;
            let rec = p.seal(&prev, seq);
            prev = parse_hash(&rec.hash).unwrap_or(prev);
            ids.push(p.id);
            seqs.push(seq);
            salts.push(rec.salt.unwrap_or_default());
            digests.push(rec.details_digest);
            hashes.push(rec.hash);
        }
        let last = hashes.last().cloned().unwrap_or_default();
        // The events and the head move in one statement; the head only if every event was
        // still unsealed (only this lock's holder seals, so anything else means someone wrote
        // the table behind the registry's back: then nothing moves).
        let moved = sqlx::query(
            "WITH sealed AS (UPDATE audit_events a SET seq = v.seq, salt = v.salt, details_digest = v.digest, \
             hash = v.hash FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[]) \
             AS v(id, seq, salt, digest, hash) WHERE a.id = v.id AND a.seq IS NULL RETURNING 1) \
             UPDATE audit_head SET seq = $6, hash = $7 WHERE id = 1 AND (SELECT count(*) FROM sealed) = $8",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&salts)
        .bind(&digests)
        .bind(&hashes)
        .bind(seq)
        .bind(&last)
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(StoreError::Conflict(format!(
                "sealing audit events: some of {n} were sealed meanwhile by something else; nothing was sealed"
            )));
        }
        tx.commit().await?;
        total += n as u64;
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"unserialisable\":\"{e}\"}}"))
}

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only events at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only events before this time (ms since the epoch).
    pub until: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: usize,
    /// Events after this one.
    pub after: Option<Cursor>,
}

/// Where the chain stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// The last sealed event (0 when there is none).
    pub seq: i64,
    /// Its hash (hex).
    pub hash: String,
    /// The event before the first one kept (0: the genesis).
    pub anchor_seq: i64,
    /// Its hash (hex).
    pub anchor_hash: String,
}

/// The columns of a chained event, in the order of [`RecordRow`] and [`RecordTuple`].
macro_rules! record_columns {
    () => {
        "seq, occurred_at, action, outcome, actor, key_id, target, before_state, after_state, \
         request_id, source_ip, user_agent, salt, details_digest, hash"
    };
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    seq: i64,
    occurred_at: i64,
    action: String,
    outcome: String,
    actor: String,
    key_id: Option<String>,
    target: String,
    before_state: Option<String>,
    after_state: Option<String>,
    request_id: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    salt: Option<String>,
    details_digest: String,
    hash: String,
}

impl From<RecordRow> for AuditRecord {
    fn from(r: RecordRow) -> Self {
        Self {
            seq: r.seq,
            time: r.occurred_at,
            action: r.action,
            outcome: r.outcome,
            details: EventDetails {
                actor: r.actor,
                key_id: r.key_id,
                target: r.target,
                before: r.before_state,
                after: r.after_state,
                request_id: r.request_id,
                source_ip: r.source_ip,
                user_agent: r.user_agent,
            },
            salt: r.salt,
            details_digest: r.details_digest,
            hash: r.hash,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    seq: i64,
    head: String,
    signed_at: i64,
    key_id: String,
    signature: String,
}

impl From<CheckpointRow> for Checkpoint {
    fn from(r: CheckpointRow) -> Self {
        Self { seq: r.seq, head: r.head, signed_at: r.signed_at, key_id: r.key_id, signature: r.signature }
    }
}

/// A key the server has signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct KnownKey {
    /// Its id.
    pub key_id: String,
    /// SPKI PEM.
    pub public_key: String,
    /// When a server first announced it (ms since the epoch).
    pub first_seen: i64,
}

impl Store {
    /// Seals events written before the chain existed (once, after the upgrade that adds
    /// it). A no-op when every event is sealed.
    pub(crate) async fn seal_legacy_events(&self) -> Result<(), StoreError> {
        if let crate::db::Db::Postgres(pool, _) = &self.db {
            return seal_committed(pool).await.map(|_| ());
        }
        let mut tx = self.db.begin().await?;
        seal_pending(&mut tx.conn()).await?;
        tx.commit().await
    }

    /// Records an event that has no state change of its own (a denied attempt, a login).
    pub async fn record_event(
        &self,
        ctx: &AuditContext,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        record_outcome(&mut tx.conn(), ctx, self.now(), action, target, outcome, None::<&()>, None::<&()>).await?;
        tx.commit().await
    }

    /// Lists audit events in chain order.
    pub async fn list_audit_events(&self, q: &AuditQuery) -> Result<Page<AuditEvent>, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        let limit = q.limit.clamp(1, 1000);
        let after = match &q.after {
            Some(Cursor { key: CursorKey::Int(_), id }) => *id,
            Some(_) => return Err(StoreError::Invalid("page token does not belong to this listing".into())),
            None => 0,
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 \
             AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR action = $3) \
             AND ($4 IS NULL OR target = $4) AND ($5 IS NULL OR outcome = $5) \
             AND ($6 IS NULL OR occurred_at >= $6) AND ($7 IS NULL OR occurred_at < $7) \
             ORDER BY seq LIMIT $8"
        );
        let mut rows: Vec<AuditEvent> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_all(
                sqlx::AssertSqlSafe(sql),
                params![
                    after,
                    q.actor.clone(),
                    q.action.clone(),
                    q.target.clone(),
                    q.outcome.clone(),
                    q.since,
                    q.until,
                    i64::try_from(limit + 1).unwrap_or(1001)
                ],
            )
            .await?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|e| Cursor { key: CursorKey::Int(e.id), id: e.id })
        } else {
            None
        };
        Ok(Page { items: rows, next })
    }

    /// Where the chain stands.
    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        let (seq, hash, anchor_seq, anchor_hash): (i64, String, i64, String) = self
            .db
            .read()
            .await?
            .conn()
            .fetch_one("SELECT seq, hash, anchor_seq, anchor_hash FROM audit_head WHERE id = 1", vec![])
            .await?;
        Ok(ChainHead { seq, hash, anchor_seq, anchor_hash })
    }

    /// Up to `limit` chained events with `seq > after` (and `seq <= until` when given), in
    /// order, with everything verification needs. Read in batches to verify or export any
    /// length in bounded memory.
    pub async fn audit_records(
        &self,
        after: i64,
        until: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        // No upper bound in the query: the end is applied as the rows arrive. With one, a
        // PostgreSQL planner that underestimated the range (statistics older than the events)
        // read all of it and sorted it on disk for every page, so an export's pages cost more
        // the further its end was. Without it, the `seq` index is walked in order up to the
        // limit; at most one page reads events past the end.
        let mut rows: Vec<RecordRow> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_all(
                concat!("SELECT ", record_columns!(), " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"),
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        if let Some(until) = until {
            rows.retain(|r| r.seq <= until);
        }
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    /// The events with `after < seq <= upto`, in order, each with its details checked
    /// against their digest. On SQLite the database renders the page as one JSON document
    /// (decoding one document is several times faster there than decoding thousands of
    /// rows); PostgreSQL builds such a document several times slower than it sends the rows,
    /// so there the rows are read as they are, and put in order here. Decoding, ordering and
    /// checking run on a blocking thread.
    async fn audit_record_page(&self, after: i64, upto: i64) -> Result<Vec<(AuditRecord, DetailsCheck)>, StoreError> {
        // (Not settled here: its one caller reads the head first, which settles, and asks only
        // for events up to that head.)
        const COLUMNS: &str = record_columns!();
        let page = match self.backend() {
            Backend::Sqlite => {
                let sql = format!(
                    "SELECT COALESCE(json_group_array(json_array({COLUMNS}) ORDER BY seq), '[]') FROM \
                     (SELECT {COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2)"
                );
                let (doc,): (String,) =
                    self.db.read().await?.conn().fetch_one(sqlx::AssertSqlSafe(sql), params![after, upto]).await?;
                RawPage::Document(doc)
            }
            Backend::Postgres => {
                // Not ordered by the database but below. Where the planner underestimates the
                // range (statistics older than the events, as after a burst of writes), it
                // reads the rows with a bitmap scan and sorts them on disk, which takes five
                // times as long as reading them.
                let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2");
                RawPage::Rows(
                    self.db.read().await?.conn().fetch_all(sqlx::AssertSqlSafe(sql), params![after, upto]).await?,
                )
            }
        };
        tokio::task::spawn_blocking(move || {
            let records = match page {
                RawPage::Document(doc) => serde_json::from_str::<Vec<RecordTuple>>(&doc)
                    .map_err(|e| StoreError::Invalid(format!("reading the audit chain: {e}")))?,
                RawPage::Rows(mut rows) => {
                    rows.sort_unstable_by_key(|r| r.0);
                    rows
                }
            };
            Ok(records
                .into_iter()
                .map(|row| {
                    let r = record_from_tuple(row);
                    let checked = check_details(&r);
                    (r, checked)
                })
                .collect())
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("checking the audit chain: {e}")))?
    }

    /// Signed checkpoints with `from <= seq <= to`, in order (at most `limit`).
    pub async fn audit_checkpoints(&self, from: i64, to: i64, limit: usize) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<CheckpointRow> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_all(
                "SELECT seq, head, signed_at, key_id, signature FROM audit_checkpoints \
                 WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                params![from, to, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(rows.into_iter().map(Checkpoint::from).collect())
    }

    /// The newest checkpoint at or before event `seq`.
    pub async fn audit_checkpoint_at_or_before(&self, seq: i64) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<CheckpointRow> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_optional(
                "SELECT seq, head, signed_at, key_id, signature FROM audit_checkpoints WHERE seq <= $1 \
                 ORDER BY seq DESC LIMIT 1",
                params![seq],
            )
            .await?;
        Ok(row.map(Checkpoint::from))
    }

    /// The most recent checkpoint.
    pub async fn last_audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<CheckpointRow> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_optional(
                "SELECT seq, head, signed_at, key_id, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                vec![],
            )
            .await?;
        Ok(row.map(Checkpoint::from))
    }

    /// Signs the current head with `key` unless the newest checkpoint already covers it.
    /// Returns the checkpoint covering the head (none while the chain is empty). Safe with
    /// several replicas: one checkpoint per sequence number is kept.
    pub async fn checkpoint_audit_chain(
        &self,
        key: &cairn_audit::SigningKey,
    ) -> Result<Option<Checkpoint>, StoreError> {
        // Events committed but left unsealed (a sealing that failed) join the chain first.
        if let crate::db::Db::Postgres(pool, _) = &self.db {
            seal_committed(pool).await?;
        }
        let head = self.audit_head().await?;
        if head.seq == 0 {
            return Ok(None);
        }
        if let Some(last) = self.last_audit_checkpoint().await?
            && last.seq >= head.seq
        {
            return Ok(Some(last));
        }
        let cp = Checkpoint::sign(key, head.seq, &head.hash, self.now());
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                "INSERT INTO audit_checkpoints (seq, head, signed_at, key_id, signature) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (seq) DO NOTHING",
                params![cp.seq, &cp.head, cp.signed_at, &cp.key_id, &cp.signature],
            )
            .await?;
        tx.commit().await?;
        let stored: CheckpointRow = self
            .db
            .read()
            .await?
            .conn()
            .fetch_one(
                "SELECT seq, head, signed_at, key_id, signature FROM audit_checkpoints WHERE seq = $1",
                params![cp.seq],
            )
            .await?;
        Ok(Some(stored.into()))
    }

    /// Verifies the whole stored chain, from its anchor to its head, with the checkpoints
    /// signed along it, trusting checkpoints signed by `trusted` keys. Reads in batches, so
    /// memory stays bounded whatever the length.
    pub async fn verify_audit_chain(&self, trusted: Vec<cairn_audit::PublicKey>) -> Result<Report, StoreError> {
        const BATCH: usize = 10_000;
        let head = self.audit_head().await?;
        let anchor_hash = parse_hash(&head.anchor_hash)
            .ok_or_else(|| StoreError::Invalid("the audit chain anchor is not a hash".into()))?;
        let mut v = Verifier::new(Anchor { seq: head.anchor_seq, hash: anchor_hash }, trusted);
        let mut checkpoints = self.audit_checkpoints(head.anchor_seq, i64::MAX, BATCH).await?;
        let mut cp_next = 0;
        if head.anchor_seq > 0 {
            match checkpoints.first() {
                Some(cp) if cp.seq == head.anchor_seq => {
                    v.anchor_checkpoint(cp);
                    cp_next = 1;
                }
                _ => {}
            }
        }
        // Pages of sequence numbers are read, decoded and their details checked — several
        // pages at once, on other threads — while this task walks the chain through them in
        // order. A gap makes a page smaller, nothing else.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<(AuditRecord, DetailsCheck)>, StoreError>>(2);
        let reader = {
            let (store, from, until) = (self.clone(), head.anchor_seq, head.seq);
            let step = i64::try_from(BATCH).unwrap_or(i64::MAX);
            let pages =
                (0..).map(move |i: i64| from.saturating_add(i.saturating_mul(step))).take_while(move |a| *a < until);
            tokio::spawn(async move {
                let mut docs = std::pin::pin!(
                    futures::stream::iter(pages)
                        .map(|after| {
                            let store = store.clone();
                            async move { store.audit_record_page(after, after.saturating_add(step).min(until)).await }
                        })
                        .buffered(3)
                );
                while let Some(page) = docs.next().await {
                    let failed = page.is_err();
                    if tx.send(page).await.is_err() || failed {
                        return;
                    }
                }
            })
        };
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            for (r, checked) in batch {
                if !v.event_checked(&r, checked) {
                    break;
                }
                loop {
                    if cp_next == checkpoints.len() && checkpoints.len() == BATCH {
                        let from = checkpoints.last().map_or(0, |c| c.seq + 1);
                        checkpoints = self.audit_checkpoints(from, i64::MAX, BATCH).await?;
                        cp_next = 0;
                    }
                    match checkpoints.get(cp_next) {
                        Some(cp) if cp.seq <= r.seq => {
                            v.checkpoint(cp);
                            cp_next += 1;
                        }
                        _ => break,
                    }
                }
            }
            if v.broken() {
                break;
            }
        }
        drop(rx);
        reader.abort();
        // A checkpoint beyond the head read at the start: either events were removed from
        // the end, or another replica appended events and signed them meanwhile.
        if let Some(cp) = checkpoints.get(cp_next)
            && cp.seq > head.seq
            && self.audit_head().await?.seq < cp.seq
        {
            v.checkpoint(cp);
        }
        Ok(v.finish(Some((head.seq, &head.hash))))
    }

    /// A compliance report over `[since, until)` from the chain's events (read in batches),
    /// with who holds each role now.
    pub async fn compliance_report(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<cairn_audit::report::ComplianceReport, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        const BATCH: usize = 5_000;
        let mut b = cairn_audit::report::ReportBuilder::new(since, until, self.now());
        let (first, last): (Option<i64>, Option<i64>) = self
            .db
            .read()
            .await?
            .conn()
            .fetch_one(
                "SELECT MIN(seq), MAX(seq) FROM audit_events WHERE seq IS NOT NULL \
                 AND ($1 IS NULL OR occurred_at >= $1) AND ($2 IS NULL OR occurred_at < $2)",
                params![since, until],
            )
            .await?;
        if let (Some(first), Some(last)) = (first, last) {
            let mut after = first - 1;
            while after < last {
                let batch = self.audit_records(after, Some(last), BATCH).await?;
                let Some(end) = batch.last().map(|r| r.seq) else { break };
                for r in &batch {
                    if since.is_none_or(|s| r.time >= s) && until.is_none_or(|u| r.time < u) {
                        b.add(r);
                    }
                }
                after = end;
            }
        }
        let mut report = b.finish();
        let mut roles: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for g in self.list_grants(None, None).await? {
            let holder = match g.namespace {
                Some(ns) => format!("{}@{ns}", g.username),
                None => g.username,
            };
            roles.entry(g.role).or_default().push(holder);
        }
        report.roles =
            roles.into_iter().map(|(role, holders)| cairn_audit::report::RoleHolders { role, holders }).collect();
        Ok(report)
    }

    /// Records that the server signs with `key` (idempotent).
    pub async fn announce_signing_key(&self, key: &cairn_audit::PublicKey) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                "INSERT INTO signing_keys (key_id, public_key, first_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id) DO NOTHING",
                params![key.key_id(), key.to_pem(), self.now()],
            )
            .await?;
        tx.commit().await
    }

    /// Every key the server has announced, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<KnownKey>, StoreError> {
        self.db
            .read()
            .await?
            .conn()
            .fetch_all("SELECT key_id, public_key, first_seen FROM signing_keys ORDER BY first_seen, key_id", vec![])
            .await
    }
}

/// A page of chained events as the database sent it.
enum RawPage {
    Document(String),
    Rows(Vec<RecordTuple>),
}

/// One chained event's columns, in the order of `audit_record_page`. The digests are
/// optional so that a value nulled out by hand verifies as a mismatch, not as an I/O error.
type RecordTuple = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn record_from_tuple(r: RecordTuple) -> AuditRecord {
    AuditRecord {
        seq: r.0,
        time: r.1,
        action: r.2,
        outcome: r.3,
        details: EventDetails {
            actor: r.4,
            key_id: r.5,
            target: r.6,
            before: r.7,
            after: r.8,
            request_id: r.9,
            source_ip: r.10,
            user_agent: r.11,
        },
        salt: r.12,
        details_digest: r.13.unwrap_or_default(),
        hash: r.14.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbOptions, Store};

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()), &DbOptions::default()).await.unwrap()
    }

    fn ctx(actor: &str) -> AuditContext {
        AuditContext { actor: actor.to_owned(), ..AuditContext::default() }
    }

    async fn count(conn: &mut Conn<'_>) -> i64 {
        let (n,): (i64,) = conn.fetch_one("SELECT COUNT(*) FROM audit_events", vec![]).await.unwrap();
        n
    }

    /// Events held back for the next call (SQLite) are there for any later statement of the
    /// same transaction, in order, and the chain they form verifies.
    #[tokio::test]
    async fn held_back_events_are_written_before_the_next_statement_and_with_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let before = store.audit_head().await.unwrap().seq;
        let mut tx = store.db.begin().await.unwrap();
        let mut conn = tx.conn();
        let n0 = count(&mut conn).await;
        record(&mut conn, &ctx("user:a"), 1, "test.one", "t:1", None::<&()>, None::<&()>).await.unwrap();
        assert_eq!(count(&mut conn).await, n0 + 1, "a read after the event sees it");
        record(&mut conn, &ctx("user:a"), 2, "test.two", "t:2", None::<&()>, None::<&()>).await.unwrap();
        record(&mut conn, &ctx("user:a"), 3, "test.three", "t:3", None::<&()>, None::<&()>).await.unwrap();
        tx.commit().await.unwrap();
        let head = store.audit_head().await.unwrap();
        assert_eq!(head.seq, before + 3);
        let records = store.audit_records(before, None, 10).await.unwrap();
        let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["test.one", "test.two", "test.three"]);
        assert_eq!(records.last().map(|r| r.hash.as_str()), Some(head.hash.as_str()));
        let report = store.verify_audit_chain(Vec::new()).await.unwrap();
        assert!(report.ok(), "{report:?}");
    }

    /// A transaction dropped with events held back leaves neither them nor a moved head, and
    /// the next one continues the chain from where it was.
    #[tokio::test]
    async fn held_back_events_of_a_dropped_transaction_leave_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let before = store.audit_head().await.unwrap();
        {
            let mut tx = store.db.begin().await.unwrap();
            record(&mut tx.conn(), &ctx("user:gone"), 1, "test.gone", "t:1", None::<&()>, None::<&()>).await.unwrap();
        }
        assert_eq!(store.audit_head().await.unwrap(), before);
        store.record_event(&ctx("user:b"), "test.kept", "t:2", "success").await.unwrap();
        let records = store.audit_records(before.seq, None, 10).await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].seq, records[0].action.as_str()), (before.seq + 1, "test.kept"));
        assert!(store.verify_audit_chain(Vec::new()).await.unwrap().ok());
    }
}
