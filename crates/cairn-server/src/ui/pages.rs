//! Reading pages: the model list with search and filters, a model, a version (files, card,
//! evaluations, lineage, signatures, policy results, lifecycle) and the comparison of two
//! versions.

use axum::extract::{Path, Query, State};
use cairn_api_types as api;
use cairn_core::Permission;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::svg::{self, Bar, Node};
use super::templates::render;
use super::{Me, UiResult, Viewer, urlencode};
use crate::app::AppState;
use crate::error::{ApiError, ApiQuery};
use crate::routes::{deploy, lifecycle, models, versions};

/// Query of `GET /ui/models`: search text and filters, each optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ModelSearch {
    /// Text searched in names and descriptions.
    #[serde(default)]
    pub q: String,
    /// Only this namespace.
    #[serde(default)]
    pub namespace: String,
    /// `key=value`: only models with this tag.
    #[serde(default)]
    pub tag: String,
    /// Only models with a version in this lifecycle stage.
    #[serde(default)]
    pub stage: String,
    /// Only models with a version whose card names this licence.
    #[serde(default)]
    pub license: String,
    /// Only models with a version whose card names this task.
    #[serde(default)]
    pub task: String,
    /// Sort order (`name`, `-updated_at`, …).
    #[serde(default)]
    pub order: String,
    /// The next page.
    #[serde(default)]
    pub page_token: String,
}

/// Quotes `s` as a filter string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Escapes `LIKE` wildcards so that `s` matches only itself.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl ModelSearch {
    /// The search as a filter of the shared filter language (docs/SEARCH.md).
    pub fn filter(&self) -> Result<Option<String>, ApiError> {
        let mut parts = Vec::new();
        let q = self.q.trim();
        if !q.is_empty() {
            let pattern = literal(&format!("%{}%", like_escape(q)));
            parts.push(format!("(full_name ILIKE {pattern} OR description ILIKE {pattern})"));
        }
        for (field, value) in
            [("namespace", &self.namespace), ("stage", &self.stage), ("license", &self.license), ("task", &self.task)]
        {
            let v = value.trim();
            if !v.is_empty() {
                parts.push(format!("{field} = {}", literal(v)));
            }
        }
        let tag = self.tag.trim();
        if !tag.is_empty() {
            let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
            let k = k.trim();
            if k.is_empty() || k.contains('`') {
                return Err(ApiError::invalid("a tag filter is key=value (or just key), and a key has no backquote"));
            }
            if v.trim().is_empty() {
                parts.push(format!("tags.`{k}` IS NOT NULL"));
            } else {
                parts.push(format!("tags.`{k}` = {}", literal(v.trim())));
            }
        }
        Ok(if parts.is_empty() { None } else { Some(parts.join(" AND ")) })
    }

    /// This search's query string with another page token (for the "next page" link).
    fn with_page(&self, token: &str) -> String {
        let next = Self { page_token: token.to_owned(), ..self.clone() };
        serde_urlencoded::to_string(&next).unwrap_or_default()
    }
}

/// The stages a version can be in, for the filter's choices.
const STAGES: [&str; 9] = [
    "draft",
    "submitted",
    "changes_requested",
    "approved_staging",
    "staging",
    "approved_prod",
    "production",
    "deprecated",
    "retired",
];

/// `GET /ui/models`.
pub async fn models(State(state): State<AppState>, viewer: Viewer, Query(search): Query<ModelSearch>) -> UiResult {
    let me = Me::of(&state, &viewer);
    let order = match search.order.as_str() {
        "" => None,
        o @ ("name" | "-name" | "created_at" | "-created_at" | "updated_at" | "-updated_at") => Some(o.to_owned()),
        other => return Err(ApiError::invalid(format!("unknown order {other:?}")).into()),
    };
    let listing = match search.filter() {
        Ok(filter) => {
            let q = models::ListModelsQuery {
                limit: Some(50),
                page_token: (!search.page_token.is_empty()).then(|| search.page_token.clone()),
                order_by: order,
                filter,
            };
            models::list_models(State(state.clone()), viewer.caller.clone(), ApiQuery(q)).await
        }
        Err(e) => Err(e),
    };
    let (models, next, error) = match listing {
        Ok(axum::Json(list)) => {
            let next = list.next_page_token.as_deref().map(|t| search.with_page(t));
            (list.models, next, None)
        }
        // A search that does not parse is the person's to fix: show it on the page.
        Err(e) if e.status == axum::http::StatusCode::BAD_REQUEST => (Vec::new(), None, Some(e.message)),
        Err(e) => return Err(e.into()),
    };
    Ok(render(
        "models.html",
        context! { me, nav => "models", title => "Models", models, next, error, search, stages => STAGES },
    ))
}

/// `GET /ui/models/{namespace}/{name}`.
pub async fn model(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((namespace, name)): Path<(String, String)>,
) -> UiResult {
    let me = Me::of(&state, &viewer);
    let axum::Json(model) =
        models::get_model(State(state.clone()), viewer.caller.clone(), Path((namespace.clone(), name.clone()))).await?;
    let q = versions::ListVersionsQuery { limit: Some(200), page_token: None, order_by: None, filter: None };
    let axum::Json(list) =
        versions::list_versions(State(state.clone()), viewer.caller.clone(), Path((namespace, name)), ApiQuery(q))
            .await?;
    let title = model.full_name.clone();
    // Where it runs: the latest deployments, for whoever may see them (an account without the
    // second factor the deployment API asks for sees the section's note instead).
    let q = deploy::ListQuery { environment: None, model: Some(title.clone()), limit: Some(20), before: None };
    let deployments = match deploy::list_deployments(State(state.clone()), viewer.caller.clone(), ApiQuery(q)).await {
        Ok(axum::Json(list)) => Some(list.deployments),
        Err(e) if e.status == axum::http::StatusCode::FORBIDDEN => None,
        Err(e) => return Err(e.into()),
    };
    Ok(render(
        "model.html",
        context! {
            me, nav => "models", title, model, versions => list.versions, more => list.next_page_token.is_some(),
            deployments,
        },
    ))
}

/// The bars of the chart: every metric of the latest result of each suite.
fn chart_bars(results: &[api::EvalResult]) -> Vec<Bar> {
    let mut latest: Vec<&api::EvalResult> = Vec::new();
    for r in results.iter().rev() {
        if !latest.iter().any(|l| l.suite == r.suite) {
            latest.push(r);
        }
    }
    latest.reverse();
    let mut bars = Vec::new();
    for r in latest {
        for m in r.metrics.as_array().into_iter().flatten() {
            let Some(value) = m.get("value").and_then(serde_json::Value::as_f64) else { continue };
            bars.push(Bar {
                label: format!("{} / {}", r.suite, m.get("name").and_then(|n| n.as_str()).unwrap_or("?")),
                value,
                at_least: m.get("at_least").and_then(serde_json::Value::as_f64),
                at_most: m.get("at_most").and_then(serde_json::Value::as_f64),
                passed: m.get("passed").and_then(serde_json::Value::as_bool).unwrap_or(false),
            });
        }
    }
    bars
}

fn lineage(model: &str, v: &api::Version, recorded: &[api::LineageEdge]) -> String {
    let mut inputs = Vec::new();
    for e in recorded {
        let (kind, value) = match e.kind.as_str() {
            "dataset" if !e.reference.is_empty() => ("dataset", format!("{}@{}", e.name, e.reference)),
            "dataset" => ("dataset", e.name.clone()),
            "run" => ("run", format!("{}:{}", e.platform, e.name)),
            "code" => ("code", format!("{}@{}", e.name, e.reference.get(..12).unwrap_or(&e.reference))),
            _ if e.from.starts_with("version:") => ("base model", format!("{}:{}", e.name, e.reference)),
            _ if e.reference.is_empty() => ("base model", e.name.clone()),
            _ => ("base model", format!("{}@{}", e.name, e.reference)),
        };
        inputs.push(Node { kind: kind.into(), value });
    }
    if !v.code_commit.is_empty() {
        inputs.push(Node { kind: "code commit".into(), value: v.code_commit.clone() });
    }
    if !v.training_job.is_empty() {
        inputs.push(Node { kind: "training job".into(), value: v.training_job.clone() });
    }
    if !v.run_id.is_empty() {
        inputs.push(Node { kind: "run".into(), value: v.run_id.clone() });
    }
    if !v.source.is_empty() {
        inputs.push(Node { kind: "source".into(), value: v.source.clone() });
    }
    let label = v.semver.as_ref().map_or_else(|| format!("{model}:{}", v.version), |s| format!("{model}:{s}"));
    svg::lineage_graph(&inputs, &Node { kind: "version".into(), value: label })
}

/// The card as sanitised HTML (`None` when the version has no card).
async fn card_html(state: &AppState, viewer: &Viewer, path: (String, String, String)) -> UiResult<Option<String>> {
    let q = lifecycle::CardQuery { format: Some("html".into()) };
    let resp = match lifecycle::get_card(State(state.clone()), viewer.caller.clone(), Path(path), ApiQuery(q)).await {
        Ok(r) => r,
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = axum::body::to_bytes(resp.into_body(), 4 * 1024 * 1024)
        .await
        .map_err(|_| ApiError::invalid("the rendered card is too large to show"))?;
    let html = String::from_utf8_lossy(&bytes);
    Ok(Some(sanitize(&html)))
}

/// Keeps the structure and text of rendered card HTML and drops everything active: scripts,
/// styles, event handlers, frames, forms and foreign links' referrers.
pub fn sanitize(html: &str) -> String {
    ammonia::Builder::default().link_rel(Some("noopener noreferrer nofollow")).clean(html).to_string()
}

/// One signature as the version page shows it: who signed, and whether it checks out.
#[derive(Debug, Serialize)]
struct SignatureRow {
    kind: String,
    key_id: String,
    ok: bool,
    status: String,
}

/// Checks each signature: the Ed25519 signature over its statement, that the statement names
/// this model, version and manifest digest, and (for server signatures) that the key is one
/// of this server's signing keys.
fn check_signatures(model: &str, sigs: &api::VersionSignatures, server_keys: &[String]) -> Vec<SignatureRow> {
    sigs.signatures
        .iter()
        .map(|s| {
            let envelope = cairn_audit::statement::SignatureEnvelope {
                kind: s.kind.clone(),
                statement: s.statement.clone(),
                key_id: s.key_id.clone(),
                public_key: s.public_key.clone(),
                signature: s.signature.clone(),
            };
            let statement: serde_json::Value = serde_json::from_str(&s.statement).unwrap_or_default();
            let about_this = statement["model"] == model
                && statement["manifest_digest"] == sigs.digest.as_str()
                && (s.kind != "server" || statement["version"] == sigs.version);
            let (ok, status) = match (envelope.verify_self().is_some(), about_this) {
                (false, _) => (false, "INVALID: the signature does not match its statement".to_owned()),
                (true, false) => (false, "INVALID: the signed statement is about another version".to_owned()),
                (true, true) if s.kind == "server" && !server_keys.contains(&s.key_id) => {
                    (false, "valid signature, but by a key this server does not know".to_owned())
                }
                (true, true) if s.kind == "server" => (true, "valid, by this server's signing key".to_owned()),
                (true, true) => (true, "valid signature by the pusher's own key".to_owned()),
            };
            SignatureRow { kind: s.kind.clone(), key_id: s.key_id.clone(), ok, status }
        })
        .collect()
}

fn ok_or_none<T>(r: Result<axum::Json<T>, ApiError>) -> UiResult<Option<T>> {
    match r {
        Ok(axum::Json(v)) => Ok(Some(v)),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Notices a form handler passes back on the redirect.
#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    /// What happened (shown as a status message).
    #[serde(default)]
    pub notice: String,
    /// What went wrong (shown as an alert).
    #[serde(default)]
    pub error: String,
}

/// `GET /ui/models/{namespace}/{name}/versions/{version}`.
pub async fn version(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((namespace, name, version)): Path<(String, String, String)>,
    Query(flash): Query<Flash>,
) -> UiResult {
    let me = Me::of(&state, &viewer);
    let path = (namespace.clone(), name.clone(), version.clone());
    let (s, c) = (&state, &viewer.caller);
    let axum::Json(v) = versions::get_version(State(s.clone()), c.clone(), Path(path)).await?;
    // The rest reads the version found (not the label or alias, which could move meanwhile),
    // all at once: each read is an API handler with its own queries.
    let path = (namespace.clone(), name.clone(), v.version.to_string());
    let at = || Path(path.clone());
    let jobs_query = crate::routes::eval_jobs::ListQuery {
        namespace: None,
        model: Some(format!("{namespace}/{name}")),
        version: Some(v.version),
        state: None,
        limit: Some(20),
        before: None,
    };
    let (files, life, card, card_info, evals, jobs, policy, sigs, scan, recorded) = tokio::join!(
        crate::routes::files::list_files(State(s.clone()), c.clone(), at()),
        lifecycle::get_lifecycle(State(s.clone()), c.clone(), at()),
        card_html(s, &viewer, path.clone()),
        lifecycle::get_card_info(State(s.clone()), c.clone(), at()),
        lifecycle::list_evaluations(State(s.clone()), c.clone(), at()),
        crate::routes::eval_jobs::list_jobs(State(s.clone()), c.clone(), ApiQuery(jobs_query)),
        lifecycle::list_policy_results(
            State(s.clone()),
            c.clone(),
            at(),
            ApiQuery(lifecycle::ResultsQuery { limit: Some(100) })
        ),
        versions::get_signatures(State(s.clone()), c.clone(), at()),
        crate::routes::scan::get_scan(State(s.clone()), c.clone(), at()),
        crate::routes::lineage::get_lineage(State(s.clone()), c.clone(), at()),
    );
    let files = ok_or_none(files)?;
    let axum::Json(life) = life?;
    let card = card?;
    let card_info = ok_or_none(card_info)?;
    let evals = ok_or_none(evals)?.map(|l| l.results).unwrap_or_default();
    let jobs = ok_or_none(jobs)?.map(|l| l.jobs).unwrap_or_default();
    let policy = ok_or_none(policy)?.unwrap_or_default();
    let sigs = ok_or_none(sigs)?;
    let scan = ok_or_none(scan)?;
    let recorded = ok_or_none(recorded)?.map(|l| l.inputs).unwrap_or_default();
    let mut server_keys = vec![state.signing_key.public().key_id()];
    if sigs.as_ref().is_some_and(|x| !x.signatures.is_empty()) {
        server_keys.extend(state.store.signing_keys().await.map_err(ApiError::from)?.into_iter().map(|k| k.key_id));
    }
    let signatures =
        sigs.as_ref().map(|x| check_signatures(&format!("{namespace}/{name}"), x, &server_keys)).unwrap_or_default();
    let bars = chart_bars(&evals);
    let chart = (!bars.is_empty()).then(|| svg::metrics_chart("Latest evaluation of each suite", &bars));
    let model_name = format!("{namespace}/{name}");
    let lineage = lineage(&model_name, &v, &recorded);
    let p = &viewer.caller.principal;
    // What to offer; the server decides again when a form arrives.
    let review_roles: Vec<&str> = if life.gate.is_some() && p.check(Permission::VersionReview, Some(&namespace)).is_ok()
    {
        [cairn_core::Role::Mrc, cairn_core::Role::Security, cairn_core::Role::Sre]
            .into_iter()
            .filter(|r| p.grants.iter().any(|g| g.role == *r && g.namespace.as_deref().is_none_or(|n| n == namespace)))
            .map(|r| r.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let actions: Vec<String> = life
        .next_actions
        .iter()
        .filter(|a| {
            let needed = if a.as_str() == "submit" { Permission::ModelWrite } else { Permission::VersionPromote };
            p.check(needed, Some(&namespace)).is_ok()
        })
        .cloned()
        .collect();
    let current_round: Vec<&api::Review> = life.reviews.iter().filter(|r| r.round == life.review_round).collect();
    let title = format!("{model_name} version {}", v.version);
    let base = format!("/ui/models/{}/{}/versions/{}", urlencode(&namespace), urlencode(&name), v.version);
    Ok(render(
        "version.html",
        context! {
            me, nav => "models", title, model => model_name, namespace, name, v, files, life, card, card_info,
            evals, jobs, chart, policy, sigs, signatures, lineage, review_roles, actions, current_round, base, scan,
            notice => flash.notice, error => flash.error,
        },
    ))
}

/// Query of the comparison page.
#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    /// The older version (number, label or @alias).
    pub a: String,
    /// The newer version.
    pub b: String,
}

/// `GET /ui/models/{namespace}/{name}/compare?a=&b=`: card and metrics side by side.
pub async fn compare(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<CompareQuery>,
) -> UiResult {
    let me = Me::of(&state, &viewer);
    let (s, c) = (&state, &viewer.caller);
    let path_b = (namespace.clone(), name.clone(), q.b.clone());
    let path_a = (namespace.clone(), name.clone(), q.a.clone());
    let axum::Json(va) = versions::get_version(State(s.clone()), c.clone(), Path(path_a)).await?;
    let axum::Json(vb) = versions::get_version(State(s.clone()), c.clone(), Path(path_b.clone())).await?;
    let dq = lifecycle::DiffQuery { against: Some(va.version.to_string()) };
    let diff = match lifecycle::card_diff(State(s.clone()), c.clone(), Path(path_b), ApiQuery(dq)).await {
        Ok(axum::Json(d)) => Some(d),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e.into()),
    };
    let model_name = format!("{namespace}/{name}");
    let title = format!("{model_name}: version {} and {}", va.version, vb.version);
    Ok(render(
        "compare.html",
        context! { me, nav => "models", title, model => model_name, namespace, name, a => va, b => vb, diff },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_become_filters_with_every_value_quoted() {
        let s = ModelSearch {
            q: "it's 100%".into(),
            namespace: "nlp".into(),
            tag: "task=ner".into(),
            stage: "production".into(),
            license: "mit".into(),
            ..ModelSearch::default()
        };
        let f = s.filter().unwrap().unwrap();
        assert_eq!(
            f,
            "(full_name ILIKE '%it''s 100\\%%' OR description ILIKE '%it''s 100\\%%') AND namespace = 'nlp' AND \
             stage = 'production' AND license = 'mit' AND tags.`task` = 'ner'"
        );
        let f = cairn_core::filter::parse(&f);
        assert!(f.is_ok(), "{f:?}");
        assert_eq!(ModelSearch::default().filter().unwrap(), None);
        assert!(ModelSearch { tag: "a`b=c".into(), ..ModelSearch::default() }.filter().is_err());
        assert_eq!(
            ModelSearch { tag: "reviewed".into(), ..ModelSearch::default() }.filter().unwrap().unwrap(),
            "tags.`reviewed` IS NOT NULL"
        );
    }

    #[test]
    fn card_html_loses_everything_active() {
        let html = r#"<html><head><style>body{}</style><script>alert(1)</script></head><body><h1 onclick="x()">Card</h1><a href="https://example.org">l</a><iframe src="x"></iframe><table><tr><td>0.93</td></tr></table></body></html>"#;
        let clean = sanitize(html);
        assert!(clean.contains("<h1>Card</h1>"));
        assert!(clean.contains("<td>0.93</td>"));
        assert!(clean.contains("rel=\"noopener noreferrer nofollow\""));
        for bad in ["<script", "alert", "onclick", "<iframe", "<style"] {
            assert!(!clean.contains(bad), "{bad} in {clean}");
        }
    }

    #[test]
    fn signatures_are_checked_against_statement_version_and_key() {
        let key = cairn_audit::SigningKey::generate();
        let digest = format!("sha256:{}", "a".repeat(64));
        let statement = cairn_audit::statement::VersionStatement::new("ns/m", 2, &digest, 7);
        let env = cairn_audit::statement::SignatureEnvelope::sign("server", &statement, &key);
        let sig = |e: &cairn_audit::statement::SignatureEnvelope| api::Signature {
            kind: e.kind.clone(),
            statement: e.statement.clone(),
            key_id: e.key_id.clone(),
            public_key: e.public_key.clone(),
            signature: e.signature.clone(),
        };
        let sigs = |e: &cairn_audit::statement::SignatureEnvelope, version: i64| api::VersionSignatures {
            model: "ns/m".into(),
            version,
            digest: digest.clone(),
            signatures: vec![sig(e)],
        };
        let ours = vec![key.public().key_id()];
        let rows = check_signatures("ns/m", &sigs(&env, 2), &ours);
        assert!(rows[0].ok, "{:?}", rows[0]);
        assert!(!check_signatures("ns/m", &sigs(&env, 2), &[])[0].ok, "an unknown server key");
        assert!(!check_signatures("ns/m", &sigs(&env, 3), &ours)[0].ok, "a statement about another version");
        assert!(!check_signatures("ns/other", &sigs(&env, 2), &ours)[0].ok, "about another model");
        let mut forged = env.clone();
        forged.statement = forged.statement.replace("\"version\":2", "\"version\":3");
        let rows = check_signatures("ns/m", &sigs(&forged, 3), &ours);
        assert!(!rows[0].ok && rows[0].status.contains("does not match"), "{:?}", rows[0]);
    }

    #[test]
    fn the_chart_shows_the_latest_result_of_each_suite() {
        let r = |suite: &str, v: f64, at: &str| api::EvalResult {
            id: "x".into(),
            suite: suite.into(),
            passed: v >= 0.9,
            metrics: serde_json::json!([{ "name": "accuracy", "value": v, "at_least": 0.9, "passed": v >= 0.9 }]),
            config: serde_json::Value::Null,
            submitted_by: "u".into(),
            submitted_at: at.into(),
        };
        let bars = chart_bars(&[r("core", 0.8, "1"), r("bias", 0.95, "2"), r("core", 0.93, "3")]);
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].label, "bias / accuracy");
        assert_eq!(bars[1].label, "core / accuracy");
        assert_eq!(bars[1].value, 0.93);
        assert!(bars[1].passed);
    }
}
