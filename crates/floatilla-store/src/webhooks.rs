//! Webhooks: addresses to which a tenant's events are POSTed, and the durable queue of their
//! deliveries. Every node works the queue: each event is queued once per webhook (a cursor per
//! webhook remembers the newest event queued, and the search looks a while behind it for
//! events that committed late), and a node claims a due delivery for a while before sending
//! it, so two nodes never send the same attempt at once.

use std::collections::HashMap;

use async_trait::async_trait;
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::{EventId, TenantId, Timestamp, WebhookDeliveryId, WebhookId};

use crate::rows::{opt_parse, opt_timestamp, parse, timestamp};
use crate::{Backend, Result, StoreError};

/// A tenant's webhook, secret included: the store is the only place that keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant_id: TenantId,
    pub url: String,
    /// The key of each delivery's signature.
    pub secret: String,
    /// The kinds of event it wants; empty: every kind.
    pub event_kinds: Vec<EventKind>,
    pub created_at: Timestamp,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not yet delivered: an attempt is due, in flight or scheduled.
    Pending,
    Delivered,
    /// Every attempt failed; no more are made.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn from_column(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "webhook_deliveries.state `{other}`"
            ))),
        }
    }
}

/// One event on its way to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: WebhookDeliveryId,
    pub event_id: EventId,
    pub kind: EventKind,
    pub state: DeliveryState,
    /// While pending: when the next attempt is due (or an attempt in flight lapses).
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Oldest first.
    pub attempts: Vec<WebhookAttempt>,
}

/// One try at delivering, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: Timestamp,
    /// The status the receiver answered, if it answered.
    pub http_status: Option<u16>,
    /// Why the attempt failed, unless a 2xx answer delivered it.
    pub error: Option<String>,
}

/// A delivery a node claimed to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub id: WebhookDeliveryId,
    /// The number of the attempt about to be made.
    pub attempt: u32,
    pub url: String,
    pub secret: String,
    pub event: Event,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    Delivered,
    RetryAt(Timestamp),
    Failed,
}

/// An attempt's outcome, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery: WebhookDeliveryId,
    pub attempt: WebhookAttempt,
    pub next: DeliveryNext,
}

#[async_trait]
pub trait Webhooks {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<()>;
    /// The tenant's webhooks, oldest first.
    async fn webhooks(&self, tenant: TenantId) -> Result<Vec<Webhook>>;
    /// Deletes the webhook with its deliveries.
    async fn delete_webhook(&self, tenant: TenantId, id: WebhookId) -> Result<()>;
    /// The webhook's latest deliveries with their attempts, newest first, at most `limit`.
    async fn webhook_deliveries(
        &self,
        tenant: TenantId,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>>;
    /// Queues, for each webhook another node is not working on, a delivery due at `now` for
    /// each of the next `batch` events it wants and has not queued yet (from a while before its
    /// cursor on), and moves the cursor to the newest. Answers whether some webhook had a full
    /// batch, so that more may be waiting.
    async fn queue_webhook_deliveries(&self, now: Timestamp, batch: u32) -> Result<bool>;
    /// Claims at most `limit` deliveries due at `now` until `claim_until`: no node claims them
    /// again before then, unless the attempt is recorded first.
    async fn claim_webhook_deliveries(
        &self,
        now: Timestamp,
        claim_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Records an attempt of a claimed delivery, unless that attempt was already recorded (by
    /// a node that claimed it after this claim lapsed).
    async fn record_webhook_attempt(&self, record: &AttemptRecord) -> Result<()>;
}

/// `clause` on PostgreSQL, nothing on SQLite, where a write transaction holds the whole
/// database's write lock from its start.
pub(crate) fn row_lock(backend: Backend, clause: &'static str) -> &'static str {
    match backend {
        Backend::Postgres => clause,
        Backend::Sqlite => "",
    }
}

pub(crate) const SELECT_WEBHOOKS: &str =
    "SELECT id, tenant_id, url, secret, event_kinds, created_at FROM webhooks";

pub(crate) type WebhookRow = (String, String, String, String, String, i64);

pub(crate) fn webhook(row: WebhookRow) -> Result<Webhook> {
    let (id, tenant_id, url, secret, event_kinds, created_at) = row;
    let names: Vec<String> = serde_json::from_str(&event_kinds)
        .map_err(|e| StoreError::Corrupt(format!("webhooks.event_kinds: {e}")))?;
    Ok(Webhook {
        id: parse("webhooks.id", &id)?,
        tenant_id: parse("webhooks.tenant_id", &tenant_id)?,
        url,
        secret,
        event_kinds: names
            .iter()
            .map(|name| parse("webhooks.event_kinds", name))
            .collect::<Result<_>>()?,
        created_at: timestamp("webhooks.created_at", created_at)?,
    })
}

pub(crate) fn event_kinds_json(kinds: &[EventKind]) -> String {
    serde_json::Value::from(kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>()).to_string()
}

/// A webhook's cursor and what it wants: `id, tenant_id, event_kinds, created_at, cursor_at`.
pub(crate) type CursorRow = (String, String, String, i64, i64);

/// How long behind its cursor a webhook keeps looking for events, in milliseconds: an event
/// stamped earlier than one already seen may commit later (concurrent writers, batches), and
/// must still be delivered.
pub(crate) const SETTLING_MS: i64 = 60_000;

/// The `id, tenant_id, at, kind, device_id, message` of an event.
pub(crate) type EventRow = (String, String, i64, String, Option<String>, String);

pub(crate) fn event(row: EventRow) -> Result<Event> {
    let (id, tenant_id, at, kind, device_id, message) = row;
    Ok(Event {
        id: parse("events.id", &id)?,
        tenant_id: parse("events.tenant_id", &tenant_id)?,
        at: timestamp("events.at", at)?,
        kind: parse("events.kind", &kind)?,
        device_id: opt_parse("events.device_id", device_id.as_deref())?,
        message,
    })
}

/// A due delivery: its id and attempts so far, its webhook's url and secret and its event
/// (as an [`EventRow`]).
pub(crate) type ClaimRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    String,
);

pub(crate) fn claimed(row: ClaimRow) -> Result<ClaimedDelivery> {
    let (id, attempts, url, secret, event_id, tenant_id, event_at, kind, device_id, message) = row;
    let attempts = u32::try_from(attempts)
        .map_err(|_| StoreError::Corrupt(format!("webhook_deliveries.attempts: {attempts}")))?;
    Ok(ClaimedDelivery {
        id: parse("webhook_deliveries.id", &id)?,
        attempt: attempts + 1,
        url,
        secret,
        event: event((event_id, tenant_id, event_at, kind, device_id, message))?,
    })
}

/// `id, event_id, kind, state, next_attempt_at, created_at` of a delivery.
pub(crate) type DeliveryRow = (String, String, String, String, Option<i64>, i64);

/// `delivery_id, attempt, at, http_status, error` of an attempt.
pub(crate) type AttemptRow = (String, i64, i64, Option<i64>, Option<String>);

/// The deliveries with their attempts.
pub(crate) fn deliveries(
    rows: Vec<DeliveryRow>,
    attempts: Vec<AttemptRow>,
) -> Result<Vec<WebhookDelivery>> {
    let mut by_delivery: HashMap<String, Vec<WebhookAttempt>> = HashMap::new();
    for (delivery_id, attempt, at, http_status, error) in attempts {
        let column = "webhook_attempts";
        by_delivery
            .entry(delivery_id)
            .or_default()
            .push(WebhookAttempt {
                attempt: u32::try_from(attempt)
                    .map_err(|_| StoreError::Corrupt(format!("{column}.attempt: {attempt}")))?,
                at: timestamp("webhook_attempts.at", at)?,
                http_status: http_status
                    .map(|status| {
                        u16::try_from(status).map_err(|_| {
                            StoreError::Corrupt(format!("{column}.http_status: {status}"))
                        })
                    })
                    .transpose()?,
                error,
            });
    }
    rows.into_iter()
        .map(|(id, event_id, kind, state, next_attempt_at, created_at)| {
            Ok(WebhookDelivery {
                attempts: by_delivery.remove(&id).unwrap_or_default(),
                id: parse("webhook_deliveries.id", &id)?,
                event_id: parse("webhook_deliveries.event_id", &event_id)?,
                kind: parse("webhook_deliveries.kind", &kind)?,
                state: DeliveryState::from_column(&state)?,
                next_attempt_at: opt_timestamp(
                    "webhook_deliveries.next_attempt_at",
                    next_attempt_at,
                )?,
                created_at: timestamp("webhook_deliveries.created_at", created_at)?,
            })
        })
        .collect()
}

/// The state and next attempt a delivery has after an attempt.
pub(crate) fn after_attempt(next: DeliveryNext) -> (&'static str, Option<i64>) {
    match next {
        DeliveryNext::Delivered => (DeliveryState::Delivered.as_str(), None),
        DeliveryNext::RetryAt(at) => (
            DeliveryState::Pending.as_str(),
            Some(crate::rows::millis(at)),
        ),
        DeliveryNext::Failed => (DeliveryState::Failed.as_str(), None),
    }
}

/// Implements [`Webhooks`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_webhooks {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::webhooks::Webhooks for $store {
            async fn create_webhook(
                &self,
                webhook: &$crate::webhooks::Webhook,
            ) -> $crate::Result<()> {
                // The cursor starts at creation: earlier events are not delivered.
                ::sqlx::query(
                    "INSERT INTO webhooks (id, tenant_id, url, secret, event_kinds, created_at, \
                     cursor_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(webhook.id.to_string())
                .bind(webhook.tenant_id.to_string())
                .bind(&webhook.url)
                .bind(&webhook.secret)
                .bind($crate::webhooks::event_kinds_json(&webhook.event_kinds))
                .bind($crate::rows::millis(webhook.created_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || format!("webhook {} already exists", webhook.id),
                        "tenant",
                    )
                })?;
                Ok(())
            }

            async fn webhooks(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Vec<$crate::webhooks::Webhook>> {
                let rows: Vec<$crate::webhooks::WebhookRow> = ::sqlx::query_as(::sqlx::AssertSqlSafe(
                    format!(
                        "{} WHERE tenant_id = $1 ORDER BY created_at, id",
                        $crate::webhooks::SELECT_WEBHOOKS
                    ),
                ))
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map($crate::webhooks::webhook).collect()
            }

            async fn delete_webhook(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::WebhookId,
            ) -> $crate::Result<()> {
                let deleted = ::sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                $crate::shared::found(deleted, "webhook")
            }

            async fn webhook_deliveries(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::WebhookId,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::webhooks::WebhookDelivery>> {
                let mut tx = self.begin_read().await?;
                let known: Option<String> =
                    ::sqlx::query_scalar("SELECT id FROM webhooks WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if known.is_none() {
                    return Err($crate::StoreError::NotFound("webhook"));
                }
                let rows: Vec<$crate::webhooks::DeliveryRow> = ::sqlx::query_as(
                    "SELECT id, event_id, kind, state, next_attempt_at, created_at \
                     FROM webhook_deliveries WHERE webhook_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(id.to_string())
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                let attempts: Vec<$crate::webhooks::AttemptRow> = ::sqlx::query_as(
                    "SELECT delivery_id, attempt, at, http_status, error FROM webhook_attempts \
                     WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2) \
                     ORDER BY delivery_id, attempt",
                )
                .bind(id.to_string())
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                $crate::webhooks::deliveries(rows, attempts)
            }

            async fn queue_webhook_deliveries(
                &self,
                now: ::floatilla_domain::Timestamp,
                batch: u32,
            ) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let lock = $crate::webhooks::row_lock(Self::BACKEND, " FOR UPDATE SKIP LOCKED");
                let cursors: Vec<$crate::webhooks::CursorRow> = ::sqlx::query_as(
                    ::sqlx::AssertSqlSafe(format!(
                        "SELECT id, tenant_id, event_kinds, created_at, cursor_at FROM webhooks \
                         ORDER BY id{lock}"
                    )),
                )
                .fetch_all(&mut *tx)
                .await?;
                let mut more = false;
                for (webhook_id, tenant_id, event_kinds, created_at, cursor_at) in cursors {
                    let wanted: Vec<String> = ::serde_json::from_str(&event_kinds).map_err(|e| {
                        $crate::StoreError::Corrupt(format!("webhooks.event_kinds: {e}"))
                    })?;
                    // Events are read again for a while behind the cursor, since one stamped
                    // earlier may commit later; those already queued are skipped.
                    let since = (cursor_at - $crate::webhooks::SETTLING_MS).max(created_at);
                    let kinds = if wanted.is_empty() {
                        String::new()
                    } else {
                        let placeholders: Vec<String> =
                            (0..wanted.len()).map(|n| format!("${}", n + 5)).collect();
                        format!(" AND e.kind IN ({})", placeholders.join(", "))
                    };
                    let sql = format!(
                        "SELECT e.id, e.tenant_id, e.at, e.kind, e.device_id, e.message \
                         FROM events e WHERE e.tenant_id = $1 AND e.at >= $2{kinds} \
                         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                         WHERE d.webhook_id = $3 AND d.event_id = e.id) \
                         ORDER BY e.at, e.id LIMIT $4"
                    );
                    let mut query = ::sqlx::query_as::<_, $crate::webhooks::EventRow>(
                        ::sqlx::AssertSqlSafe(sql),
                    )
                    .bind(&tenant_id)
                    .bind(since)
                    .bind(&webhook_id)
                    .bind(i64::from(batch));
                    for kind in &wanted {
                        query = query.bind(kind);
                    }
                    let rows = query.fetch_all(&mut *tx).await?;
                    let Some(last) = rows.last() else { continue };
                    let last_at = last.2;
                    more |= rows.len() >= batch as usize;
                    for row in rows {
                        let event = $crate::webhooks::event(row)?;
                        ::sqlx::query(
                            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, kind, \
                             event_at, device_id, message, state, attempts, next_attempt_at, \
                             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8) \
                             ON CONFLICT (webhook_id, event_id) DO NOTHING",
                        )
                        .bind(::floatilla_domain::WebhookDeliveryId::new().to_string())
                        .bind(&webhook_id)
                        .bind(event.id.to_string())
                        .bind(event.kind.as_str())
                        .bind($crate::rows::millis(event.at))
                        .bind(event.device_id.map(|d| d.to_string()))
                        .bind(&event.message)
                        .bind($crate::rows::millis(now))
                        .execute(&mut *tx)
                        .await?;
                    }
                    ::sqlx::query(
                        "UPDATE webhooks SET cursor_at = \
                         CASE WHEN cursor_at > $2 THEN cursor_at ELSE $2 END WHERE id = $1",
                    )
                    .bind(&webhook_id)
                    .bind(last_at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(more)
            }

            async fn claim_webhook_deliveries(
                &self,
                now: ::floatilla_domain::Timestamp,
                claim_until: ::floatilla_domain::Timestamp,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::webhooks::ClaimedDelivery>> {
                let mut tx = self.begin_write().await?;
                let lock = $crate::webhooks::row_lock(Self::BACKEND, " FOR UPDATE OF d SKIP LOCKED");
                let rows: Vec<$crate::webhooks::ClaimRow> = ::sqlx::query_as(
                    ::sqlx::AssertSqlSafe(format!(
                        "SELECT d.id, d.attempts, w.url, w.secret, d.event_id, w.tenant_id, \
                         d.event_at, d.kind, d.device_id, d.message \
                         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
                         ORDER BY d.next_attempt_at, d.id LIMIT $2{lock}"
                    )),
                )
                .bind($crate::rows::millis(now))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    ::sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1")
                        .bind(&row.0)
                        .bind($crate::rows::millis(claim_until))
                        .execute(&mut *tx)
                        .await?;
                    claimed.push($crate::webhooks::claimed(row)?);
                }
                tx.commit().await?;
                Ok(claimed)
            }

            async fn record_webhook_attempt(
                &self,
                record: &$crate::webhooks::AttemptRecord,
            ) -> $crate::Result<()> {
                let attempt = &record.attempt;
                let (state, next_attempt_at) = $crate::webhooks::after_attempt(record.next);
                let mut tx = self.begin_write().await?;
                let updated = ::sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $2, state = $3, next_attempt_at = $4 \
                     WHERE id = $1 AND attempts = $2 - 1 AND state = 'pending'",
                )
                .bind(record.delivery.to_string())
                .bind(i64::from(attempt.attempt))
                .bind(state)
                .bind(next_attempt_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 1 {
                    ::sqlx::query(
                        "INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, error) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(record.delivery.to_string())
                    .bind(i64::from(attempt.attempt))
                    .bind($crate::rows::millis(attempt.at))
                    .bind(attempt.http_status.map(i64::from))
                    .bind(&attempt.error)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_webhooks;
