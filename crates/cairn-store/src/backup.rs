//! Consistent copies of the metadata, for `cairn admin backup` and `cairn admin restore`.
//!
//! - SQLite: [`Store::vacuum_into`] writes a transactionally consistent copy of the live
//!   database (`VACUUM INTO`) while servers keep reading and writing it; [`SqliteSnapshot`]
//!   reads such a copy (integrity, migration version, row counts, blob inventory) without
//!   changing it. Restoring is copying the file back.
//! - PostgreSQL: [`Store::begin_export`] opens one `REPEATABLE READ, READ ONLY` transaction;
//!   [`PgExport`] streams each table with `COPY … TO STDOUT` and reads the blob inventory from
//!   the same snapshot. [`PgImport`] loads such an export into an empty database in one
//!   transaction: the migrations up to the export's version, `COPY … FROM STDIN` parents
//!   before children, identity sequences moved past the restored ids, then the migrations
//!   this build adds. Until it commits nothing is visible, so a failed import leaves the
//!   database as empty as it was.
//!
//! This module only moves rows; where the copies go, and how they are checked, is the
//! caller's business (`cairn_server::backup`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use futures::{Stream, TryStreamExt};
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgCopyIn, PgPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, PgConnection, Postgres, SqliteConnection, Transaction};

use crate::db::{Backend, Conn, Db};
use crate::{Store, StoreError, params};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// sqlx's bookkeeping of applied migrations: never exported, rebuilt by the migrations.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The newest migration this build knows for `backend`.
pub fn latest_migration(backend: Backend) -> i64 {
    let migrator = match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A table as exported: its name and the columns written, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// The table's name.
    pub name: String,
    /// Its columns, in the order of the exported rows.
    pub columns: Vec<String>,
}

/// One blob the metadata knows as stored: its SHA-256 (hex) and plaintext size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct InventoryEntry {
    /// SHA-256 of the content (hex).
    pub digest: String,
    /// Plaintext size in bytes.
    pub size: i64,
}

const INVENTORY_PAGE_SQL: &str =
    "SELECT digest, size FROM blobs WHERE state = 'present' AND digest > $1 ORDER BY digest LIMIT $2";

/// `"name"`, quoted for SQL on both backends.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn migration_version(conn: &mut Conn<'_>) -> Result<i64, StoreError> {
    let (v,): (Option<i64>,) =
        conn.fetch_one("SELECT MAX(version) FROM _sqlx_migrations WHERE success", vec![]).await?;
    Ok(v.unwrap_or(0))
}

impl Store {
    /// The newest migration applied to this database (0 before the first).
    pub async fn migration_version(&self) -> Result<i64, StoreError> {
        let mut c = self.db.read().await?;
        migration_version(&mut c.conn()).await
    }

    /// SQLite: writes a consistent copy of the whole database to `path`, which must not
    /// exist (or be an empty file). Runs as one read transaction: servers keep reading and
    /// writing meanwhile. The copy is not fsynced; the caller does that before relying on it.
    pub async fn vacuum_into(&self, path: &Path) -> Result<(), StoreError> {
        let Db::Sqlite { reader, .. } = &self.db else {
            return Err(StoreError::Config("VACUUM INTO copies SQLite databases only".into()));
        };
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::Config(format!("{} is not a UTF-8 path", path.display())))?
            .to_owned();
        let mut c = reader.acquire().await?;
        sqlx::query("VACUUM INTO $1").bind(target).execute(&mut *c).await?;
        Ok(())
    }

    /// PostgreSQL: opens one `REPEATABLE READ, READ ONLY` transaction that every read of the
    /// export goes through, so tables, row counts and the blob inventory are of one instant
    /// while servers keep writing.
    pub async fn begin_export(&self) -> Result<PgExport, StoreError> {
        let Db::Postgres(pool, _) = &self.db else {
            return Err(StoreError::Config("COPY exports PostgreSQL databases only".into()));
        };
        let tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
        Ok(PgExport { tx })
    }
}

/// A SQLite database file made by [`Store::vacuum_into`] (or a copy of one), opened read-only.
#[derive(Debug)]
pub struct SqliteSnapshot {
    conn: SqliteConnection,
}

impl SqliteSnapshot {
    /// Opens `path` read-only, as an immutable file (no locks, no journal, nothing written).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .immutable(true)
            .create_if_missing(false)
            .connect()
            .await?;
        Ok(Self { conn })
    }

    /// SQLite's own consistency check (`PRAGMA quick_check`): the problems found, none when sound.
    pub async fn check(&mut self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("PRAGMA quick_check").fetch_all(&mut self.conn).await?;
        Ok(rows.into_iter().map(|r| r.0).filter(|r| r != "ok").collect())
    }

    /// The newest migration applied to the copy.
    pub async fn migration_version(&mut self) -> Result<i64, StoreError> {
        migration_version(&mut Conn::Sqlite(&mut self.conn, None)).await
    }

    /// Every table of the copy with its number of rows, by name (SQLite's own tables and
    /// sqlx's migration bookkeeping left out).
    pub async fn table_rows(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND name <> '_sqlx_migrations' ORDER BY name",
        )
        .fetch_all(&mut self.conn)
        .await?;
        let mut out = Vec::with_capacity(names.len());
        for (name,) in names {
            let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quote(&name))))
                .fetch_one(&mut self.conn)
                .await?;
            out.push((name, u64::try_from(n).unwrap_or(0)));
        }
        Ok(out)
    }

    /// Stored blobs, in digest order, `limit` at a time after `after`.
    pub async fn blobs_after(&mut self, after: &str, limit: i64) -> Result<Vec<InventoryEntry>, StoreError> {
        Conn::Sqlite(&mut self.conn, None).fetch_all(INVENTORY_PAGE_SQL, params![after, limit]).await
    }

    /// Closes the file.
    pub async fn close(self) -> Result<(), StoreError> {
        sqlx::Connection::close(self.conn).await?;
        Ok(())
    }
}

/// An export of a PostgreSQL database in progress: one read-only snapshot.
pub struct PgExport {
    tx: Transaction<'static, Postgres>,
}

impl std::fmt::Debug for PgExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgExport").finish_non_exhaustive()
    }
}

impl PgExport {
    /// The newest migration applied, as of the snapshot.
    pub async fn migration_version(&mut self) -> Result<i64, StoreError> {
        migration_version(&mut Conn::Postgres(&mut self.tx, None)).await
    }

    /// The tables of the current schema (sqlx's bookkeeping left out) with their columns,
    /// parents before the tables whose foreign keys point at them.
    pub async fn tables(&mut self) -> Result<Vec<TableInfo>, StoreError> {
        pg_tables(&mut self.tx).await
    }

    /// Streams `table` in PostgreSQL's text `COPY` format: one line per row.
    pub async fn copy_out(
        &mut self,
        table: &TableInfo,
    ) -> Result<impl Stream<Item = Result<impl AsRef<[u8]> + Send, StoreError>> + Send + '_, StoreError> {
        let sql = format!("COPY {} ({}) TO STDOUT", quote(&table.name), column_list(&table.columns));
        let stream = self.tx.copy_out_raw(&sql).await?;
        Ok(stream.map_err(StoreError::from))
    }

    /// Stored blobs as of the snapshot, in digest order, `limit` at a time after `after`.
    pub async fn blobs_after(&mut self, after: &str, limit: i64) -> Result<Vec<InventoryEntry>, StoreError> {
        Conn::Postgres(&mut self.tx, None).fetch_all(INVENTORY_PAGE_SQL, params![after, limit]).await
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

fn column_list(columns: &[String]) -> String {
    columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
}

/// The tables of the current schema with their columns, parents first.
async fn pg_tables(conn: &mut PgConnection) -> Result<Vec<TableInfo>, StoreError> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
         AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT ch.relname::text, pa.relname::text FROM pg_constraint k \
         JOIN pg_class ch ON ch.oid = k.conrelid JOIN pg_class pa ON pa.oid = k.confrelid \
         JOIN pg_namespace n ON n.oid = ch.relnamespace \
         WHERE k.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_generated = 'NEVER' \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in columns {
        by_table.entry(table).or_default().push(column);
    }
    let names: Vec<String> = names.into_iter().map(|(n,)| n).collect();
    Ok(parents_first(&names, &edges)
        .into_iter()
        .map(|name| TableInfo { columns: by_table.remove(&name).unwrap_or_default(), name })
        .collect())
}

/// Orders `tables` so that every table comes after the tables its foreign keys point at
/// (`edges` are (child, parent)); ties, self-references and cycles resolve by name.
pub fn parents_first(tables: &[String], edges: &[(String, String)]) -> Vec<String> {
    let known: BTreeSet<&str> = tables.iter().map(String::as_str).collect();
    let mut waiting_on: BTreeMap<&str, BTreeSet<&str>> = tables.iter().map(|t| (t.as_str(), BTreeSet::new())).collect();
    for (child, parent) in edges {
        if child != parent
            && known.contains(parent.as_str())
            && let Some(set) = waiting_on.get_mut(child.as_str())
        {
            set.insert(parent.as_str());
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(tables.len());
    while !waiting_on.is_empty() {
        let ready: Vec<&str> = waiting_on.iter().filter(|(_, p)| p.is_empty()).map(|(t, _)| *t).collect();
        // A cycle: take the first by name and let the database judge.
        let ready = if ready.is_empty() { waiting_on.keys().take(1).copied().collect() } else { ready };
        for t in ready {
            waiting_on.remove(t);
            for parents in waiting_on.values_mut() {
                parents.remove(t);
            }
            out.push(t.to_owned());
        }
    }
    out
}

/// The tables of the current schema of the PostgreSQL database at `url` (at most `limit`
/// names): a restore goes only into a database that has none.
pub async fn postgres_tables(url: &str, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut conn = pg_connect(url).await?;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut conn)
    .await?;
    sqlx::Connection::close(conn).await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

async fn pg_connect(url: &str) -> Result<PgConnection, StoreError> {
    let opts =
        PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
    Ok(opts.connect().await?)
}

/// A load of an export into an empty PostgreSQL database, in one transaction.
pub struct PgImport {
    pool: sqlx::PgPool,
    tx: Transaction<'static, Postgres>,
    tables: Vec<TableInfo>,
}

impl std::fmt::Debug for PgImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgImport").field("tables", &self.tables.len()).finish_non_exhaustive()
    }
}

impl PgImport {
    /// Opens a transaction on the database at `url`, which must hold no table, and applies
    /// the migrations up to `version` (the export's) inside it; the rows the migrations seed
    /// are removed, so that the export's own rows take their place.
    pub async fn begin(url: &str, version: i64) -> Result<Self, StoreError> {
        let latest = latest_migration(Backend::Postgres);
        if version > latest {
            return Err(StoreError::Invalid(format!(
                "the export is at migration {version}, newer than this build knows ({latest}); \
                 restore it with the Cairn release that made it, or a newer one"
            )));
        }
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new().max_connections(1).connect_with(opts).await?;
        let mut tx = pool.begin().await?;
        let present: Vec<(String,)> = sqlx::query_as(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') LIMIT 5",
        )
        .fetch_all(&mut *tx)
        .await?;
        if !present.is_empty() {
            let names: Vec<String> = present.into_iter().map(|r| r.0).collect();
            return Err(StoreError::Conflict(format!(
                "the database is not empty (it holds {}); restore into a new, empty database",
                names.join(", ")
            )));
        }
        // Inside the transaction: migrations become savepoints, so a failed import leaves
        // not even the schema behind.
        POSTGRES_MIGRATIONS.run_to(version, &mut *tx).await?;
        let tables = pg_tables(&mut tx).await?;
        for t in tables.iter().rev() {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quote(&t.name)))).execute(&mut *tx).await?;
        }
        Ok(Self { pool, tx, tables })
    }

    /// The database's tables at the export's migration, parents first: the order to load in.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Starts loading `table` (text `COPY` format, the columns in this order).
    pub async fn copy_in(&mut self, table: &str, columns: &[String]) -> Result<TableCopyIn<'_>, StoreError> {
        let sql = format!("COPY {} ({}) FROM STDIN", quote(table), column_list(columns));
        Ok(TableCopyIn { inner: self.tx.copy_in_raw(&sql).await? })
    }

    /// Moves every identity and serial sequence past the largest restored id, applies the
    /// migrations this build adds, and commits.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        let sequences: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND (is_identity = 'YES' OR column_default LIKE 'nextval(%') \
             ORDER BY table_name, column_name",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        for (table, column) in sequences {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({}), 0) + 1, false) FROM {}",
                quote(&column),
                quote(&table)
            );
            sqlx::query(AssertSqlSafe(sql)).bind(quote(&table)).bind(&column).execute(&mut *self.tx).await?;
        }
        POSTGRES_MIGRATIONS.run(&mut *self.tx).await?;
        self.tx.commit().await?;
        self.pool.close().await;
        Ok(())
    }

    /// Gives up: nothing of the import stays.
    pub async fn abandon(self) {
        let _ = self.tx.rollback().await;
        self.pool.close().await;
    }
}

/// One table being loaded by [`PgImport::copy_in`]; [`TableCopyIn::finish`] or
/// [`TableCopyIn::abort`] must end it.
pub struct TableCopyIn<'a> {
    inner: PgCopyIn<&'a mut PgConnection>,
}

impl TableCopyIn<'_> {
    /// Sends the next bytes of the table's data.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.inner.send(data).await?;
        Ok(())
    }

    /// Ends the table; returns the rows loaded.
    pub async fn finish(self) -> Result<u64, StoreError> {
        Ok(self.inner.finish().await?)
    }

    /// Ends the table with an error (the transaction is then lost).
    pub async fn abort(self, reason: &str) -> Result<(), StoreError> {
        Ok(self.inner.abort(reason).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn parents_come_first() {
        let tables = s(&["aliases", "models", "namespaces", "versions", "zeta"]);
        let edges = vec![
            ("aliases".to_owned(), "versions".to_owned()),
            ("aliases".to_owned(), "models".to_owned()),
            ("versions".to_owned(), "models".to_owned()),
            ("models".to_owned(), "namespaces".to_owned()),
            ("versions".to_owned(), "versions".to_owned()),
        ];
        assert_eq!(parents_first(&tables, &edges), s(&["namespaces", "zeta", "models", "versions", "aliases"]));
    }

    #[test]
    fn cycles_do_not_hang() {
        let tables = s(&["a", "b"]);
        let edges = vec![("a".to_owned(), "b".to_owned()), ("b".to_owned(), "a".to_owned())];
        assert_eq!(parents_first(&tables, &edges).len(), 2);
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
