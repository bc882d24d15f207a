//! One query set, two backends.
//!
//! SQL in this crate is written once, with `$1…$N` placeholders that both SQLite and
//! PostgreSQL accept, and runs through [`Db`] (pools) and [`Conn`] (a borrowed connection or
//! transaction). Parameters travel as [`Param`] values so the same call site binds them on
//! either backend; rows decode into types that implement [`FromRow`](sqlx::FromRow) for both.
//!
//! SQLite runs with one writer connection and a pool of readers: WAL lets readers proceed
//! while the single writer serialises every write transaction, so version numbers and audit
//! records are assigned in a total order without `SQLITE_BUSY` retries. The writer is not a
//! pool of one but a connection behind a lock ([`Writer`]): sqlx's pool sends a ping to a
//! connection's thread whenever it comes back, and on the writer every other writer waited
//! for that round trip.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, SqlStr, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, oneshot};

use crate::StoreError;
use crate::audit::SqliteChain;

/// A bound query parameter, portable across both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL where text is expected.
    Null,
    /// SQL NULL where an integer is expected (PostgreSQL types NULL parameters).
    NullInt,
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// A boolean (INTEGER 0/1 on SQLite).
    Bool(bool),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        v.map_or(Self::Null, Self::Text)
    }
}
impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Self::Null, Self::from)
    }
}
impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Self::NullInt, Self::Int)
    }
}
impl From<cairn_core::filter::SqlValue> for Param {
    fn from(v: cairn_core::filter::SqlValue) -> Self {
        use cairn_core::filter::SqlValue;
        match v {
            SqlValue::Text(s) => Self::Text(s),
            SqlValue::Integer(i) => Self::Int(i),
            SqlValue::Real(r) => Self::Real(r),
        }
    }
}

/// Builds a `Vec<Param>` from expressions.
#[macro_export]
macro_rules! params {
    ($($e:expr),* $(,)?) => { vec![$($crate::db::Param::from($e)),*] };
}

/// A row type that decodes from both backends.
pub trait Row: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Row for T where T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin {}

/// Which SQL dialect a [`Db`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The connection pools of one database.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite: one writer, several readers.
    Sqlite {
        /// The single writer connection.
        writer: Arc<Writer>,
        /// Read-only work.
        reader: Arc<Readers>,
    },
    /// PostgreSQL: one pool.
    Postgres(PgPool, std::sync::Arc<crate::audit::Sealer>),
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Most connections per pool (PostgreSQL) or readers (SQLite).
    pub max_connections: u32,
    /// How long a SQLite writer waits on a lock held by another process.
    pub busy_timeout: Duration,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { max_connections: 8, busy_timeout: Duration::from_secs(5), acquire_timeout: Duration::from_secs(10) }
    }
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`), creating a SQLite file if needed.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let base = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(opts.busy_timeout);
            // No ping before handing out a connection: a SQLite connection is a file in this
            // process and cannot drop like a network one, and sqlx's ping is a round trip to
            // the connection's thread — one more hop for every read, and one more that
            // writers queue behind on the single writer.
            let writer = Arc::new(Writer::connect(&base, opts.acquire_timeout).await?);
            let reader =
                Arc::new(Readers::new(base.read_only(true), opts.max_connections.max(1), opts.acquire_timeout));
            Ok(Self::Sqlite { writer, reader })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
            let port = options.get_port();
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(opts.acquire_timeout)
                .after_connect(move |_conn, _meta| {
                    Box::pin(async move {
                        crate::nodelay::set_on_connections_to(port);
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            let sealer = std::sync::Arc::new(crate::audit::Sealer::new(pool.clone()));
            Ok(Self::Postgres(pool, sealer))
        } else {
            Err(StoreError::Config("database URL must start with sqlite:// or postgres://".into()))
        }
    }

    /// The dialect of this database.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite { .. } => Backend::Sqlite,
            Self::Postgres(..) => Backend::Postgres,
        }
    }

    /// Applies the migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite { writer, .. } => {
                writer.chain_ready.store(false, Ordering::Release);
                // On a pool of its own for the duration: the migrator's future is not `Send`
                // over a borrowed connection. SQLite's own locking orders it with the writer.
                let pool = SqlitePoolOptions::new().max_connections(1).connect_with(writer.options.clone()).await?;
                let migrated = sqlx::migrate!("migrations/sqlite").run(&pool).await;
                pool.close().await;
                migrated?;
                writer.chain_ready.store(true, Ordering::Release);
            }
            Self::Postgres(pool, _) => {
                sqlx::migrate!("migrations/postgres").run(pool).await?;
            }
        }
        Ok(())
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        self.begin_sized(Kind::Large).await
    }

    /// [`Db::begin`] for a transaction whose changes are small by construction (bounded by
    /// its request, a few hundred KiB at most: a version with at most
    /// [`SMALL_TRANSACTION_FILES`] files, its tags, scans and lineage). On SQLite such
    /// transactions share commit groups whose undo copies stay in memory (see [`Writer`]).
    pub async fn begin_small(&self) -> Result<Tx, StoreError> {
        self.begin_sized(Kind::Small).await
    }

    /// [`Db::begin_small`] for a transaction that makes no call to the database of its own
    /// (every statement goes through [`Conn::defer`]) and that its caller runs again, as a
    /// small one, if it fails with a database error. On SQLite such transactions share
    /// commit groups without savepoints whose statements are all sent with the group's
    /// `COMMIT` (see [`Writer`]): when one of them fails, the whole group is rolled back and
    /// every member gets a database error. On PostgreSQL it is an ordinary transaction.
    pub async fn begin_batched(&self) -> Result<Tx, StoreError> {
        self.begin_sized(Kind::Batched).await
    }

    async fn begin_sized(&self, kind: Kind) -> Result<Tx, StoreError> {
        Ok(match self {
            // IMMEDIATE takes the write lock up front, so a transaction never fails half-way
            // on a lock upgrade when another process shares the file.
            Self::Sqlite { writer, .. } => Tx::Sqlite(writer.begin(kind).await?),
            Self::Postgres(pool, sealer) => Tx::Postgres(pool.begin().await?, sealer.clone(), false),
        })
    }

    /// Acquires a connection for reads.
    pub async fn read(&self) -> Result<ReadConn, StoreError> {
        Ok(match self {
            Self::Sqlite { reader, .. } => ReadConn::Sqlite(reader.acquire().await?),
            Self::Postgres(pool, _) => ReadConn::Postgres(pool.acquire().await?),
        })
    }

    /// On PostgreSQL, returns once every audit event this process committed is sealed into
    /// the chain (see [`crate::audit::Sealer`]); nothing to do on SQLite, which seals events
    /// as it writes them.
    pub(crate) async fn settle_audit(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite { .. } => Ok(()),
            Self::Postgres(_, sealer) => sealer.settle().await,
        }
    }

    /// Closes every pool, waiting for connections in use to come back; on PostgreSQL, after
    /// sealing the audit events this process committed.
    pub async fn close(&self) {
        match self {
            Self::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Self::Postgres(pool, sealer) => {
                if let Err(e) = sealer.settle().await {
                    tracing::warn!(error = %e, "could not seal audit events before closing; the next start will");
                }
                pool.close().await;
            }
        }
    }

    /// Write transactions waiting to begin (SQLite's single writer; 0 on PostgreSQL).
    pub fn writers_waiting(&self) -> usize {
        match self {
            Self::Sqlite { writer, .. } => writer.beginning.load(Ordering::Acquire),
            Self::Postgres(..) => 0,
        }
    }

    /// Pool statistics: (connections open, idle).
    pub fn pool_stats(&self) -> (u32, usize) {
        match self {
            Self::Sqlite { writer, reader } => {
                let (open, idle) = writer.stats();
                let (r_open, r_idle) = reader.stats();
                (open + r_open, idle + r_idle)
            }
            Self::Postgres(pool, _) => (pool.size(), pool.num_idle()),
        }
    }
}

/// The most transactions one commit group holds.
const GROUP_MAX: usize = 32;

/// How long a commit group stays open at most: the first transaction's caller waits that long
/// for its answer, and another process sharing the file for the write lock.
const GROUP_MAX_AGE: Duration = Duration::from_millis(20);

/// The savepoint a transaction that joins an open commit group works under.
const MEMBER_SAVEPOINT: &str = "SAVEPOINT cairn_member";

/// The most files of a version whose creation is a small transaction ([`Db::begin_small`]).
pub const SMALL_TRANSACTION_FILES: usize = 256;

/// The most parameters a batched commit group's statements take together: SQLite numbers a
/// call's parameters across all its statements and accepts at most 32,766.
const BATCH_PARAMS_MAX: usize = 16_384;

/// What a write transaction is, for the commit groups it may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any size ([`Db::begin`]).
    Large,
    /// Bounded by its request ([`Db::begin_small`]).
    Small,
    /// Small, with every statement deferred, and run again by its caller if it fails
    /// ([`Db::begin_batched`]).
    Batched,
}

/// A statement held back, with its own `$1…$n`.
pub(crate) type Deferred = (std::borrow::Cow<'static, str>, Vec<Param>);

/// Where the next version of a model goes, as a batched transaction predicts it without
/// asking the database ([`Tx::version_slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VersionSlot {
    /// The model's row id.
    pub model_id: i64,
    /// The version number it gets.
    pub number: i64,
    /// The version row's id.
    pub id: i64,
}

/// Each model's last version number and the next version id as the batched transactions
/// before left them: valid while nothing but batched transactions has run since they were
/// read, and checked by the statement that inserts the version (a wrong guess fails it, and
/// the group is run again one transaction at a time).
#[derive(Debug, Default)]
struct Predictions {
    /// Model name → (row id, last version number).
    models: std::collections::HashMap<String, (i64, i64)>,
    next_version_id: Option<i64>,
}

/// The most models [`Predictions`] remembers before it starts over.
const PREDICTED_MODELS_MAX: usize = 4096;

impl Predictions {
    fn clear(&mut self) {
        self.models.clear();
        self.next_version_id = None;
    }

    /// Records a version created (`model`, its slot).
    fn created(&mut self, model: String, slot: VersionSlot) {
        if self.models.len() >= PREDICTED_MODELS_MAX && !self.models.contains_key(&model) {
            self.models.clear();
        }
        self.models.insert(model, (slot.model_id, slot.number));
        self.next_version_id = Some(slot.id + 1);
    }
}

/// SQLite's one writer connection, behind a lock that a write transaction holds from its
/// beginning to its end.
///
/// Not a pool of one: sqlx's pool pings a connection's thread each time the connection comes
/// back, and on the single writer every queued writer waited for that extra round trip.
///
/// **Group commit.** When a transaction ends while others wait to begin, it does not commit:
/// it leaves the database transaction open for them and waits. The next one works under a
/// savepoint inside it (rolled back alone if it fails), and so on; the first to end with
/// nobody waiting — or the group full, or 20 ms old — commits them all, and only then do
/// their callers get an answer. Each transaction saves the round trip of its `BEGIN` (the
/// savepoint goes with its first statement, the audit chain's head is known from the one
/// before) and the group shares one `COMMIT`. A transaction that ends with nobody waiting
/// commits at once, as before; a group that is full or 20 ms old is committed before the next
/// transaction begins.
///
/// A transaction inside a group reads what the group's earlier transactions wrote before it
/// is committed. One whose caller answers from what it read must therefore end with
/// [`Tx::commit`] even when it changed nothing (the answer then waits for the group), not by
/// being dropped.
///
/// **Undo copies in memory for small transactions.** To roll back a transaction inside a
/// group alone, SQLite copies each page it changes as it changes it (the statement journal)
/// and keeps the copies in memory up to 64 KiB, then in a temporary file. A version created
/// with its files, scans, lineage and audit event changes more pages than that, so nearly
/// every one created a file, wrote its copies there one system call at a time and deleted it.
/// A group begun by a small transaction ([`Db::begin_small`]) therefore keeps its copies in
/// memory (`PRAGMA temp_store = MEMORY`, which SQLite reads when the database transaction
/// begins), and admits only small transactions: any other one commits it first and begins a
/// group of its own, whose copies go to a file as before. Memory stays bounded by the size of
/// a small transaction; the copies of each one are dropped when it ends.
///
/// **Batched groups.** A transaction begun with [`Db::begin_batched`] sends nothing of its
/// own: it works out what it writes (a version's number and id from [`Predictions`], its
/// audit event from the chain's head), defers every statement, and at its end hands them to
/// the group, which sends them all with its `COMMIT` in one call. Its turn on the lock is
/// then work in memory, with no round trip to the connection's thread. There are no
/// savepoints in such a group, so when a statement fails the whole group is rolled back and
/// every member gets a database error; their callers run them again one by one as small
/// transactions, which tells whose statement it was. A group holds batched transactions or
/// others, never both; any other transaction commits a batched group first, and forgets the
/// predictions, since it may change what they were read from.
#[derive(Debug)]
pub struct Writer {
    /// `None` once closed.
    conn: Arc<Mutex<Option<WriterConn>>>,
    /// Callers of [`Writer::begin`] waiting for the lock: while there are any, a transaction
    /// that ends leaves its commit to the group.
    beginning: AtomicUsize,
    /// How long to wait for the lock (as a pool waits for a connection).
    acquire_timeout: Duration,
    /// How the connection was opened.
    options: SqliteConnectOptions,
    /// The schema is migrated: a transaction reads the audit chain's head with its `BEGIN`.
    chain_ready: AtomicBool,
}

/// The writer connection and what its lock's holders hand on to each other.
#[derive(Debug)]
struct WriterConn {
    sqlite: SqliteConnection,
    /// The open commit group, if transactions have ended and wait for its `COMMIT`.
    group: Option<Group>,
    /// A transaction was dropped without commit and is still open: the next holder of the
    /// lock rolls it back first.
    abandoned: Option<Abandoned>,
    /// The number of the next commit group.
    next_group: u64,
    /// The connection's `temp_store` keeps temporary data in memory (`Some(true)`), in files
    /// (`Some(false)`), or is not known (a statement setting it failed half-way). Changed only
    /// between database transactions, so it also tells which kind of group is open.
    temp_in_memory: Option<bool>,
    /// What batched transactions predict (see [`Predictions`]).
    predicted: Predictions,
}

/// Transactions that have ended, inside one database transaction not yet committed.
#[derive(Debug)]
struct Group {
    id: u64,
    started: Instant,
    /// One per transaction, told the outcome of the `COMMIT`.
    ended: Vec<oneshot::Sender<Result<(), String>>>,
    /// The audit chain's head after them.
    head: Option<(i64, cairn_audit::Hash)>,
    /// A group of batched transactions (see [`Writer`]).
    batched: bool,
    /// A batched group's statements not sent yet, in order.
    pending: Vec<Deferred>,
}

impl Group {
    /// How many parameters the statements not sent yet take.
    fn pending_params(&self) -> usize {
        self.pending.iter().map(|(_, p)| p.len()).sum()
    }
}

/// What a transaction dropped half-way left for the next holder of the lock to settle.
#[derive(Debug, Clone, Copy)]
enum Abandoned {
    /// A database transaction of its own (no group was open when it began): rolled back.
    Transaction,
    /// Its savepoint inside an open group: rolled back to.
    Member,
    /// Its release of its savepoint, which may or may not have run: the savepoint is rolled
    /// back to if it is still there, else the transaction's work stays in the group.
    Releasing,
    /// Its `COMMIT` (of the group, if it was a member), which may or may not have run.
    Committing { member: bool },
    /// The `COMMIT` of a group by one of its waiting transactions, which may or may not have run.
    GroupCommit,
    /// A batched transaction sent statements of the group and was dropped before its end:
    /// the whole group is rolled back.
    Batch,
}

impl WriterConn {
    /// Settles what a transaction dropped half-way left (see [`Abandoned`]). Runs to the end:
    /// [`Writer::lock`] does not let a cancelled caller interrupt it.
    async fn clean_up(&mut self) {
        let Some(abandoned) = self.abandoned else { return };
        // What was predicted may have been committed or rolled back unseen.
        self.predicted.clear();
        match abandoned {
            Abandoned::Batch => {
                if self.transaction_open().await {
                    self.fail_group("a batched transaction was abandoned").await;
                } else if let Some(group) = self.group.take() {
                    group.tell(&Ok(()));
                }
            }
            Abandoned::Transaction => self.roll_back(false).await,
            Abandoned::Member => self.roll_back(true).await,
            Abandoned::Releasing => {
                if sqlx::query("ROLLBACK TO cairn_member; RELEASE cairn_member")
                    .execute(&mut self.sqlite)
                    .await
                    .is_err()
                {
                    if self.transaction_open().await {
                        // Released: its work stays in the group, and the audit chain's head
                        // it moved is read again by the next transaction.
                        if let Some(group) = &mut self.group {
                            group.head = None;
                        }
                    } else {
                        self.fail_group("the database ended the transaction").await;
                    }
                }
            }
            Abandoned::Committing { member } => {
                if self.transaction_open().await {
                    self.roll_back(member).await;
                } else if let Some(group) = self.group.take() {
                    group.tell(&Ok(()));
                }
            }
            Abandoned::GroupCommit => {
                if !self.transaction_open().await
                    && let Some(group) = self.group.take()
                {
                    group.tell(&Ok(()));
                }
            }
        }
        self.abandoned = None;
    }

    /// Whether a database transaction is open on the connection: `BEGIN` fails inside one.
    async fn transaction_open(&mut self) -> bool {
        if sqlx::query("BEGIN").execute(&mut self.sqlite).await.is_err() {
            return true;
        }
        if let Err(e) = sqlx::query("ROLLBACK").execute(&mut self.sqlite).await {
            tracing::debug!(error = %e, "rollback of a probe");
        }
        false
    }

    /// Undoes the current transaction: its savepoint if it joined a group, keeping what the
    /// group's earlier transactions did, else the whole database transaction.
    async fn roll_back(&mut self, member: bool) {
        if !member {
            // SQLite may have rolled back already (some errors end the transaction), and
            // then says so: either way nothing is open afterwards.
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut self.sqlite).await {
                tracing::debug!(error = %e, "rollback of a write transaction");
            }
            return;
        }
        if sqlx::query("ROLLBACK TO cairn_member; RELEASE cairn_member").execute(&mut self.sqlite).await.is_err()
            && !self.transaction_open().await
        {
            // SQLite ended the whole transaction (some errors do), and the group's earlier
            // transactions with it. (With the transaction still open, the savepoint was
            // never made: the transaction had sent nothing.)
            self.fail_group("the database ended the transaction").await;
        }
    }

    /// Rolls back the whole database transaction and tells the group's transactions.
    async fn fail_group(&mut self, why: &str) {
        self.predicted.clear();
        if let Err(e) = sqlx::query("ROLLBACK").execute(&mut self.sqlite).await {
            tracing::debug!(error = %e, "rollback of a commit group");
        }
        if let Some(group) = self.group.take() {
            tracing::warn!(transactions = group.ended.len(), reason = why, "a commit group was rolled back");
            group.tell(&Err(why.to_owned()));
        }
    }

    /// Adds a transaction that has ended to the open group (a new one if none is open),
    /// with the audit chain's head after it and, in a batched group, its statements not
    /// sent yet; returns the group's id and where the outcome of its `COMMIT` will come.
    fn join_group(
        &mut self,
        batched: bool,
        head: Option<(i64, cairn_audit::Hash)>,
        statements: Vec<Deferred>,
    ) -> (u64, oneshot::Receiver<Result<(), String>>) {
        let (told, outcome) = oneshot::channel();
        let next = self.next_group;
        let group = self.group.get_or_insert_with(|| Group {
            id: next,
            started: Instant::now(),
            ended: Vec::new(),
            head: None,
            batched,
            pending: Vec::new(),
        });
        if group.id == next {
            self.next_group += 1;
        }
        group.pending.extend(statements);
        group.ended.push(told);
        group.head = head;
        (group.id, outcome)
    }

    /// Commits the open group, if any, and tells its transactions.
    async fn commit_group(&mut self) {
        let Some(group) = &mut self.group else { return };
        // A batched group's statements not sent yet go with its COMMIT.
        let mut statements = SqliteChain::inheriting(None, std::mem::take(&mut group.pending));
        self.abandoned = Some(Abandoned::GroupCommit);
        let committed = statements.finish(&mut self.sqlite, "COMMIT").await;
        self.abandoned = None;
        let outcome = match committed {
            Ok(()) => Ok(()),
            Err(e) => {
                self.predicted.clear();
                if let Err(e) = sqlx::query("ROLLBACK").execute(&mut self.sqlite).await {
                    tracing::debug!(error = %e, "rollback after a failed commit");
                }
                Err(e.to_string())
            }
        };
        if let Some(group) = self.group.take() {
            group.tell(&outcome);
        }
    }
}

impl Group {
    fn tell(self, outcome: &Result<(), String>) {
        for ended in self.ended {
            let _ = ended.send(outcome.clone());
        }
    }
}

/// The writer's lock, held.
type WriterGuard = OwnedMappedMutexGuard<Option<WriterConn>, WriterConn>;

impl Writer {
    async fn connect(options: &SqliteConnectOptions, acquire_timeout: Duration) -> Result<Self, StoreError> {
        let sqlite = SqliteConnection::connect_with(options).await?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Some(WriterConn {
                sqlite,
                group: None,
                abandoned: None,
                next_group: 0,
                temp_in_memory: Some(false),
                predicted: Predictions::default(),
            }))),
            beginning: AtomicUsize::new(0),
            acquire_timeout,
            options: options.clone(),
            chain_ready: AtomicBool::new(false),
        })
    }

    /// Takes the connection, waiting at most `timeout` if one is given, and rolls back what
    /// a dropped transaction left open.
    async fn lock(&self, timeout: Option<Duration>) -> Result<WriterGuard, StoreError> {
        let guard = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, self.conn.clone().lock_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?,
            None => self.conn.clone().lock_owned().await,
        };
        let mut conn = OwnedMutexGuard::try_map(guard, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
        if conn.abandoned.is_some() {
            // In a task of its own, which a cancelled caller does not interrupt.
            conn = tokio::spawn(async move {
                conn.clean_up().await;
                conn
            })
            .await
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?;
        }
        Ok(conn)
    }

    /// Begins a write transaction: in the open commit group if there is one, else with
    /// `BEGIN IMMEDIATE`, which takes the database's write lock up front, so a transaction
    /// never fails half-way on a lock upgrade when another process shares the file. With the
    /// schema in place, the audit chain's head is read in the same call (see
    /// [`SqliteChain`]).
    async fn begin(self: &Arc<Self>, kind: Kind) -> Result<SqliteTx, StoreError> {
        let small = kind != Kind::Large;
        let batched = kind == Kind::Batched;
        let mut conn = {
            let _waiting = Waiting::on(&self.beginning);
            self.lock(Some(self.acquire_timeout)).await?
        };
        let for_small = conn.temp_in_memory == Some(true);
        if conn.group.as_ref().is_some_and(|g| {
            g.ended.len() >= GROUP_MAX
                || g.started.elapsed() >= GROUP_MAX_AGE
                || (for_small && !small)
                || g.batched != batched
                || g.pending_params() >= BATCH_PARAMS_MAX
        }) {
            // Full or old enough (a transaction ran long inside it), or a group of small or
            // batched transactions that this one may not join: committed first.
            let mut closing = Settle::new(self);
            conn.commit_group().await;
            closing.disarm();
        }
        if !batched {
            // It may change what the predictions were read from.
            conn.predicted.clear();
        }
        if let Some(group) = &mut conn.group {
            let chain = if batched {
                SqliteChain::inheriting(group.head, std::mem::take(&mut group.pending))
            } else {
                SqliteChain::continuing(group.head, MEMBER_SAVEPOINT)
            };
            return Ok(SqliteTx { conn, writer: self.clone(), open: true, member: true, batched, slot: None, chain });
        }
        // A caller cancelled half-way leaves the rollback of what it began to a task.
        conn.abandoned = Some(Abandoned::Transaction);
        let mut beginning = Settle::new(self);
        // Where this group keeps its undo copies, set before the BEGIN that reads it.
        let temp_store = if conn.temp_in_memory == Some(small) {
            ""
        } else {
            conn.temp_in_memory = None;
            if small { "PRAGMA temp_store = MEMORY; " } else { "PRAGMA temp_store = DEFAULT; " }
        };
        let head = if self.chain_ready.load(Ordering::Acquire) {
            let begun: Result<Option<(i64, String)>, _> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{temp_store}BEGIN IMMEDIATE; SELECT seq, hash FROM audit_head WHERE id = 1"
            )))
            .fetch_optional(&mut conn.sqlite)
            .await;
            match begun {
                Ok(head) => head,
                Err(e) => {
                    // The BEGIN may have run before the read failed.
                    conn.roll_back(false).await;
                    conn.abandoned = None;
                    beginning.disarm();
                    return Err(e.into());
                }
            }
        } else {
            if let Err(e) =
                sqlx::query(sqlx::AssertSqlSafe(format!("{temp_store}BEGIN IMMEDIATE"))).execute(&mut conn.sqlite).await
            {
                conn.abandoned = None;
                beginning.disarm();
                return Err(e.into());
            }
            None
        };
        conn.temp_in_memory = Some(small);
        conn.abandoned = None;
        beginning.disarm();
        Ok(SqliteTx {
            conn,
            writer: self.clone(),
            open: true,
            member: false,
            batched,
            slot: None,
            chain: SqliteChain::new(head),
        })
    }

    /// Waits for the `COMMIT` of group `id`, which the transaction has ended in. If the lock
    /// comes first, nobody else is left to commit the group: this does.
    async fn await_commit(
        self: Arc<Self>,
        id: u64,
        mut outcome: oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), StoreError> {
        let mut closer = GroupCloser { writer: Some(self.clone()), id };
        let told = tokio::select! {
            biased;
            told = &mut outcome => told,
            conn = self.lock(None) => {
                if let Ok(mut conn) = conn
                    && conn.group.as_ref().is_some_and(|g| g.id == id)
                {
                    conn.commit_group().await;
                }
                outcome.await
            }
        };
        closer.writer = None;
        match told {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(sqlx::Error::Protocol(format!("the transaction was not committed: {why}")).into()),
            Err(_) => Err(sqlx::Error::PoolClosed.into()),
        }
    }

    async fn close(&self) {
        let mut slot = self.conn.lock().await;
        if let Some(mut conn) = slot.take() {
            conn.clean_up().await;
            conn.commit_group().await;
            if let Err(e) = conn.sqlite.close().await {
                tracing::warn!(error = %e, "closing the SQLite writer connection");
            }
        }
    }

    /// (connections open, idle).
    fn stats(&self) -> (u32, usize) {
        match self.conn.try_lock() {
            Ok(slot) => (u32::from(slot.is_some()), usize::from(slot.is_some())),
            Err(_) => (1, 0),
        }
    }
}

/// Armed while a caller works on the writer outside a transaction it holds (beginning one,
/// committing a group): if the caller is cancelled there, a task takes the lock and settles
/// what it left (see [`Abandoned`]) at once, rather than when the next writer comes.
struct Settle {
    writer: Option<Arc<Writer>>,
}

impl Settle {
    fn new(writer: &Arc<Writer>) -> Self {
        Self { writer: Some(writer.clone()) }
    }

    fn disarm(&mut self) {
        self.writer = None;
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = writer.lock(None).await;
            });
        }
    }
}

/// Counts a caller waiting to begin, until it stops waiting (it got the lock, or gave up).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A transaction's wait for its group's `COMMIT`, cancelled (its request went away): the
/// group must still be committed, so a task takes over that part of the wait.
struct GroupCloser {
    writer: Option<Arc<Writer>>,
    id: u64,
}

impl Drop for GroupCloser {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let id = self.id;
            rt.spawn(async move {
                if let Ok(mut conn) = writer.lock(None).await
                    && conn.group.as_ref().is_some_and(|g| g.id == id)
                {
                    conn.commit_group().await;
                }
            });
        }
    }
}

/// SQLite's read connections, each behind a lock, opened when first needed; a semaphore
/// counts the free ones.
///
/// Not sqlx's pool: it pings a connection's thread every time a connection comes back (a
/// spawned task and a round trip to that thread for every read). A SQLite connection is a
/// file in this process and does not drop like a network one; a read left running by a
/// cancelled request finishes on its thread before the next command there.
#[derive(Debug)]
pub struct Readers {
    slots: Vec<Arc<Mutex<Option<SqliteConnection>>>>,
    free: Arc<Semaphore>,
    options: SqliteConnectOptions,
    acquire_timeout: Duration,
}

/// A read connection, with its permit (released after the connection's lock).
pub struct ReaderConn {
    conn: OwnedMappedMutexGuard<Option<SqliteConnection>, SqliteConnection>,
    _permit: OwnedSemaphorePermit,
}

impl Readers {
    fn new(options: SqliteConnectOptions, size: u32, acquire_timeout: Duration) -> Self {
        let size = usize::try_from(size).unwrap_or(1).max(1);
        Self {
            slots: (0..size).map(|_| Arc::new(Mutex::new(None))).collect(),
            free: Arc::new(Semaphore::new(size)),
            options,
            acquire_timeout,
        }
    }

    /// A free connection (the first free one in order, so the warm ones are reused), opened
    /// if it is the first use of its slot; waits at most the acquire timeout.
    pub(crate) async fn acquire(&self) -> Result<ReaderConn, StoreError> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.free.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // A permit means a slot is unlocked: holders unlock before they give their permit back.
        for slot in &self.slots {
            let Ok(mut guard) = slot.clone().try_lock_owned() else { continue };
            if guard.is_none() {
                *guard = Some(SqliteConnection::connect_with(&self.options).await?);
            }
            if let Ok(conn) = OwnedMutexGuard::try_map(guard, Option::as_mut) {
                return Ok(ReaderConn { conn, _permit: permit });
            }
        }
        Err(sqlx::Error::PoolTimedOut.into())
    }

    async fn close(&self) {
        self.free.close();
        for slot in &self.slots {
            let conn = slot.lock().await.take();
            if let Some(conn) = conn
                && let Err(e) = conn.close().await
            {
                tracing::warn!(error = %e, "closing a SQLite read connection");
            }
        }
    }

    /// (connections open, idle).
    fn stats(&self) -> (u32, usize) {
        let (mut open, mut idle) = (0, 0);
        for slot in &self.slots {
            match slot.try_lock() {
                Ok(c) if c.is_some() => {
                    open += 1;
                    idle += 1;
                }
                Ok(_) => {}
                Err(_) => open += 1,
            }
        }
        (open, idle)
    }
}

impl std::ops::Deref for ReaderConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for ReaderConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// A write transaction on SQLite's one writer connection, holding its lock. Dropped without
/// [`Tx::commit`] (an error, or a request cancelled half-way), it is rolled back before the
/// connection serves anyone else — alone, if it had joined a commit group.
pub struct SqliteTx {
    conn: WriterGuard,
    writer: Arc<Writer>,
    open: bool,
    /// It joined an open commit group (and works under a savepoint unless `batched`).
    member: bool,
    /// Begun with [`Db::begin_batched`].
    batched: bool,
    /// The version it predicted it creates ([`Tx::version_slot`]), to remember once it ends.
    slot: Option<(String, VersionSlot)>,
    chain: SqliteChain,
}

impl SqliteTx {
    /// Ends the transaction and returns once it is committed: now, if nobody waits to begin
    /// (or the group is full or old enough), else with the commit group it leaves open.
    async fn commit(mut self) -> Result<(), StoreError> {
        let writer = self.writer.clone();
        let member = self.member;
        let commit_now = writer.beginning.load(Ordering::Acquire) == 0
            || self
                .conn
                .group
                .as_ref()
                .is_some_and(|g| g.ended.len() + 1 >= GROUP_MAX || g.started.elapsed() >= GROUP_MAX_AGE);
        // From here a cancelled caller leaves the ending to the next holder of the lock.
        self.open = false;
        if self.batched {
            return self.end_batched(commit_now).await;
        }
        if commit_now {
            self.conn.abandoned = Some(Abandoned::Committing { member });
            let SqliteTx { conn, chain, .. } = &mut self;
            let sent = chain.finish(&mut conn.sqlite, "COMMIT").await;
            self.conn.abandoned = None;
            return match sent {
                Ok(()) => {
                    if let Some(group) = self.conn.group.take() {
                        group.tell(&Ok(()));
                    }
                    Ok(())
                }
                Err(e) => {
                    // This transaction's statements or the COMMIT failed: undo this
                    // transaction, and commit the group's others.
                    self.roll_back().await;
                    self.conn.commit_group().await;
                    Err(e)
                }
            };
        }
        self.conn.abandoned = Some(if member { Abandoned::Releasing } else { Abandoned::Transaction });
        let SqliteTx { conn, chain, .. } = &mut self;
        let sent = chain.finish(&mut conn.sqlite, if member { "RELEASE cairn_member" } else { "" }).await;
        self.conn.abandoned = None;
        if let Err(e) = sent {
            self.roll_back().await;
            return Err(e);
        }
        let head = self.chain.head();
        let (id, outcome) = self.conn.join_group(false, head, Vec::new());
        drop(self);
        writer.await_commit(id, outcome).await
    }
}

impl SqliteTx {
    /// Ends a batched transaction: its statements (with those of the group's members before
    /// it) and the `COMMIT` in one call if `commit_now` or the group is full, else handed to
    /// the group without a call, to wait for its `COMMIT`.
    async fn end_batched(mut self, commit_now: bool) -> Result<(), StoreError> {
        let writer = self.writer.clone();
        // Its chain holds the group's statements not sent yet (taken when it began) and its own.
        if commit_now || self.chain.deferred_params() >= BATCH_PARAMS_MAX {
            self.conn.abandoned = Some(Abandoned::Batch);
            let SqliteTx { conn, chain, .. } = &mut self;
            let sent = chain.finish(&mut conn.sqlite, "COMMIT").await;
            self.conn.abandoned = None;
            return match sent {
                Ok(()) => {
                    if let Some((model, slot)) = self.slot.take() {
                        self.conn.predicted.created(model, slot);
                    }
                    if let Some(group) = self.conn.group.take() {
                        group.tell(&Ok(()));
                    }
                    Ok(())
                }
                Err(e) => {
                    // Whose statement failed is not known here: the group is rolled back,
                    // and each member's caller runs it again alone.
                    self.conn.fail_group("a statement of its batch failed").await;
                    Err(e)
                }
            };
        }
        let statements = self.chain.take_deferred();
        let head = self.chain.head();
        if let Some((model, slot)) = self.slot.take() {
            self.conn.predicted.created(model, slot);
        }
        let (id, outcome) = self.conn.join_group(true, head, statements);
        drop(self);
        writer.await_commit(id, outcome).await
    }

    /// Where the next version of `model` goes: from the predictions if they know the model,
    /// else read (with the statements deferred so far). `None` if the model does not exist.
    async fn version_slot(&mut self, model: &str) -> Result<Option<VersionSlot>, StoreError> {
        let known = self.conn.predicted.models.get(model).copied().zip(self.conn.predicted.next_version_id);
        let (model_id, last, id) = match known {
            Some(((model_id, last), id)) => (model_id, last, id),
            None => {
                let SqliteTx { conn, chain, .. } = self;
                let read: Option<(i64, i64, i64)> = Conn::Sqlite(&mut conn.sqlite, Some(chain))
                    .fetch_optional(
                        "SELECT m.id, m.latest_version, (SELECT coalesce(max(id), 0) + 1 FROM versions) \
                         FROM models m WHERE m.full_name = $1",
                        params![model],
                    )
                    .await?;
                let Some(read) = read else { return Ok(None) };
                read
            }
        };
        let slot = VersionSlot { model_id, number: last + 1, id };
        self.slot = Some((model.to_owned(), slot));
        Ok(Some(slot))
    }

    /// Rolls the transaction back after a failed end; a cancelled caller leaves that to the
    /// next holder of the lock.
    async fn roll_back(&mut self) {
        let member = self.member;
        self.conn.abandoned = Some(if member { Abandoned::Member } else { Abandoned::Transaction });
        self.conn.roll_back(member).await;
        self.conn.abandoned = None;
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open && self.batched && self.member {
            match self.chain.unsent_inherited() {
                // Nothing sent: what the group's members before it deferred goes back.
                Some(inherited) => {
                    if let Some(group) = &mut self.conn.group {
                        group.pending = inherited;
                    }
                }
                // It sent statements into the group and cannot take back its own alone.
                None => self.conn.abandoned = Some(Abandoned::Batch),
            }
        } else if self.open && !(self.member && self.chain.prefix_pending()) {
            // (A transaction that joined a group and sent nothing has no savepoint to undo.)
            self.conn.abandoned = Some(if self.member { Abandoned::Member } else { Abandoned::Transaction });
        }
        if self.conn.abandoned.is_some() {
            // Settled now rather than when the next writer comes, so another process
            // sharing the file is not kept waiting on this one's write lock meanwhile.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let writer = self.writer.clone();
                rt.spawn(async move {
                    let _ = writer.lock(None).await;
                });
            }
        }
    }
}

/// A write transaction on either backend.
pub enum Tx {
    /// On SQLite.
    Sqlite(SqliteTx),
    /// On PostgreSQL, with the sealer its audit events are sealed by after the commit, and
    /// whether it wrote any.
    Postgres(Transaction<'static, sqlx::Postgres>, std::sync::Arc<crate::audit::Sealer>, bool),
}

impl Tx {
    /// Where the next version of `model` goes, in a transaction begun with
    /// [`Db::begin_batched`] on SQLite (see [`VersionSlot`]); `None` if the model does not
    /// exist. Remembered for the transactions after it once this one ends.
    pub(crate) async fn version_slot(&mut self, model: &str) -> Result<Option<VersionSlot>, StoreError> {
        match self {
            Self::Sqlite(tx) if tx.batched => tx.version_slot(model).await,
            _ => Err(StoreError::Config("version slots are predicted only in batched SQLite transactions".into())),
        }
    }

    /// The transaction as a connection to run queries on.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(SqliteTx { conn, chain, .. }) => Conn::Sqlite(&mut conn.sqlite, Some(chain)),
            Self::Postgres(tx, _, wrote) => Conn::Postgres(tx, Some(wrote)),
        }
    }

    /// Commits, and returns once the change is durable. On SQLite the commit may be shared
    /// with the transactions that follow (see [`Writer`]). On PostgreSQL the audit events the
    /// transaction wrote are sealed into the chain in the background once it has committed
    /// (see [`crate::audit::Sealer`]): the change and its events are durable together, and
    /// the chain's lock is never held across this commit nor waited for.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => tx.commit().await?,
            Self::Postgres(tx, sealer, wrote) => {
                tx.commit().await?;
                if wrote {
                    // The change and its events are durable together; the events join the
                    // chain in the background, before anything reads the chain.
                    sealer.committed();
                }
            }
        }
        Ok(())
    }
}

/// A pooled connection for reads.
pub enum ReadConn {
    /// On SQLite.
    Sqlite(ReaderConn),
    /// On PostgreSQL.
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl ReadConn {
    /// The pooled connection as a connection to run queries on.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(c) => Conn::Sqlite(c, None),
            Self::Postgres(c) => Conn::Postgres(c, None),
        }
    }
}

/// A borrowed connection (plain or inside a transaction) on either backend.
pub enum Conn<'a> {
    /// On SQLite; inside a write transaction, with what it knows of the audit chain.
    Sqlite(&'a mut SqliteConnection, Option<&'a mut SqliteChain>),
    /// On PostgreSQL; inside a write transaction, whether it wrote audit events (to be
    /// sealed once it commits).
    Postgres(&'a mut PgConnection, Option<&'a mut bool>),
}

macro_rules! bind_all {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                Param::Null => q.bind(None::<String>),
                Param::NullInt => q.bind(None::<i64>),
                Param::Int(v) => q.bind(v),
                Param::Real(v) => q.bind(v),
                Param::Text(v) => q.bind(v),
                Param::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

/// Runs a statement on a SQLite connection; returns the number of rows affected.
pub(crate) async fn sqlite_execute(
    c: &mut SqliteConnection,
    sql: impl sqlx::SqlSafeStr,
    params: Vec<Param>,
) -> Result<u64, StoreError> {
    Ok(bind_all!(sqlx::query(sql.into_sql_str()), params).execute(c).await?.rows_affected())
}

/// `column` compared and sorted byte by byte: a path range `dir/` ≤ path < `dir0` holds
/// exactly the paths under `dir` only in that order. On PostgreSQL a database's collation may
/// order otherwise (an ICU collation puts `+`, `~` and others between `/` and `0`; a glibc
/// one skips punctuation), so the column is compared under `"C"`; SQLite compares bytes.
pub(crate) fn bytewise(conn: &Conn<'_>, column: &str) -> String {
    match conn.backend() {
        Backend::Sqlite => column.to_owned(),
        Backend::Postgres => format!("{column} COLLATE \"C\""),
    }
}

/// `sql` with every placeholder `$n` renumbered `$(n + by)`, to send it in one call after
/// statements that take the first `by` parameters (SQLite binds `$n` by its number in every
/// statement of a call). For this crate's own constant statements, which have no `$` in a
/// literal or identifier.
pub(crate) fn shift_placeholders(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

impl Conn<'_> {
    /// Which backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(..) => Backend::Sqlite,
            Self::Postgres(..) => Backend::Postgres,
        }
    }

    /// Notes that a PostgreSQL write transaction wrote an unsealed audit event: once it
    /// commits, the sealer is woken.
    pub(crate) fn wrote_unsealed_event(&mut self) {
        if let Self::Postgres(_, Some(wrote)) = self {
            **wrote = true;
        }
    }

    /// A SQLite write transaction's view of the audit chain.
    pub(crate) fn sqlite_chain(&mut self) -> Option<&mut SqliteChain> {
        match self {
            Self::Sqlite(_, chain) => chain.as_deref_mut(),
            Self::Postgres(..) => None,
        }
    }

    /// Runs a statement whose result the caller does not need. In a SQLite write
    /// transaction it is held back and sent with the transaction's next call (its errors
    /// surface there, at the latest from the commit); elsewhere it runs now.
    pub async fn defer(
        &mut self,
        sql: impl Into<std::borrow::Cow<'static, str>>,
        params: Vec<Param>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_, Some(chain)) => {
                chain.defer(sql, params);
                Ok(())
            }
            _ => match sql.into() {
                std::borrow::Cow::Borrowed(sql) => self.execute(sql, params).await.map(|_| ()),
                // This crate's own statements (built with placeholders, never from input).
                std::borrow::Cow::Owned(sql) => self.execute(sqlx::AssertSqlSafe(sql), params).await.map(|_| ()),
            },
        }
    }

    /// A query and its parameters to send next: on a SQLite write transaction, after its
    /// deferred statements in the same call.
    async fn prepare_query(&mut self, sql: SqlStr, params: Vec<Param>) -> Result<(SqlStr, Vec<Param>), StoreError> {
        match self {
            Self::Sqlite(c, Some(chain)) => {
                chain.mark_sent();
                chain.before_query(c, sql, params).await
            }
            _ => Ok((sql, params)),
        }
    }

    /// Sends a SQLite transaction's deferred statements (its audit events among them, and
    /// the savepoint of a transaction that joined a commit group) before a statement that may
    /// read what they write, so statements run in the order they were made.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if let Self::Sqlite(c, Some(chain)) = self {
            chain.mark_sent();
            chain.flush(c).await?;
        }
        Ok(())
    }

    /// Runs a statement; returns the number of rows affected.
    pub async fn execute(&mut self, sql: impl sqlx::SqlSafeStr, params: Vec<Param>) -> Result<u64, StoreError> {
        let sql: SqlStr = sql.into_sql_str();
        // Sent on its own: its count of changed rows is the caller's.
        self.flush().await?;
        Ok(match self {
            Self::Sqlite(c, _) => bind_all!(sqlx::query(sql), params).execute(&mut **c).await?.rows_affected(),
            Self::Postgres(c, _) => bind_all!(sqlx::query(sql), params).execute(&mut **c).await?.rows_affected(),
        })
    }

    /// Fetches at most one row.
    pub async fn fetch_optional<T: Row>(
        &mut self,
        sql: impl sqlx::SqlSafeStr,
        params: Vec<Param>,
    ) -> Result<Option<T>, StoreError> {
        let (sql, params) = self.prepare_query(sql.into_sql_str(), params).await?;
        Ok(match self {
            Self::Sqlite(c, _) => bind_all!(sqlx::query_as::<_, T>(sql), params).fetch_optional(&mut **c).await?,
            Self::Postgres(c, _) => bind_all!(sqlx::query_as::<_, T>(sql), params).fetch_optional(&mut **c).await?,
        })
    }

    /// Fetches exactly one row.
    pub async fn fetch_one<T: Row>(&mut self, sql: impl sqlx::SqlSafeStr, params: Vec<Param>) -> Result<T, StoreError> {
        let (sql, params) = self.prepare_query(sql.into_sql_str(), params).await?;
        Ok(match self {
            Self::Sqlite(c, _) => bind_all!(sqlx::query_as::<_, T>(sql), params).fetch_one(&mut **c).await?,
            Self::Postgres(c, _) => bind_all!(sqlx::query_as::<_, T>(sql), params).fetch_one(&mut **c).await?,
        })
    }

    /// Fetches every row.
    pub async fn fetch_all<T: Row>(
        &mut self,
        sql: impl sqlx::SqlSafeStr,
        params: Vec<Param>,
    ) -> Result<Vec<T>, StoreError> {
        let (sql, params) = self.prepare_query(sql.into_sql_str(), params).await?;
        Ok(match self {
            Self::Sqlite(c, _) => bind_all!(sqlx::query_as::<_, T>(sql), params).fetch_all(&mut **c).await?,
            Self::Postgres(c, _) => bind_all!(sqlx::query_as::<_, T>(sql), params).fetch_all(&mut **c).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::shift_placeholders;

    #[test]
    fn placeholders_are_renumbered_after_the_ones_before() {
        assert_eq!(
            shift_placeholders("UPDATE t SET a = $1, b = $12 WHERE id = $2", 0),
            "UPDATE t SET a = $1, b = $12 WHERE id = $2"
        );
        assert_eq!(
            shift_placeholders("INSERT INTO t VALUES ($1, $2, $10); UPDATE h SET s = $1", 15),
            "INSERT INTO t VALUES ($16, $17, $25); UPDATE h SET s = $16"
        );
        // A `$` not followed by a number is left alone.
        assert_eq!(shift_placeholders("SELECT '$' || $1, $x", 3), "SELECT '$' || $4, $x");
    }
}
