//! Artifact downloads: a router fetches the file of one of its executions, authorized by its
//! own credential and only while that execution is in flight. `Range` requests let a download
//! broken off on a poor link resume where it stopped; each node serves at most
//! `max_downloads` at once and asks the rest to come back.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::Response;
use floatilla_domain::ExecutionId;
use floatilla_domain::jobs::{ByteRange, requested_range};
use floatilla_store::ARTIFACT_CHUNK_BYTES;
use http::{HeaderMap, StatusCode, header};

use crate::error::{Error, Result};
use crate::state::AppState;

/// How long a router turned away for too many downloads waits before asking again.
const BUSY_RETRY_SECS: u64 = 5;

pub async fn artifact(
    State(state): State<AppState>,
    Path(execution): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Error::InvalidCredential)?;
    let credential = super::credentials::verify(&state, presented.trim()).await?;
    let execution: ExecutionId = execution
        .parse()
        .map_err(|_| Error::NotFound("execution"))?;
    let (artifact, execution_state) = state
        .store
        .execution_artifact(credential.device_id, execution)
        .await?
        .ok_or(Error::NotFound("execution"))?;
    if !execution_state.is_in_flight() {
        return Err(Error::invalid_state(
            "execution_not_in_flight",
            format!(
                "this execution is {execution_state}: its artifact is served only while it runs"
            ),
        ));
    }
    let range = requested_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        artifact.size,
    )
    .map_err(|e| Error::RangeNotSatisfiable { size: e.size })?;
    let permit =
        state
            .downloads
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyDownloads {
                retry_after_secs: BUSY_RETRY_SECS,
            })?;
    let whole = ByteRange {
        first: 0,
        last: artifact.size - 1,
    };
    let served = range.unwrap_or(whole);
    let (first, last) = (served.first, served.last);
    let store = state.store.clone();
    let id = artifact.id;
    // Chunk by chunk from the database: memory stays at one chunk per download, and the
    // permit is held until the body is done or the router hung up.
    let body = futures_util::stream::unfold(Some((first, permit)), move |next| {
        let store = store.clone();
        async move {
            let (position, permit) = next?;
            if position > last {
                return None;
            }
            let chunk = ARTIFACT_CHUNK_BYTES as u64;
            let offset = usize::try_from(position % chunk).unwrap_or(0);
            let piece = match store.artifact_chunk(id, position / chunk).await {
                Ok(Some(data)) if data.len() > offset => {
                    let wanted = usize::try_from(last - position + 1).unwrap_or(usize::MAX);
                    let end = data.len().min(offset.saturating_add(wanted));
                    Bytes::copy_from_slice(&data[offset..end])
                }
                Ok(_) => {
                    return Some((
                        Err(std::io::Error::other("an artifact chunk is missing")),
                        None,
                    ));
                }
                Err(error) => return Some((Err(std::io::Error::other(error)), None)),
            };
            let next = position + piece.len() as u64;
            Some((Ok(piece), Some((next, permit))))
        }
    });
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, served.byte_count())
        .header(header::ETAG, format!("\"{}\"", artifact.sha256));
    if let Some(range) = range {
        response = response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, range.content_range(artifact.size));
    }
    response
        .body(Body::from_stream(body))
        .map_err(|e| Error::invalid("invalid_response", e.to_string()))
}
