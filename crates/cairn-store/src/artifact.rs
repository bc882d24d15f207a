//! Model files in the database: blobs (by SHA-256), uploads in progress, and the files of
//! committed versions. The bytes themselves live in `cairn-blob`; this module keeps the
//! bookkeeping that makes uploads resumable and shared, commits atomic, and garbage
//! collection safe against concurrent uploads.
//!
//! Blob states: `pending` (being completed), `present` (stored and verified), `deleting`
//! (claimed by garbage collection). Every upload that relies on a blob refreshes its
//! `last_used_at`; garbage collection only claims blobs unused for longer than any upload
//! may live, and claiming is a conditional `UPDATE` on that column, so an upload touching a
//! blob and a collector claiming it cannot both win.

use cairn_core::{AliasName, FileEntry, FilePath, Manifest, ModelName, ModelRef, Namespace, VersionSelector};
use serde::Serialize;

use crate::db::{Backend, Conn, Param};
use crate::version::{
    NewVersion, Version, find as find_version, insert_version, insert_version_with_blobs, record_created, upsert_alias,
};
use crate::{AuditContext, Store, StoreError, audit, params};

/// A push in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Upload {
    /// Random id.
    pub id: String,
    /// Internal id of the model.
    #[serde(skip)]
    pub model_id: i64,
    /// The model's namespace.
    pub namespace: String,
    /// The model's name.
    pub model: String,
    /// `open` or `committed`.
    pub state: String,
    /// The version it became, once committed.
    #[serde(skip)]
    pub version_id: Option<i64>,
    /// Files declared.
    pub file_count: i64,
    /// Bytes declared.
    pub total_size: i64,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Expires at (ms).
    pub expires_at: i64,
}

impl Upload {
    /// The model it belongs to.
    pub fn model_ref(&self) -> Result<ModelRef, StoreError> {
        let ns = Namespace::parse(&self.namespace).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let name = ModelName::parse(&self.model).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(ModelRef::new(ns, name))
    }
}

/// One distinct blob an upload needs, and how far it has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobNeed {
    /// SHA-256 (hex).
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Stored and verified.
    pub present: bool,
    /// Parts received so far (when not present).
    pub parts_received: Vec<i64>,
}

/// A blob whose parts are arriving.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlobUpload {
    /// SHA-256 (hex).
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// The blob store's handle.
    pub handle: String,
    /// `open` or `completing`.
    pub state: String,
}

/// A part received.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PartRow {
    /// Part number.
    pub part: i64,
    /// Bytes.
    pub size: i64,
    /// The blob store's receipt.
    pub etag: String,
}

/// A blob as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlobRow {
    /// SHA-256 (hex).
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// `pending`, `present` or `deleting`.
    pub state: String,
    /// Last relied on at (ms).
    pub last_used_at: i64,
}

/// Who proved a blob that has just been stored by sending all of it. Possession belongs to
/// the account: every open upload of that account declaring the blob may then use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobProof<'a> {
    /// No upload (the MLflow-compatible API, which hashes whole bodies itself).
    None,
    /// This upload sent the whole blob in one body.
    Upload(&'a str),
    /// Every account whose uploads sent all of the blob's `parts` parts.
    Senders {
        /// How many parts the blob has.
        parts: i64,
    },
}

/// How far the proof of a stored blob by one upload has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofProgress {
    /// This many parts have arrived.
    Receiving(i64),
    /// All arrived and matched: the upload may use the blob.
    Proven,
    /// All arrived and at least one did not match; they were forgotten.
    Mismatch,
}

/// SQL true when upload `$1` may use the stored blob whose digest is `column`: the caller may
/// read a version that holds it (any, with `readable` = `None`), or the upload's account sent
/// all of its bytes. Knowing a digest is not enough to reuse someone else's blob. The namespace
/// parameters are numbered from `first`.
fn usable(column: &str, readable: Option<&[String]>, first: usize) -> (String, Vec<Param>) {
    let proven = format!("EXISTS (SELECT 1 FROM upload_proofs pr WHERE pr.upload_id = $1 AND pr.digest = {column})");
    match readable {
        None => ("1 = 1".into(), Vec::new()),
        Some([]) => (proven, Vec::new()),
        Some(list) => {
            let marks: Vec<String> = (first..first + list.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "{proven} OR EXISTS (SELECT 1 FROM version_files vf JOIN versions v ON v.id = vf.version_id \
                 JOIN models m ON m.id = v.model_id JOIN namespaces n ON n.id = m.namespace_id \
                 WHERE vf.digest = {column} AND n.name IN ({}))",
                marks.join(", ")
            );
            (sql, list.iter().map(|n| Param::from(n.as_str())).collect())
        }
    }
}

/// The account that created upload `id` has sent all of `digest`: each of its open uploads
/// that declares the digest may use the stored blob.
async fn credit_account(conn: &mut Conn<'_>, id: &str, digest: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO upload_proofs (upload_id, digest) SELECT DISTINCT u.id, f.digest \
         FROM uploads u JOIN upload_files f ON f.upload_id = u.id \
         WHERE f.digest = $2 AND u.state = 'open' AND u.created_by = (SELECT created_by FROM uploads WHERE id = $1) \
         ON CONFLICT DO NOTHING",
        params![id, digest],
    )
    .await?;
    Ok(())
}

const SELECT_UPLOAD: &str = "SELECT u.id, u.model_id, n.name AS namespace, m.name AS model, u.state, u.version_id, \
    u.file_count, u.total_size, u.created_at, u.created_by, u.expires_at \
    FROM uploads u JOIN models m ON m.id = u.model_id JOIN namespaces n ON n.id = m.namespace_id";

/// Rows per multi-row `INSERT` (4 parameters each, well under both backends' limits).
const INSERT_CHUNK: usize = 500;

fn entry(path: String, size: i64, digest: String) -> Result<FileEntry, StoreError> {
    Ok(FileEntry {
        path: FilePath::parse(&path).map_err(|e| StoreError::Invalid(format!("stored path: {e}")))?,
        size: u64::try_from(size).unwrap_or(0),
        sha256: digest,
    })
}

/// Inserts one `(owner, path, size, digest)` row per file into `into` (a table with those
/// four columns), in multi-row statements of [`INSERT_CHUNK`] rows.
async fn insert_files(conn: &mut Conn<'_>, into: &str, owner: Param, files: &[FileEntry]) -> Result<(), StoreError> {
    for chunk in files.chunks(INSERT_CHUNK) {
        let mut sql = format!("INSERT INTO {into} VALUES ");
        let mut ps: Vec<Param> = Vec::with_capacity(chunk.len() * 4);
        for (i, f) in chunk.iter().enumerate() {
            let b = i * 4;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
            ps.push(owner.clone());
            ps.push(Param::from(f.path.as_str()));
            ps.push(Param::Int(i64::try_from(f.size).unwrap_or(i64::MAX)));
            ps.push(Param::from(f.sha256.as_str()));
        }
        conn.defer(sql, ps).await?;
    }
    Ok(())
}

/// `version` with the digest, file count and size of `manifest` (a version without files
/// keeps the empty manifest's).
fn with_manifest(version: &mut Version, manifest: &Manifest) {
    if !manifest.files().is_empty() {
        version.digest = manifest.digest();
        version.file_count = i64::try_from(manifest.files().len()).unwrap_or(i64::MAX);
        version.size = i64::try_from(manifest.total_size()).unwrap_or(i64::MAX);
    }
}

/// The distinct digests of a manifest's files as a JSON array.
fn digests_json(manifest: &Manifest) -> String {
    let digests: std::collections::BTreeSet<&str> = manifest.files().iter().map(|f| f.sha256.as_str()).collect();
    serde_json::to_string(&digests).unwrap_or_else(|_| "[]".into())
}

async fn upload_row(conn: &mut Conn<'_>, id: &str) -> Result<Upload, StoreError> {
    conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_UPLOAD} WHERE u.id = $1")), params![id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("upload {id} does not exist (it may have expired)")))
}

impl Store {
    /// Starts a push: records the declared files and refreshes the blobs it can reuse.
    pub async fn create_upload(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        manifest: &Manifest,
        expires_at: i64,
    ) -> Result<Upload, StoreError> {
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let total = i64::try_from(manifest.total_size()).map_err(|_| StoreError::Invalid("too large".into()))?;
        let count = i64::try_from(manifest.files().len()).unwrap_or(i64::MAX);
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let found: Option<(i64,)> =
            conn.fetch_optional("SELECT id FROM models WHERE full_name = $1", params![model.to_string()]).await?;
        let Some((model_id,)) = found else {
            return Err(StoreError::NotFound(format!("model \"{model}\" does not exist")));
        };
        conn.execute(
            "INSERT INTO uploads (id, model_id, state, file_count, total_size, created_at, created_by, expires_at) \
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $7)",
            params![&id, model_id, count, total, now, &ctx.actor, expires_at],
        )
        .await?;
        insert_files(&mut conn, "upload_files (upload_id, path, size, digest)", Param::from(&id), manifest.files())
            .await?;
        conn.execute(
            "UPDATE blobs SET last_used_at = $1 WHERE state = 'present' \
             AND digest IN (SELECT digest FROM upload_files WHERE upload_id = $2)",
            params![now, &id],
        )
        .await?;
        // Bytes this account has proven in its other uploads (a push re-run after an
        // interruption) are proven for this one too.
        conn.execute(
            "INSERT INTO upload_proofs (upload_id, digest) SELECT DISTINCT $1, p.digest FROM upload_proofs p \
             JOIN uploads u ON u.id = p.upload_id WHERE u.created_by = $2 AND u.id <> $1 \
             AND p.digest IN (SELECT digest FROM upload_files WHERE upload_id = $1) ON CONFLICT DO NOTHING",
            params![&id, &ctx.actor],
        )
        .await?;
        let upload = upload_row(&mut conn, &id).await?;
        audit::record(&mut conn, ctx, now, "upload.create", &format!("upload:{id}"), None::<&()>, Some(&upload))
            .await?;
        tx.commit().await?;
        Ok(upload)
    }

    /// An upload by id.
    pub async fn get_upload(&self, id: &str) -> Result<Upload, StoreError> {
        let mut c = self.db.read().await?;
        upload_row(&mut c.conn(), id).await
    }

    /// The files an upload declares, sorted by path.
    pub async fn upload_files(&self, id: &str) -> Result<Vec<FileEntry>, StoreError> {
        let mut c = self.db.read().await?;
        let rows: Vec<(String, i64, String)> =
            c.conn().fetch_all("SELECT path, size, digest FROM upload_files WHERE upload_id = $1", params![id]).await?;
        let mut files = rows.into_iter().map(|(p, s, d)| entry(p, s, d)).collect::<Result<Vec<_>, _>>()?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The distinct blobs an upload needs, with what it may use and which of its parts arrived.
    ///
    /// A stored blob counts as present only if the upload may use it (see [`usable`]): for
    /// anyone else it looks absent, and its parts are compared with the stored bytes when they
    /// arrive. `readable` lists the namespaces the caller may read (`None`: all).
    pub async fn upload_blobs(&self, id: &str, readable: Option<&[String]>) -> Result<Vec<BlobNeed>, StoreError> {
        let (usable, mut params) = usable("f.digest", readable, 2);
        params.insert(0, Param::from(id));
        let sql = format!(
            "SELECT f.digest, MAX(f.size), CAST(MAX(CASE WHEN b.digest IS NULL THEN 0 ELSE 1 END) AS BIGINT), \
             CAST(MAX(CASE WHEN b.digest IS NOT NULL AND ({usable}) THEN 1 ELSE 0 END) AS BIGINT) FROM upload_files f \
             LEFT JOIN blobs b ON b.digest = f.digest AND b.state = 'present' \
             WHERE f.upload_id = $1 GROUP BY f.digest ORDER BY f.digest"
        );
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let rows: Vec<(String, i64, i64, i64)> = conn.fetch_all(sqlx::AssertSqlSafe(sql), params).await?;
        // Parts its account sent (in this upload or one it re-runs): of a blob being uploaded,
        // and of a stored blob it is proving.
        let parts: Vec<(String, i64, i64)> = conn
            .fetch_all(
                "SELECT p.digest, p.part, CAST(0 AS BIGINT) FROM blob_upload_parts p \
                 JOIN uploads s ON s.id = p.upload_id \
                 WHERE s.created_by = (SELECT created_by FROM uploads WHERE id = $1) \
                 AND p.digest IN (SELECT digest FROM upload_files WHERE upload_id = $1) \
                 UNION SELECT q.digest, q.part, CAST(1 AS BIGINT) FROM upload_proof_parts q \
                 JOIN uploads s ON s.id = q.upload_id \
                 WHERE s.created_by = (SELECT created_by FROM uploads WHERE id = $1) \
                 AND q.digest IN (SELECT digest FROM upload_files WHERE upload_id = $1) ORDER BY 1, 2",
                params![id],
            )
            .await?;
        let mut out: Vec<(BlobNeed, bool)> = rows
            .into_iter()
            .map(|(digest, size, stored, usable)| {
                (BlobNeed { digest, size, present: usable == 1, parts_received: Vec::new() }, stored == 1)
            })
            .collect();
        for (digest, part, proving) in parts {
            if let Ok(i) = out.binary_search_by(|(b, _)| b.digest.as_str().cmp(&digest)) {
                let (need, stored) = &mut out[i];
                if !need.present && *stored == (proving == 1) {
                    need.parts_received.push(part);
                }
            }
        }
        Ok(out.into_iter().map(|(need, _)| need).collect())
    }

    /// Whether upload `id` may use the stored blob `digest` (see [`usable`]); `false` also
    /// when the blob is not stored.
    pub async fn blob_usable(&self, id: &str, digest: &str, readable: Option<&[String]>) -> Result<bool, StoreError> {
        if readable.is_none() {
            return Ok(self.blob(digest).await?.is_some_and(|b| b.state == "present"));
        }
        let (usable, mut params) = usable("b.digest", readable, 3);
        params.insert(0, Param::from(digest));
        params.insert(0, Param::from(id));
        let sql = format!("SELECT COUNT(*) FROM blobs b WHERE b.digest = $2 AND b.state = 'present' AND ({usable})");
        let mut c = self.db.read().await?;
        let (n,): (i64,) = c.conn().fetch_one(sqlx::AssertSqlSafe(sql), params).await?;
        Ok(n > 0)
    }

    /// Records that upload `id` sent part `part` of the stored blob `digest` again and whether
    /// it matched the stored bytes. Once all `parts` have arrived (in the uploads of its
    /// account) the blob is proven for that account if every one matched; if any did not,
    /// they are all forgotten.
    pub async fn record_proof_part(
        &self,
        id: &str,
        digest: &str,
        part: i64,
        matched: bool,
        parts: i64,
    ) -> Result<ProofProgress, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "INSERT INTO upload_proof_parts (upload_id, digest, part, matched) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (upload_id, digest, part) DO UPDATE SET matched = excluded.matched",
            params![id, digest, part, Param::Bool(matched)],
        )
        .await?;
        // Parts sent again in an earlier upload of the same account count too (a re-run push).
        let (received, mismatched): (i64, i64) = conn
            .fetch_one(
                "SELECT COUNT(DISTINCT q.part), COALESCE(SUM(CASE WHEN q.matched THEN 0 ELSE 1 END), 0) \
                 FROM upload_proof_parts q JOIN uploads s ON s.id = q.upload_id \
                 WHERE q.digest = $2 AND s.created_by = (SELECT created_by FROM uploads WHERE id = $1)",
                params![id, digest],
            )
            .await?;
        if received < parts {
            tx.commit().await?;
            return Ok(ProofProgress::Receiving(received));
        }
        conn.execute(
            "DELETE FROM upload_proof_parts WHERE digest = $2 AND upload_id IN \
             (SELECT id FROM uploads WHERE created_by = (SELECT created_by FROM uploads WHERE id = $1))",
            params![id, digest],
        )
        .await?;
        let outcome = if mismatched == 0 {
            credit_account(&mut conn, id, digest).await?;
            ProofProgress::Proven
        } else {
            ProofProgress::Mismatch
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// The size of `digest` if upload `id` declared it.
    pub async fn upload_declares(&self, id: &str, digest: &str) -> Result<Option<i64>, StoreError> {
        let mut c = self.db.read().await?;
        let row: Option<(i64,)> = c
            .conn()
            .fetch_optional(
                "SELECT size FROM upload_files WHERE upload_id = $1 AND digest = $2 LIMIT 1",
                params![id, digest],
            )
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// A blob's row, if the database knows it.
    pub async fn blob(&self, digest: &str) -> Result<Option<BlobRow>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional("SELECT digest, size, state, last_used_at FROM blobs WHERE digest = $1", params![digest])
            .await
    }

    /// The upload in progress of a blob, if any.
    pub async fn blob_upload(&self, digest: &str) -> Result<Option<BlobUpload>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional("SELECT digest, size, handle, state FROM blob_uploads WHERE digest = $1", params![digest])
            .await
    }

    /// Records a new blob upload; `false` if another request recorded one first (the caller
    /// then discards its handle and uses theirs).
    pub async fn insert_blob_upload(&self, digest: &str, size: i64, handle: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let n = tx
            .conn()
            .execute(
                "INSERT INTO blob_uploads (digest, size, handle, state, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'open', $4, $4) ON CONFLICT (digest) DO NOTHING",
                params![digest, size, handle, now],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records a part that upload `upload_id` sent; returns how many parts of the blob have
    /// arrived, from any upload.
    pub async fn record_part(
        &self,
        upload_id: &str,
        digest: &str,
        part: i64,
        size: i64,
        etag: &str,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let n = conn
            .execute(
                "UPDATE blob_uploads SET updated_at = $1 WHERE digest = $2 AND state = 'open'",
                params![now, digest],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Busy(format!(
                "the upload of blob {digest} is being completed or was abandoned; ask for its status and retry"
            )));
        }
        conn.execute(
            "INSERT INTO blob_upload_parts (digest, part, size, etag, upload_id) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (digest, part) DO UPDATE SET size = excluded.size, etag = excluded.etag, \
             upload_id = excluded.upload_id",
            params![digest, part, size, etag, upload_id],
        )
        .await?;
        let (count,): (i64,) =
            conn.fetch_one("SELECT COUNT(*) FROM blob_upload_parts WHERE digest = $1", params![digest]).await?;
        tx.commit().await?;
        Ok(count)
    }

    /// Claims the completion of a blob whose `parts` parts have all arrived: exactly one
    /// caller gets `Some`, with the handle and the parts in order, and must then call
    /// [`Store::blob_completed`] or [`Store::blob_failed`].
    pub async fn claim_blob_completion(
        &self,
        digest: &str,
        parts: i64,
    ) -> Result<Option<(String, Vec<PartRow>)>, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let claimed: Option<(String, i64)> = conn
            .fetch_optional(
                "UPDATE blob_uploads SET state = 'completing', updated_at = $1 WHERE digest = $2 AND state = 'open' \
                 AND (SELECT COUNT(*) FROM blob_upload_parts p WHERE p.digest = $2) = $3 RETURNING handle, size",
                params![now, digest, parts],
            )
            .await?;
        let Some((handle, size)) = claimed else {
            return Ok(None);
        };
        let rows: Vec<PartRow> = conn
            .fetch_all(
                "SELECT part, size, etag FROM blob_upload_parts WHERE digest = $1 ORDER BY part",
                params![digest],
            )
            .await?;
        mark_pending(&mut conn, now, digest, size).await?;
        tx.commit().await?;
        Ok(Some((handle, rows)))
    }

    /// Records that a blob is about to be written outside the part protocol (one-shot
    /// upload), so garbage collection leaves it alone. Refused while the collector holds it.
    pub async fn blob_pending(&self, digest: &str, size: i64) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        mark_pending(&mut tx.conn(), now, digest, size).await?;
        tx.commit().await
    }

    /// The blob is stored and verified: it becomes `present`, the uploads that sent all of it
    /// have proven it (`proof`), and its upload is forgotten.
    pub async fn blob_completed(&self, digest: &str, proof: BlobProof<'_>) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "UPDATE blobs SET state = 'present', last_used_at = $1 WHERE digest = $2 AND state <> 'deleting'",
            params![now, digest],
        )
        .await?;
        match proof {
            BlobProof::None => {}
            BlobProof::Upload(id) => credit_account(&mut conn, id, digest).await?,
            BlobProof::Senders { parts } => {
                // The kept receipts are the parts the blob was assembled from: an account whose
                // uploads sent all of them holds the bytes.
                conn.execute(
                    "INSERT INTO upload_proofs (upload_id, digest) SELECT DISTINCT u.id, f.digest \
                     FROM uploads u JOIN upload_files f ON f.upload_id = u.id \
                     WHERE f.digest = $1 AND u.state = 'open' AND u.created_by IN \
                     (SELECT s.created_by FROM blob_upload_parts p JOIN uploads s ON s.id = p.upload_id \
                     WHERE p.digest = $1 GROUP BY s.created_by HAVING COUNT(*) = $2) ON CONFLICT DO NOTHING",
                    params![digest, parts],
                )
                .await?;
            }
        }
        conn.execute("DELETE FROM blob_uploads WHERE digest = $1", params![digest]).await?;
        tx.commit().await
    }

    /// The part receipts of a blob turned out stale (two writers sent the same part at
    /// once): forget them and reopen the upload, so the parts are sent again.
    pub async fn reopen_blob_upload(&self, digest: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute("DELETE FROM blob_upload_parts WHERE digest = $1", params![digest]).await?;
        conn.execute("UPDATE blob_uploads SET state = 'open', updated_at = $1 WHERE digest = $2", params![now, digest])
            .await?;
        conn.execute("DELETE FROM blobs WHERE digest = $1 AND state = 'pending'", params![digest]).await?;
        tx.commit().await
    }

    /// Completing a blob failed (wrong bytes, or an error): its parts are forgotten so that
    /// the next attempt starts clean, and a `pending` row is dropped.
    pub async fn blob_failed(&self, digest: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute("DELETE FROM blob_uploads WHERE digest = $1", params![digest]).await?;
        conn.execute("DELETE FROM blobs WHERE digest = $1 AND state = 'pending'", params![digest]).await?;
        tx.commit().await
    }

    /// Commits an upload: the next version of its model with the declared files, its
    /// manifest digest, tags and aliases, in one transaction. Committing a committed upload
    /// again returns its version and `false`.
    pub async fn commit_upload(
        &self,
        ctx: &AuditContext,
        id: &str,
        new: &NewVersion,
        aliases: &[AliasName],
        readable: Option<&[String]>,
    ) -> Result<(Version, bool), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let upload = upload_row(&mut conn, id).await?;
        let model = upload.model_ref()?;
        // Claim the upload: with several writers, exactly one commit wins.
        let claimed = conn
            .execute(
                "UPDATE uploads SET state = 'committed' WHERE id = $1 AND state = 'open' AND expires_at > $2",
                params![id, now],
            )
            .await?;
        if claimed == 0 {
            let upload = upload_row(&mut conn, id).await?;
            return match (upload.state.as_str(), upload.version_id) {
                ("committed", Some(vid)) => {
                    let (number,): (i64,) =
                        conn.fetch_one("SELECT number FROM versions WHERE id = $1", params![vid]).await?;
                    let version = find_version(&mut conn, &model, &VersionSelector::Number(number)).await?;
                    // Committed, though nothing changed: the version may have been read from
                    // a commit group not yet committed (see `db::Writer`).
                    tx.commit().await?;
                    Ok((version, false))
                }
                ("committed", None) => Err(StoreError::Conflict(format!(
                    "upload {id} was committed, but its version has since been deleted"
                ))),
                _ => Err(StoreError::NotFound(format!("upload {id} has expired"))),
            };
        }
        // A blob stored for someone else, which this upload has not proven, is as missing as
        // one never stored: the same answer, so that it reveals nothing.
        let (usable, mut usable_params) = usable("f.digest", readable, 2);
        usable_params.insert(0, Param::from(id));
        let missing: Vec<(String,)> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT DISTINCT f.digest FROM upload_files f \
                     LEFT JOIN blobs b ON b.digest = f.digest AND b.state = 'present' \
                     WHERE f.upload_id = $1 AND (b.digest IS NULL OR NOT ({usable})) ORDER BY f.digest LIMIT 20"
                )),
                usable_params,
            )
            .await?;
        if !missing.is_empty() {
            let list: Vec<&str> = missing.iter().map(|m| m.0.as_str()).collect();
            return Err(StoreError::MissingBlobs(format!(
                "missing blobs: upload these first (sha256): {}",
                list.join(", ")
            )));
        }
        // Refresh the blobs it uses: this takes their row locks, so a collector that
        // claims one concurrently re-checks `last_used_at` and leaves it.
        conn.execute(
            "UPDATE blobs SET last_used_at = $1 WHERE digest IN (SELECT digest FROM upload_files WHERE upload_id = $2)",
            params![now, id],
        )
        .await?;
        let files: Vec<(String, i64, String)> =
            conn.fetch_all("SELECT path, size, digest FROM upload_files WHERE upload_id = $1", params![id]).await?;
        let entries = files.into_iter().map(|(p, s, d)| entry(p, s, d)).collect::<Result<Vec<_>, _>>()?;
        let manifest = Manifest::new(entries).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (version_id, number) = insert_version(&mut conn, ctx, now, &model, new).await?;
        conn.execute(
            "INSERT INTO version_files (version_id, path, size, digest) \
             SELECT $1, path, size, digest FROM upload_files WHERE upload_id = $2",
            params![version_id, id],
        )
        .await?;
        conn.execute(
            "UPDATE versions SET digest = $1, file_count = $2, size = $3 WHERE id = $4",
            params![
                manifest.digest(),
                i64::try_from(manifest.files().len()).unwrap_or(i64::MAX),
                i64::try_from(manifest.total_size()).unwrap_or(i64::MAX),
                version_id
            ],
        )
        .await?;
        crate::signatures::attach(
            &mut conn,
            self.signer(),
            now,
            version_id,
            &model,
            number,
            &manifest.digest(),
            &new.signatures,
        )
        .await?;
        conn.execute("UPDATE uploads SET version_id = $1 WHERE id = $2", params![version_id, id]).await?;
        conn.execute("DELETE FROM upload_files WHERE upload_id = $1", params![id]).await?;
        let created = find_version(&mut conn, &model, &VersionSelector::Number(number)).await?;
        record_created(&mut conn, ctx, now, &model, &created, new, &new.scans, manifest.files()).await?;
        for alias in aliases {
            upsert_alias(&mut conn, ctx, now, &model, alias, version_id).await?;
        }
        let version = if aliases.is_empty() {
            created
        } else {
            find_version(&mut conn, &model, &VersionSelector::Number(number)).await?
        };
        tx.commit().await?;
        Ok((version, true))
    }

    /// Creates the next version of a model with `files`, whose blobs must all be present
    /// (the MLflow-compatible API registers a version from files already uploaded under its
    /// source; [`Store::create_version`] has none): version, files, manifest digest and
    /// server signature in one transaction.
    ///
    /// On SQLite a version with at most [`crate::db::SMALL_TRANSACTION_FILES`] files is first
    /// created in a batched transaction ([`crate::db::Db::begin_batched`]), which makes no
    /// call of its own to the single writer; if its group fails, it is created again alone.
    pub async fn create_version_with_files(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        new: &NewVersion,
        files: Vec<FileEntry>,
    ) -> Result<Version, StoreError> {
        let manifest = Manifest::new(files).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let small = manifest.files().len() <= crate::db::SMALL_TRANSACTION_FILES;
        if small && self.db.backend() == Backend::Sqlite {
            match self.create_version_batched(ctx, model, new, &manifest).await {
                // Its group failed, maybe for another member's statement, or a prediction
                // was wrong: created alone, which tells which.
                Err(StoreError::Database(e)) if !matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
                    tracing::debug!(error = %e, "a batched version creation failed; creating it alone");
                }
                other => return other,
            }
        }
        let now = self.now();
        let mut tx = if small {
            // Bounded by the request: a small transaction (see `db::Writer`).
            self.db.begin_small().await?
        } else {
            self.db.begin().await?
        };
        let mut conn = tx.conn();
        // Every blob must be stored: checked by the statement that inserts the version (one
        // call less on the single writer), and only when it inserted nothing, which blobs.
        let digests = digests_json(&manifest);
        let blobs = (!manifest.files().is_empty()).then(|| digests.clone());
        let (version_id, number) = match insert_version_with_blobs(&mut conn, ctx, now, model, new, blobs).await {
            Err(StoreError::NotFound(not_found)) => {
                let missing_sql = match conn.backend() {
                    Backend::Sqlite => {
                        concat!("SELECT j.d ", crate::version::unstored_blobs!(sqlite, "$1"), " ORDER BY j.d LIMIT 20")
                    }
                    Backend::Postgres => {
                        concat!(
                            "SELECT j.d ",
                            crate::version::unstored_blobs!(postgres, "$1"),
                            " ORDER BY j.d LIMIT 20"
                        )
                    }
                };
                let missing: Vec<(String,)> = conn.fetch_all(missing_sql, params![digests]).await?;
                if missing.is_empty() {
                    return Err(StoreError::NotFound(not_found));
                }
                let list: Vec<&str> = missing.iter().map(|m| m.0.as_str()).collect();
                return Err(StoreError::MissingBlobs(format!("missing blobs (sha256): {}", list.join(", "))));
            }
            other => other?,
        };
        let mut created = crate::version::inserted(ctx, now, model, version_id, number, new);
        if !manifest.files().is_empty() {
            with_manifest(&mut created, &manifest);
            conn.defer(
                "UPDATE versions SET digest = $1, file_count = $2, size = $3 WHERE id = $4",
                params![&created.digest, created.file_count, created.size, version_id],
            )
            .await?;
        }
        self.record_new_version(&mut conn, ctx, now, model, new, &manifest, &created).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// [`Store::create_version_with_files`] in a batched transaction: the version's number
    /// and id are predicted, and every statement is deferred to the group's `COMMIT`.
    async fn create_version_batched(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        new: &NewVersion,
        manifest: &Manifest,
    ) -> Result<Version, StoreError> {
        // Checked before the writer's lock is taken.
        crate::version::check_new(new)?;
        let now = self.now();
        let mut tx = self.db.begin_batched().await?;
        let Some(slot) = tx.version_slot(&model.to_string()).await? else {
            return Err(crate::version::model_missing(model));
        };
        let mut conn = tx.conn();
        let mut created = crate::version::inserted(ctx, now, model, slot.id, slot.number, new);
        with_manifest(&mut created, manifest);
        crate::version::defer_predicted_version(
            &mut conn,
            ctx,
            now,
            model,
            new,
            slot,
            digests_json(manifest),
            &created,
        )
        .await?;
        self.record_new_version(&mut conn, ctx, now, model, new, manifest, &created).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Everything of a version just inserted (`created`, as stored, its digest included)
    /// but its row and tags: its files, their blobs' last use, the server's signature, its
    /// scans and lineage and its `version.create` event, all deferred: on SQLite's single
    /// writer every call waits for the one before.
    #[allow(clippy::too_many_arguments)]
    async fn record_new_version(
        &self,
        conn: &mut Conn<'_>,
        ctx: &AuditContext,
        now: i64,
        model: &ModelRef,
        new: &NewVersion,
        manifest: &Manifest,
        created: &Version,
    ) -> Result<(), StoreError> {
        if !manifest.files().is_empty() {
            insert_files(
                conn,
                "version_files (version_id, path, size, digest)",
                Param::Int(created.id),
                manifest.files(),
            )
            .await?;
            conn.defer(
                "UPDATE blobs SET last_used_at = $1 WHERE digest IN \
                 (SELECT digest FROM version_files WHERE version_id = $2)",
                params![now, created.id],
            )
            .await?;
        }
        crate::signatures::attach(
            conn,
            self.signer(),
            now,
            created.id,
            model,
            created.version,
            &created.digest,
            &new.signatures,
        )
        .await?;
        record_created(conn, ctx, now, model, created, new, &new.scans, manifest.files()).await
    }

    /// Abandons an upload. Parts of blobs it sent stay for other uploads to reuse until
    /// they expire.
    pub async fn delete_upload(&self, ctx: &AuditContext, id: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let upload = upload_row(&mut conn, id).await?;
        conn.execute("DELETE FROM uploads WHERE id = $1", params![id]).await?;
        audit::record(&mut conn, ctx, now, "upload.delete", &format!("upload:{id}"), Some(&upload), None::<&()>)
            .await?;
        tx.commit().await
    }

    /// The files of a version, sorted by path.
    pub async fn version_files(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<(Version, Vec<FileEntry>), StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let version = find_version(&mut conn, model, selector).await?;
        let rows: Vec<(String, i64, String)> = conn
            .fetch_all(
                "SELECT path, size, digest FROM version_files WHERE version_id = $1 ORDER BY path",
                params![version.id],
            )
            .await?;
        let mut files = rows.into_iter().map(|(p, s, d)| entry(p, s, d)).collect::<Result<Vec<_>, _>>()?;
        // Byte order, as in the manifest (the database's collation may differ).
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((version, files))
    }

    /// One file of a version.
    pub async fn version_file(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
        path: &str,
    ) -> Result<(Version, FileEntry), StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let version = find_version(&mut conn, model, selector).await?;
        let row: Option<(String, i64, String)> = conn
            .fetch_optional(
                "SELECT path, size, digest FROM version_files WHERE version_id = $1 AND path = $2",
                params![version.id, path],
            )
            .await?;
        let Some((p, s, d)) = row else {
            return Err(StoreError::NotFound(format!(
                "version {} of \"{model}\" has no file \"{path}\"",
                version.version
            )));
        };
        Ok((version, entry(p, s, d)?))
    }

    /// Removes uploads past their expiry (open ones are abandoned; committed ones only
    /// served retries of the commit). Returns how many.
    pub async fn expire_uploads(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let n = tx.conn().execute("DELETE FROM uploads WHERE expires_at <= $1", params![now]).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Blob uploads with no activity since `before` (ms): abandoned, or stuck completing
    /// after a crash.
    pub async fn stale_blob_uploads(&self, before: i64) -> Result<Vec<BlobUpload>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                "SELECT digest, size, handle, state FROM blob_uploads WHERE updated_at < $1 ORDER BY digest LIMIT 1000",
                params![before],
            )
            .await
    }

    /// Forgets a blob upload whose staging the caller has removed.
    pub async fn delete_blob_upload(&self, digest: &str, handle: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute("DELETE FROM blob_uploads WHERE digest = $1 AND handle = $2", params![digest, handle])
            .await?;
        tx.commit().await
    }

    /// Garbage collection, step 1: claims up to `limit` blobs that no version and no open
    /// upload references and that nobody relied on since `unused_since` (ms).
    pub async fn gc_claim(&self, unused_since: i64, limit: i64) -> Result<Vec<BlobRow>, StoreError> {
        let mut tx = self.db.begin().await?;
        let rows: Vec<BlobRow> = tx
            .conn()
            .fetch_all(
                "UPDATE blobs SET state = 'deleting' WHERE digest IN (SELECT b.digest FROM blobs b \
                 WHERE b.state IN ('present', 'pending') AND b.last_used_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM version_files vf WHERE vf.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM upload_files uf WHERE uf.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM blob_uploads bu WHERE bu.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM mlflow_artifacts ma WHERE ma.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM mlflow_multipart_parts mp WHERE mp.digest = b.digest) \
                 ORDER BY b.digest LIMIT $2) AND last_used_at < $1 \
                 RETURNING digest, size, state, last_used_at",
                params![unused_since, limit],
            )
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Garbage collection, step 2: forgets a claimed blob once its bytes are deleted.
    pub async fn gc_forget(&self, digest: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.conn().execute("DELETE FROM blobs WHERE digest = $1 AND state = 'deleting'", params![digest]).await?;
        tx.commit().await
    }

    /// Every blob the database knows, in digest order, `limit` at a time after `after`.
    pub async fn blobs_after(&self, after: &str, limit: i64) -> Result<Vec<BlobRow>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                "SELECT digest, size, state, last_used_at FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2",
                params![after, limit],
            )
            .await
    }

    /// The versions that use a blob, as `ns/name:number` (for fsck reports).
    pub async fn blob_users(&self, digest: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.db.read().await?;
        let rows: Vec<(String, i64, String)> = c
            .conn()
            .fetch_all(
                "SELECT m.full_name, v.number, vf.path FROM version_files vf JOIN versions v ON v.id = vf.version_id \
                 JOIN models m ON m.id = v.model_id WHERE vf.digest = $1 ORDER BY m.full_name, v.number LIMIT 100",
                params![digest],
            )
            .await?;
        Ok(rows.into_iter().map(|(m, n, p)| format!("{m}:{n} {p}")).collect())
    }
}

/// Inserts a `pending` blob row or refreshes an existing one; refused while garbage
/// collection holds the blob.
async fn mark_pending(conn: &mut Conn<'_>, now: i64, digest: &str, size: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES ($1, $2, 'pending', $3, $3) \
         ON CONFLICT (digest) DO UPDATE SET last_used_at = excluded.last_used_at WHERE blobs.state <> 'deleting'",
        params![digest, size, now],
    )
    .await?;
    let (state,): (String,) = conn.fetch_one("SELECT state FROM blobs WHERE digest = $1", params![digest]).await?;
    if state == "deleting" {
        return Err(StoreError::Busy(format!(
            "blob {digest} is being garbage-collected right now; retry in a few seconds"
        )));
    }
    Ok(())
}
