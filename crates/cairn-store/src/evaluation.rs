//! What is known about a version beyond its files: its model card (source, canonical form,
//! completeness and findings, checked by `cairn-card` before it gets here), the evaluation
//! suites of its namespace, and the evaluation results submitted for it.

use std::collections::BTreeMap;

use cairn_core::{ModelRef, Namespace, VersionSelector};
use serde::Serialize;

use crate::db::{Conn, Param};
use crate::version::{Version, find, target};
use crate::{AuditContext, Store, StoreError, audit, namespace, params};

/// A version's model card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct VersionCard {
    /// The source's file name (`card.yaml`, `README.md`).
    pub source_name: String,
    /// The card source as pushed.
    pub source: String,
    /// `sha256:` of the source.
    pub digest: String,
    /// The canonical card (JSON), with the evaluation results given at push merged in.
    pub card: String,
    /// Completeness per standard (JSON object: standard → score 0–1).
    pub completeness: String,
    /// Validation and secret-scan findings (JSON array).
    pub findings: String,
    /// When (ms).
    pub created_at: i64,
    /// By whom.
    pub created_by: String,
}

/// The facts of a card that search filters on, kept in columns of `version_cards` beside the
/// canonical JSON so that a filter compares columns instead of parsing every card.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CardFacts {
    /// `model.license`, as the card gives it (SPDX identifiers; filters ignore its case).
    pub license: Option<String>,
    /// `model.pipeline_tag` (`text-classification`), or else `evaluation.task`.
    pub task: Option<String>,
}

impl CardFacts {
    /// Reads the facts from a canonical card (JSON). Only non-blank strings count; a card that
    /// is not JSON has none. Migration 0008 applies the same rules to the cards stored before it.
    pub(crate) fn of(card: &str) -> Self {
        let Ok(card) = serde_json::from_str::<serde_json::Value>(card) else {
            return Self::default();
        };
        let text = |pointer: &str| {
            card.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.trim_matches(' ').is_empty())
                .map(str::to_owned)
        };
        Self { license: text("/model/license"), task: text("/model/pipeline_tag").or_else(|| text("/evaluation/task")) }
    }
}

/// The metric values a card claims, as search and the policy facts read them: by name, an
/// entry without dataset, split or slice first, else the first entry of that name.
pub fn card_metrics(card: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, (f64, bool)> = BTreeMap::new();
    for m in card.pointer("/evaluation/metrics").and_then(serde_json::Value::as_array).into_iter().flatten() {
        let (Some(name), Some(value)) =
            (m.get("name").and_then(|v| v.as_str()), m.get("value").and_then(|v| v.as_f64()))
        else {
            continue;
        };
        let qualified = ["dataset", "split", "slice"].iter().any(|k| m.get(*k).is_some_and(|v| !v.is_null()));
        match out.get(name) {
            Some((_, false)) => {}
            Some((_, true)) if qualified => {}
            _ => {
                out.insert(name.to_owned(), (value, qualified));
            }
        }
    }
    out.into_iter().filter(|(_, (v, _))| v.is_finite()).map(|(k, (v, _))| (k, v)).collect()
}

/// An evaluation suite of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSuite {
    /// The namespace.
    pub namespace: String,
    /// The suite's name.
    pub name: String,
    /// Whether a version must pass it before production.
    pub required: bool,
    /// The definition (`cairn_core::evaluation::SuiteDef` as JSON).
    pub definition: serde_json::Value,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Updated by.
    pub updated_by: String,
}

#[derive(sqlx::FromRow)]
struct SuiteRow {
    namespace: String,
    name: String,
    required: bool,
    definition: String,
    created_at: i64,
    created_by: String,
    updated_at: i64,
    updated_by: String,
}

impl From<SuiteRow> for EvalSuite {
    fn from(r: SuiteRow) -> Self {
        Self {
            namespace: r.namespace,
            name: r.name,
            required: r.required,
            definition: serde_json::from_str(&r.definition).unwrap_or(serde_json::Value::Null),
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

const SELECT_SUITE: &str = "SELECT n.name AS namespace, s.name, s.required, s.definition, s.created_at, s.created_by, \
    s.updated_at, s.updated_by FROM eval_suites s JOIN namespaces n ON n.id = s.namespace_id";

/// One submitted evaluation result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Its id.
    pub id: String,
    /// The suite it was judged against (or `adhoc` for results outside any suite).
    pub suite: String,
    /// Whether every threshold passed.
    pub passed: bool,
    /// Per-metric outcomes (`cairn_core::evaluation::MetricOutcome` list as JSON).
    pub metrics: serde_json::Value,
    /// Dataset and harness configuration it ran with.
    pub config: serde_json::Value,
    /// Who submitted it.
    pub submitted_by: String,
    /// When (ms).
    pub submitted_at: i64,
}

#[derive(sqlx::FromRow)]
struct ResultRow {
    id: String,
    suite: String,
    passed: bool,
    metrics: String,
    config: String,
    submitted_by: String,
    submitted_at: i64,
}

impl From<ResultRow> for EvalResult {
    fn from(r: ResultRow) -> Self {
        Self {
            id: r.id,
            suite: r.suite,
            passed: r.passed,
            metrics: serde_json::from_str(&r.metrics).unwrap_or(serde_json::Value::Null),
            config: serde_json::from_str(&r.config).unwrap_or(serde_json::Value::Null),
            submitted_by: r.submitted_by,
            submitted_at: r.submitted_at,
        }
    }
}

/// A result to store.
#[derive(Debug, Clone)]
pub struct NewEvalResult {
    /// The suite.
    pub suite: String,
    /// The verdict.
    pub passed: bool,
    /// Per-metric outcomes.
    pub metrics: serde_json::Value,
    /// Configuration.
    pub config: serde_json::Value,
    /// Submitter (account name).
    pub submitted_by: String,
}

impl Store {
    /// Attaches a card to a version. A card can be attached or replaced only while the
    /// version is a draft or has changes requested: what reviewers approved stays fixed.
    pub async fn set_version_card(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        card: &VersionCard,
    ) -> Result<VersionCard, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let v = find(&mut conn, model, selector).await?;
        if !matches!(v.stage.as_str(), "draft" | "changes_requested") {
            return Err(StoreError::Conflict(format!(
                "version {} of \"{model}\" is {}; its card can change only in draft or changes_requested \
                 (push a new version instead)",
                v.version, v.stage
            )));
        }
        let before: Option<(String,)> =
            conn.fetch_optional("SELECT digest FROM version_cards WHERE version_id = $1", params![v.id]).await?;
        conn.execute("DELETE FROM version_cards WHERE version_id = $1", params![v.id]).await?;
        let facts = CardFacts::of(&card.card);
        // The card's claims stand for the metrics no evaluation has measured.
        conn.execute("DELETE FROM version_metrics WHERE version_id = $1 AND source = 'card'", params![v.id]).await?;
        let claimed = serde_json::from_str(&card.card).map(|c| card_metrics(&c)).unwrap_or_default();
        for (name, value) in &claimed {
            conn.execute(
                "INSERT INTO version_metrics (version_id, name, value, source, at) VALUES ($1, $2, $3, 'card', $4) \
                 ON CONFLICT (version_id, name) DO NOTHING",
                params![v.id, name, Param::Real(*value), now],
            )
            .await?;
        }
        conn.execute(
            "INSERT INTO version_cards (version_id, source_name, source, digest, card, completeness, findings, \
             created_at, created_by, license, task) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            params![
                v.id,
                &card.source_name,
                &card.source,
                &card.digest,
                &card.card,
                &card.completeness,
                &card.findings,
                now,
                &ctx.actor,
                facts.license,
                facts.task
            ],
        )
        .await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "version.card.set",
            &target(model, v.version),
            before.map(|(d,)| serde_json::json!({"digest": d})).as_ref(),
            Some(&serde_json::json!({"digest": card.digest, "source_name": card.source_name})),
        )
        .await?;
        let stored: VersionCard = conn
            .fetch_one(
                "SELECT source_name, source, digest, card, completeness, findings, created_at, created_by \
                 FROM version_cards WHERE version_id = $1",
                params![v.id],
            )
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// A version's card, if it has one.
    pub async fn version_card(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<Option<VersionCard>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        conn.fetch_optional(
            "SELECT source_name, source, digest, card, completeness, findings, created_at, created_by \
             FROM version_cards WHERE version_id = $1",
            params![v.id],
        )
        .await
    }

    /// Creates or replaces an evaluation suite of a namespace (which must exist).
    pub async fn put_eval_suite(
        &self,
        ctx: &AuditContext,
        ns: &Namespace,
        name: &str,
        required: bool,
        definition: &serde_json::Value,
    ) -> Result<EvalSuite, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let ns_id = namespace::id_of(&mut conn, ns).await?;
        let before: Option<SuiteRow> = conn
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("{SELECT_SUITE} WHERE s.namespace_id = $1 AND s.name = $2")),
                params![ns_id, name],
            )
            .await?;
        conn.execute(
            "INSERT INTO eval_suites (namespace_id, name, required, definition, created_at, created_by, updated_at, \
             updated_by) VALUES ($1, $2, $3, $4, $5, $6, $5, $6) ON CONFLICT (namespace_id, name) DO UPDATE SET \
             required = excluded.required, definition = excluded.definition, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
            params![ns_id, name, required, definition.to_string(), now, &ctx.actor],
        )
        .await?;
        let after: SuiteRow = conn
            .fetch_one(
                sqlx::AssertSqlSafe(format!("{SELECT_SUITE} WHERE s.namespace_id = $1 AND s.name = $2")),
                params![ns_id, name],
            )
            .await?;
        let after = EvalSuite::from(after);
        audit::record(
            &mut conn,
            ctx,
            now,
            "eval.suite.put",
            &format!("suite:{ns}/{name}"),
            before.map(EvalSuite::from).as_ref(),
            Some(&after),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The suites of a namespace, by name.
    pub async fn list_eval_suites(&self, ns: &Namespace) -> Result<Vec<EvalSuite>, StoreError> {
        let mut c = self.db.read().await?;
        let rows: Vec<SuiteRow> = c
            .conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!("{SELECT_SUITE} WHERE n.name = $1 ORDER BY s.name")),
                params![ns.as_str()],
            )
            .await?;
        Ok(rows.into_iter().map(EvalSuite::from).collect())
    }

    /// One suite.
    pub async fn get_eval_suite(&self, ns: &Namespace, name: &str) -> Result<EvalSuite, StoreError> {
        let mut c = self.db.read().await?;
        let row: Option<SuiteRow> = c
            .conn()
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("{SELECT_SUITE} WHERE n.name = $1 AND s.name = $2")),
                params![ns.as_str(), name],
            )
            .await?;
        row.map(EvalSuite::from)
            .ok_or_else(|| StoreError::NotFound(format!("namespace \"{ns}\" has no evaluation suite \"{name}\"")))
    }

    /// Deletes a suite.
    pub async fn delete_eval_suite(&self, ctx: &AuditContext, ns: &Namespace, name: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let ns_id = namespace::id_of(&mut conn, ns).await?;
        let removed =
            conn.execute("DELETE FROM eval_suites WHERE namespace_id = $1 AND name = $2", params![ns_id, name]).await?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!("namespace \"{ns}\" has no evaluation suite \"{name}\"")));
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "eval.suite.delete",
            &format!("suite:{ns}/{name}"),
            None::<&()>,
            None::<&()>,
        )
        .await?;
        tx.commit().await
    }

    /// Stores an evaluation result for a version, audited; a failed result raises the
    /// `evaluation.failed` webhook event in the same transaction.
    pub async fn submit_eval_result(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        result: &NewEvalResult,
    ) -> Result<EvalResult, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let v = find(&mut conn, model, selector).await?;
        let stored = insert_result(&mut conn, ctx, now, model, &v, result).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The evaluation results of a version, oldest first.
    pub async fn eval_results(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<Vec<EvalResult>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        let rows: Vec<ResultRow> = conn
            .fetch_all(
                "SELECT id, suite, passed, metrics, config, submitted_by, submitted_at FROM eval_results \
                 WHERE version_id = $1 ORDER BY submitted_at, id LIMIT 10000",
                params![v.id],
            )
            .await?;
        Ok(rows.into_iter().map(EvalResult::from).collect())
    }
}

/// Stores a judged result for version `v` with its `evaluation.failed` webhook event (when it
/// fails) and its `eval.result.submit` audit record, in the caller's transaction.
pub(crate) async fn insert_result(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    v: &Version,
    result: &NewEvalResult,
) -> Result<EvalResult, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO eval_results (id, version_id, suite, passed, metrics, config, submitted_by, submitted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![
            &id,
            v.id,
            &result.suite,
            result.passed,
            result.metrics.to_string(),
            result.config.to_string(),
            &result.submitted_by,
            now
        ],
    )
    .await?;
    // What it measured is now the version's value of each metric.
    for m in result.metrics.as_array().into_iter().flatten() {
        let (Some(name), Some(value)) =
            (m.get("name").and_then(|v| v.as_str()), m.get("value").and_then(|v| v.as_f64()))
        else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        conn.execute(
            "INSERT INTO version_metrics (version_id, name, value, source, at) VALUES ($1, $2, $3, 'evaluation', $4) \
             ON CONFLICT (version_id, name) DO UPDATE SET value = excluded.value, source = 'evaluation', at = excluded.at",
            params![v.id, name, Param::Real(value), now],
        )
        .await?;
    }
    let stored = EvalResult {
        id,
        suite: result.suite.clone(),
        passed: result.passed,
        metrics: result.metrics.clone(),
        config: result.config.clone(),
        submitted_by: result.submitted_by.clone(),
        submitted_at: now,
    };
    if !result.passed {
        let payload = serde_json::json!({
            "model": model.to_string(), "version": v.version, "suite": result.suite, "metrics": result.metrics,
        });
        crate::webhook::enqueue(conn, now, model.namespace.as_str(), "evaluation.failed", &payload).await?;
    }
    audit::record(
        conn,
        ctx,
        now,
        "eval.result.submit",
        &target(model, v.version),
        None::<&()>,
        Some(&serde_json::json!({
            "id": stored.id, "suite": stored.suite, "passed": stored.passed, "metrics": stored.metrics,
        })),
    )
    .await?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::CardFacts;

    fn facts(license: Option<&str>, task: Option<&str>) -> CardFacts {
        CardFacts { license: license.map(str::to_owned), task: task.map(str::to_owned) }
    }

    #[test]
    fn card_facts_come_from_the_licence_and_the_pipeline_tag() {
        let card = r#"{"model": {"license": "Apache-2.0", "pipeline_tag": "text-classification"},
                       "evaluation": {"task": "sentiment"}}"#;
        assert_eq!(CardFacts::of(card), facts(Some("Apache-2.0"), Some("text-classification")));
        // Without a pipeline tag, the evaluation's task.
        assert_eq!(CardFacts::of(r#"{"model": {}, "evaluation": {"task": "ner"}}"#), facts(None, Some("ner")));
        // Blank, non-string and missing values are no facts; neither is a card that is not JSON.
        assert_eq!(CardFacts::of(r#"{"model": {"license": " ", "pipeline_tag": 3}}"#), facts(None, None));
        assert_eq!(CardFacts::of(r#"{"model": "mit"}"#), facts(None, None));
        assert_eq!(CardFacts::of("not json"), facts(None, None));
    }
}
