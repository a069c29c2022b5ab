//! The device gateway: enrollment and the control channel.

pub mod admission;
mod credentials;
mod download;
pub mod enroll;
pub mod job_reports;
pub mod last_seen;
pub mod registry;
pub mod session;
mod upgrade;

use axum::Router;
use axum::routing::{get, post};
use floatilla_protocol::{ARTIFACT_PATH, CONNECT_PATH, ENROLL_PATH};

use crate::state::AppState;

/// Writes what routers send in batches (heartbeats, job reports): calls `flush` every
/// `interval` until `shutdown`, then once more, so nothing held is lost on a clean stop.
pub async fn flush_every(
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut flush: impl AsyncFnMut(),
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => flush().await,
            () = shutdown.cancelled() => break,
        }
    }
    flush().await;
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(ENROLL_PATH, post(enroll::enroll))
        .route(CONNECT_PATH, get(upgrade::connect))
        .route(ARTIFACT_PATH, get(download::artifact))
}
