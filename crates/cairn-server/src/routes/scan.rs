//! `/api/v1/models/{namespace}/{name}/versions/{version}/scan`: what artifact scanning found in
//! each file of a version (docs/SUPPLY_CHAIN.md), and a rescan.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_api_types as api;
use cairn_core::{Permission, VersionSelector};
use cairn_store::version::Version;

use super::{authorize_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::scanning;

fn answer(v: Version, scans: &[cairn_store::scan::FileScan]) -> api::VersionScan {
    api::VersionScan {
        namespace: v.namespace,
        name: v.model,
        version: v.version,
        digest: v.digest,
        summary: scanning::summary(scans),
        files: scans.iter().map(scanning::file_result).collect(),
    }
}

/// The scan results of a version's files: format, status, findings with severity, the
/// globals its pickles import, licences, and totals.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/scan", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, body = api::VersionScan), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_scan(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<api::VersionScan>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.scan").await?;
    let (v, scans) = state.store.version_scans(&model, &VersionSelector::parse(&version)?).await?;
    Ok(Json(answer(v, &scans)))
}

/// The version's software bill of materials: a CycloneDX 1.6 ML-BOM (JSON) listing the model
/// with its manifest digest and licences, its model card, every file with its SHA-256, the
/// datasets and base model its card names, and their dependencies.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/sbom", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, content_type = "application/vnd.cyclonedx+json", body = Object, description = "CycloneDX 1.6 JSON"), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_sbom(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<axum::response::Response> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.sbom").await?;
    let (v, files) = state.store.version_files(&model, &VersionSelector::parse(&version)?).await?;
    let number = VersionSelector::Number(v.version);
    let card = state.store.version_card(&model, &number).await?;
    let card: Option<cairn_card::Card> = card.and_then(|c| serde_json::from_str(&c.card).ok());
    let (_, scans) = state.store.version_scans(&model, &number).await?;
    let summary = scanning::summary(&scans);
    let (_, lineage) = state.store.version_lineage(&model, &number).await?;
    let bom = crate::sbom::build(&crate::sbom::Inputs {
        lineage: &lineage,
        version: &v,
        files: &files,
        card: card.as_ref(),
        file_licenses: &summary.licenses,
        scan_clean: summary.scanned.then_some(summary.clean),
        timestamp: crate::convert::rfc3339(state.store.now()),
        serial: uuid::Uuid::new_v4(),
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, crate::sbom::MEDIA_TYPE)],
        serde_json::to_vec(&bom).map_err(|e| ApiError::invalid(e.to_string()))?,
    )
        .into_response())
}

/// Scan a version's files again with this server's scanner and replace its results (for
/// versions committed before scanning or with an older rule set); audited as
/// `version.rescan`.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/scan", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, body = api::VersionScan), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody, description = "Scanning is switched off on this server")),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn rescan(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<api::VersionScan>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.rescan").await?;
    if !state.settings.scan_artifacts {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "scanning_off",
            "artifact scanning is switched off on this server (CAIRN_SCAN_ARTIFACTS=false)",
        ));
    }
    let selector = VersionSelector::parse(&version)?;
    let (v, files) = state.store.version_files(&model, &selector).await?;
    // The number, not the selector: an alias may move while the files are read.
    let number = VersionSelector::Number(v.version);
    let mut scans = Vec::with_capacity(files.len());
    for f in &files {
        scans.extend(scanning::rescan_file(&state, f).await?);
    }
    state.store.replace_scans(&caller.audit, &model, &number, &scans).await?;
    let (v, scans) = state.store.version_scans(&model, &number).await?;
    Ok(Json(answer(v, &scans)))
}
