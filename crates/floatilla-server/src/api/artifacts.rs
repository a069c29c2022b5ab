//! `/api/v1/artifacts`: the files jobs install. An upload streams into the database chunk by
//! chunk (never whole in memory) while its SHA-256 is computed; it is listed, and jobs may carry
//! it, only once complete.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::jobs::ArtifactKind;
use floatilla_domain::{ArtifactId, Role};
use floatilla_store::{ARTIFACT_CHUNK_BYTES, Artifact};
use futures_util::StreamExt;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::ApiQuery;
use super::views::ErrorView;
use crate::error::{Error, Result, checked_name};
use crate::state::AppState;

/// The most router models one artifact names.
const MAX_MODELS: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `firmware`, `software`, `config` or `certificates`.
    kind: String,
    /// 1 to 100 characters.
    name: String,
    /// 1 to 64 characters.
    version: String,
    /// Router models it is for, comma-separated; none: any model.
    models: Option<String>,
    /// The SHA-256 the uploader expects (hex): a mismatch refuses the upload.
    sha256: Option<String>,
}

/// An artifact as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    pub id: String,
    /// `firmware`, `software`, `config` or `certificates`.
    pub kind: String,
    pub name: String,
    pub version: String,
    /// Router models it is for; empty: any.
    pub models: Vec<String>,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<&Artifact> for ArtifactView {
    fn from(a: &Artifact) -> Self {
        Self {
            id: a.id.to_string(),
            kind: a.kind.as_str().to_owned(),
            name: a.name.clone(),
            version: a.version.clone(),
            models: a.models.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            created_by: a.created_by.clone(),
            created_at: a.created_at,
        }
    }
}

fn artifact_id(text: &str) -> Result<ArtifactId> {
    text.parse().map_err(|_| Error::NotFound("artifact"))
}

/// Uploads an artifact: the request body is the file itself (any content type), the rest is
/// in the query. `curl --data-binary @image.bin 'https://…/api/v1/artifacts?kind=firmware&name=rut&version=7.4.2&models=RUT955'`.
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "artifacts", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ArtifactView),
        (status = 400, body = ErrorView, description = "invalid_kind, invalid_name, invalid_version, invalid_models, sha256_mismatch, empty_artifact"),
        (status = 409, body = ErrorView, description = "an artifact of that kind, name and version exists"),
        (status = 413, body = ErrorView, description = "artifact_too_large")))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ArtifactView>)> {
    let tenant = caller.require(Role::Operator)?;
    let kind: ArtifactKind = query
        .kind
        .parse()
        .map_err(|e: String| Error::invalid("invalid_kind", e))?;
    let name = checked_name("artifact", &query.name, 100)?;
    let version = query.version.trim();
    if version.is_empty() || version.chars().count() > 64 || version.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_version",
            "a version has 1 to 64 printable characters",
        ));
    }
    let models: Vec<String> = query
        .models
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    if models.len() > MAX_MODELS || models.iter().any(|m| m.chars().count() > 64) {
        return Err(Error::invalid(
            "invalid_models",
            format!("name at most {MAX_MODELS} models of at most 64 characters each"),
        ));
    }
    let expected = query.sha256.map(|s| s.trim().to_ascii_lowercase());
    let mut artifact = Artifact {
        id: ArtifactId::new(),
        tenant_id: tenant,
        kind,
        name,
        version: version.to_owned(),
        models,
        size: 0,
        sha256: String::new(),
        created_by: caller.name().to_owned(),
        created_at: state.clock.now(),
    };
    state.store.begin_artifact(&artifact).await?;
    match receive(&state, &artifact, body).await {
        Ok((size, sha256)) if expected.as_ref().is_none_or(|e| *e == sha256) && size > 0 => {
            state
                .store
                .finish_artifact(artifact.id, size, &sha256)
                .await?;
            artifact.size = size;
            artifact.sha256 = sha256;
        }
        outcome => {
            state.store.abandon_artifact(artifact.id).await?;
            return Err(match outcome {
                Err(error) => error,
                Ok((0, _)) => Error::invalid("empty_artifact", "the upload holds no bytes"),
                Ok((_, sha256)) => Error::invalid(
                    "sha256_mismatch",
                    format!(
                        "the upload's SHA-256 is {sha256}, not the {} expected: nothing was stored",
                        expected.unwrap_or_default()
                    ),
                ),
            });
        }
    }
    let message = format!(
        "{} uploaded {} {} {} ({} bytes, sha256 {})",
        artifact.created_by,
        artifact.kind,
        artifact.name,
        artifact.version,
        artifact.size,
        artifact.sha256
    );
    crate::events::record(
        &state,
        Event::new(
            tenant,
            artifact.created_at,
            EventKind::ArtifactUploaded,
            None,
            message,
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(ArtifactView::from(&artifact))))
}

/// Stores the body in chunks as it arrives; answers its size and SHA-256.
async fn receive(state: &AppState, artifact: &Artifact, body: Body) -> Result<(u64, String)> {
    let limit = state.config.max_artifact_bytes;
    let mut stream = body.into_data_stream();
    let mut hasher = Sha256::new();
    let mut chunk = Vec::with_capacity(ARTIFACT_CHUNK_BYTES);
    let mut size: u64 = 0;
    let mut seq = 0;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| {
            Error::invalid("upload_interrupted", format!("the upload broke off: {e}"))
        })?;
        size += piece.len() as u64;
        if size > limit {
            return Err(Error::ArtifactTooLarge { limit });
        }
        hasher.update(&piece);
        let mut rest: &[u8] = &piece;
        while !rest.is_empty() {
            let room = ARTIFACT_CHUNK_BYTES - chunk.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            chunk.extend_from_slice(now);
            rest = later;
            if chunk.len() == ARTIFACT_CHUNK_BYTES {
                state
                    .store
                    .put_artifact_chunk(artifact.id, seq, &chunk)
                    .await?;
                seq += 1;
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        state
            .store
            .put_artifact_chunk(artifact.id, seq, &chunk)
            .await?;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ArtifactListQuery {
    /// Only artifacts of this kind.
    kind: Option<String>,
}

/// The tenant's artifacts, newest first.
#[utoipa::path(get, path = "/api/v1/artifacts", tag = "artifacts", params(ArtifactListQuery),
    responses((status = 200, body = Vec<ArtifactView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ArtifactListQuery>,
) -> Result<Json<Vec<ArtifactView>>> {
    let tenant = caller.require(Role::Viewer)?;
    let kind = query
        .kind
        .map(|k| k.parse::<ArtifactKind>())
        .transpose()
        .map_err(|e| Error::invalid("invalid_kind", e))?;
    let artifacts = state.store.artifacts(tenant, kind).await?;
    Ok(Json(artifacts.iter().map(ArtifactView::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    responses((status = 200, body = ArtifactView), (status = 404, body = ErrorView)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ArtifactView>> {
    let tenant = caller.require(Role::Viewer)?;
    let artifact = state
        .store
        .artifact(tenant, artifact_id(&id)?)
        .await?
        .ok_or(Error::NotFound("artifact"))?;
    Ok(Json(ArtifactView::from(&artifact)))
}

/// Deletes an artifact no job carries.
#[utoipa::path(delete, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    responses((status = 204), (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "a job carries it")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Operator)?;
    let id = artifact_id(&id)?;
    let artifact = state
        .store
        .artifact(tenant, id)
        .await?
        .ok_or(Error::NotFound("artifact"))?;
    state.store.delete_artifact(tenant, id).await?;
    let message = format!(
        "{} deleted {} {} {}",
        caller.name(),
        artifact.kind,
        artifact.name,
        artifact.version
    );
    crate::events::record(
        &state,
        Event::new(
            tenant,
            state.clock.now(),
            EventKind::ArtifactDeleted,
            None,
            message,
        ),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
