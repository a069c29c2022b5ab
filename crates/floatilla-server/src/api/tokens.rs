//! `/api/v1/enrollment-tokens` and `/api/v1/api-tokens`.

use axum::Json;
use axum::extract::{Path, State};
use floatilla_domain::model::{ApiToken, EnrollmentToken};
use floatilla_domain::{ApiTokenId, EnrollmentTokenId, Role, TenantId};
use floatilla_protocol::EnrollmentTokenString;
use http::StatusCode;
use rand::Rng;

use super::auth::Caller;
use super::extract::ApiJson;
use super::groups::group_id_by_name;
use super::views::{
    ApiTokenView, CreateApiTokenRequest, CreateEnrollmentTokenRequest, EnrollmentTokenView,
    ErrorView,
};
use crate::error::{Error, Result, checked_name};
use crate::state::AppState;

const DEFAULT_TOKEN_LIFETIME_DAYS: i64 = 7;

async fn group_names(
    state: &AppState,
    tenant: TenantId,
) -> Result<std::collections::HashMap<floatilla_domain::GroupId, String>> {
    Ok(state
        .store
        .groups(tenant)
        .await?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect())
}

/// The tenant's enrollment tokens (without their secrets), newest first.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "enrollment",
    responses((status = 200, body = Vec<EnrollmentTokenView>)))]
pub async fn list_enrollment_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<EnrollmentTokenView>>> {
    let tenant = caller.require(Role::Admin)?;
    let names = group_names(&state, tenant).await?;
    let tokens = state.store.enrollment_tokens(tenant).await?;
    Ok(Json(
        tokens
            .iter()
            .map(|t| {
                EnrollmentTokenView::new(t, t.group_id.and_then(|g| names.get(&g).cloned()), None)
            })
            .collect(),
    ))
}

/// Creates an enrollment token. The answer holds the token text, which carries the server CA's
/// fingerprint so routers verify the server on first contact; it is shown only here.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", request_body = CreateEnrollmentTokenRequest,
    tag = "enrollment", responses((status = 201, body = EnrollmentTokenView), (status = 400, body = ErrorView)))]
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateEnrollmentTokenRequest>,
) -> Result<(StatusCode, Json<EnrollmentTokenView>)> {
    let tenant = caller.require(Role::Admin)?;
    let now = state.clock.now();
    let expires_at = match request.expires_at {
        None => Some(now + chrono::Duration::days(DEFAULT_TOKEN_LIFETIME_DAYS)),
        Some(explicit) => explicit,
    };
    if expires_at.is_some_and(|at| at <= now) {
        return Err(Error::invalid(
            "invalid_expiry",
            "expires_at must be in the future",
        ));
    }
    if request.max_uses == Some(0) {
        return Err(Error::invalid(
            "invalid_max_uses",
            "max_uses must be at least 1, or null",
        ));
    }
    let group_id = match request.group.as_deref() {
        Some(name) => Some(group_id_by_name(&state, tenant, name).await?),
        None => None,
    };
    let (token, text) = issue_enrollment_token(
        &state,
        tenant,
        &request.name,
        request.max_uses,
        expires_at,
        group_id,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenView::new(&token, request.group, Some(text))),
    ))
}

/// Creates an enrollment token; answers it with its text (secret and CA fingerprint).
pub async fn issue_enrollment_token(
    state: &AppState,
    tenant: TenantId,
    name: &str,
    max_uses: Option<u32>,
    expires_at: Option<floatilla_domain::Timestamp>,
    group_id: Option<floatilla_domain::GroupId>,
) -> Result<(EnrollmentToken, String)> {
    let secret = EnrollmentTokenString {
        secret: rand::rng().random(),
        ca_fingerprint: state.ca.fingerprint(),
    };
    let token = EnrollmentToken {
        id: EnrollmentTokenId::new(),
        tenant_id: tenant,
        name: checked_name("token", name, 200)?,
        secret_hash: secret.secret_hash(),
        max_uses,
        uses: 0,
        expires_at,
        group_id,
        revoked_at: None,
        created_at: state.clock.now(),
    };
    state.store.create_enrollment_token(&token).await?;
    Ok((token, secret.to_string()))
}

/// Revokes an enrollment token: routers already enrolled with it are not affected.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "enrollment",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn revoke_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let id: EnrollmentTokenId = id
        .parse()
        .map_err(|_| Error::NotFound("enrollment token"))?;
    state
        .store
        .revoke_enrollment_token(tenant, id, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an API token for the caller's tenant, with a role no higher than the caller's.
pub async fn issue_api_token(
    state: &AppState,
    tenant: TenantId,
    name: &str,
    role: Role,
) -> Result<(ApiToken, String)> {
    if !role.is_tenant_role() {
        return Err(Error::invalid(
            "invalid_role",
            "a tenant's token has the viewer, operator or admin role",
        ));
    }
    state
        .installation
        .create_api_token(
            state.store.as_ref(),
            state.clock.as_ref(),
            role,
            name,
            Some(tenant),
        )
        .await
}

#[utoipa::path(get, path = "/api/v1/api-tokens", tag = "api tokens", responses((status = 200, body = Vec<ApiTokenView>)))]
pub async fn list_api_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiTokenView>>> {
    let tenant = caller.require(Role::Admin)?;
    let tokens = state.store.api_tokens(tenant).await?;
    Ok(Json(
        tokens.iter().map(|t| ApiTokenView::new(t, None)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/api-tokens", request_body = CreateApiTokenRequest, tag = "api tokens",
    responses((status = 201, body = ApiTokenView), (status = 400, body = ErrorView)))]
pub async fn create_api_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateApiTokenRequest>,
) -> Result<(StatusCode, Json<ApiTokenView>)> {
    let tenant = caller.require(Role::Admin)?;
    let role: Role = request
        .role
        .parse()
        .map_err(|e: String| Error::invalid("invalid_role", e))?;
    let (token, text) = issue_api_token(&state, tenant, &request.name, role).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiTokenView::new(&token, Some(text))),
    ))
}

#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", tag = "api tokens",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn revoke_api_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let id: ApiTokenId = id.parse().map_err(|_| Error::NotFound("API token"))?;
    state
        .store
        .revoke_api_token(tenant, id, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
