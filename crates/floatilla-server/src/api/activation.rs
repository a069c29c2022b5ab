//! `/api/v1/activation-codes/...` and `/api/v1/tenant`: a tenant admin redeems the provider's
//! activation codes, one at a time or as a CSV file, and keeps the tenant's contact address.
//!
//! A code is checked in this order: its form and check characters (a typo costs nothing and
//! reaches no database), the tenant's budget of failed attempts (`429` with `Retry-After` once
//! spent), then the lookup, which redeems it once and for this tenant only: a code another
//! tenant redeemed is answered like one that was never issued.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use floatilla_domain::LicenseId;
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::licensing::activation::ActivationCode;
use floatilla_domain::model::Tenant;
use floatilla_domain::{Role, TenantId};
use floatilla_store::{Redemption, TenantUpdate};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::enrollment::{LineCounter, csv_reader};
use super::extract::ApiJson;
use super::licensing::license_views;
use super::views::{ErrorView, LicenseView};
use crate::error::{Error, Result};
use crate::installation::checked_email;
use crate::state::AppState;

/// The most rows one import holds.
pub const MAX_IMPORT_ROWS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// As printed (`XXXXX-XXXXX-XXXXX`); case, spaces and dashes do not matter.
    pub code: String,
}

/// A redeemed code and the license it became.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedeemedView {
    pub code: String,
    pub license: LicenseView,
}

/// Redeems one code for the caller's tenant: its license counts from now for its term.
#[utoipa::path(post, path = "/api/v1/activation-codes/redeem", tag = "licensing",
    request_body = RedeemRequest,
    responses((status = 201, body = RedeemedView),
        (status = 400, body = ErrorView, description = "code_typo, invalid_code_length or invalid_code_character: caught before any lookup"),
        (status = 404, body = ErrorView, description = "no such code"),
        (status = 409, body = ErrorView, description = "code_already_redeemed: this tenant redeemed it before"),
        (status = 429, body = ErrorView, description = "rate_limited: too many failed attempts; Retry-After says when to try again")))]
pub async fn redeem(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<RedeemRequest>,
) -> Result<(StatusCode, Json<RedeemedView>)> {
    let tenant = caller.require(Role::Admin)?;
    let (code, license_id) = redeem_one(&state, tenant, &request.code).await?;
    state.licensing.licenses_changed(tenant).await?;
    Ok((
        StatusCode::CREATED,
        Json(RedeemedView {
            code: code.to_string(),
            license: license_view(&state, tenant, license_id).await?,
        }),
    ))
}

async fn license_view(state: &AppState, tenant: TenantId, id: LicenseId) -> Result<LicenseView> {
    let licenses = state.store.licenses(tenant).await?;
    license_views(&licenses, state.clock.now())
        .into_iter()
        .find(|view| view.id == id.to_string())
        .ok_or(Error::NotFound("license"))
}

/// Checks and redeems one typed code; answers the code and its new license's id. The caller
/// applies the new capacity ([`Pools::licenses_changed`](crate::licensing::Pools)), once for
/// however many codes it redeems.
async fn redeem_one(
    state: &AppState,
    tenant: TenantId,
    typed: &str,
) -> Result<(ActivationCode, LicenseId)> {
    let code: ActivationCode =
        typed
            .parse()
            .map_err(|e: floatilla_domain::licensing::activation::CodeError| {
                Error::invalid(e.code(), e.to_string())
            })?;
    let now = state.clock.now();
    state.tenancy.check_redeem(tenant, now)?;
    match state
        .store
        .redeem_activation_code(tenant, &code, LicenseId::new(), now)
        .await?
    {
        Redemption::Redeemed { license, .. } => {
            let message = format!(
                "activation code {code} redeemed: {} until {}",
                license.term.seats,
                license
                    .term
                    .not_after
                    .map_or_else(|| "further notice".to_owned(), |end| end.to_rfc3339())
            );
            crate::events::record(
                state,
                Event::new(tenant, now, EventKind::LicenseCodeRedeemed, None, message),
            )
            .await;
            Ok((code, license.id))
        }
        Redemption::AlreadyRedeemed { at } => Err(Error::invalid_state(
            "code_already_redeemed",
            format!(
                "activation code {code} was redeemed for this tenant at {}; each code works once",
                at.to_rfc3339()
            ),
        )),
        Redemption::Unknown => {
            state.tenancy.redeem_failed(tenant, now);
            Err(Error::NotFound("activation code"))
        }
    }
}

/// What became of each row of an import.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CodeImportReport {
    pub redeemed: u64,
    pub failed: u64,
    pub rows: Vec<CodeImportRow>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CodeImportRow {
    /// The row's line in the file, from 1.
    pub line: u64,
    /// The code as it stood in the row.
    pub code: String,
    /// `redeemed` or `failed`.
    pub result: String,
    pub license_id: Option<String>,
    /// Why the row failed: the same codes as a single redemption (`code_typo`, `not_found`,
    /// `code_already_redeemed`, `rate_limited`, ...).
    pub error: Option<ErrorView>,
}

/// Redeems the codes of a CSV file (`text/csv`): the first column of each row holds a code (a
/// first row `code` is a header), other columns are ignored. Rows are redeemed in order, each
/// on its own; the answer has each row's result. Once the failed-attempt budget is spent, the
/// remaining rows fail as `rate_limited` (the whole request is answered `429` if it was spent
/// before the first row).
#[utoipa::path(post, path = "/api/v1/activation-codes/import", tag = "licensing",
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = CodeImportReport),
        (status = 400, body = ErrorView, description = "invalid_csv, empty_import or too_many_rows"),
        (status = 429, body = ErrorView)))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    body: String,
) -> Result<Json<CodeImportReport>> {
    let tenant = caller.require(Role::Admin)?;
    let rows = code_rows(&body)?;
    state.tenancy.check_redeem(tenant, state.clock.now())?;
    let mut report = CodeImportReport {
        redeemed: 0,
        failed: 0,
        rows: Vec::with_capacity(rows.len()),
    };
    for (line, typed) in rows {
        let (result, license_id, error) = match Box::pin(redeem_one(&state, tenant, &typed)).await {
            Ok((_, license)) => {
                report.redeemed += 1;
                ("redeemed", Some(license.to_string()), None)
            }
            Err(error) if error.status().is_server_error() => {
                if report.redeemed > 0 {
                    state.licensing.licenses_changed(tenant).await?;
                }
                return Err(error);
            }
            Err(error) => {
                report.failed += 1;
                let view = ErrorView {
                    code: error.code().to_owned(),
                    message: error.to_string(),
                };
                ("failed", None, Some(view))
            }
        };
        report.rows.push(CodeImportRow {
            line,
            code: typed,
            result: result.into(),
            license_id,
            error,
        });
    }
    if report.redeemed > 0 {
        state.licensing.licenses_changed(tenant).await?;
    }
    Ok(Json(report))
}

/// Each non-empty row's line and first field, without a `code` header.
fn code_rows(body: &str) -> Result<Vec<(u64, String)>> {
    let mut reader = csv_reader(body);
    let mut rows = Vec::new();
    let mut lines = LineCounter::default();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::invalid("invalid_csv", e.to_string()))?;
        let line = record
            .position()
            .map_or(index as u64 + 1, |p| lines.line_at(body, p.byte()));
        let first = record.get(0).unwrap_or_default();
        if first.is_empty() || (index == 0 && first.eq_ignore_ascii_case("code")) {
            continue;
        }
        if rows.len() == MAX_IMPORT_ROWS {
            return Err(Error::invalid(
                "too_many_rows",
                format!("an import holds at most {MAX_IMPORT_ROWS} rows"),
            ));
        }
        rows.push((line, first.to_owned()));
    }
    if rows.is_empty() {
        return Err(Error::invalid(
            "empty_import",
            "the file holds no codes (one per row, in the first column)",
        ));
    }
    Ok(rows)
}

/// The caller's tenant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnTenantView {
    pub id: String,
    pub name: String,
    /// Where notices about the licenses are e-mailed (when the server sends e-mail).
    pub contact_email: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Tenant> for OwnTenantView {
    fn from(tenant: Tenant) -> Self {
        Self {
            id: tenant.id.to_string(),
            name: tenant.name,
            contact_email: tenant.contact_email,
            created_at: tenant.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOwnTenantRequest {
    /// A new address; null removes it.
    #[serde(default, deserialize_with = "super::views::present")]
    #[schema(value_type = Option<String>)]
    pub contact_email: Option<Option<String>>,
}

#[utoipa::path(get, path = "/api/v1/tenant", tag = "tenant",
    responses((status = 200, body = OwnTenantView), (status = 401, body = ErrorView)))]
pub async fn own_tenant(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<OwnTenantView>> {
    let tenant = caller.tenant_record(&state, Role::Viewer).await?;
    Ok(Json(OwnTenantView::from(tenant)))
}

/// Sets where notices about the tenant's licenses are e-mailed.
#[utoipa::path(patch, path = "/api/v1/tenant", tag = "tenant",
    request_body = UpdateOwnTenantRequest,
    responses((status = 200, body = OwnTenantView), (status = 400, body = ErrorView), (status = 403, body = ErrorView)))]
pub async fn update_own_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<UpdateOwnTenantRequest>,
) -> Result<Json<OwnTenantView>> {
    let tenant = caller.require(Role::Admin)?;
    let update = TenantUpdate {
        name: None,
        contact_email: request
            .contact_email
            .map(|address| address.as_deref().map(checked_email).transpose())
            .transpose()?,
    };
    let tenant = state.store.update_tenant(tenant, &update).await?;
    Ok(Json(OwnTenantView::from(tenant)))
}
