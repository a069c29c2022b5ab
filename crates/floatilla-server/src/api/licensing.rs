//! The floating license pool over the API: the pool's figures, licenses, routers' standing in
//! the pool, and usage history for true-ups and audits.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use floatilla_domain::licensing::{
    Capacity, Granularity, LicenseTerm, Seats, UsageBucket, UsageSample, accrue,
    next_capacity_change,
};
use floatilla_domain::model::{DeviceFilter, PageRequest};
use floatilla_domain::{DeviceId, LicenseId, Role, TenantId};
use floatilla_store::License;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::devices::parse_device_id;
use super::extract::{ApiJson, ApiQuery};
use super::groups::group_id_by_name;
use super::views::{
    BulkLicenseRequest, BulkLicenseResult, CapacityChangeView, ErrorView, LicenseList,
    LicenseRequest, LicenseView, PoolView, UsageList, UsageView,
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
    let terms: Vec<LicenseTerm> = licenses.iter().map(|l| l.term).collect();
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
        .filter(|l| l.term.counts_at(now))
        .map(|l| l.id.to_string())
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
    }))
}

fn capacity_json(capacity: Capacity) -> serde_json::Value {
    serde_json::to_value(capacity).unwrap_or_default()
}

/// The tenant's licenses, oldest start first.
#[utoipa::path(get, path = "/api/v1/licenses", tag = "licensing",
    responses((status = 200, body = LicenseList), (status = 401, body = ErrorView)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<LicenseList>> {
    let tenant = caller.require(Role::Viewer)?;
    let now = state.clock.now();
    let licenses = state.store.licenses(tenant).await?;
    Ok(Json(LicenseList {
        items: licenses.iter().map(|l| LicenseView::of(l, now)).collect(),
    }))
}

/// Adds an unsigned license: only on a server started with `--allow-unsigned-licenses`
/// (tests, demos, development).
#[utoipa::path(post, path = "/api/v1/licenses", request_body = LicenseRequest, tag = "licensing",
    responses((status = 201, body = LicenseView), (status = 400, body = ErrorView),
        (status = 403, body = ErrorView, description = "unsigned licenses are not accepted")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<LicenseRequest>,
) -> Result<(StatusCode, Json<LicenseView>)> {
    let tenant = caller.require(Role::Admin)?;
    let license = add_unsigned_license(
        &state,
        tenant,
        &request.name,
        request.seats,
        request.not_before,
        request.not_after,
    )
    .await?;
    let view = LicenseView::of(&license, state.clock.now());
    Ok((StatusCode::CREATED, Json(view)))
}

/// Adds an unsigned license, if the server accepts them, and applies the new capacity.
pub async fn add_unsigned_license(
    state: &AppState,
    tenant: TenantId,
    name: &str,
    seats: Seats,
    not_before: Option<DateTime<Utc>>,
    not_after: Option<DateTime<Utc>>,
) -> Result<License> {
    if !state.config.allow_unsigned_licenses {
        return Err(Error::NotAllowed {
            code: "unsigned_licenses_not_allowed",
            message: "this server accepts only signed licenses (start it with --allow-unsigned-licenses for tests and demos)",
        });
    }
    let now = state.clock.now();
    let name = checked_name("license", name, 200)?;
    let not_before = not_before.unwrap_or(now);
    if not_after.is_some_and(|end| end <= not_before) {
        return Err(Error::invalid(
            "invalid_term",
            "not_after must be later than not_before",
        ));
    }
    let license = License {
        id: LicenseId::new(),
        tenant_id: tenant,
        name,
        term: LicenseTerm {
            seats,
            not_before,
            not_after,
            grace_until: None,
        },
        created_at: now,
    };
    state.store.add_license(&license).await?;
    state.licensing.licenses_changed(tenant).await?;
    Ok(license)
}

/// Removes a license; the capacity drops at once if it counted.
#[utoipa::path(delete, path = "/api/v1/licenses/{id}", tag = "licensing",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let id: LicenseId = id.parse().map_err(|_| Error::NotFound("license"))?;
    state.store.delete_license(tenant, id).await?;
    state.licensing.licenses_changed(tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks routers managed or unmanaged, pinned or unpinned: a list of routers, or every router
/// of a group as it is now. Pins beyond the capacity are refused as a whole.
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
    let devices = match (&request.ids, &request.group) {
        (Some(ids), None) => {
            let mut devices = Vec::with_capacity(ids.len());
            for id in ids {
                let id = parse_device_id(id)?;
                state
                    .store
                    .device(tenant, id)
                    .await?
                    .ok_or(Error::NotFound("device"))?;
                devices.push(id);
            }
            devices
        }
        (None, Some(group)) => group_devices(&state, tenant, group).await?,
        _ => {
            return Err(Error::invalid(
                "invalid_target",
                "give either ids (a list of router ids) or group (a group's name)",
            ));
        }
    };
    apply_settings(&state, tenant, &devices, request.managed, request.pinned).await?;
    Ok(Json(BulkLicenseResult {
        changed: devices.len() as u64,
    }))
}

/// Every router of the group now.
async fn group_devices(state: &AppState, tenant: TenantId, group: &str) -> Result<Vec<DeviceId>> {
    let filter = DeviceFilter {
        group_id: Some(group_id_by_name(state, tenant, group).await?),
        ..DeviceFilter::default()
    };
    let mut devices = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_devices(tenant, &filter, &PageRequest { limit: 1000, after })
            .await?;
        devices.extend(page.items.iter().map(|d| d.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(devices),
        }
    }
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

#[derive(Debug, Deserialize, IntoParams)]
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
    let rows: Vec<UsageView> = buckets.iter().map(usage_view).collect();
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
    fn of(license: &License, now: DateTime<Utc>) -> Self {
        let term = &license.term;
        let status = if term.counts_at(now) {
            "valid"
        } else if now < term.not_before {
            "not_yet_valid"
        } else {
            "expired"
        };
        LicenseView {
            id: license.id.to_string(),
            name: license.name.clone(),
            seats: term.seats,
            not_before: term.not_before,
            not_after: term.not_after,
            status: status.to_owned(),
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
