//! `/api/v1/provider/...`: what the provider of a cloud service does with a provider token:
//! tenants (create, list with their license usage, rename, suspend, resume, delete) and
//! batches of activation codes to sell.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use floatilla_domain::licensing::activation::{ActivationCode, term_end};
use floatilla_domain::model::Tenant;
use floatilla_domain::{CodeBatchId, TenantId};
use floatilla_store::{CodeFilter, IssuedCode, TenantUpdate};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::{ApiJson, ApiQuery, page_limit};
use super::licensing::{UsageQuery, capacity_json, usage_report};
use super::views::{ErrorView, UsageList};
use crate::error::{Error, Result, checked_name, checked_range};
use crate::installation::checked_email;
use crate::state::AppState;

/// The most codes one batch holds.
pub const MAX_CODES_PER_BATCH: u32 = 1000;
/// The most seats one code grants.
pub const MAX_SEATS_PER_CODE: u32 = 100_000;
/// The longest term of a code, in months (ten years).
pub const MAX_TERM_MONTHS: u32 = 120;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: String,
    /// Where notices about the tenant's licenses are e-mailed (when the server sends e-mail).
    pub contact_email: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    pub name: Option<String>,
    /// A new address; null removes it.
    #[serde(default, deserialize_with = "super::views::present")]
    #[schema(value_type = Option<String>)]
    pub contact_email: Option<Option<String>>,
}

/// A tenant as the provider sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub contact_email: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Set while suspended: its routers and API tokens are refused.
    pub suspended_at: Option<DateTime<Utc>>,
    pub usage: TenantUsageView,
}

/// A tenant's license pool now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantUsageView {
    /// Seats of the licenses counting now: a number, or `"unlimited"`.
    #[schema(value_type = Object)]
    pub capacity: serde_json::Value,
    /// Routers holding a seat.
    pub in_use: u64,
    /// Live managed routers beyond the capacity.
    pub excess: u64,
}

async fn view(state: &AppState, tenant: &Tenant) -> Result<TenantView> {
    let summary = state.licensing.summary(tenant.id).await?;
    Ok(TenantView {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        contact_email: tenant.contact_email.clone(),
        created_at: tenant.created_at,
        suspended_at: tenant.suspended_at,
        usage: TenantUsageView {
            capacity: capacity_json(summary.capacity),
            in_use: summary.counts.licensed,
            excess: summary.counts.excess,
        },
    })
}

fn tenant_id(text: &str) -> Result<TenantId> {
    text.parse().map_err(|_| Error::NotFound("tenant"))
}

/// The tenant a path names; `404` for an id that is not one.
async fn stored_tenant(state: &AppState, id: &str) -> Result<Tenant> {
    state
        .store
        .tenant(tenant_id(id)?)
        .await?
        .ok_or(Error::NotFound("tenant"))
}

/// Every tenant, oldest first, with its license usage.
#[utoipa::path(get, path = "/api/v1/provider/tenants", tag = "provider",
    responses((status = 200, body = Vec<TenantView>), (status = 403, body = ErrorView)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TenantView>>> {
    caller.require_provider()?;
    let mut views = Vec::new();
    for tenant in state.store.tenants().await? {
        views.push(view(&state, &tenant).await?);
    }
    Ok(Json(views))
}

/// Creates a tenant with the server's trial license (45 days, 25 seats unless the server was
/// started with other `--trial-days` / `--trial-seats`; none with `--trial-seats 0`).
#[utoipa::path(post, path = "/api/v1/provider/tenants", tag = "provider",
    request_body = CreateTenantRequest,
    responses((status = 201, body = TenantView), (status = 400, body = ErrorView), (status = 403, body = ErrorView)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<TenantView>)> {
    caller.require_provider()?;
    let tenant = state
        .installation
        .create_tenant(
            state.store.as_ref(),
            state.clock.as_ref(),
            &request.name,
            request.contact_email.as_deref(),
            state.config.trial,
        )
        .await?;
    state.licensing.licenses_changed(tenant.id).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &tenant).await?)))
}

#[utoipa::path(get, path = "/api/v1/provider/tenants/{id}", tag = "provider",
    responses((status = 200, body = TenantView), (status = 404, body = ErrorView)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    caller.require_provider()?;
    let tenant = stored_tenant(&state, &id).await?;
    Ok(Json(view(&state, &tenant).await?))
}

/// The tenant's license usage per hour or day (peak managed, peak licensed, router-minutes in
/// excess), as JSON or CSV: what the provider bills from. Same query as
/// `GET /api/v1/license-usage`.
#[utoipa::path(get, path = "/api/v1/provider/tenants/{id}/license-usage", tag = "provider",
    params(UsageQuery),
    responses((status = 200, body = UsageList), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
pub async fn tenant_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Response> {
    caller.require_provider()?;
    let tenant = stored_tenant(&state, &id).await?;
    usage_report(&state, tenant.id, &query).await
}

/// Renames the tenant or changes its contact address.
#[utoipa::path(patch, path = "/api/v1/provider/tenants/{id}", tag = "provider",
    request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateTenantRequest>,
) -> Result<Json<TenantView>> {
    caller.require_provider()?;
    let update = TenantUpdate {
        name: request
            .name
            .map(|name| checked_name("tenant", &name, 200))
            .transpose()?,
        contact_email: request
            .contact_email
            .map(|address| address.as_deref().map(checked_email).transpose())
            .transpose()?,
    };
    let tenant = state.store.update_tenant(tenant_id(&id)?, &update).await?;
    Ok(Json(view(&state, &tenant).await?))
}

/// Suspends the tenant: its routers are disconnected and refused (`tenant_suspended`), its API
/// tokens refused, until it is resumed. Its data and licenses stay.
#[utoipa::path(post, path = "/api/v1/provider/tenants/{id}/suspend", tag = "provider",
    responses((status = 200, body = TenantView), (status = 404, body = ErrorView)))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    caller.require_provider()?;
    let tenant = crate::tenancy::set_suspended(&state, tenant_id(&id)?, true).await?;
    Ok(Json(view(&state, &tenant).await?))
}

#[utoipa::path(post, path = "/api/v1/provider/tenants/{id}/resume", tag = "provider",
    responses((status = 200, body = TenantView), (status = 404, body = ErrorView)))]
pub async fn resume_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    caller.require_provider()?;
    let tenant = crate::tenancy::set_suspended(&state, tenant_id(&id)?, false).await?;
    Ok(Json(view(&state, &tenant).await?))
}

/// Deletes the tenant with its routers, licenses, tokens, webhooks and events; its routers'
/// channels end. Activation codes it redeemed stay redeemed.
#[utoipa::path(delete, path = "/api/v1/provider/tenants/{id}", tag = "provider",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    caller.require_provider()?;
    crate::tenancy::delete(&state, tenant_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCodesRequest {
    /// How many codes: 1 to 1000.
    pub count: u32,
    /// The seats each code grants: 1 to 100,000.
    pub seats: u32,
    /// How long each code's license lasts from its redemption, in months: 1 to 120.
    pub term_months: u32,
}

/// Creates a batch of activation codes, answered as CSV (`code,seats,term_months,batch_id,
/// created_at`) to hand to the tenants who bought them. Each code works once.
#[utoipa::path(post, path = "/api/v1/provider/activation-codes", tag = "provider",
    request_body = CreateCodesRequest,
    responses((status = 201, content_type = "text/csv", body = String), (status = 400, body = ErrorView)))]
pub async fn create_codes(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateCodesRequest>,
) -> Result<Response> {
    caller.require_provider()?;
    let count = checked_range(request.count, MAX_CODES_PER_BATCH, "count")?;
    let seats = checked_range(request.seats, MAX_SEATS_PER_CODE, "seats")?;
    let term_months = checked_range(request.term_months, MAX_TERM_MONTHS, "term_months")?;
    let now = state.clock.now();
    let batch_id = CodeBatchId::new();
    let codes: Vec<IssuedCode> = (0..count)
        .map(|_| IssuedCode {
            code: ActivationCode::generate(rand::random()),
            batch_id,
            seats,
            term_months,
            created_at: now,
            redemption: None,
        })
        .collect();
    state.store.create_activation_codes(&codes).await?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    let rows = std::iter::once(
        ["code", "seats", "term_months", "batch_id", "created_at"].map(str::to_owned),
    )
    .chain(codes.iter().map(|code| {
        [
            code.code.to_string(),
            seats.to_string(),
            term_months.to_string(),
            batch_id.to_string(),
            now.to_rfc3339(),
        ]
    }));
    for row in rows {
        csv.write_record(&row).expect("CSV is written to memory");
    }
    let body = csv.into_inner().expect("CSV is written to memory");
    Ok((
        StatusCode::CREATED,
        [(CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CodeQuery {
    /// `available` or `redeemed`; absent: both.
    state: Option<String>,
    /// Only this batch's codes.
    batch: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<u32>,
}

/// An activation code and where it stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CodeView {
    /// As people type it: `XXXXX-XXXXX-XXXXX`.
    pub code: String,
    pub batch_id: String,
    pub seats: u32,
    pub term_months: u32,
    pub created_at: DateTime<Utc>,
    /// `available` or `redeemed`.
    pub state: String,
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The tenant that redeemed it (null once that tenant is deleted).
    pub tenant_id: Option<String>,
    pub license_id: Option<String>,
    /// When its license ends.
    pub license_ends_at: Option<DateTime<Utc>>,
}

impl From<&IssuedCode> for CodeView {
    fn from(code: &IssuedCode) -> Self {
        let redemption = code.redemption.as_ref();
        Self {
            code: code.code.to_string(),
            batch_id: code.batch_id.to_string(),
            seats: code.seats,
            term_months: code.term_months,
            created_at: code.created_at,
            state: if redemption.is_some() {
                "redeemed"
            } else {
                "available"
            }
            .into(),
            redeemed_at: redemption.map(|r| r.at),
            tenant_id: redemption.and_then(|r| r.tenant_id.map(|t| t.to_string())),
            license_id: redemption.and_then(|r| r.license_id.map(|l| l.to_string())),
            license_ends_at: redemption.and_then(|r| term_end(r.at, code.term_months)),
        }
    }
}

/// The codes issued, newest first.
#[utoipa::path(get, path = "/api/v1/provider/activation-codes", tag = "provider", params(CodeQuery),
    responses((status = 200, body = Vec<CodeView>), (status = 400, body = ErrorView)))]
pub async fn list_codes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CodeQuery>,
) -> Result<Json<Vec<CodeView>>> {
    caller.require_provider()?;
    let redeemed = match query.state.as_deref() {
        None => None,
        Some("available") => Some(false),
        Some("redeemed") => Some(true),
        Some(other) => {
            return Err(Error::invalid(
                "invalid_filter",
                format!("state is available or redeemed, not {other:?}"),
            ));
        }
    };
    let batch = query
        .batch
        .map(|b| {
            b.parse::<CodeBatchId>()
                .map_err(|_| Error::invalid("invalid_filter", format!("{b:?} is no batch id")))
        })
        .transpose()?;
    let filter = CodeFilter {
        redeemed,
        batch,
        limit: page_limit(query.limit)?,
    };
    let codes = state.store.activation_codes(&filter).await?;
    Ok(Json(codes.iter().map(CodeView::from).collect()))
}
