//! `/api/v1/webhooks`: where the tenant's events are POSTed, and how their deliveries went.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use floatilla_domain::events::EventKind;
use floatilla_domain::{Role, WebhookId};
use floatilla_store::{Webhook, WebhookAttempt, WebhookDelivery};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::extract::ApiJson;
use super::views::ErrorView;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Shorter secrets are too easy to guess for a signature to mean anything.
const MIN_SECRET_CHARS: usize = 16;
const MAX_SECRET_CHARS: usize = 200;
const MAX_URL_CHARS: usize = 2000;
/// The deliveries `/deliveries` shows, newest first.
const DELIVERIES_SHOWN: u32 = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The key of each delivery's signature: at least 16 characters. Never shown again.
    pub secret: String,
    /// The event kinds to deliver; empty or absent: every kind.
    #[serde(default)]
    pub events: Vec<String>,
}

/// A webhook, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// The event kinds it receives; empty: every kind.
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&Webhook> for WebhookView {
    fn from(webhook: &Webhook) -> Self {
        Self {
            id: webhook.id.to_string(),
            url: webhook.url.clone(),
            events: webhook
                .event_kinds
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            created_at: webhook.created_at,
        }
    }
}

/// One event on its way to the webhook, with its attempts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Sent as `X-Floatilla-Delivery`.
    pub id: String,
    pub event_id: String,
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// While pending: when the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's answer, if it answered.
    pub http_status: Option<u16>,
    /// Why the attempt failed; absent when it delivered the event.
    pub error: Option<String>,
}

impl From<&WebhookAttempt> for AttemptView {
    fn from(attempt: &WebhookAttempt) -> Self {
        Self {
            attempt: attempt.attempt,
            at: attempt.at,
            http_status: attempt.http_status,
            error: attempt.error.clone(),
        }
    }
}

impl From<&WebhookDelivery> for DeliveryView {
    fn from(delivery: &WebhookDelivery) -> Self {
        Self {
            id: delivery.id.to_string(),
            event_id: delivery.event_id.to_string(),
            kind: delivery.kind.as_str().to_owned(),
            state: delivery.state.as_str().to_owned(),
            next_attempt_at: delivery.next_attempt_at,
            created_at: delivery.created_at,
            attempts: delivery.attempts.iter().map(AttemptView::from).collect(),
        }
    }
}

/// The tenant's webhooks, oldest first.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<WebhookView>>> {
    let tenant = caller.require(Role::Admin)?;
    let webhooks = state.store.webhooks(tenant).await?;
    Ok(Json(webhooks.iter().map(WebhookView::from).collect()))
}

/// Creates a webhook: each event of the chosen kinds recorded from now on is POSTed to `url`,
/// signed with `secret` (see docs/webhooks.md).
#[utoipa::path(post, path = "/api/v1/webhooks", request_body = CreateWebhookRequest, tag = "webhooks",
    responses((status = 201, body = WebhookView), (status = 400, body = ErrorView)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookView>)> {
    let tenant = caller.require(Role::Admin)?;
    let webhook = Webhook {
        id: WebhookId::new(),
        tenant_id: tenant,
        url: checked_url(&request.url)?,
        secret: checked_secret(&request.secret)?,
        event_kinds: checked_kinds(&request.events)?,
        created_at: state.clock.now(),
    };
    state.store.create_webhook(&webhook).await?;
    Ok((StatusCode::CREATED, Json(WebhookView::from(&webhook))))
}

/// Deletes a webhook with its deliveries: pending ones are not sent.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 204), (status = 404, body = ErrorView)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let tenant = caller.require(Role::Admin)?;
    let id: WebhookId = id.parse().map_err(|_| Error::NotFound("webhook"))?;
    state.store.delete_webhook(tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's latest deliveries (at most 100), newest first, with every attempt.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    responses((status = 200, body = Vec<DeliveryView>), (status = 404, body = ErrorView)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<DeliveryView>>> {
    let tenant = caller.require(Role::Admin)?;
    let id: WebhookId = id.parse().map_err(|_| Error::NotFound("webhook"))?;
    let deliveries = state
        .store
        .webhook_deliveries(tenant, id, DELIVERIES_SHOWN)
        .await?;
    Ok(Json(deliveries.iter().map(DeliveryView::from).collect()))
}

fn checked_url(url: &str) -> Result<String> {
    let invalid = || {
        Error::invalid(
            "invalid_url",
            format!(
                "the url must be an http:// or https:// URL of at most {MAX_URL_CHARS} characters with a host"
            ),
        )
    };
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid());
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid());
    }
    Ok(url.to_owned())
}

fn checked_secret(secret: &str) -> Result<String> {
    let length = secret.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&length)
        || secret.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            "invalid_secret",
            format!("the secret has {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} printable characters"),
        ));
    }
    Ok(secret.to_owned())
}

/// The named kinds, each once, in the order given.
fn checked_kinds(names: &[String]) -> Result<Vec<EventKind>> {
    let mut kinds = Vec::with_capacity(names.len());
    for name in names {
        let kind: EventKind = name.parse().map_err(|_| {
            Error::invalid(
                "invalid_event_kind",
                format!(
                    "`{name}` is not an event kind; known kinds: {}",
                    EventKind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}
