//! `/api/v1/tags` and `/api/v1/devices/tags`: the tenant's tags, and tagging many routers at once.

use axum::Json;
use axum::extract::State;
use floatilla_domain::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::devices::{Selection, checked_tags};
use super::extract::ApiJson;
use super::views::ErrorView;
use crate::error::{Error, Result};
use crate::state::AppState;

/// A tag in use.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TagView {
    pub tag: String,
    /// How many routers carry it.
    pub routers: u64,
}

/// Every tag the tenant's routers carry, by name.
#[utoipa::path(get, path = "/api/v1/tags", tag = "devices",
    responses((status = 200, body = Vec<TagView>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<TagView>>> {
    let tenant = caller.require(Role::Viewer)?;
    let tags = state.store.tags(tenant).await?;
    Ok(Json(
        tags.into_iter()
            .map(|(tag, routers)| TagView { tag, routers })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRoutersRequest {
    /// Router ids; or
    pub ids: Option<Vec<String>>,
    /// a group's name (its routers now); or
    pub group: Option<String>,
    /// a tag (the routers carrying it now).
    pub tag: Option<String>,
    /// Tags to add (letters, digits and `-_.:/`, stored lower case).
    #[serde(default)]
    pub add: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TagRoutersResult {
    /// How many routers the change was applied to.
    pub changed: u64,
}

/// Adds and removes tags on many routers at once, in one transaction.
#[utoipa::path(post, path = "/api/v1/devices/tags", tag = "devices",
    request_body = TagRoutersRequest,
    responses((status = 200, body = TagRoutersResult), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
pub async fn tag_routers(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TagRoutersRequest>,
) -> Result<Json<TagRoutersResult>> {
    let tenant = caller.require(Role::Operator)?;
    let add = checked_tags(&request.add)?;
    let remove = checked_tags(&request.remove)?;
    if add.is_empty() && remove.is_empty() {
        return Err(Error::invalid(
            "nothing_to_change",
            "give tags to add, to remove, or both",
        ));
    }
    let selection = Selection {
        ids: request.ids,
        group: request.group,
        tag: request.tag,
    };
    let devices = selection.devices(&state, tenant).await?;
    let changed = state
        .store
        .change_tags(tenant, &devices, &add, &remove)
        .await?;
    Ok(Json(TagRoutersResult { changed }))
}
