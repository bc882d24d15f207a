//! Route handlers, one module per domain. Each handler extracts, authorises, calls one
//! store method and maps the result.

pub mod account;
pub mod aliases;
pub mod audit;
pub mod deploy;
pub mod eval_jobs;
pub mod evidence;
pub mod files;
pub mod gdpr;
pub mod grants;
pub mod health;
pub mod lifecycle;
pub mod lineage;
pub mod models;
pub mod namespaces;
pub mod policies;
pub mod scan;
pub mod session;
pub mod users;
pub mod versions;
pub mod webhooks;

use cairn_core::{ModelName, ModelRef, Namespace, Permission};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn",
        description = "Native API of Cairn, a security-first registry for machine-learning models with model cards as code. Every route needs `Authorization: Bearer <api key>`."
    ),
    modifiers(&BearerAuth),
    paths(files::download_file),
    security(("bearer" = [])),
    tags(
        (name = "models", description = "Models: namespace/name, description, tags"),
        (name = "versions", description = "Versions: numbered 1, 2, 3 … per model"),
        (name = "files", description = "Model files: uploads, downloads and manifests (docs/ARTIFACTS.md)"),
        (name = "aliases", description = "Movable names for versions (model@champion)"),
        (name = "namespaces", description = "Teams that own models"),
        (name = "account", description = "The caller, users and API keys"),
        (name = "audit", description = "The hash-chained record of every change, signed checkpoints, exports (docs/AUDIT.md)"),
        (name = "governance", description = "Lifecycle, reviews, policy checks, cards and evaluations of versions (docs/GOVERNANCE.md)"),
        (name = "policies", description = "Policies, policy exceptions and evaluation suites (docs/POLICIES.md)"),
        (name = "privacy", description = "Data-subject requests: access, portability, rectification, erasure; the personal-data inventory (docs/PRIVACY.md)"),
        (name = "deployments", description = "Environments, deployment records, rollbacks and SLO reports (docs/DEPLOYMENTS.md)"),
        (name = "webhooks", description = "HTTP callbacks for lifecycle events, signed, with a delivery log (docs/WEBHOOKS.md)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every API route, with its OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(models::list_models, models::create_model))
        .routes(routes!(models::get_model, models::update_model, models::delete_model))
        .routes(routes!(models::set_model_tag, models::delete_model_tag))
        .routes(routes!(versions::list_versions, versions::create_version))
        .routes(routes!(versions::get_version, versions::update_version, versions::delete_version))
        .routes(routes!(versions::set_version_tag, versions::delete_version_tag))
        .routes(routes!(versions::get_signatures))
        .routes(routes!(scan::get_scan, scan::rescan))
        .routes(routes!(scan::get_sbom))
        .routes(routes!(files::create_upload))
        .routes(routes!(files::get_upload, files::delete_upload))
        .routes(routes!(files::put_part))
        .routes(routes!(files::commit_upload))
        .routes(routes!(files::list_files))
        .routes(routes!(files::get_manifest))
        .routes(routes!(files::download_archive))
        // A file path has slashes: route it as a wildcard (documented through `ApiDoc`).
        .route(
            "/api/v1/models/{namespace}/{name}/versions/{version}/files/{*path}",
            axum::routing::get(files::download_file),
        )
        .routes(routes!(aliases::list_aliases))
        .routes(routes!(aliases::get_alias, aliases::set_alias, aliases::delete_alias))
        .routes(routes!(namespaces::list_namespaces, namespaces::create_namespace))
        .routes(routes!(namespaces::get_namespace, namespaces::delete_namespace))
        .merge(audit::router())
        .merge(account::router())
        .merge(users::router())
        .merge(grants::router())
        .merge(session::router())
        .merge(gdpr::router())
        .merge(webhooks::router())
        .merge(lifecycle::router())
        .merge(eval_jobs::router())
        .merge(policies::router())
        .merge(lineage::router())
        .merge(deploy::router())
        .merge(evidence::router())
}

/// The routes that need no credential (logging in), with their OpenAPI description.
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(session::public()).merge(audit::public())
}

/// Parses `{namespace}/{name}` path segments.
pub(crate) fn model_ref(namespace: &str, name: &str) -> Result<ModelRef, ApiError> {
    Ok(ModelRef::new(Namespace::parse(namespace)?, ModelName::parse(name)?))
}

/// Checks that the caller holds `permission` (in `namespace` when it is namespaced); a
/// refused change is itself recorded in the audit log.
pub(crate) async fn authorize(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
    namespace: Option<&str>,
    audit_action: &str,
    target: &str,
) -> Result<(), ApiError> {
    if let Err(denied) = caller.principal.check(permission, namespace) {
        if permission.is_change() {
            record_denied(state, caller, audit_action, target).await;
        }
        return Err(denied.into());
    }
    Ok(())
}

/// Records a refused attempt in the audit log (best effort: the refusal stands either way).
pub(crate) async fn record_denied(state: &AppState, caller: &Caller, audit_action: &str, target: &str) {
    if let Err(e) = state.store.record_event(&caller.audit, audit_action, target, "denied").await {
        tracing::warn!(error = %e, "could not record a denied attempt");
    }
}

/// The answer for a model the caller may not see: the same as for a model that does not exist.
pub(crate) fn hidden_model(model: &ModelRef) -> ApiError {
    ApiError::not_found(format!("model \"{model}\" does not exist"))
}

/// Authorises a request on one model. A caller who may not read the model's namespace gets
/// the answer a missing model gets, so other namespaces' models cannot even be detected;
/// one who may read it but not use `permission` gets `403`.
pub(crate) async fn authorize_model(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
    model: &ModelRef,
    audit_action: &str,
) -> Result<(), ApiError> {
    let ns = model.namespace.as_str();
    if caller.principal.check(Permission::ModelRead, Some(ns)).is_err() && caller.principal.mfa_satisfied {
        if permission.is_change() {
            record_denied(state, caller, audit_action, &format!("model:{model}")).await;
        }
        return Err(hidden_model(model));
    }
    authorize(state, caller, permission, Some(ns), audit_action, &format!("model:{model}")).await
}

/// Page-size rules shared by every listing.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::invalid(format!("limit must be between 1 and 1000 (got {n})"))),
    }
}

/// Parses `field`, `-field`, `field asc` or `field desc`.
pub(crate) fn parse_order(
    order_by: Option<&str>,
    fields: &[&str],
    default: (&str, bool),
) -> Result<(String, bool), ApiError> {
    let Some(raw) = order_by.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok((default.0.to_owned(), default.1));
    };
    let (field, desc) = if let Some(f) = raw.strip_prefix('-') {
        (f.trim(), true)
    } else if let Some((f, dir)) = raw.split_once(char::is_whitespace) {
        match dir.trim().to_ascii_lowercase().as_str() {
            "asc" => (f, false),
            "desc" => (f, true),
            other => {
                return Err(ApiError::invalid(format!("order_by direction must be ASC or DESC, not '{other}'")));
            }
        }
    } else {
        (raw, false)
    };
    if !fields.contains(&field) {
        return Err(ApiError::invalid(format!("cannot order by '{field}'; use one of: {}", fields.join(", "))));
    }
    Ok((field.to_owned(), desc))
}
