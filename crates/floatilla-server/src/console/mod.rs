//! The operator console: server-rendered pages at `/` over the same handlers as the API, so
//! every role check, tenant boundary and rule is the API's own. Forms post back here with the
//! session's CSRF token; what they change is audited like API calls.

mod events;
mod fleet;
mod licenses;
mod manage;
mod pages;
mod provider;
pub mod session;
mod settings;

use axum::Router;
use axum::extract::DefaultBodyLimit;
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
        .route(
            "/routers/{id}",
            get(pages::router).post(pages::router_action),
        )
        .route(
            "/licenses",
            get(licenses::licenses).post(licenses::install_license),
        )
        .route("/licenses/usage.csv", get(licenses::usage_csv))
        .route("/licenses/redeem", post(licenses::redeem))
        .route("/licenses/import", post(licenses::import_codes))
        .route("/licenses/{id}/remove", post(licenses::remove_license))
        .route("/rollouts", get(pages::rollouts).post(pages::start_rollout))
        .route("/rollouts/{id}", get(pages::rollout))
        .route("/rollouts/{id}/{action}", post(pages::control_rollout))
        .route("/jobs/{id}", get(fleet::job))
        .route("/groups/{id}", get(fleet::group).post(fleet::update_group))
        .route("/groups/{id}/delete", post(fleet::delete_group))
        .route(
            "/artifacts/upload",
            // The upload checks the size itself as the file streams in.
            post(fleet::upload_artifact).layer(DefaultBodyLimit::disable()),
        )
        .route("/tenants/{id}", get(provider::tenant))
        .route("/tenants/{id}/usage.csv", get(provider::tenant_usage_csv))
        .route("/settings", get(settings::settings))
        .route("/settings/contact", post(settings::set_contact))
        .route("/settings/clock", post(settings::acknowledge_clock))
        .route("/events", get(events::events))
        .route("/audit", get(pages::audit))
        .route("/audit.csv", get(pages::audit_csv))
        .route("/users", get(pages::users).post(pages::invite))
        .route("/users/{id}/{action}", post(pages::user_action))
        .route("/manage/{page}", get(manage::page).post(manage::create))
        .route("/manage/{page}/{id}/{verb}", post(manage::act))
}
