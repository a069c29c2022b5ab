//! `/api/v1/users` (console accounts: invitations, approval, roles) and `/api/v1/audit`.
//! A tenant's admins manage the tenant's accounts; the provider manages the provider's own.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use floatilla_domain::accounts::{AuditEntry, User, UserStatus, normalized_email};
use floatilla_domain::{AuditEntryId, Role, TenantId, UserId};
use floatilla_store::AuditFilter;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::{ApiJson, ApiQuery, cursor, next_cursor, page_limit};
use super::views::ErrorView;
use crate::error::{Error, Result};
use crate::state::AppState;

/// How long an invitation link may be used.
const INVITATION_LIFETIME_DAYS: i64 = 7;

/// An account as listed (never its password).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub role: String,
    /// `invited`, `needs_approval`, `active` or `disabled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// The one-time link that sets the password; only in the answer that invites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_path: Option<String>,
}

impl UserView {
    pub fn new(user: &User, invitation_path: Option<String>) -> Self {
        UserView {
            id: user.id.to_string(),
            email: user.email.clone(),
            role: user.role.as_str().to_owned(),
            status: user.status.as_str().to_owned(),
            created_at: user.created_at,
            last_login_at: user.last_login_at,
            invitation_path,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub email: String,
    /// `viewer`, `operator` or `admin` (the provider invites `provider` accounts).
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatchRequest {
    pub role: Option<String>,
    /// `true` turns the account off (its logins end), `false` turns it back on.
    pub disabled: Option<bool>,
}

/// Whose accounts the caller manages: its tenant's (admins) or the provider's.
fn managed_accounts(caller: &Caller) -> Result<Option<TenantId>> {
    if caller.role == Role::Provider {
        return Ok(None);
    }
    caller.require(Role::Admin).map(Some)
}

fn role_for(scope: Option<TenantId>, role: &str) -> Result<Role> {
    let role: Role = role
        .parse()
        .map_err(|message: String| Error::invalid("invalid_role", message))?;
    crate::accounts::check_role_and_tenant(role, scope)?;
    Ok(role)
}

/// An account the caller manages; any other is answered as if it did not exist.
async fn managed_user(state: &AppState, scope: Option<TenantId>, id: &str) -> Result<User> {
    let id: UserId = id.parse().map_err(|_| Error::NotFound("user"))?;
    state
        .store
        .user(id)
        .await?
        .filter(|user| user.tenant_id == scope)
        .ok_or(Error::NotFound("user"))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = Vec<UserView>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<UserView>>> {
    let scope = managed_accounts(&caller)?;
    let users = state.store.users(scope).await?;
    Ok(Json(users.iter().map(|u| UserView::new(u, None)).collect()))
}

/// Invites a person: the answer's `invitation_path` (on this server's console) lets them set
/// a password once, within 7 days; in a cloud service an admin then approves the account.
#[utoipa::path(post, path = "/api/v1/users", request_body = InviteRequest, tag = "users",
    responses((status = 201, body = UserView), (status = 400, body = ErrorView), (status = 409, body = ErrorView)))]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<UserView>)> {
    let scope = managed_accounts(&caller)?;
    let (user, path) = invite_user(&state, scope, &request.email, &request.role).await?;
    Ok((StatusCode::CREATED, Json(UserView::new(&user, Some(path)))))
}

/// Creates an invited account; answers it with its one-time link's path.
pub async fn invite_user(
    state: &AppState,
    scope: Option<TenantId>,
    email: &str,
    role: &str,
) -> Result<(User, String)> {
    let role = role_for(scope, role)?;
    let email =
        normalized_email(email).map_err(|message| Error::invalid("invalid_email", message))?;
    let (secret, hash) = crate::accounts::new_secret();
    let now = state.clock.now();
    let user = User {
        id: UserId::new(),
        tenant_id: scope,
        email,
        role,
        status: UserStatus::Invited,
        password_hash: None,
        invitation: Some((hash, now + chrono::Duration::days(INVITATION_LIFETIME_DAYS))),
        created_at: now,
        last_login_at: None,
    };
    state.store.create_user(&user).await?;
    Ok((user, format!("/invitation/{secret}")))
}

/// Lets an account that set its password through an invitation log in (cloud).
#[utoipa::path(post, path = "/api/v1/users/{id}/approve", tag = "users",
    responses((status = 200, body = UserView), (status = 404, body = ErrorView), (status = 409, body = ErrorView)))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>> {
    let scope = managed_accounts(&caller)?;
    let mut user = managed_user(&state, scope, &id).await?;
    if user.status != UserStatus::NeedsApproval {
        return Err(Error::invalid_state(
            "not_awaiting_approval",
            format!("the account is {}, not waiting for approval", user.status),
        ));
    }
    user.status = UserStatus::Active;
    state.store.update_user(&user).await?;
    Ok(Json(UserView::new(&user, None)))
}

/// Changes an account's role or turns it off or on; either ends its logins.
#[utoipa::path(patch, path = "/api/v1/users/{id}", request_body = UserPatchRequest, tag = "users",
    responses((status = 200, body = UserView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UserPatchRequest>,
) -> Result<Json<UserView>> {
    let scope = managed_accounts(&caller)?;
    let mut user = managed_user(&state, scope, &id).await?;
    if let Some(role) = &request.role {
        user.role = role_for(scope, role)?;
    }
    match request.disabled {
        Some(true) => user.status = UserStatus::Disabled,
        Some(false) if user.status == UserStatus::Disabled => {
            user.status = if user.password_hash.is_some() {
                UserStatus::Active
            } else {
                UserStatus::Invited
            }
        }
        _ => {}
    }
    state.store.update_user(&user).await?;
    state.store.delete_user_sessions(user.id).await?;
    Ok(Json(UserView::new(&user, None)))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let scope = managed_accounts(&caller)?;
    let user = managed_user(&state, scope, &id).await?;
    state.store.delete_user(user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One audit log entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: DateTime<Utc>,
    /// `user`, `token` or `anonymous`.
    pub actor_kind: String,
    /// An e-mail address or a token's name.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub address: Option<String>,
    pub status: u16,
    /// `succeeded` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

impl AuditView {
    pub fn new(entry: &AuditEntry) -> Self {
        AuditView {
            id: entry.id.to_string(),
            at: entry.at,
            actor_kind: entry.actor.kind().to_owned(),
            actor: entry.actor.name().to_owned(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            address: entry.address.clone(),
            status: entry.status,
            outcome: if entry.succeeded() {
                "succeeded"
            } else {
                "failed"
            }
            .to_owned(),
            error: entry.error.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// An e-mail address or a token's name.
    pub actor: Option<String>,
    /// Text the action contains (`licenses`, `DELETE`).
    pub action: Option<String>,
    /// `succeeded` or `failed`.
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<String>,
    pub limit: Option<u32>,
    /// `csv` for a CSV file of the page instead of JSON.
    pub format: Option<String>,
}

impl AuditQuery {
    pub fn filter(&self) -> Result<AuditFilter> {
        Ok(AuditFilter {
            actor: self.actor.clone().filter(|a| !a.is_empty()),
            action: self.action.clone().filter(|a| !a.is_empty()),
            succeeded: match self.outcome.as_deref() {
                None | Some("") => None,
                Some("succeeded") => Some(true),
                Some("failed") => Some(false),
                Some(_) => {
                    return Err(Error::invalid(
                        "invalid_outcome",
                        "outcome is succeeded or failed",
                    ));
                }
            },
            since: self.since,
            until: self.until,
            before: cursor::<AuditEntryId>(
                self.before.as_deref(),
                "before is the id of an audit entry",
            )?,
        })
    }
}

/// Who did what, newest first: the caller's tenant's entries (the provider's own for the
/// provider). `format=csv` answers a CSV file; `limit` up to 1,000 a page.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorView)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response> {
    let list = audit_list(&state, &caller, &query).await?;
    match query.format.as_deref() {
        Some("csv") => audit_csv(&list.items).map(IntoResponse::into_response),
        None | Some("json") => Ok(Json(list).into_response()),
        Some(_) => Err(Error::invalid("invalid_format", "format is json or csv")),
    }
}

/// One page of the audit entries the caller may read, as `query` filters them.
pub async fn audit_list(
    state: &AppState,
    caller: &Caller,
    query: &AuditQuery,
) -> Result<AuditList> {
    let scope = managed_accounts(caller)?;
    let limit = page_limit(query.limit)?;
    let entries = state
        .store
        .audit_entries(scope, &query.filter()?, limit)
        .await?;
    let items: Vec<AuditView> = entries.iter().map(AuditView::new).collect();
    Ok(AuditList {
        next_before: next_cursor(&items, limit, |e| e.id.clone()),
        items,
    })
}

/// The entries as a CSV file with a header row.
pub fn audit_csv(items: &[AuditView]) -> Result<impl IntoResponse + use<>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| Error::Internal(format!("audit CSV: {e}"));
    writer
        .write_record([
            "at",
            "actor_kind",
            "actor",
            "action",
            "target",
            "address",
            "status",
            "outcome",
            "error",
        ])
        .map_err(failed)?;
    for item in items {
        writer
            .write_record([
                item.at.to_rfc3339(),
                item.actor_kind.clone(),
                item.actor.clone(),
                item.action.clone(),
                item.target.clone().unwrap_or_default(),
                item.address.clone().unwrap_or_default(),
                item.status.to_string(),
                item.outcome.clone(),
                item.error.clone().unwrap_or_default(),
            ])
            .map_err(failed)?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| Error::Internal(format!("audit CSV: {e}")))?;
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        body,
    ))
}
