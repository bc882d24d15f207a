//! SQLite's connections are held by locks, not sqlx's pools. The one writer: a write
//! transaction that ends without a commit (an error, a cancelled request) must still be
//! rolled back at once — before this process's next writer and without keeping another
//! process sharing the file waiting on its write lock — and a writer waiting for the lock
//! gives up after the acquire timeout as it did waiting for a pooled connection. The
//! readers: at most `max_connections` at once, the others wait (up to the acquire timeout),
//! and none after close.

use std::time::{Duration, Instant};

use cairn_store::{Db, DbOptions, StoreError, params};

fn options(acquire_timeout: Duration) -> DbOptions {
    DbOptions { max_connections: 2, busy_timeout: Duration::from_secs(2), acquire_timeout }
}

async fn open(dir: &tempfile::TempDir, acquire_timeout: Duration) -> Db {
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    Db::connect(&url, &options(acquire_timeout)).await.unwrap()
}

async fn count(db: &Db) -> i64 {
    let mut c = db.read().await.unwrap();
    let (n,): (i64,) = c.conn().fetch_one("SELECT COUNT(*) FROM t", params![]).await.unwrap();
    n
}

async fn with_table(dir: &tempfile::TempDir) -> Db {
    let db = open(dir, Duration::from_secs(10)).await;
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("CREATE TABLE t (x INTEGER NOT NULL)", params![]).await.unwrap();
    tx.commit().await.unwrap();
    db
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_and_frees_the_file_for_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    {
        let mut tx = db.begin().await.unwrap();
        tx.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
        // Dropped here without a commit.
    }
    // Another process's connections (a second Db on the same file) can write within its
    // busy timeout: this process's abandoned transaction no longer holds the write lock,
    // although no other writer of this process came along to roll it back.
    let other = open(&dir, Duration::from_secs(10)).await;
    let started = Instant::now();
    let mut tx = other.begin().await.expect("the abandoned transaction still holds the write lock");
    tx.conn().execute("INSERT INTO t (x) VALUES (2)", params![]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?} for the write lock", started.elapsed());
    other.close().await;

    assert_eq!(count(&db).await, 1, "the dropped insert must be gone and the other one kept");
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("INSERT INTO t (x) VALUES (3)", params![]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 2);
    db.close().await;
}

#[tokio::test]
async fn a_request_cancelled_inside_its_transaction_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    // A handler cancelled (its client went away) after writing, before committing.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), async {
        let mut tx = db.begin().await.unwrap();
        tx.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert!(cancelled.is_err());
    // The next writer of this process starts on a clean connection: a transaction left open
    // would make its BEGIN fail ("cannot start a transaction within a transaction").
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("INSERT INTO t (x) VALUES (2)", params![]).await.unwrap();
    tx.commit().await.unwrap();
    let mut c = db.read().await.unwrap();
    let xs: Vec<(i64,)> = c.conn().fetch_all("SELECT x FROM t ORDER BY x", params![]).await.unwrap();
    assert_eq!(xs, vec![(2,)]);
    drop(c);
    db.close().await;
}

#[tokio::test]
async fn a_failed_statement_does_not_commit_the_rest_of_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
    let err = tx.conn().execute("INSERT INTO t (x) VALUES (NULL)", params![]).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    drop(tx);
    assert_eq!(count(&db).await, 0);
    db.close().await;
}

#[tokio::test]
async fn a_writer_waiting_for_the_lock_gives_up_after_the_acquire_timeout() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_table(&dir).await);
    let db = open(&dir, Duration::from_millis(200)).await;
    let held = db.begin().await.unwrap();
    let started = Instant::now();
    let err = match db.begin().await {
        Ok(_) => panic!("a second write transaction began while the first held the writer"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Database(sqlx::Error::PoolTimedOut)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    held.commit().await.unwrap();
    // Free again once the holder is done.
    db.begin().await.unwrap().commit().await.unwrap();
    db.close().await;
    // Closed: no more write transactions.
    assert!(matches!(db.begin().await, Err(StoreError::Database(sqlx::Error::PoolClosed))));
}

#[tokio::test]
async fn deferred_statements_run_in_order_before_the_next_one_and_with_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut tx = db.begin().await.unwrap();
    let mut conn = tx.conn();
    conn.defer("INSERT INTO t (x) VALUES ($1)", params![1_i64]).await.unwrap();
    conn.defer("INSERT INTO t (x) VALUES ($1 + $2)", params![1_i64, 1_i64]).await.unwrap();
    // The next statement sees both, in order.
    let xs: Vec<(i64,)> = conn.fetch_all("SELECT x FROM t ORDER BY rowid", params![]).await.unwrap();
    assert_eq!(xs, vec![(1,), (2,)]);
    conn.defer("INSERT INTO t (x) VALUES ($1)", params![3_i64]).await.unwrap();
    conn.defer("UPDATE t SET x = x * $1 WHERE x = $2", params![10_i64, 3_i64]).await.unwrap();
    tx.commit().await.unwrap();
    let mut c = db.read().await.unwrap();
    let xs: Vec<(i64,)> = c.conn().fetch_all("SELECT x FROM t ORDER BY rowid", params![]).await.unwrap();
    assert_eq!(xs, vec![(1,), (2,), (30,)]);
    drop(c);
    db.close().await;
}

#[tokio::test]
async fn a_deferred_statement_that_fails_fails_the_commit_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
    tx.conn().defer("INSERT INTO t (x) VALUES ($1)", params![2_i64]).await.unwrap();
    tx.conn().defer("INSERT INTO t (x) VALUES (NULL)", params![]).await.unwrap();
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert_eq!(count(&db).await, 0, "the commit failed, so none of the transaction is kept");
    // And the writer goes on.
    let mut tx = db.begin().await.unwrap();
    tx.conn().defer("INSERT INTO t (x) VALUES ($1)", params![4_i64]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
    db.close().await;
}

#[tokio::test]
async fn readers_are_shared_up_to_the_limit_and_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_table(&dir).await);
    // Two readers (`options` sets max_connections = 2), and a short acquire timeout.
    let db = open(&dir, Duration::from_millis(200)).await;
    let a = db.read().await.unwrap();
    let b = db.read().await.unwrap();
    let (open, idle) = db.pool_stats();
    assert_eq!((open, idle), (3, 1), "writer idle, two readers in use");
    let started = Instant::now();
    let err = match db.read().await {
        Ok(_) => panic!("a third reader was handed out while two were in use"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Database(sqlx::Error::PoolTimedOut)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // One comes back: a waiting reader gets it, and it still reads.
    let waiting = tokio::spawn({
        let db = db.clone();
        async move {
            let mut c = db.read().await.unwrap();
            let (n,): (i64,) = c.conn().fetch_one("SELECT COUNT(*) FROM t", params![]).await.unwrap();
            n
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(a);
    assert_eq!(waiting.await.unwrap(), 0);
    drop(b);
    // Readers see what the writer committed.
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("INSERT INTO t (x) VALUES (7)", params![]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
    db.close().await;
    assert!(matches!(db.read().await, Err(StoreError::Database(sqlx::Error::PoolClosed))));
}

// ---------------------------------------------------------------------------------------------
// Group commit: a transaction that ends while another waits to begin leaves the commit to
// the group, and its caller hears back only once the group is committed.

/// Waits until `n` write transactions wait to begin.
async fn until_waiting(db: &Db, n: usize) {
    let started = Instant::now();
    while db.writers_waiting() != n {
        assert!(started.elapsed() < Duration::from_secs(10), "{} writers waiting, not {n}", db.writers_waiting());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How [`second_writer`] ends its transaction.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Commit,
    /// Commits with a deferred statement that fails.
    FailingCommit,
    /// Drops it without a commit.
    Drop,
}

/// Begins a write transaction in a task that inserts `x`, says so, and then ends it as the
/// test says.
fn second_writer(
    db: &Db,
    x: Option<i64>,
) -> (
    tokio::task::JoinHandle<Result<(), StoreError>>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<End>,
) {
    let (began, began_rx) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<End>();
    let db = db.clone();
    let task = tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let inserted = tx.conn().execute("INSERT INTO t (x) VALUES ($1)", params![x]).await;
        // One row, whatever the transaction before it in the group changed.
        assert!(inserted.as_ref().is_err() || inserted.as_ref().is_ok_and(|n| *n == 1), "{inserted:?}");
        let _ = began.send(());
        let end = go_rx.await.unwrap_or(End::Drop);
        inserted?;
        match end {
            End::Commit => tx.commit().await,
            End::FailingCommit => {
                tx.conn().defer("INSERT INTO t (x) VALUES (NULL)", params![]).await?;
                tx.commit().await
            }
            End::Drop => Ok(()),
        }
    });
    (task, began_rx, go)
}

/// The first transaction's commit has not returned: it waits for its group.
async fn waits_for_its_group(first: &tokio::task::JoinHandle<Result<(), StoreError>>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!first.is_finished(), "the first transaction's commit returned before its group was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_end_while_others_wait_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut first = db.begin().await.unwrap();
    // Three rows: the last count of changed rows SQLite knows when the second begins.
    first.conn().execute("INSERT INTO t (x) VALUES (1), (1), (1)", params![]).await.unwrap();
    let (second, began, go) = second_writer(&db, Some(2));
    until_waiting(&db, 1).await;
    // The first ends while the second waits: it hands the open transaction on.
    let first = tokio::spawn(async move { first.commit().await });
    began.await.unwrap();
    waits_for_its_group(&first).await;
    assert_eq!(count(&db).await, 0, "readers see nothing of the group before its commit");
    // The second ends with nobody waiting: it commits both.
    go.send(End::Commit).unwrap();
    second.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(count(&db).await, 4);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_fails_inside_a_group_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    for end in [End::Commit, End::FailingCommit, End::Drop] {
        let mut first = db.begin().await.unwrap();
        first.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
        // With `End::Commit`, the failure is its insert: NULL breaks the column's NOT NULL.
        let (second, began, go) = second_writer(&db, if end == End::Commit { None } else { Some(2) });
        until_waiting(&db, 1).await;
        let first = tokio::spawn(async move { first.commit().await });
        began.await.unwrap();
        waits_for_its_group(&first).await;
        go.send(end).unwrap();
        let second = second.await.unwrap();
        match end {
            End::Drop => second.unwrap(),
            _ => assert!(matches!(second, Err(StoreError::Database(_))), "{end:?}: {second:?}"),
        }
        first.await.unwrap().unwrap_or_else(|e| panic!("{end:?}: the first transaction failed: {e}"));
        let mut c = db.read().await.unwrap();
        let xs: Vec<(i64,)> = c.conn().fetch_all("SELECT x FROM t", params![]).await.unwrap();
        assert_eq!(xs, vec![(1,)], "{end:?}: only the first transaction's row is kept");
        drop(c);
        let mut tx = db.begin().await.unwrap();
        tx.conn().execute("DELETE FROM t", params![]).await.unwrap();
        tx.commit().await.unwrap();
    }
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_callers_all_went_away_is_still_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut first = db.begin().await.unwrap();
    first.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
    let (second, began, go) = second_writer(&db, Some(2));
    until_waiting(&db, 1).await;
    let first = tokio::spawn(async move { first.commit().await });
    began.await.unwrap();
    waits_for_its_group(&first).await;
    // The first's caller goes away while it waits for the group's commit, and then the
    // second's, inside its transaction: nobody is left to commit the group but the writer.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    second.abort();
    drop(go);
    let _ = second.await;
    let started = Instant::now();
    while count(&db).await != 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "the ended transaction was never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And the writer goes on.
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("INSERT INTO t (x) VALUES (3)", params![]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 2);
    db.close().await;
}

/// A transaction inside a group that changes more of the database than SQLite keeps in
/// memory to undo it (its statement journal: 64 KiB, then a temporary file), and then fails,
/// is still rolled back alone: every page it changed comes back, and the group's first
/// transaction is committed. (SQLite can be built to keep more in memory, but not beyond
/// 128 KiB: its Unix file layer writes at most that much at once, and with a larger limit
/// this transaction fails with "database or disk is full".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_that_fails_inside_a_group_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut tx = db.begin().await.unwrap();
    tx.conn().execute("CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT NOT NULL)", params![]).await.unwrap();
    // 12 MiB over about 3,000 pages.
    tx.conn()
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3072) \
             INSERT INTO big (id, body) SELECT i, printf('%.4000c', 'a') FROM n",
            params![],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut first = db.begin().await.unwrap();
    first.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
    let (began, began_rx) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            // Every page of `big` changes, and `t`'s page, which the first transaction changed.
            let changed = tx.conn().execute("UPDATE big SET body = printf('%.4000c', 'b')", params![]).await?;
            tx.conn().execute("INSERT INTO t (x) VALUES (2)", params![]).await?;
            let _ = began.send(changed);
            let _ = go_rx.await;
            tx.conn().defer("INSERT INTO t (x) VALUES (NULL)", params![]).await?;
            tx.commit().await
        }
    });
    until_waiting(&db, 1).await;
    let first = tokio::spawn(async move { first.commit().await });
    let Ok(changed) = began_rx.await else { panic!("the second transaction failed: {:?}", second.await) };
    assert_eq!(changed, 3072, "the second transaction joined the group and changed every row");
    waits_for_its_group(&first).await;
    go.send(()).unwrap();
    assert!(matches!(second.await.unwrap(), Err(StoreError::Database(_))));
    first.await.unwrap().expect("the first transaction is committed with its group");

    let mut c = db.read().await.unwrap();
    let xs: Vec<(i64,)> = c.conn().fetch_all("SELECT x FROM t", params![]).await.unwrap();
    assert_eq!(xs, vec![(1,)], "only the first transaction's row is kept");
    let (rows, unchanged): (i64, i64) =
        c.conn().fetch_one("SELECT COUNT(*), SUM(body = printf('%.4000c', 'a')) FROM big", params![]).await.unwrap();
    assert_eq!((rows, unchanged), (3072, 3072), "every page the failed transaction changed is restored");
    let (check,): (String,) = c.conn().fetch_one("PRAGMA integrity_check", params![]).await.unwrap();
    assert_eq!(check, "ok");
    drop(c);
    db.close().await;
}

async fn temp_store(tx: &mut cairn_store::db::Tx) -> i64 {
    let (mode,): (i64,) = tx.conn().fetch_one("PRAGMA temp_store", params![]).await.unwrap();
    mode
}

/// Begins a write transaction (small or not) in a task that inserts `x` and says which
/// `temp_store` it works with; told to go on, it commits, with a failing statement if told
/// `true`.
fn sized_writer(
    db: &Db,
    small: bool,
    x: i64,
) -> (
    tokio::task::JoinHandle<Result<(), StoreError>>,
    tokio::sync::oneshot::Receiver<i64>,
    tokio::sync::oneshot::Sender<bool>,
) {
    let (began, began_rx) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<bool>();
    let db = db.clone();
    let task = tokio::spawn(async move {
        let mut tx = if small { db.begin_small().await? } else { db.begin().await? };
        let mode = temp_store(&mut tx).await;
        tx.conn().execute("INSERT INTO t (x) VALUES ($1)", params![x]).await?;
        let _ = began.send(mode);
        if go_rx.await.unwrap_or(false) {
            tx.conn().defer("INSERT INTO t (x) VALUES (NULL)", params![]).await?;
        }
        tx.commit().await
    });
    (task, began_rx, go)
}

/// Small transactions (`Db::begin_small`) share groups whose undo copies stay in memory
/// (`temp_store` 2); any other transaction works where they go to a file (`temp_store` 0,
/// SQLite's default), and does not join a group of small ones: that group is committed
/// before it begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_transactions_keep_their_undo_copies_in_memory_and_others_do_not_join_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let mut tx = db.begin().await.unwrap();
    assert_eq!(temp_store(&mut tx).await, 0);
    tx.commit().await.unwrap();

    // A small one, and another small one joins its group.
    let mut first = db.begin_small().await.unwrap();
    assert_eq!(temp_store(&mut first).await, 2);
    first.conn().execute("INSERT INTO t (x) VALUES (1)", params![]).await.unwrap();
    let (second, began_rx, go) = sized_writer(&db, true, 2);
    until_waiting(&db, 1).await;
    let first_done = tokio::spawn(async move { first.commit().await });
    assert_eq!(began_rx.await.unwrap(), 2, "the second joined the small group");
    waits_for_its_group(&first_done).await;
    // It fails: rolled back alone, from the copies in memory.
    go.send(true).unwrap();
    assert!(matches!(second.await.unwrap(), Err(StoreError::Database(_))));
    first_done.await.unwrap().unwrap();
    assert_eq!(count(&db).await, 1, "only the first small transaction's row is kept");

    // A small group is open, and another transaction comes: the group is committed before it
    // begins, and it works with its copies in files.
    let mut small = db.begin_small().await.unwrap();
    small.conn().execute("INSERT INTO t (x) VALUES (3)", params![]).await.unwrap();
    let (other, began_rx, go) = sized_writer(&db, false, 4);
    until_waiting(&db, 1).await;
    let small_done = tokio::spawn(async move { small.commit().await });
    assert_eq!(began_rx.await.unwrap(), 0, "the other transaction keeps its copies in files");
    // The small one's group was committed when the other began, while the other is still open.
    tokio::time::timeout(Duration::from_secs(10), small_done)
        .await
        .expect("the small group waited for a transaction that may not join it")
        .unwrap()
        .unwrap();
    assert_eq!(count(&db).await, 2);
    go.send(false).unwrap();
    other.await.unwrap().unwrap();
    assert_eq!(count(&db).await, 3);
    db.close().await;
}

/// Begins a batched transaction (`Db::begin_batched`) in a task that defers inserting `x`,
/// says so, and then ends it as the test says. It makes no call of its own before its end.
fn batched_writer(
    db: &Db,
    x: i64,
) -> (
    tokio::task::JoinHandle<Result<(), StoreError>>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<End>,
) {
    let (began, began_rx) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<End>();
    let db = db.clone();
    let task = tokio::spawn(async move {
        let mut tx = db.begin_batched().await?;
        tx.conn().defer("INSERT INTO t (x) VALUES ($1)", params![x]).await?;
        let _ = began.send(());
        match go_rx.await.unwrap_or(End::Drop) {
            End::Commit => tx.commit().await,
            End::FailingCommit => {
                tx.conn().defer("INSERT INTO t (x) VALUES (NULL)", params![]).await?;
                tx.commit().await
            }
            End::Drop => Ok(()),
        }
    });
    (task, began_rx, go)
}

/// Batched transactions hand their statements to their group, which sends them with its
/// `COMMIT`: they all commit together, or all fail together when one statement fails (their
/// callers then run them again alone). One dropped before it sent anything leaves the
/// others' statements in the group; any other kind of transaction commits the group before
/// it begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_transactions_go_with_their_group_commit_and_fail_together() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&dir).await;
    let first_of_group = |x: i64| {
        let db = db.clone();
        async move {
            let mut first = db.begin_batched().await.unwrap();
            first.conn().defer("INSERT INTO t (x) VALUES ($1)", params![x]).await.unwrap();
            first
        }
    };

    // Both commit with the second's end, in order: the second reads the first's row.
    let first = first_of_group(1).await;
    let (second, began, go) = batched_writer(&db, 2);
    until_waiting(&db, 1).await;
    let first = tokio::spawn(async move { first.commit().await });
    began.await.unwrap();
    waits_for_its_group(&first).await;
    assert_eq!(count(&db).await, 0, "readers see nothing of the group before its commit");
    go.send(End::Commit).unwrap();
    second.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(count(&db).await, 2);

    // The second's statement fails: the first's, sent in the same call, is rolled back too,
    // and both callers hear of it.
    let first = first_of_group(3).await;
    let (second, began, go) = batched_writer(&db, 4);
    until_waiting(&db, 1).await;
    let first = tokio::spawn(async move { first.commit().await });
    began.await.unwrap();
    waits_for_its_group(&first).await;
    go.send(End::FailingCommit).unwrap();
    assert!(matches!(second.await.unwrap(), Err(StoreError::Database(_))));
    assert!(matches!(first.await.unwrap(), Err(StoreError::Database(_))), "the whole group failed");
    assert_eq!(count(&db).await, 2, "nothing of the failed group is kept");

    // The second is dropped before its end, having sent nothing: the first's row is kept.
    let first = first_of_group(5).await;
    let (second, began, go) = batched_writer(&db, 6);
    until_waiting(&db, 1).await;
    let first = tokio::spawn(async move { first.commit().await });
    began.await.unwrap();
    waits_for_its_group(&first).await;
    go.send(End::Drop).unwrap();
    second.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(count(&db).await, 3);
    let mut c = db.read().await.unwrap();
    let (kept,): (i64,) = c.conn().fetch_one("SELECT MAX(x) FROM t", params![]).await.unwrap();
    assert_eq!(kept, 5, "the dropped transaction's own row is not");
    drop(c);

    // A small transaction comes while a batched group is open: the group is committed first.
    let first = first_of_group(7).await;
    let (other, began, go) = sized_writer(&db, true, 8);
    until_waiting(&db, 1).await;
    let first = tokio::spawn(async move { first.commit().await });
    began.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the batched group waited for a transaction that may not join it")
        .unwrap()
        .unwrap();
    assert_eq!(count(&db).await, 4);
    go.send(false).unwrap();
    other.await.unwrap().unwrap();
    assert_eq!(count(&db).await, 5);
    db.close().await;
}
