//! The floating license pool over the API: the pool's figures, licenses, routers' standing in
//! the pool, and usage history for true-ups and audits.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use floatilla_domain::licensing::signed;
use floatilla_domain::licensing::{
    Capacity, ClockDoubt, Granularity, LicenseTerm, Lineage, UsageBucket, UsageSample, accrue,
    capacity_at, effective_terms, license_status, next_capacity_change, superseded_at,
};
use floatilla_domain::{DeviceId, LicenseId, Role, TenantId};
use floatilla_store::{License, SignedDetails};
use http::HeaderMap;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::devices::Selection;
use super::extract::{ApiJson, ApiQuery};
use super::views::{
    BulkLicenseRequest, BulkLicenseResult, CapacityChangeView, ClockView, ErrorView,
    InstallationView, LicenseList, LicenseRequest, LicenseView, PoolView, RouterRef, UsageList,
    UsageView,
};
use crate::error::{Error, Result, checked_name};
use crate::licensing::Request;
use crate::state::AppState;

/// The pool now: capacity, seats in use, excess and pinned routers, and the next change.
#[utoipa::path(get, path = "/api/v1/license-pool", tag = "licensing",
    responses((status = 200, body = PoolView), (status = 401, body = ErrorView)))]
pub async fn pool(State(state): State<AppState>, caller: Caller) -> Result<Json<PoolView>> {
    let tenant = caller.require(Role::Viewer)?;
    let summary = state.licensing.summary(tenant).await?;
    let licenses = state.store.licenses(tenant).await?;
    let now = state.clock.now();
    let lineages: Vec<Lineage<'_>> = licenses.iter().map(License::lineage).collect();
    let terms = effective_terms(&lineages);
    let counts = summary.counts;
    let live = counts.licensed + counts.excess;
    let next_change = next_capacity_change(&terms, now, live).map(|change| CapacityChangeView {
        at: change.at,
        from: capacity_json(change.from),
        to: capacity_json(change.to),
        routers_shed: change.shed,
        routers_restored: change.restored,
        description: change.describe(),
    });
    let counting: Vec<String> = licenses
        .iter()
        .zip(&terms)
        .filter(|(_, term)| term.counts_at(now))
        .map(|(l, _)| l.id.to_string())
        .collect();
    let explanation = match summary.capacity {
        Capacity::Limited(0) if licenses.is_empty() => {
            Some("no license is installed: the capacity is 0 and every router is excess".to_owned())
        }
        Capacity::Limited(0) => Some(
            "no installed license counts now: the capacity is 0 and every router is excess"
                .to_owned(),
        ),
        _ => None,
    };
    Ok(Json(PoolView {
        capacity: capacity_json(summary.capacity),
        in_use: counts.licensed,
        free: match summary.capacity {
            Capacity::Limited(seats) => Some(seats.saturating_sub(counts.licensed)),
            Capacity::Unlimited => None,
        },
        excess: counts.excess,
        pinned: counts.pinned,
        counting_licenses: counting,
        next_change,
        explanation,
        clock: ClockView::of(state.licensing.clock_doubt()),
        warning: state.licensing.drop_warning(tenant).await,
    }))
}

impl ClockView {
    fn of(doubt: Option<ClockDoubt>) -> Self {
        match doubt {
            None => ClockView {
                trusted: true,
                doubt: None,
                off_by_secs: None,
            },
            Some(ClockDoubt::Behind { by }) => ClockView {
                trusted: false,
                doubt: Some("behind_signed_time".to_owned()),
                off_by_secs: Some(-by.num_seconds()),
            },
            Some(ClockDoubt::Jumped { by }) => ClockView {
                trusted: false,
                doubt: Some("jumped".to_owned()),
                off_by_secs: Some(by.num_seconds()),
            },
        }
    }
}

/// Accepts the wall clock as it reads now, after a clock alarm: capacity follows it again.
#[utoipa::path(post, path = "/api/v1/license-pool/clock/acknowledge", tag = "licensing",
    responses((status = 200, body = ClockView), (status = 403, body = ErrorView)))]
pub async fn acknowledge_clock(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ClockView>> {
    let tenant = caller.require(Role::Admin)?;
    state.licensing.acknowledge_clock(tenant).await?;
    Ok(Json(ClockView::of(state.licensing.clock_doubt())))
}

/// The installation's id, which signed license files are bound to.
#[utoipa::path(get, path = "/api/v1/installation", tag = "licensing",
    responses((status = 200, body = InstallationView), (status = 401, body = ErrorView)))]
pub async fn installation(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<InstallationView>> {
    caller.require(Role::Viewer)?;
    Ok(Json(InstallationView {
        installation_id: state.installation.id.clone(),
        mode: state.installation.mode.as_str().to_owned(),
    }))
}

pub(crate) fn capacity_json(capacity: Capacity) -> serde_json::Value {
    serde_json::to_value(capacity).unwrap_or_default()
}

/// The tenant's licenses, oldest start first, with where each stands.
#[utoipa::path(get, path = "/api/v1/licenses", tag = "licensing",
    responses((status = 200, body = LicenseList), (status = 401, body = ErrorView)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<LicenseList>> {
    let tenant = caller.require(Role::Viewer)?;
    let now = state.clock.now();
    let licenses = state.store.licenses(tenant).await?;
    Ok(Json(LicenseList {
        items: license_views(&licenses, now),
    }))
}

pub(crate) fn license_views(licenses: &[License], now: DateTime<Utc>) -> Vec<LicenseView> {
    let lineages: Vec<Lineage<'_>> = licenses.iter().map(License::lineage).collect();
    let effective = effective_terms(&lineages);
    licenses
        .iter()
        .zip(&effective)
        .map(|(license, term)| LicenseView::of(license, term, &lineages, now))
        .collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DowngradeQuery {
    /// Proceed although the capacity falls below the routers licensed now.
    acknowledge_downgrade: Option<bool>,
}

/// Installs a license: a signed license file as the body (`Content-Type:
/// application/x-pem-file` or `text/plain`), or, on a server started with
/// `--allow-unsigned-licenses` (tests, demos, development), an unsigned one as JSON. A change
/// that would leave fewer seats than routers licensed now needs `?acknowledge_downgrade=true`.
#[utoipa::path(post, path = "/api/v1/licenses", params(DowngradeQuery), tag = "licensing",
    request_body(content = String, content_type = "application/x-pem-file",
        description = "a signed license file; or an unsigned LicenseRequest as application/json"),
    responses((status = 201, body = LicenseView),
        (status = 400, body = ErrorView, description = "the file was rejected (malformed, unknown_issuer, issuer_not_valid_at_issue, invalid_signature, wrong_installation, issued_in_future, superseded, expired)"),
        (status = 403, body = ErrorView, description = "unsigned licenses are not accepted"),
        (status = 409, body = ErrorView, description = "downgrade_requires_acknowledgement, or the serial is installed already"),
        (status = 415, body = ErrorView)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DowngradeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<LicenseView>)> {
    let tenant = caller.require(Role::Admin)?;
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let acknowledged = query.acknowledge_downgrade.unwrap_or(false);
    let license = match media_type.as_str() {
        "application/json" => {
            let request: LicenseRequest = serde_json::from_slice(&body)
                .map_err(|e| Error::invalid("invalid_json", e.to_string()))?;
            let license = unsigned_license(&state, tenant, &request)?;
            install(&state, tenant, license, acknowledged).await?
        }
        "application/x-pem-file" | "text/plain" => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| Error::invalid("malformed", "a license file is UTF-8 text"))?;
            install_signed(&state, tenant, text, acknowledged).await?
        }
        other => {
            return Err(Error::UnsupportedMediaType(format!(
                "send a license file as application/x-pem-file or text/plain (or an unsigned license as application/json), not {other:?}"
            )));
        }
    };
    let now = state.clock.now();
    let licenses = state.store.licenses(tenant).await?;
    let view = license_views(&licenses, now)
        .into_iter()
        .find(|view| view.id == license.id.to_string())
        .ok_or(Error::NotFound("license"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// An unsigned license from its JSON, if the server accepts them.
fn unsigned_license(
    state: &AppState,
    tenant: TenantId,
    request: &LicenseRequest,
) -> Result<License> {
    if !state.config.allow_unsigned_licenses {
        return Err(Error::NotAllowed {
            code: "unsigned_licenses_not_allowed",
            message: "this server accepts only signed licenses (start it with --allow-unsigned-licenses for tests and demos)",
        });
    }
    let now = state.clock.now();
    let name = checked_name("license", &request.name, 200)?;
    let not_before = request.not_before.unwrap_or(now);
    if request.not_after.is_some_and(|end| end <= not_before) {
        return Err(Error::invalid(
            "invalid_term",
            "not_after must be later than not_before",
        ));
    }
    Ok(License {
        id: LicenseId::new(),
        tenant_id: tenant,
        name,
        term: LicenseTerm {
            seats: request.seats,
            not_before,
            not_after: request.not_after,
            grace_until: None,
        },
        signed: None,
        created_at: now,
    })
}

/// Adds an unsigned license (the server must accept them) and applies the new capacity: for
/// programs that embed a server.
pub async fn add_unsigned_license(
    state: &AppState,
    tenant: TenantId,
    request: &LicenseRequest,
) -> Result<License> {
    let license = unsigned_license(state, tenant, request)?;
    install(state, tenant, license, false).await
}

/// Stores a license after the downgrade check, and applies the new capacity at once.
async fn install(
    state: &AppState,
    tenant: TenantId,
    license: License,
    acknowledged: bool,
) -> Result<License> {
    let before = state.store.licenses(tenant).await?;
    let mut after = before.clone();
    after.push(license.clone());
    check_downgrade(state, tenant, &before, &after, acknowledged).await?;
    state.store.add_license(&license).await?;
    state.licensing.licenses_changed(tenant).await?;
    Ok(license)
}

/// Verifies a signed license file (in the documented order, each failure with its code) and
/// installs it. A rejected file changes nothing.
async fn install_signed(
    state: &AppState,
    tenant: TenantId,
    text: &str,
    acknowledged: bool,
) -> Result<License> {
    let now = state.clock.now();
    let installed = state.store.licenses(tenant).await?;
    let superseded: HashSet<&str> = installed
        .iter()
        .filter_map(|l| l.signed.as_ref())
        .flat_map(|s| s.supersedes.iter().map(String::as_str))
        .collect();
    let verified = signed::verify(
        text,
        &state.config.trusted_license_roots,
        Some(&state.installation.id),
        now,
        |serial| superseded.contains(serial),
    )
    .map_err(|rejection| Error::invalid(rejection.code(), rejection.to_string()))?;
    let claims = verified.claims();
    let license = License {
        id: LicenseId::new(),
        tenant_id: tenant,
        name: format!("{} ({})", claims.customer, claims.serial),
        term: claims.term(),
        signed: Some(SignedDetails {
            serial: claims.serial.clone(),
            customer: claims.customer.clone(),
            issued_at: claims.issued_at,
            supersedes: claims.supersedes.clone(),
            entitlements: claims.entitlements.clone(),
            issuer_key_id: verified.issuer_key_id().to_owned(),
            text: verified.text().to_owned(),
        }),
        created_at: now,
    };
    if installed
        .iter()
        .any(|l| l.signed.as_ref().is_some_and(|s| s.serial == claims.serial))
    {
        return Err(Error::Conflict(format!(
            "license {} is installed already",
            claims.serial
        )));
    }
    install(state, tenant, license, acknowledged).await
}

/// Refuses a change of licenses that would leave fewer seats now than routers licensed now,
/// unless acknowledged, naming the routers that would become excess.
async fn check_downgrade(
    state: &AppState,
    tenant: TenantId,
    before: &[License],
    after: &[License],
    acknowledged: bool,
) -> Result<()> {
    if acknowledged {
        return Ok(());
    }
    let now = state.clock.now();
    let capacity = |licenses: &[License]| {
        let lineages: Vec<Lineage<'_>> = licenses.iter().map(License::lineage).collect();
        capacity_at(&effective_terms(&lineages), now)
    };
    let (from, to) = (capacity(before), capacity(after));
    let shed = state.licensing.would_shed(tenant, to).await;
    if from == to || shed.is_empty() {
        return Ok(());
    }
    let mut routers = Vec::with_capacity(shed.len());
    for id in shed {
        if let Some(device) = state.store.device(tenant, id).await? {
            routers.push(RouterRef {
                id: device.id.to_string(),
                serial: device.serial,
                name: device.name,
            });
        }
    }
    Err(Error::DowngradeRequiresAcknowledgement {
        from: from.to_string(),
        to: to.to_string(),
        routers,
    })
}

/// Removes a license; the capacity drops at once if it counted (acknowledged with
/// `?acknowledge_downgrade=true` when routers would become excess).
#[utoipa::path(delete, path = "/api/v1/licenses/{id}", params(DowngradeQuery), tag = "licensing",
    responses((status = 204), (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "downgrade_requires_acknowledgement")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DowngradeQuery>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let id: LicenseId = id.parse().map_err(|_| Error::NotFound("license"))?;
    let before = state.store.licenses(tenant).await?;
    if !before.iter().any(|l| l.id == id) {
        return Err(Error::NotFound("license"));
    }
    let after: Vec<License> = before.iter().filter(|l| l.id != id).cloned().collect();
    let acknowledged = query.acknowledge_downgrade.unwrap_or(false);
    check_downgrade(&state, tenant, &before, &after, acknowledged).await?;
    state.store.delete_license(tenant, id).await?;
    state.licensing.licenses_changed(tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks routers managed or unmanaged, pinned or unpinned: a list of routers, or every router
/// of a group or with a tag as it is now. Pins beyond the capacity are refused as a whole.
#[utoipa::path(post, path = "/api/v1/devices/bulk", request_body = BulkLicenseRequest, tag = "licensing",
    responses((status = 200, body = BulkLicenseResult), (status = 400, body = ErrorView),
        (status = 404, body = ErrorView), (status = 409, body = ErrorView, description = "pins_exceed_capacity")))]
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<BulkLicenseRequest>,
) -> Result<Json<BulkLicenseResult>> {
    let tenant = caller.require(Role::Operator)?;
    if request.managed.is_none() && request.pinned.is_none() {
        return Err(Error::invalid(
            "nothing_to_change",
            "give managed, pinned or both",
        ));
    }
    let selection = Selection {
        ids: request.ids,
        group: request.group,
        tag: request.tag,
    };
    let devices = selection.devices(&state, tenant).await?;
    apply_settings(&state, tenant, &devices, request.managed, request.pinned).await?;
    Ok(Json(BulkLicenseResult {
        changed: devices.len() as u64,
    }))
}

/// Applies management and pin settings to routers of the tenant.
pub async fn apply_settings(
    state: &AppState,
    tenant: TenantId,
    devices: &[DeviceId],
    managed: Option<bool>,
    pinned: Option<bool>,
) -> Result<()> {
    if let Some(managed) = managed {
        let request = Request::Managed {
            devices: devices.to_vec(),
            managed,
        };
        state.licensing.submit(tenant, request).await?;
    }
    if let Some(pinned) = pinned {
        let request = Request::Pinned {
            devices: devices.to_vec(),
            pinned,
        };
        state.licensing.submit(tenant, request).await?;
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `hour` or `day`.
    granularity: Option<String>,
    /// The first bucket (RFC 3339); default 7 days (hours) or 90 days (days) ago.
    from: Option<DateTime<Utc>>,
    /// The end (exclusive); default now.
    to: Option<DateTime<Utc>>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// Usage per hour or per day: peak concurrent managed routers, peak licensed routers, and the
/// router-minutes spent in excess. As JSON, or as CSV with `format=csv`.
#[utoipa::path(get, path = "/api/v1/license-usage", params(UsageQuery), tag = "licensing",
    responses((status = 200, body = UsageList), (status = 400, body = ErrorView)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Response> {
    let tenant = caller.require(Role::Viewer)?;
    usage_report(&state, tenant, &query).await
}

/// The tenant's usage as `query` asks: for the tenant's own viewers and for the provider.
pub(crate) async fn usage_report(
    state: &AppState,
    tenant: TenantId,
    query: &UsageQuery,
) -> Result<Response> {
    let granularity = query
        .granularity
        .as_deref()
        .unwrap_or("hour")
        .parse::<Granularity>()
        .map_err(|e| Error::invalid("invalid_granularity", e))?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Error::invalid(
                "invalid_format",
                format!("format is json or csv, not {other}"),
            ));
        }
    };
    let rows = usage_rows(state, tenant, query, granularity).await?;
    if csv {
        let text = usage_csv(granularity, &rows);
        return Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(Json(UsageList {
        granularity: granularity.as_str().to_owned(),
        items: rows,
    })
    .into_response())
}

/// The tenant's usage per `granularity` bucket over the query's range (the last 7 days by hour,
/// 90 by day, unless it says otherwise), up to now.
pub(crate) async fn usage_rows(
    state: &AppState,
    tenant: TenantId,
    query: &UsageQuery,
    granularity: Granularity,
) -> Result<Vec<UsageView>> {
    let now = state.clock.now();
    let to = query.to.unwrap_or(now);
    let from = query.from.unwrap_or_else(|| {
        to - match granularity {
            Granularity::Hour => chrono::Duration::days(7),
            Granularity::Day => chrono::Duration::days(90),
        }
    });
    if from >= to || to - from > chrono::Duration::days(3 * 366) {
        return Err(Error::invalid(
            "invalid_range",
            "from must be before to, at most 3 years apart",
        ));
    }
    let from = granularity.bucket_start(from);
    let mut buckets = state
        .store
        .license_usage(tenant, granularity, from, to)
        .await?;
    // The stored buckets hold usage up to the pool's last change; the counts since then last
    // until now.
    if let Some(last) = state.store.pool_head(tenant).await?.and_then(|h| h.usage) {
        let now_sample = UsageSample { at: now, ..last };
        for share in accrue(&last, &now_sample, granularity) {
            if share.start < from || share.start >= to {
                continue;
            }
            match buckets.iter_mut().find(|b| b.start == share.start) {
                Some(bucket) => bucket.merge(&share),
                None => buckets.push(share),
            }
        }
        buckets.sort_by_key(|b| b.start);
    }
    Ok(buckets.iter().map(usage_view).collect())
}

fn usage_view(bucket: &UsageBucket) -> UsageView {
    UsageView {
        start: bucket.start,
        peak_managed: bucket.peak_managed,
        peak_licensed: bucket.peak_licensed,
        excess_router_minutes: (bucket.excess_router_minutes() * 100.0).round() / 100.0,
    }
}

fn usage_csv(granularity: Granularity, rows: &[UsageView]) -> String {
    let mut text =
        String::from("start,granularity,peak_managed,peak_licensed,excess_router_minutes\n");
    for row in rows {
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            row.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            granularity,
            row.peak_managed,
            row.peak_licensed,
            row.excess_router_minutes
        ));
    }
    text
}

impl LicenseView {
    /// `term` is the license's effective term (cut short by a successor).
    fn of(
        license: &License,
        term: &LicenseTerm,
        lineages: &[Lineage<'_>],
        now: DateTime<Utc>,
    ) -> Self {
        let signed = license.signed.as_ref();
        let superseded_from = signed.and_then(|s| superseded_at(&s.serial, lineages));
        // Days left count to when it stops counting: a successor's start cuts it short.
        let (status, days_left) = license_status(term, superseded_from, now);
        LicenseView {
            id: license.id.to_string(),
            name: license.name.clone(),
            seats: license.term.seats,
            not_before: license.term.not_before,
            not_after: license.term.not_after,
            grace_until: license.term.grace_until,
            status: status.as_str().to_owned(),
            days_left,
            counting: term.counts_at(now),
            signed: signed.is_some(),
            serial: signed.map(|s| s.serial.clone()),
            customer: signed.map(|s| s.customer.clone()),
            issued_at: signed.map(|s| s.issued_at),
            supersedes: signed.map(|s| s.supersedes.clone()).unwrap_or_default(),
            superseded_from,
            entitlements: signed.map(|s| s.entitlements.clone()).unwrap_or_default(),
            issuer_key_id: signed.map(|s| s.issuer_key_id.clone()),
            created_at: license.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_csv_has_a_header_and_a_row_per_bucket() {
        let start = DateTime::parse_from_rfc3339("2027-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let rows = [UsageView {
            start,
            peak_managed: 20,
            peak_licensed: 15,
            excess_router_minutes: 300.5,
        }];
        assert_eq!(
            usage_csv(Granularity::Hour, &rows),
            "start,granularity,peak_managed,peak_licensed,excess_router_minutes\n\
             2027-03-01T10:00:00Z,hour,20,15,300.5\n"
        );
    }

    #[test]
    fn capacity_is_a_number_or_unlimited() {
        assert_eq!(capacity_json(Capacity::Limited(15)), serde_json::json!(15));
        assert_eq!(
            capacity_json(Capacity::Unlimited),
            serde_json::json!("unlimited")
        );
    }
}
