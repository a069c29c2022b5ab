//! The provider's page for one tenant: its license usage now and over the last week (what the
//! provider bills from), with the usage history as CSV.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use floatilla_domain::licensing::Granularity;

use super::licenses::UsageCsvQuery;
use super::pages::{Nav, failed, seats_text, shown, time, usage_chart};
use super::session::Operator;
use crate::api::{licensing, provider};
use crate::error::Error;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    id: String,
    name: String,
    contact_email: String,
    created_at: String,
    suspended_at: String,
    capacity: String,
    in_use: u64,
    excess: u64,
    chart: String,
}

pub async fn tenant(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Response {
    let page = async {
        let view = provider::get_tenant(State(state.clone()), operator.caller.clone(), Path(id))
            .await?
            .0;
        let tenant = view.id.parse().map_err(|_| Error::NotFound("tenant"))?;
        let history = licensing::usage_rows(
            &state,
            tenant,
            &licensing::UsageQuery::default(),
            Granularity::Hour,
        )
        .await?;
        Ok::<_, Error>(TenantPage {
            nav: Nav::of(&operator),
            notice: None,
            problem: None,
            csrf: operator.session.csrf_token.clone(),
            chart: usage_chart(&history, view.usage.capacity.as_u64()),
            capacity: seats_text(&view.usage.capacity),
            in_use: view.usage.in_use,
            excess: view.usage.excess,
            id: view.id,
            name: view.name,
            contact_email: view.contact_email.unwrap_or_default(),
            created_at: time(view.created_at),
            suspended_at: view.suspended_at.map(time).unwrap_or_default(),
        })
    };
    shown(&operator, page.await)
}

/// A tenant's usage history as CSV, per hour or per day.
pub async fn tenant_usage_csv(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(query): Query<UsageCsvQuery>,
) -> Response {
    let usage = async {
        provider::tenant_usage(
            State(state),
            operator.caller.clone(),
            Path(id),
            query.into_csv_request()?,
        )
        .await
    };
    usage.await.unwrap_or_else(|error| failed(&operator, error))
}
