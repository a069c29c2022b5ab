//! `/api/v1/devices`: the fleet.

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use floatilla_domain::enrollment::EnrollmentState;
use floatilla_domain::licensing::LicenseState;
use floatilla_domain::model::{Device, DeviceFilter, DeviceStatus, PageRequest, checked_tag};
use floatilla_domain::{ConnectionState, DeviceId, Role, TenantId, TimerChange};
use floatilla_store::DevicePatch;
use http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::extract::page_limit;
use super::extract::{ApiJson, ApiQuery};
use super::groups::group_id_by_name;
use super::views::{
    AllowReenrollmentRequest, ConnectionView, DeviceDetail, DeviceList, DevicePatchRequest,
    DeviceView, ErrorView, StatusView,
};
use crate::error::{Error, Result, checked_name};
use crate::state::AppState;

const HISTORY_SHOWN: u32 = 50;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `online` or `offline`.
    pub connection_state: Option<String>,
    /// Case-insensitive part of the serial or the name.
    pub q: Option<String>,
    /// A group's name.
    pub group: Option<String>,
    /// `preregistered`, `pending`, `accepted` or `rejected`.
    pub enrollment: Option<String>,
    /// `licensed`, `excess`, `inactive` or `unmanaged`.
    pub license_state: Option<String>,
    /// Tags, comma-separated: routers carrying all of them.
    pub tag: Option<String>,
    /// Routers of exactly this model.
    pub model: Option<String>,
    /// Routers running exactly this firmware version.
    pub firmware: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Which routers a bulk change (and a job) is for: exactly one of a list of ids, a group's
/// routers or a tag's routers, as they are now.
#[derive(Debug, Default)]
pub struct Selection {
    pub ids: Option<Vec<String>>,
    pub group: Option<String>,
    pub tag: Option<String>,
}

impl Selection {
    /// The ids of the routers selected; `404` for an id, group or tag the tenant does not have.
    pub async fn devices(&self, state: &AppState, tenant: TenantId) -> Result<Vec<DeviceId>> {
        let routers = self.routers(state, tenant).await?;
        Ok(routers.iter().map(|d| d.id).collect())
    }

    /// The routers selected, as they are now.
    pub async fn routers(&self, state: &AppState, tenant: TenantId) -> Result<Vec<Device>> {
        let filter = match (&self.ids, &self.group, &self.tag) {
            (Some(ids), None, None) => {
                let mut devices = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = parse_device_id(id)?;
                    let device = state
                        .store
                        .device(tenant, id)
                        .await?
                        .ok_or(Error::NotFound("device"))?;
                    devices.push(device);
                }
                return Ok(devices);
            }
            (None, Some(group), None) => DeviceFilter {
                group_id: Some(group_id_by_name(state, tenant, group).await?),
                ..DeviceFilter::default()
            },
            (None, None, Some(tag)) => DeviceFilter {
                tags: vec![checked_tag(tag).map_err(|e| Error::invalid("invalid_tag", e))?],
                ..DeviceFilter::default()
            },
            _ => {
                return Err(Error::invalid(
                    "invalid_target",
                    "give one of ids (a list of router ids), group (a group's name) or tag",
                ));
            }
        };
        matching_devices(state, tenant, &filter).await
    }
}

/// Every router of the tenant the filter matches now.
/// Routers read at a time when a selection is resolved: a job for a whole fleet reads a few
/// large pages rather than many small ones (each page also counts the matches).
const MATCHING_PAGE: u32 = 5000;

pub async fn matching_devices(
    state: &AppState,
    tenant: TenantId,
    filter: &DeviceFilter,
) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_devices(
                tenant,
                filter,
                &PageRequest {
                    limit: MATCHING_PAGE,
                    after,
                },
            )
            .await?;
        devices.extend(page.items);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(devices),
        }
    }
}

/// Tags as given, each checked and in stored form, without repeats.
pub fn checked_tags(tags: &[String]) -> Result<Vec<String>> {
    let mut checked = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = checked_tag(tag).map_err(|e| Error::invalid("invalid_tag", e))?;
        if !checked.contains(&tag) {
            checked.push(tag);
        }
    }
    Ok(checked)
}

/// Comma-separated tags, as a query gives them.
fn checked_tags_list(list: &str) -> Result<Vec<String>> {
    let tags: Vec<String> = list.split(',').map(str::to_owned).collect();
    checked_tags(&tags)
}

/// Views of routers with their tags, read in one go.
pub async fn device_views(
    state: &AppState,
    tenant: TenantId,
    devices: &[Device],
) -> Result<Vec<DeviceView>> {
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
    let mut tags = state.store.device_tags(tenant, &ids).await?;
    Ok(devices
        .iter()
        .map(|d| DeviceView::new(d, tags.remove(&d.id).unwrap_or_default()))
        .collect())
}

/// A router's view with its tags.
pub async fn device_view(
    state: &AppState,
    tenant: TenantId,
    device: &Device,
) -> Result<DeviceView> {
    let views = device_views(state, tenant, std::slice::from_ref(device)).await?;
    Ok(views.into_iter().next().expect("one view per router"))
}

pub fn parse_device_id(id: &str) -> Result<DeviceId> {
    id.parse().map_err(|_| Error::NotFound("device"))
}

pub async fn load(
    state: &AppState,
    tenant: TenantId,
    id: &str,
) -> Result<floatilla_domain::model::Device> {
    state
        .store
        .device(tenant, parse_device_id(id)?)
        .await?
        .ok_or(Error::NotFound("device"))
}

/// Lists routers ordered by serial, a page at a time.
#[utoipa::path(get, path = "/api/v1/devices", params(ListQuery), tag = "devices",
    responses((status = 200, body = DeviceList), (status = 400, body = ErrorView), (status = 401, body = ErrorView)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeviceList>> {
    let tenant = caller.require(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let connection_state = query
        .connection_state
        .as_deref()
        .map(str::parse::<ConnectionState>)
        .transpose()
        .map_err(|e| Error::invalid("invalid_connection_state", e))?;
    let enrollment = query
        .enrollment
        .as_deref()
        .map(str::parse::<EnrollmentState>)
        .transpose()
        .map_err(|e| Error::invalid("invalid_enrollment_state", e))?;
    let license_state = query
        .license_state
        .as_deref()
        .map(str::parse::<LicenseState>)
        .transpose()
        .map_err(|e| Error::invalid("invalid_license_state", e))?;
    let group_id = match query.group.as_deref() {
        Some(name) => Some(group_id_by_name(&state, tenant, name).await?),
        None => None,
    };
    let after = query
        .cursor
        .as_deref()
        .map(|cursor| {
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    Error::invalid("invalid_cursor", "cursor is not one this server made")
                })
        })
        .transpose()?;
    let filter = DeviceFilter {
        connection_state,
        enrollment,
        query: query.q.filter(|q| !q.trim().is_empty()),
        group_id,
        license_state,
        tags: query
            .tag
            .as_deref()
            .map(checked_tags_list)
            .transpose()?
            .unwrap_or_default(),
        model: query.model.filter(|m| !m.is_empty()),
        firmware: query.firmware.filter(|f| !f.is_empty()),
    };
    let page = state
        .store
        .list_devices(tenant, &filter, &PageRequest { limit, after })
        .await?;
    Ok(Json(DeviceList {
        items: device_views(&state, tenant, &page.items).await?,
        total: page.total,
        next: page.next_after.map(|serial| URL_SAFE_NO_PAD.encode(serial)),
    }))
}

/// One router with its status and connection history.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    responses((status = 200, body = DeviceDetail), (status = 404, body = ErrorView)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>> {
    let tenant = caller.require(Role::Viewer)?;
    let device = load(&state, tenant, &id).await?;
    let history = state
        .store
        .connection_history(device.id, HISTORY_SHOWN)
        .await?;
    Ok(Json(DeviceDetail {
        device: device_view(&state, tenant, &device).await?,
        status: StatusView::from(&device.status),
        connection_history: history.iter().map(ConnectionView::from).collect(),
    }))
}

/// Renames a router, moves it to another group, marks it managed or unmanaged, pins or
/// unpins it.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", request_body = DevicePatchRequest, tag = "devices",
    responses((status = 200, body = DeviceView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<DevicePatchRequest>,
) -> Result<Json<DeviceView>> {
    let tenant = caller.require(Role::Operator)?;
    let id = parse_device_id(&id)?;
    let name = request
        .name
        .map(|name| checked_name("router", &name, 200))
        .transpose()?;
    let group_id = match request.group {
        None => None,
        Some(None) => Some(None),
        Some(Some(name)) => Some(Some(group_id_by_name(&state, tenant, &name).await?)),
    };
    let moved = group_id.is_some();
    let tags = request.tags.as_deref().map(checked_tags).transpose()?;
    let mut device = state
        .store
        .update_device(tenant, id, &DevicePatch { name, group_id })
        .await?;
    if request.managed.is_some() || request.pinned.is_some() {
        super::licensing::apply_settings(&state, tenant, &[id], request.managed, request.pinned)
            .await?;
        device = load(&state, tenant, &id.to_string()).await?;
    }
    if let Some(tags) = tags {
        state.store.set_device_tags(tenant, id, &tags).await?;
    }
    if moved {
        let change = TimerChange::Router {
            group: device.group_id,
            profile: device.timer_profile,
        };
        crate::cluster::timers_changed(&state, Some(device.id), change).await;
    }
    Ok(Json(device_view(&state, tenant, &device).await?))
}

/// Deletes a router; its live connection ends as `credential_revoked`.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Operator)?;
    let id = parse_device_id(&id)?;
    state.store.delete_device(tenant, id).await?;
    crate::cluster::credentials_revoked(&state, id).await;
    state
        .licensing
        .submit(tenant, crate::licensing::Request::Removed { device: id })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every credential of a router and ends its connection; it must enroll again.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke-credentials", tag = "devices",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn revoke_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let device = load(&state, tenant, &id).await?;
    state
        .store
        .revoke_device_credentials(device.id, None, state.clock.now())
        .await?;
    crate::cluster::credentials_revoked(&state, device.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Lets the router's serial enroll again without its credential (a replaced or reset unit).
#[utoipa::path(post, path = "/api/v1/devices/{id}/allow-reenrollment", request_body = AllowReenrollmentRequest,
    tag = "devices", responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn allow_reenrollment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<AllowReenrollmentRequest>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let hours = request.valid_for_hours.unwrap_or(24);
    if !(1..=24 * 30).contains(&hours) {
        return Err(Error::invalid(
            "invalid_duration",
            "valid_for_hours must be 1 to 720",
        ));
    }
    let until = state.clock.now() + chrono::Duration::hours(hours.into());
    state
        .store
        .allow_reenrollment(tenant, parse_device_id(&id)?, until)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the connected router for its status now and answers with what it reports.
#[utoipa::path(post, path = "/api/v1/devices/{id}/refresh-status", tag = "devices",
    responses((status = 200, body = StatusView), (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "router offline"), (status = 504, body = ErrorView)))]
pub async fn refresh_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusView>> {
    let tenant = caller.require(Role::Operator)?;
    let device = load(&state, tenant, &id).await?;
    let result =
        crate::cluster::call(&state, device.id, "report_status", serde_json::Value::Null).await?;
    if !result.ok {
        let detail = result
            .error
            .map_or_else(|| "no reason given".to_owned(), |e| e.to_string());
        return Err(Error::invalid_state(
            "call_failed",
            format!("the router could not report: {detail}"),
        ));
    }
    let reported: floatilla_protocol::Status = result
        .result
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| {
            Error::invalid_state(
                "call_failed",
                format!("the router's report is invalid: {e}"),
            )
        })?
        .unwrap_or_default();
    let status = device.status.merged(DeviceStatus {
        uptime_secs: reported.uptime_secs,
        cellular_signal_dbm: reported.cellular_signal_dbm,
        rx_bytes: reported.rx_bytes,
        tx_bytes: reported.tx_bytes,
        wan_address: reported.wan_address,
        reported_at: Some(state.clock.now()),
        clock_skew_secs: None,
    });
    state.store.record_status(device.id, &status).await?;
    Ok(Json(StatusView::from(&status)))
}
