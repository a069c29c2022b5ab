//! The console's event log: what happened to the tenant's routers and licenses, newest first,
//! by kind, severity or router. License events the server makes itself (capacity changes,
//! expiring licenses, clock alarms) are here; the audit log holds what people and tokens did.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use floatilla_domain::events::EventKind;
use serde::Deserialize;
use serde_json::json;

use super::pages::{Choice, Nav, api_request, choices, given, link, shown, time};
use super::session::Operator;
use crate::api::events;
use crate::api::extract::ApiQuery;
use crate::error::Error;
use crate::state::AppState;

/// Events shown a page.
const EVENTS_PAGE: u32 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    kind: Option<String>,
    severity: Option<String>,
    device: Option<String>,
    before: Option<String>,
}

struct EventRow {
    at: String,
    kind: String,
    severity: String,
    device_id: Option<String>,
    message: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    kinds: Vec<Choice>,
    severities: Vec<Choice>,
    device: String,
    events: Vec<EventRow>,
    next_page: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    operator: Operator,
    Query(query): Query<EventsQuery>,
) -> Response {
    let page = async {
        let filters = [
            ("kind", given(&query.kind)),
            ("severity", given(&query.severity)),
            ("device", given(&query.device)),
        ];
        let mut request = json!({ "limit": EVENTS_PAGE });
        for (name, value) in filters.iter().chain([&("before", given(&query.before))]) {
            if let Some(value) = value {
                request[*name] = json!(value);
            }
        }
        let list = events::list(
            State(state.clone()),
            operator.caller.clone(),
            ApiQuery(api_request(request)?),
        )
        .await?
        .0;
        let next_page = list.next.map(|before| {
            let mut pairs: Vec<(&str, &str)> = filters
                .iter()
                .filter_map(|(name, value)| value.map(|v| (*name, v)))
                .collect();
            pairs.push(("before", &before));
            link("/events", &pairs)
        });
        let kind = given(&query.kind).unwrap_or_default();
        let severity = given(&query.severity).unwrap_or_default();
        Ok::<_, Error>(EventsPage {
            nav: Nav::of(&operator),
            notice: None,
            problem: None,
            kinds: choices(
                &EventKind::ALL
                    .iter()
                    .map(|k| (k.as_str(), k.as_str()))
                    .collect::<Vec<_>>(),
                kind,
            ),
            severities: choices(
                &[("info", "info"), ("warning", "warning"), ("alarm", "alarm")],
                severity,
            ),
            device: given(&query.device).unwrap_or_default().to_owned(),
            events: list
                .items
                .into_iter()
                .map(|e| EventRow {
                    at: time(e.at),
                    kind: e.kind,
                    severity: e.severity,
                    device_id: e.device_id,
                    message: e.message,
                })
                .collect(),
            next_page,
        })
    };
    shown(&operator, page.await)
}
