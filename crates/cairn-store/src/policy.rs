//! Policies as stored (versioned documents with a status) and policy exceptions (justified,
//! approved, expiring waivers for one version and one policy). Parsing and evaluation live
//! in `cairn_core::policy`; this module keeps what was applied, by whom, and when.

use cairn_core::{ModelRef, VersionSelector};
use serde::Serialize;
use sha2::Digest as _;

use crate::version::{find, target};
use crate::{AuditContext, Store, StoreError, audit, params};

/// One version of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    /// The policy's name.
    pub name: String,
    /// Its version (1, 2, …; each apply of a changed document adds one).
    pub version: i64,
    /// `draft`, `active` or `inactive`; only active versions are evaluated.
    pub status: String,
    /// Severity from the document.
    pub severity: String,
    /// The parsed document, as JSON.
    pub document: serde_json::Value,
    /// The text as applied (YAML or JSON).
    pub source: String,
    /// `sha256:` of the source.
    pub digest: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Status changed at (ms).
    pub updated_at: i64,
    /// Status changed by.
    pub updated_by: String,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    name: String,
    version: i64,
    status: String,
    severity: String,
    document: String,
    source: String,
    digest: String,
    created_at: i64,
    created_by: String,
    updated_at: i64,
    updated_by: String,
}

impl From<PolicyRow> for PolicyRecord {
    fn from(r: PolicyRow) -> Self {
        Self {
            name: r.name,
            version: r.version,
            status: r.status,
            severity: r.severity,
            document: serde_json::from_str(&r.document).unwrap_or(serde_json::Value::Null),
            source: r.source,
            digest: r.digest,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

const SELECT_POLICY: &str = "SELECT name, version, status, severity, document, source, digest, created_at, created_by, \
    updated_at, updated_by FROM policies";

/// What applying a policy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The policy version now stored.
    pub policy: PolicyRecord,
    /// Whether a new version was created (`false`: the same document was already the
    /// latest version, and only its status may have changed).
    pub created: bool,
}

/// A waiver of one policy for one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PolicyException {
    /// Its id.
    pub id: String,
    /// `namespace/name`.
    pub model: String,
    /// The version number.
    pub version: i64,
    /// The waived policy.
    pub policy: String,
    /// Why.
    pub justification: String,
    /// `requested`, `approved`, `rejected` or `revoked`.
    pub status: String,
    /// Who asked.
    pub requested_by: String,
    /// When (ms).
    pub requested_at: i64,
    /// Who decided (empty until decided).
    pub decided_by: String,
    /// When (ms).
    pub decided_at: Option<i64>,
    /// The decider's note.
    pub decision_note: String,
    /// Ends at (ms).
    pub expires_at: i64,
}

const SELECT_EXCEPTION: &str = "SELECT e.id, m.full_name AS model, v.number AS version, e.policy, e.justification, \
    e.status, e.requested_by, e.requested_at, e.decided_by, e.decided_at, e.decision_note, e.expires_at \
    FROM policy_exceptions e JOIN versions v ON v.id = e.version_id JOIN models m ON m.id = v.model_id";

fn check_status(status: &str) -> Result<(), StoreError> {
    if matches!(status, "draft" | "active" | "inactive") {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("policy status {status:?} is not one of draft, active, inactive")))
    }
}

impl Store {
    /// Stores a policy document. A document that differs from the latest version becomes a
    /// new version; the same document only changes status. Activating a version
    /// deactivates the other versions of the same policy.
    pub async fn apply_policy(
        &self,
        ctx: &AuditContext,
        name: &str,
        severity: &str,
        document: &serde_json::Value,
        source: &str,
        status: &str,
    ) -> Result<Applied, StoreError> {
        check_status(status)?;
        let now = self.now();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(source.as_bytes())));
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let latest: Option<PolicyRow> = conn
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = $1 ORDER BY version DESC LIMIT 1")),
                params![name],
            )
            .await?;
        let before = latest.map(PolicyRecord::from);
        let same = before.as_ref().is_some_and(|b| b.document == *document);
        let version = match &before {
            Some(b) if same => b.version,
            Some(b) => b.version + 1,
            None => 1,
        };
        if status == "active" {
            conn.execute(
                "UPDATE policies SET status = 'inactive', updated_at = $1, updated_by = $2 \
                 WHERE name = $3 AND status = 'active' AND version <> $4",
                params![now, &ctx.actor, name, version],
            )
            .await?;
        }
        if same {
            conn.execute(
                "UPDATE policies SET status = $1, updated_at = $2, updated_by = $3 WHERE name = $4 AND version = $5",
                params![status, now, &ctx.actor, name, version],
            )
            .await?;
        } else {
            conn.execute(
                "INSERT INTO policies (name, version, status, severity, document, source, digest, created_at, created_by, \
                 updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $9)",
                params![name, version, status, severity, document.to_string(), source, &digest, now, &ctx.actor],
            )
            .await
            .map_err(|e| {
                if e.is_unique_violation() {
                    StoreError::Conflict(format!("policy \"{name}\" was changed meanwhile; apply it again"))
                } else {
                    e
                }
            })?;
        }
        let row: PolicyRow = conn
            .fetch_one(
                sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = $1 AND version = $2")),
                params![name, version],
            )
            .await?;
        let after = PolicyRecord::from(row);
        let summary =
            |p: &PolicyRecord| serde_json::json!({"version": p.version, "status": p.status, "digest": p.digest});
        audit::record(
            &mut conn,
            ctx,
            now,
            "policy.apply",
            &format!("policy:{name}"),
            before.as_ref().map(summary).as_ref(),
            Some(&summary(&after)),
        )
        .await?;
        tx.commit().await?;
        Ok(Applied { policy: after, created: !same })
    }

    /// Sets the status of one version of a policy.
    pub async fn set_policy_status(
        &self,
        ctx: &AuditContext,
        name: &str,
        version: i64,
        status: &str,
    ) -> Result<PolicyRecord, StoreError> {
        check_status(status)?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before: Option<PolicyRow> = conn
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = $1 AND version = $2")),
                params![name, version],
            )
            .await?;
        let Some(before) = before.map(PolicyRecord::from) else {
            return Err(StoreError::NotFound(format!("policy \"{name}\" has no version {version}")));
        };
        if status == "active" {
            conn.execute(
                "UPDATE policies SET status = 'inactive', updated_at = $1, updated_by = $2 \
                 WHERE name = $3 AND status = 'active' AND version <> $4",
                params![now, &ctx.actor, name, version],
            )
            .await?;
        }
        conn.execute(
            "UPDATE policies SET status = $1, updated_at = $2, updated_by = $3 WHERE name = $4 AND version = $5",
            params![status, now, &ctx.actor, name, version],
        )
        .await?;
        let after: PolicyRow = conn
            .fetch_one(
                sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = $1 AND version = $2")),
                params![name, version],
            )
            .await?;
        let after = PolicyRecord::from(after);
        audit::record(
            &mut conn,
            ctx,
            now,
            "policy.status",
            &format!("policy:{name}"),
            Some(&serde_json::json!({"version": version, "status": before.status})),
            Some(&serde_json::json!({"version": version, "status": after.status})),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Policies: the latest version of each (or every version with `all_versions`),
    /// optionally only those with `status`, by name.
    pub async fn list_policies(
        &self,
        status: Option<&str>,
        all_versions: bool,
    ) -> Result<Vec<PolicyRecord>, StoreError> {
        if let Some(s) = status {
            check_status(s)?;
        }
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let latest = if all_versions {
            ""
        } else if status.is_some() {
            // The latest version *with that status*.
            " AND version = (SELECT MAX(p2.version) FROM policies p2 WHERE p2.name = policies.name AND p2.status = policies.status)"
        } else {
            " AND version = (SELECT MAX(p2.version) FROM policies p2 WHERE p2.name = policies.name)"
        };
        let rows: Vec<PolicyRow> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_POLICY} WHERE ($1 = '' OR status = $1){latest} ORDER BY name, version"
                )),
                params![status.unwrap_or("")],
            )
            .await?;
        Ok(rows.into_iter().map(PolicyRecord::from).collect())
    }

    /// The (name, version) of every active policy, by name: cheap enough to ask on every
    /// transition, so that callers fetch and compile only the versions they have not seen.
    pub async fn active_policy_versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn().fetch_all("SELECT name, version FROM policies WHERE status = 'active' ORDER BY name", vec![]).await
    }

    /// One policy: a given version, or the latest.
    pub async fn get_policy(&self, name: &str, version: Option<i64>) -> Result<PolicyRecord, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let row: Option<PolicyRow> = match version {
            Some(v) => {
                conn.fetch_optional(
                    sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = $1 AND version = $2")),
                    params![name, v],
                )
                .await?
            }
            None => {
                conn.fetch_optional(
                    sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = $1 ORDER BY version DESC LIMIT 1")),
                    params![name],
                )
                .await?
            }
        };
        row.map(PolicyRecord::from).ok_or_else(|| {
            StoreError::NotFound(match version {
                Some(v) => format!("policy \"{name}\" has no version {v}"),
                None => format!("there is no policy \"{name}\""),
            })
        })
    }

    /// Asks for an exception: `policy` is waived for this version until `expires_at`, once
    /// someone else approves it.
    #[allow(clippy::too_many_arguments)]
    pub async fn request_policy_exception(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        policy: &str,
        justification: &str,
        requester: &str,
        expires_at: i64,
    ) -> Result<PolicyException, StoreError> {
        let justification = justification.trim();
        if justification.chars().count() < 10 || justification.len() > 4000 {
            return Err(StoreError::Invalid("a justification of 10 to 4000 characters is required".into()));
        }
        let now = self.now();
        if expires_at <= now {
            return Err(StoreError::Invalid("an exception must expire in the future".into()));
        }
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let v = find(&mut conn, model, selector).await?;
        let known: Option<(i64,)> =
            conn.fetch_optional("SELECT version FROM policies WHERE name = $1 LIMIT 1", params![policy]).await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("there is no policy \"{policy}\"")));
        }
        let id = uuid::Uuid::now_v7().to_string();
        conn.execute(
            "INSERT INTO policy_exceptions (id, version_id, policy, justification, status, requested_by, requested_at, \
             expires_at) VALUES ($1, $2, $3, $4, 'requested', $5, $6, $7)",
            params![&id, v.id, policy, justification, requester, now, expires_at],
        )
        .await?;
        let e: PolicyException =
            conn.fetch_one(sqlx::AssertSqlSafe(format!("{SELECT_EXCEPTION} WHERE e.id = $1")), params![&id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "policy.exception.request",
            &target(model, v.version),
            None::<&()>,
            Some(&e),
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Decides an exception (`approved` or `rejected`) or revokes an approved one. The
    /// requester cannot decide their own request.
    pub async fn decide_policy_exception(
        &self,
        ctx: &AuditContext,
        id: &str,
        status: &str,
        decider: &str,
        note: &str,
    ) -> Result<PolicyException, StoreError> {
        if !matches!(status, "approved" | "rejected" | "revoked") {
            return Err(StoreError::Invalid(format!("decision {status:?} is not one of approved, rejected, revoked")));
        }
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before: Option<PolicyException> = conn
            .fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_EXCEPTION} WHERE e.id = $1")), params![id])
            .await?;
        let Some(before) = before else {
            return Err(StoreError::NotFound(format!("there is no policy exception {id}")));
        };
        let allowed_from = if status == "revoked" { "approved" } else { "requested" };
        if before.status != allowed_from {
            return Err(StoreError::Conflict(format!(
                "exception {id} is {}; only a {allowed_from} exception can be {status}",
                before.status
            )));
        }
        if before.requested_by == decider && status != "revoked" {
            return Err(StoreError::Forbidden("the requester of an exception cannot decide it".into()));
        }
        conn.execute(
            "UPDATE policy_exceptions SET status = $1, decided_by = $2, decided_at = $3, decision_note = $4 \
             WHERE id = $5 AND status = $6",
            params![status, decider, now, note, id, allowed_from],
        )
        .await?;
        let after: PolicyException =
            conn.fetch_one(sqlx::AssertSqlSafe(format!("{SELECT_EXCEPTION} WHERE e.id = $1")), params![id]).await?;
        let model = ModelRef::parse(&before.model).map_err(|e| StoreError::Invalid(e.to_string()))?;
        audit::record(
            &mut conn,
            ctx,
            now,
            match status {
                "approved" => "policy.exception.approve",
                "rejected" => "policy.exception.reject",
                _ => "policy.exception.revoke",
            },
            &target(&model, before.version),
            Some(&before),
            Some(&after),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The exceptions of a version, newest first.
    pub async fn policy_exceptions(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<Vec<PolicyException>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        conn.fetch_all(
            sqlx::AssertSqlSafe(format!(
                "{SELECT_EXCEPTION} WHERE e.version_id = $1 ORDER BY e.requested_at DESC, e.id"
            )),
            params![v.id],
        )
        .await
    }

    /// The exceptions waiting for a decision, oldest first.
    pub async fn pending_policy_exceptions(&self, limit: usize) -> Result<Vec<PolicyException>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_EXCEPTION} WHERE e.status = 'requested' ORDER BY e.requested_at, e.id LIMIT $1"
                )),
                params![i64::try_from(limit.clamp(1, 1000)).unwrap_or(100)],
            )
            .await
    }
}
