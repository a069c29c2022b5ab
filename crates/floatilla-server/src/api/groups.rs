//! `/api/v1/groups`: named sets of routers. Groups are referred to by name elsewhere in the API.

use axum::Json;
use axum::extract::{Path, State};
use floatilla_domain::jobs::MaintenanceWindow;
use floatilla_domain::model::Group;
use floatilla_domain::{GroupId, Role, TenantId, TimerChange, TimerProfile};
use floatilla_store::GroupPatch;
use http::StatusCode;

use super::auth::Caller;
use super::extract::ApiJson;
use super::views::{ErrorView, GroupPatchRequest, GroupRequest, GroupView, TimerProfileView};
use crate::error::{Error, Result, checked_name};
use crate::state::AppState;

pub async fn group_id_by_name(state: &AppState, tenant: TenantId, name: &str) -> Result<GroupId> {
    state
        .store
        .group_by_name(tenant, name)
        .await?
        .map(|group| group.id)
        .ok_or_else(|| Error::invalid("unknown_group", format!("there is no group named `{name}`")))
}

/// A timer profile as requested, if it is a sensible heartbeat.
fn checked_profile(profile: TimerProfileView) -> Result<TimerProfile> {
    let profile = TimerProfile::from(profile);
    profile
        .validate()
        .map_err(|message| Error::invalid("invalid_timers", message))?;
    Ok(profile)
}

/// A maintenance window as written, if it is one.
fn checked_window(window: &str) -> Result<MaintenanceWindow> {
    window
        .parse::<MaintenanceWindow>()
        .map_err(|e| Error::invalid(e.code(), e.to_string()))
}

fn parse_group_id(id: &str) -> Result<GroupId> {
    id.parse().map_err(|_| Error::NotFound("group"))
}

/// The tenant's groups, by name.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", responses((status = 200, body = Vec<GroupView>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<GroupView>>> {
    let tenant = caller.require(Role::Viewer)?;
    let groups = state.store.groups(tenant).await?;
    Ok(Json(groups.iter().map(GroupView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/groups", request_body = GroupRequest, tag = "groups",
    responses((status = 201, body = GroupView), (status = 409, body = ErrorView)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<GroupRequest>,
) -> Result<(StatusCode, Json<GroupView>)> {
    let tenant = caller.require(Role::Operator)?;
    let group = Group {
        id: GroupId::new(),
        tenant_id: tenant,
        name: checked_name("group", &request.name, 100)?,
        timer_profile: request.timer_profile.map(checked_profile).transpose()?,
        maintenance_window: request
            .maintenance_window
            .as_deref()
            .map(checked_window)
            .transpose()?,
        created_at: state.clock.now(),
    };
    state.store.create_group(&group).await?;
    Ok((StatusCode::CREATED, Json(GroupView::from(&group))))
}

/// Renames a group or changes its timer profile. Connected routers of the group are pinged on
/// the new schedule at once, and learn its values in their next `welcome`.
#[utoipa::path(patch, path = "/api/v1/groups/{id}", request_body = GroupPatchRequest, tag = "groups",
    responses((status = 200, body = GroupView), (status = 404, body = ErrorView), (status = 409, body = ErrorView)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<GroupPatchRequest>,
) -> Result<Json<GroupView>> {
    let tenant = caller.require(Role::Operator)?;
    let id = parse_group_id(&id)?;
    let patch = GroupPatch {
        name: request
            .name
            .map(|name| checked_name("group", &name, 100))
            .transpose()?,
        timer_profile: request
            .timer_profile
            .map(|profile| profile.map(checked_profile).transpose())
            .transpose()?,
        maintenance_window: request
            .maintenance_window
            .map(|window| window.as_deref().map(checked_window).transpose())
            .transpose()?,
    };
    let group = state.store.update_group(tenant, id, &patch).await?;
    if patch.timer_profile.is_some() {
        let change = TimerChange::Group {
            group: group.id,
            profile: group.timer_profile,
        };
        crate::cluster::timers_changed(&state, None, change).await;
    }
    Ok(Json(GroupView::from(&group)))
}

/// Deletes a group; its routers stay, without a group.
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Operator)?;
    let id = parse_group_id(&id)?;
    let had_profile = state
        .store
        .group(tenant, id)
        .await?
        .is_some_and(|group| group.timer_profile.is_some());
    state.store.delete_group(tenant, id).await?;
    if had_profile {
        // Its routers are left without a group, so without its timer profile.
        let change = TimerChange::Group {
            group: id,
            profile: None,
        };
        crate::cluster::timers_changed(&state, None, change).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
