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

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(ENROLL_PATH, post(enroll::enroll))
        .route(CONNECT_PATH, get(upgrade::connect))
        .route(ARTIFACT_PATH, get(download::artifact))
}
