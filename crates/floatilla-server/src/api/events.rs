//! `/api/v1/events`: the tenant's event log, newest first.

use axum::Json;
use axum::extract::State;
use floatilla_domain::Role;
use floatilla_domain::events::{EventFilter, EventKind, Severity};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::extract::{ApiQuery, cursor, next_cursor, page_limit};
use super::views::{ErrorView, EventList, EventView};
use crate::error::{Error, Result};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// An event kind, such as `credential_cloned`.
    kind: Option<String>,
    /// `info`, `warning` or `alarm`.
    severity: Option<String>,
    /// A router's id.
    device: Option<String>,
    /// The `next` of the previous page.
    before: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// Lists events, newest first.
#[utoipa::path(get, path = "/api/v1/events", params(EventQuery), tag = "events",
    responses((status = 200, body = EventList), (status = 400, body = ErrorView)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<EventList>> {
    let tenant = caller.require(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let filter = EventFilter {
        kind: query
            .kind
            .as_deref()
            .map(str::parse::<EventKind>)
            .transpose()
            .map_err(|e| Error::invalid("invalid_kind", e))?,
        severity: query
            .severity
            .as_deref()
            .map(str::parse::<Severity>)
            .transpose()
            .map_err(|e| Error::invalid("invalid_severity", e))?,
        device_id: query
            .device
            .as_deref()
            .map(|id| {
                id.parse()
                    .map_err(|_| Error::invalid("invalid_device", "device is not a router id"))
            })
            .transpose()?,
        before: cursor(query.before.as_deref(), "before is not an event id")?,
    };
    let events = state.store.events(tenant, &filter, limit).await?;
    let next = next_cursor(&events, limit, |e| e.id.to_string());
    Ok(Json(EventList {
        items: events.iter().map(EventView::from).collect(),
        next,
    }))
}
