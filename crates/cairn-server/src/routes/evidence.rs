//! `GET …/versions/{version}/evidence`: the evidence bundle of a version (docs/AUDIT.md#evidence-bundles),
//! a signed `tar.gz` that `cairn evidence verify` checks offline.
//!
//! Each part comes from the same handler that serves it on its own, called with the caller's
//! identity, so the bundle holds nothing the caller could not read piece by piece. Parts are
//! written to a temporary directory and the archive to a temporary file, streamed back and
//! removed: memory stays bounded however long the version's audit trail is.

use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cairn_core::{ModelRef, Permission, VersionSelector};
use futures::TryStreamExt as _;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use super::lifecycle::{self, CardQuery, ResultsQuery};
use super::{authorize, authorize_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery, ApiResult};

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(export_evidence))
}

/// The card renderings a bundle carries, by format and member name.
const CARD_FORMATS: [(&str, &str); 6] = [
    ("json", "card/card.json"),
    ("huggingface", "card/README.md"),
    ("google", "card/model-card-toolkit.json"),
    ("eu-ai-act", "card/eu-ai-act-annex-iv.md"),
    ("eu-cra", "card/eu-cra.md"),
    ("html", "card/card.html"),
];

struct Parts {
    dir: tempfile::TempDir,
    members: Vec<(String, PathBuf)>,
}

impl Parts {
    async fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
        let path = self.dir.path().join(name.replace('/', "__"));
        tokio::fs::write(&path, bytes).await.map_err(io_error)?;
        self.members.push((name.to_owned(), path));
        Ok(())
    }

    async fn json(&mut self, name: &str, value: &impl Serialize) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| ApiError::busy(e.to_string()))?;
        self.bytes(name, &bytes).await
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "could not write an evidence bundle");
    ApiError::busy("could not assemble the evidence bundle; try again")
}

async fn body_bytes(resp: Response) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(resp.into_body(), 256 << 20)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ApiError::busy("a part of the bundle was too large"))
}

/// Everything known about a version, as one archive: manifest, signatures, card in every
/// format, evaluations, lineage, lifecycle (transitions and reviews), policy results, scan
/// results, ML-BOM, and the audit events about it with the chain from a signed checkpoint to
/// a signed checkpoint — with an index of SHA-256 digests signed by the registry.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/evidence", tag = "audit",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>, description = "The bundle (tar.gz)"), (status = 404, body = cairn_api_types::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn export_evidence(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.evidence").await?;
    // It carries audit events: auditors and admins only.
    authorize(&state, &caller, Permission::AuditRead, None, "version.evidence", &format!("model:{model}")).await?;
    let v = state.store.get_version(&model, &VersionSelector::parse(&version)?).await?;
    let number = v.version;
    let at = || Path((namespace.clone(), name.clone(), number.to_string()));
    let (s, c) = (&state, &caller);
    let mut parts = Parts { dir: tempfile::tempdir().map_err(io_error)?, members: Vec::new() };

    parts.json("version.json", &crate::convert::version(v.clone())).await?;
    let (_, files) = state.store.version_files(&model, &VersionSelector::Number(number)).await?;
    let manifest = cairn_core::Manifest::new(files).map_err(|e| ApiError::invalid(e.to_string()))?;
    parts.bytes("manifest.json", manifest.canonical_json().as_bytes()).await?;
    let sigs = state.store.signatures_of(&v).await?;
    parts.json("signatures.json", &sigs).await?;
    let Json(life) = lifecycle::get_lifecycle(State(s.clone()), c.clone(), at()).await?;
    parts.json("lifecycle.json", &life).await?;
    let Json(results) = lifecycle::list_policy_results(
        State(s.clone()),
        c.clone(),
        at(),
        ApiQuery(ResultsQuery { limit: Some(10_000) }),
    )
    .await?;
    parts.json("policy-results.json", &results).await?;
    let Json(evals) = lifecycle::list_evaluations(State(s.clone()), c.clone(), at()).await?;
    parts.json("evaluations.json", &evals).await?;
    let Json(lineage) = super::lineage::get_lineage(State(s.clone()), c.clone(), at()).await?;
    parts.json("lineage.json", &lineage).await?;
    let Json(scan) = super::scan::get_scan(State(s.clone()), c.clone(), at()).await?;
    parts.json("scan.json", &scan).await?;
    let bom = super::scan::get_sbom(State(s.clone()), c.clone(), at()).await?;
    parts.bytes("sbom.cdx.json", &body_bytes(bom).await?).await?;
    for (format, member) in CARD_FORMATS {
        let q = ApiQuery(CardQuery { format: Some(format.into()) });
        match lifecycle::get_card(State(s.clone()), c.clone(), at(), q).await {
            Ok(resp) => parts.bytes(member, &body_bytes(resp).await?).await?,
            // No card: nothing to render.
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => break,
            Err(e) => return Err(e),
        }
    }
    audit_trail(&state, &model, number, &mut parts).await?;

    // The archive, signed, into a file; then streamed back.
    let archive = parts.dir.path().join("bundle.tar.gz");
    let (key, digest, model_name, created_at) =
        (state.signing_key.clone(), v.digest.clone(), model.to_string(), state.now_ms());
    let members = parts.members.clone();
    let out = archive.clone();
    tokio::task::spawn_blocking(move || {
        let file = std::io::BufWriter::new(std::fs::File::create(&out)?);
        cairn_audit::evidence::write(file, &model_name, number, &digest, created_at, &members, &key)
    })
    .await
    .map_err(|_| ApiError::busy("the bundle writer stopped"))?
    .map_err(io_error)?;
    let file = tokio::fs::File::open(&archive).await.map_err(io_error)?;
    let len = file.metadata().await.map_err(io_error)?.len();
    // The open file stays readable once its directory is gone.
    drop(parts);
    let stream = tokio_util::io::ReaderStream::new(file).map_err(std::io::Error::other);
    let filename = format!("{}-{}-{number}.evidence.tar.gz", model.namespace, model.name);
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `audit.jsonl`: the export of the events about the version (in full) from the signed
/// checkpoint before the first of them to a signed checkpoint at the head.
async fn audit_trail(state: &AppState, model: &ModelRef, number: i64, parts: &mut Parts) -> Result<(), ApiError> {
    let target = format!("version:{model}:{number}");
    let first = state
        .store
        .list_audit_events(&cairn_store::audit::AuditQuery {
            target: Some(target.clone()),
            limit: 1,
            ..Default::default()
        })
        .await?
        .items
        .into_iter()
        .next()
        .map(|e| e.id);
    let filter = crate::audit_export::ExportFilter { from_seq: first, target: Some(target), ..Default::default() };
    let stream = crate::audit_export::export(state.store.clone(), &state.signing_key, filter).await?;
    let path = parts.dir.path().join("audit.jsonl");
    let mut file = tokio::fs::File::create(&path).await.map_err(io_error)?;
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.try_next().await.map_err(io_error)? {
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    file.flush().await.map_err(io_error)?;
    parts.members.push(("audit.jsonl".into(), path));
    Ok(())
}
