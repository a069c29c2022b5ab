//! REST API v1: JSON over HTTPS with bearer API tokens. Handlers authenticate, parse, call the
//! store or the gateway, and map the result; errors are `{"code", "message"}`.

pub mod activation;
pub mod artifacts;
pub mod auth;
pub mod devices;
pub mod enrollment;
pub mod events;
pub mod extract;
pub mod groups;
pub mod jobs;
pub mod licensing;
pub mod provider;
pub mod rollouts;
pub mod tags;
pub mod tokens;
pub mod users;
pub mod views;
pub mod webhooks;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::StatusCode;
use utoipa::OpenApi;

use crate::error::rejection;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Floatilla API", version = "1", description = "Manage a fleet of routers: devices, groups, tags, enrollment, the floating license pool, jobs, rollouts and artifacts, events, webhooks, API tokens, console accounts and the audit log; and, for the provider of a cloud service, tenants and activation codes."),
    paths(
        devices::list, devices::get, devices::patch, devices::delete, devices::revoke_credentials,
        devices::allow_reenrollment, devices::refresh_status,
        groups::list, groups::create, groups::update, groups::delete,
        tokens::list_enrollment_tokens, tokens::create_enrollment_token, tokens::revoke_enrollment_token,
        tokens::list_api_tokens, tokens::create_api_token, tokens::revoke_api_token,
        enrollment::policy, enrollment::set_policy, enrollment::accept, enrollment::reject,
        enrollment::import, events::list,
        licensing::pool, licensing::list, licensing::create, licensing::delete, licensing::bulk,
        licensing::usage, licensing::acknowledge_clock, licensing::installation,
        webhooks::list, webhooks::create, webhooks::delete, webhooks::deliveries,
        activation::redeem, activation::import, activation::own_tenant, activation::update_own_tenant,
        provider::list_tenants, provider::create_tenant, provider::get_tenant, provider::update_tenant,
        provider::suspend_tenant, provider::resume_tenant, provider::delete_tenant,
        provider::tenant_usage, tags::list, tags::tag_routers,
        jobs::create, jobs::list, jobs::get, jobs::executions, jobs::cancel, jobs::device_executions,
        jobs::bulk_status,
        artifacts::upload, artifacts::list, artifacts::get, artifacts::delete,
        rollouts::create, rollouts::list, rollouts::get, rollouts::pause, rollouts::resume,
        rollouts::cancel,
        provider::create_codes, provider::list_codes,
        users::list, users::invite, users::approve, users::update, users::delete, users::audit,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/api/v1/devices", get(devices::list))
        .route(
            "/api/v1/devices/{id}",
            get(devices::get)
                .patch(devices::patch)
                .delete(devices::delete),
        )
        .route(
            "/api/v1/devices/{id}/revoke-credentials",
            post(devices::revoke_credentials),
        )
        .route(
            "/api/v1/devices/{id}/allow-reenrollment",
            post(devices::allow_reenrollment),
        )
        .route(
            "/api/v1/devices/{id}/refresh-status",
            post(devices::refresh_status),
        )
        .route("/api/v1/devices/import", post(enrollment::import))
        .route("/api/v1/devices/bulk", post(licensing::bulk))
        .route("/api/v1/devices/tags", post(tags::tag_routers))
        .route("/api/v1/tags", get(tags::list))
        .route("/api/v1/jobs", get(jobs::list).post(jobs::create))
        .route(
            "/api/v1/artifacts",
            get(artifacts::list).post(artifacts::upload),
        )
        .route(
            "/api/v1/artifacts/{id}",
            get(artifacts::get).delete(artifacts::delete),
        )
        .route(
            "/api/v1/rollouts",
            get(rollouts::list).post(rollouts::create),
        )
        .route("/api/v1/rollouts/{id}", get(rollouts::get))
        .route("/api/v1/rollouts/{id}/pause", post(rollouts::pause))
        .route("/api/v1/rollouts/{id}/resume", post(rollouts::resume))
        .route("/api/v1/rollouts/{id}/cancel", post(rollouts::cancel))
        .route("/api/v1/jobs/status", post(jobs::bulk_status))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/executions", get(jobs::executions))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route(
            "/api/v1/devices/{id}/executions",
            get(jobs::device_executions),
        )
        .route("/api/v1/license-pool", get(licensing::pool))
        .route(
            "/api/v1/license-pool/clock/acknowledge",
            post(licensing::acknowledge_clock),
        )
        .route("/api/v1/installation", get(licensing::installation))
        .route(
            "/api/v1/licenses",
            get(licensing::list).post(licensing::create),
        )
        .route(
            "/api/v1/licenses/{id}",
            axum::routing::delete(licensing::delete),
        )
        .route("/api/v1/license-usage", get(licensing::usage))
        .route("/api/v1/devices/{id}/accept", post(enrollment::accept))
        .route("/api/v1/devices/{id}/reject", post(enrollment::reject))
        .route(
            "/api/v1/enrollment-policy",
            get(enrollment::policy).put(enrollment::set_policy),
        )
        .route("/api/v1/events", get(events::list))
        .route(
            "/api/v1/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/api/v1/webhooks/{id}",
            axum::routing::delete(webhooks::delete),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route("/api/v1/activation-codes/redeem", post(activation::redeem))
        .route("/api/v1/activation-codes/import", post(activation::import))
        .route(
            "/api/v1/tenant",
            get(activation::own_tenant).patch(activation::update_own_tenant),
        )
        .route(
            "/api/v1/provider/tenants",
            get(provider::list_tenants).post(provider::create_tenant),
        )
        .route(
            "/api/v1/provider/tenants/{id}",
            get(provider::get_tenant)
                .patch(provider::update_tenant)
                .delete(provider::delete_tenant),
        )
        .route(
            "/api/v1/provider/tenants/{id}/license-usage",
            get(provider::tenant_usage),
        )
        .route(
            "/api/v1/provider/tenants/{id}/suspend",
            post(provider::suspend_tenant),
        )
        .route(
            "/api/v1/provider/tenants/{id}/resume",
            post(provider::resume_tenant),
        )
        .route(
            "/api/v1/provider/activation-codes",
            get(provider::list_codes).post(provider::create_codes),
        )
        .route("/api/v1/users", get(users::list).post(users::invite))
        .route(
            "/api/v1/users/{id}",
            axum::routing::patch(users::update).delete(users::delete),
        )
        .route("/api/v1/users/{id}/approve", post(users::approve))
        .route("/api/v1/audit", get(users::audit))
        .route("/api/v1/groups", get(groups::list).post(groups::create))
        .route(
            "/api/v1/groups/{id}",
            axum::routing::patch(groups::update).delete(groups::delete),
        )
        .route(
            "/api/v1/enrollment-tokens",
            get(tokens::list_enrollment_tokens).post(tokens::create_enrollment_token),
        )
        .route(
            "/api/v1/enrollment-tokens/{id}",
            axum::routing::delete(tokens::revoke_enrollment_token),
        )
        .route(
            "/api/v1/api-tokens",
            get(tokens::list_api_tokens).post(tokens::create_api_token),
        )
        .route(
            "/api/v1/api-tokens/{id}",
            axum::routing::delete(tokens::revoke_api_token),
        )
        .fallback(not_found)
}

async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::metrics::connected(state.sessions.len());
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render(),
    )
}

/// How long the health check waits for the database.
const HEALTH_DATABASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// For load balancers, without credentials: `200 {"status":"ok"}` while the node serves and its
/// database answers; `503` with the reason once the node is shutting down (so the balancer stops
/// sending it routers first) or when the database does not answer.
async fn health(State(state): State<AppState>) -> axum::response::Response {
    if state.shutdown.is_cancelled() {
        return rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this node is shutting down".into(),
        );
    }
    match tokio::time::timeout(HEALTH_DATABASE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health check: the database does not answer");
            database_unavailable()
        }
        Err(_) => database_unavailable(),
    }
}

fn database_unavailable() -> axum::response::Response {
    rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        "the database does not answer".into(),
    )
}

async fn not_found() -> impl IntoResponse {
    rejection(StatusCode::NOT_FOUND, "not_found", "no such route".into())
}
