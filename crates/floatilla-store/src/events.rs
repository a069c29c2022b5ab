//! The event log: what happened in each tenant, newest first, pruned past the retention period.

use async_trait::async_trait;
use floatilla_domain::events::{Event, EventFilter, EventKind};
use floatilla_domain::{TenantId, Timestamp};

use crate::Result;

#[async_trait]
pub trait EventLog {
    async fn record_event(&self, event: &Event) -> Result<()>;
    /// The tenant's events matching `filter`, newest first, at most `limit`.
    async fn events(
        &self,
        tenant: TenantId,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>>;
    /// Deletes at most `at_most` events from before `before`; returns how many.
    async fn prune_events(&self, before: Timestamp, at_most: u32) -> Result<u64>;
}

/// The SQL and text parameters of an event listing, with only the conditions in use.
pub(crate) fn event_listing(tenant: TenantId, filter: &EventFilter) -> (String, Vec<String>) {
    let mut params = vec![tenant.to_string()];
    let mut conditions = vec!["tenant_id = $1".to_owned()];
    // Each condition compares a column with parameters: `$n` stands for the next one.
    let mut condition = |sql: String, values: Vec<String>| {
        let mut sql = sql;
        for value in values {
            params.push(value);
            sql = sql.replacen("$n", &format!("${}", params.len()), 1);
        }
        conditions.push(sql);
    };
    if let Some(kind) = filter.kind {
        condition("kind = $n".into(), vec![kind.as_str().to_owned()]);
    }
    if let Some(severity) = filter.severity {
        // Severity follows from the kind, so it is not stored: filter on its kinds.
        let kinds: Vec<String> = EventKind::ALL
            .iter()
            .filter(|kind| kind.severity() == severity)
            .map(|kind| kind.as_str().to_owned())
            .collect();
        // `IN (NULL)` matches nothing, should a severity have no kinds.
        let slots = if kinds.is_empty() {
            "NULL".to_owned()
        } else {
            vec!["$n"; kinds.len()].join(", ")
        };
        condition(format!("kind IN ({slots})"), kinds);
    }
    if let Some(device) = filter.device_id {
        condition("device_id = $n".into(), vec![device.to_string()]);
    }
    if let Some(before) = filter.before {
        condition(
            "(at, id) < (SELECT at, id FROM events WHERE id = $n)".into(),
            vec![before.to_string()],
        );
    }
    let sql = format!(
        "SELECT id, tenant_id, at, kind, device_id, message FROM events WHERE {} \
         ORDER BY at DESC, id DESC LIMIT ${}",
        conditions.join(" AND "),
        params.len() + 1
    );
    (sql, params)
}

/// Inserts `event` with `executor` (a pool or a transaction), for the event log and for the
/// methods that record an event in the same transaction as what it reports.
macro_rules! insert_event {
    ($executor:expr, $event:expr) => {{
        let event: &::floatilla_domain::events::Event = $event;
        ::sqlx::query(
            "INSERT INTO events (id, tenant_id, at, kind, device_id, message) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.id.to_string())
        .bind(event.tenant_id.to_string())
        .bind($crate::rows::millis(event.at))
        .bind(event.kind.as_str())
        .bind(event.device_id.map(|d| d.to_string()))
        .bind(&event.message)
        .execute($executor)
        .await
        .map_err(|e| {
            $crate::shared::write_error(
                e,
                || format!("event {} already exists", event.id),
                "tenant",
            )
        })
    }};
}
pub(crate) use insert_event;

/// Implements [`EventLog`] for a store type with a `pool` field.
macro_rules! impl_event_log {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::EventLog for $store {
            async fn record_event(
                &self,
                event: &::floatilla_domain::events::Event,
            ) -> $crate::Result<()> {
                $crate::events::insert_event!(&self.pool, event)?;
                Ok(())
            }

            async fn events(
                &self,
                tenant: ::floatilla_domain::TenantId,
                filter: &::floatilla_domain::events::EventFilter,
                limit: u32,
            ) -> $crate::Result<Vec<::floatilla_domain::events::Event>> {
                let (sql, params) = $crate::events::event_listing(tenant, filter);
                let mut query = ::sqlx::query_as(::sqlx::AssertSqlSafe(sql));
                for param in &params {
                    query = query.bind(param.as_str());
                }
                let rows: Vec<$crate::rows::EventRow> =
                    query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
                $crate::rows::convert(rows)
            }

            async fn prune_events(
                &self,
                before: ::floatilla_domain::Timestamp,
                at_most: u32,
            ) -> $crate::Result<u64> {
                Ok(::sqlx::query(
                    "DELETE FROM events WHERE id IN \
                     (SELECT id FROM events WHERE at < $1 LIMIT $2)",
                )
                .bind($crate::rows::millis(before))
                .bind(i64::from(at_most))
                .execute(&self.pool)
                .await?
                .rows_affected())
            }
        }
    };
}
pub(crate) use impl_event_log;
