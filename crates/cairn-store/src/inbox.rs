//! The reviewers' inbox: versions waiting at an approval gate (`submitted` waits at the
//! staging gate, `staging` at the production gate), oldest first, in the namespaces a
//! reviewer may review.

use serde::Serialize;

use crate::db::Param;
use crate::page::placeholders;
use crate::{Store, StoreError};

/// A version waiting for reviews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Waiting {
    /// The model's namespace.
    pub namespace: String,
    /// The model's name.
    pub name: String,
    /// The version number.
    pub version: i64,
    /// Its semver label, if any.
    pub semver: Option<String>,
    /// `submitted` or `staging`.
    pub stage: String,
    /// The model's risk tier.
    pub risk_tier: String,
    /// Who submitted it.
    pub submitted_by: String,
    /// The review round it is in.
    pub review_round: i64,
    /// Since when it has been waiting (ms).
    pub waiting_since: i64,
}

impl Store {
    /// Versions waiting at an approval gate, oldest first (at most `limit`, 1–1000), in
    /// `namespaces` (`None`: every namespace).
    pub async fn review_inbox(&self, namespaces: Option<&[String]>, limit: usize) -> Result<Vec<Waiting>, StoreError> {
        let mut sql = String::from(
            "SELECT n.name AS namespace, m.name AS name, v.number AS version, v.semver AS semver, v.stage AS stage, \
             m.risk_tier AS risk_tier, v.submitted_by AS submitted_by, v.review_round AS review_round, \
             v.stage_changed_at AS waiting_since \
             FROM versions v JOIN models m ON m.id = v.model_id JOIN namespaces n ON n.id = m.namespace_id \
             WHERE v.stage IN ('submitted', 'staging')",
        );
        let mut params: Vec<Param> = Vec::new();
        if let Some(list) = namespaces {
            if list.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND n.name IN ");
            sql.push_str(&placeholders(1, list.len()));
            params.extend(list.iter().map(Param::from));
        }
        sql.push_str(&format!(" ORDER BY v.stage_changed_at, v.id LIMIT ${}", params.len() + 1));
        params.push(Param::from(i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000)));
        let mut c = self.db.read().await?;
        c.conn().fetch_all(sqlx::AssertSqlSafe(sql), params).await
    }
}
