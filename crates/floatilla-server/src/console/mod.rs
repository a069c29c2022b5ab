//! The operator console: server-rendered pages at `/` over the same handlers as the API, so
//! every role check, tenant boundary and rule is the API's own. Forms post back here with the
//! session's CSRF token; what they change is audited like API calls.

mod manage;
mod pages;
pub mod session;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/static/console.css", get(pages::stylesheet))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route(
            "/invitation/{secret}",
            get(pages::invitation_page).post(pages::accept_invitation),
        )
        .route("/routers", get(pages::routers))
        .route("/routers/bulk", post(pages::routers_bulk))
        .route("/routers/{id}", get(pages::router))
        .route(
            "/licenses",
            get(pages::licenses).post(pages::install_license),
        )
        .route("/licenses/usage.csv", get(pages::usage_csv))
        .route("/rollouts", get(pages::rollouts).post(pages::start_rollout))
        .route("/rollouts/{id}", get(pages::rollout))
        .route("/rollouts/{id}/{action}", post(pages::control_rollout))
        .route("/audit", get(pages::audit))
        .route("/audit.csv", get(pages::audit_csv))
        .route("/users", get(pages::users).post(pages::invite))
        .route("/users/{id}/approve", post(pages::approve))
        .route("/manage/{page}", get(manage::page).post(manage::create))
        .route("/manage/{page}/{id}/{verb}", post(manage::act))
}
