//! The floating license pool as stored: licenses, and each tenant's pool as a log of operations
//! with the state they led to. Every change to a tenant's pool runs under the lock of the
//! tenant's row in `license_pools`, so the operations of all nodes form one order; the caller
//! brings its copy of the pool up to date from what it reads under the lock, decides, and hands
//! back what to write, all in one transaction.

use async_trait::async_trait;
use floatilla_domain::events::Event;
use floatilla_domain::licensing::{
    Capacity, Granularity, LedgerRouter, LicenseReason, LicenseTerm, Lineage, PoolOp, ServiceClock,
    UsageBucket, UsageSample,
};
use floatilla_domain::{LicenseId, TenantId, Timestamp};

use crate::Result;

/// A license installed in a tenant's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub id: LicenseId,
    pub tenant_id: TenantId,
    pub name: String,
    pub term: LicenseTerm,
    /// What a signed license file says besides its term; `None` for an unsigned license.
    pub signed: Option<SignedDetails>,
    pub created_at: Timestamp,
}

/// A signed license's particulars, and its file as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDetails {
    pub serial: String,
    pub customer: String,
    pub issued_at: Timestamp,
    /// Serials of the licenses this one replaces from its start.
    pub supersedes: Vec<String>,
    pub entitlements: Vec<String>,
    pub issuer_key_id: String,
    pub text: String,
}

impl License {
    /// The license as renewals see it.
    pub fn lineage(&self) -> Lineage<'_> {
        Lineage {
            term: self.term,
            serial: self.signed.as_ref().map(|s| s.serial.as_str()),
            supersedes: self.signed.as_ref().map_or(&[], |s| &s.supersedes),
        }
    }
}

/// How far a node's copy of a tenant's pool has come: `None` for what it has not read yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolPosition {
    /// The log position its copy of the pool has applied.
    pub version: Option<u64>,
    /// The revision of the licenses it holds.
    pub licenses_revision: Option<u64>,
}

/// A tenant's pool after its last operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHead {
    pub version: u64,
    pub next_place: u64,
    pub capacity: Capacity,
    pub licenses_revision: u64,
    /// The counts after the last operation, and since when; `None` before the first.
    pub usage: Option<UsageSample>,
}

impl PoolHead {
    /// A pool nothing happened to yet.
    pub fn empty() -> Self {
        Self {
            version: 0,
            next_place: 1,
            capacity: Capacity::Limited(0),
            licenses_revision: 0,
            usage: None,
        }
    }
}

/// What brings a copy of the pool from its position to the head.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolHistory {
    /// The operations after the copy's position, in order.
    Log(Vec<PoolOp>),
    /// The copy is too far behind (or has nothing): every router with a live session, an
    /// unmanaged mark or a pin, as of the head.
    Snapshot(Vec<LedgerRouter>),
}

/// What a node reads of a tenant's pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRead {
    pub head: PoolHead,
    pub history: PoolHistory,
    /// The tenant's licenses, when their revision is not the one the node holds.
    pub licenses: Option<Vec<License>>,
}

/// A router's new license columns, and the reason of its last transition if it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterWrite {
    pub router: LedgerRouter,
    pub reason: Option<LicenseReason>,
}

/// What a change to the pool writes, in the transaction that read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolWrite {
    /// Appended to the log after the head's position.
    pub ops: Vec<PoolOp>,
    pub next_place: u64,
    pub capacity: Capacity,
    /// Routers whose license columns changed (rows of deleted routers are skipped).
    pub routers: Vec<RouterWrite>,
    pub events: Vec<Event>,
    /// The counts now.
    pub usage: UsageSample,
    /// The shares of usage since the previous counts, merged into their buckets.
    pub usage_shares: Vec<(Granularity, UsageBucket)>,
}

/// The caller's part of [`LicensePools::update_pool`]: given what was read under the lock,
/// what to write (`None` writes nothing).
pub type PoolStep<'a> = dyn FnMut(PoolRead) -> Option<PoolWrite> + Send + 'a;

#[async_trait]
pub trait LicensePools {
    /// Adds a license; bumps the tenant's license revision.
    async fn add_license(&self, license: &License) -> Result<()>;
    /// Removes a license (`NotFound` if the tenant has none with that id); bumps the revision.
    async fn delete_license(&self, tenant: TenantId, id: LicenseId) -> Result<()>;
    /// The tenant's licenses, oldest start first.
    async fn licenses(&self, tenant: TenantId) -> Result<Vec<License>>;

    /// Takes the tenant's pool lock, reads what brings a copy at `known` up to date, lets
    /// `step` decide, and writes its answer in the same transaction. Answers whether it wrote.
    async fn update_pool(
        &self,
        tenant: TenantId,
        known: PoolPosition,
        step: &mut PoolStep<'_>,
    ) -> Result<bool>;
    /// The pool's head, without the lock; `None` before its first change.
    async fn pool_head(&self, tenant: TenantId) -> Result<Option<PoolHead>>;
    /// The same read without the lock, for a node that only follows.
    async fn read_pool(&self, tenant: TenantId, known: PoolPosition) -> Result<PoolRead>;

    /// The tenant's usage buckets starting in `[from, to)`, oldest first. The bucket in
    /// progress holds usage up to the pool's last change only.
    async fn license_usage(
        &self,
        tenant: TenantId,
        granularity: Granularity,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageBucket>>;

    /// Records that the warning `window_days` before the tenant's capacity drop at `drop_at`
    /// was given, with its event, unless it was given already (by any node): answers whether
    /// this call gave it.
    async fn record_notice(
        &self,
        tenant: TenantId,
        drop_at: Timestamp,
        window_days: u32,
        event: &Event,
    ) -> Result<bool>;

    /// A node starts: if no node said it was alive within `quiet` before `now`, the time since
    /// the last one did is an outage, which lingers do not count. Answers the clock in force.
    async fn start_service_clock(
        &self,
        now: Timestamp,
        quiet: chrono::Duration,
    ) -> Result<ServiceClock>;
    /// A running node says it is alive at `now`; answers the clock in force.
    async fn service_alive(&self, now: Timestamp) -> Result<ServiceClock>;
}

/// Operations kept in a tenant's log: a node further behind rebuilds from the snapshot.
pub(crate) const LOG_KEPT: u64 = 100_000;

/// Implements [`LicensePools`] for a store type (see `impl_store!` for what it provides, plus
/// `LOCK_POOL`, `UPDATE_POOL_ROUTERS`, `INSERT_POOL_LOG` and `INSERT_EVENTS`, the statements
/// that differ between backends).
macro_rules! impl_license_pools {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::LicensePools for $store {
            async fn add_license(&self, license: &$crate::License) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                $crate::licensing::insert_license!(&mut *tx, license)?;
                $crate::licensing::bump_licenses!(&mut *tx, license.tenant_id)?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_license(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::LicenseId,
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                let deleted = ::sqlx::query("DELETE FROM licenses WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                $crate::shared::found(deleted, "license")?;
                $crate::licensing::bump_licenses!(&mut *tx, tenant)?;
                tx.commit().await?;
                Ok(())
            }

            async fn licenses(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Vec<$crate::License>> {
                let rows: Vec<$crate::rows::LicenseRow> = ::sqlx::query_as(
                    $crate::licensing::select_licenses!(),
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn update_pool(
                &self,
                tenant: ::floatilla_domain::TenantId,
                known: $crate::PoolPosition,
                step: &mut $crate::licensing::PoolStep<'_>,
            ) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                ::sqlx::query(
                    "INSERT INTO license_pools (tenant_id, version, next_place) VALUES ($1, 0, 1) \
                     ON CONFLICT (tenant_id) DO NOTHING",
                )
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::shared::write_error(e, String::new, "tenant"))?;
                let head: $crate::rows::PoolHeadRow = ::sqlx::query_as(Self::LOCK_POOL)
                    .bind(tenant.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
                let head: $crate::PoolHead = head.try_into()?;
                let read = $crate::licensing::read_after!(tx, tenant, head, known)?;
                let Some(write) = step(read) else {
                    return Ok(false);
                };
                let version = head.version + write.ops.len() as u64;
                if !write.ops.is_empty() {
                    let ops = $crate::licensing::log_json(tenant, head.version, &write.ops)?;
                    ::sqlx::query(Self::INSERT_POOL_LOG)
                        .bind(ops)
                        .execute(&mut *tx)
                        .await?;
                    let crossed = version / 1_000 != head.version / 1_000;
                    if crossed && version > $crate::licensing::LOG_KEPT {
                        ::sqlx::query(
                            "DELETE FROM license_log WHERE tenant_id = $1 AND position <= $2",
                        )
                        .bind(tenant.to_string())
                        .bind((version - $crate::licensing::LOG_KEPT) as i64)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if !write.routers.is_empty() {
                    ::sqlx::query(Self::UPDATE_POOL_ROUTERS)
                        .bind($crate::licensing::routers_json(&write.routers)?)
                        .bind(tenant.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                if !write.events.is_empty() {
                    ::sqlx::query(Self::INSERT_EVENTS)
                        .bind($crate::licensing::events_json(&write.events)?)
                        .execute(&mut *tx)
                        .await?;
                }
                for (granularity, share) in &write.usage_shares {
                    ::sqlx::query(
                        "INSERT INTO license_usage (tenant_id, granularity, bucket_start, \
                         peak_managed, peak_licensed, excess_router_millis) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (tenant_id, granularity, bucket_start) DO UPDATE SET \
                         peak_managed = CASE WHEN excluded.peak_managed > license_usage.peak_managed \
                         THEN excluded.peak_managed ELSE license_usage.peak_managed END, \
                         peak_licensed = CASE WHEN excluded.peak_licensed > license_usage.peak_licensed \
                         THEN excluded.peak_licensed ELSE license_usage.peak_licensed END, \
                         excess_router_millis = license_usage.excess_router_millis \
                         + excluded.excess_router_millis",
                    )
                    .bind(tenant.to_string())
                    .bind(granularity.as_str())
                    .bind($crate::rows::millis(share.start))
                    .bind(share.peak_managed as i64)
                    .bind(share.peak_licensed as i64)
                    .bind(share.excess_router_millis as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                ::sqlx::query(
                    "UPDATE license_pools SET version = $2, next_place = $3, capacity = $4, \
                     usage_at = $5, usage_managed = $6, usage_licensed = $7, usage_excess = $8 \
                     WHERE tenant_id = $1",
                )
                .bind(tenant.to_string())
                .bind(version as i64)
                .bind(write.next_place as i64)
                .bind($crate::licensing::capacity_column(write.capacity))
                .bind($crate::rows::millis(write.usage.at))
                .bind(write.usage.managed_live as i64)
                .bind(write.usage.licensed as i64)
                .bind(write.usage.excess as i64)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn pool_head(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Option<$crate::PoolHead>> {
                let head: Option<$crate::rows::PoolHeadRow> = ::sqlx::query_as(
                    "SELECT version, next_place, capacity, licenses_revision, usage_at, \
                     usage_managed, usage_licensed, usage_excess \
                     FROM license_pools WHERE tenant_id = $1",
                )
                .bind(tenant.to_string())
                .fetch_optional(&self.pool)
                .await?;
                head.map(TryInto::try_into).transpose()
            }

            async fn read_pool(
                &self,
                tenant: ::floatilla_domain::TenantId,
                known: $crate::PoolPosition,
            ) -> $crate::Result<$crate::PoolRead> {
                let mut tx = self.begin_read().await?;
                let head: Option<$crate::rows::PoolHeadRow> = ::sqlx::query_as(
                    "SELECT version, next_place, capacity, licenses_revision, usage_at, \
                     usage_managed, usage_licensed, usage_excess \
                     FROM license_pools WHERE tenant_id = $1",
                )
                .bind(tenant.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let head = match head {
                    Some(row) => row.try_into()?,
                    None => $crate::PoolHead::empty(),
                };
                let read = $crate::licensing::read_after!(tx, tenant, head, known)?;
                tx.commit().await?;
                Ok(read)
            }

            async fn license_usage(
                &self,
                tenant: ::floatilla_domain::TenantId,
                granularity: ::floatilla_domain::licensing::Granularity,
                from: ::floatilla_domain::Timestamp,
                to: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<Vec<::floatilla_domain::licensing::UsageBucket>> {
                let rows: Vec<$crate::rows::UsageRow> = ::sqlx::query_as(
                    "SELECT bucket_start, peak_managed, peak_licensed, excess_router_millis \
                     FROM license_usage WHERE tenant_id = $1 AND granularity = $2 \
                     AND bucket_start >= $3 AND bucket_start < $4 ORDER BY bucket_start",
                )
                .bind(tenant.to_string())
                .bind(granularity.as_str())
                .bind($crate::rows::millis(from))
                .bind($crate::rows::millis(to))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn record_notice(
                &self,
                tenant: ::floatilla_domain::TenantId,
                drop_at: ::floatilla_domain::Timestamp,
                window_days: u32,
                event: &::floatilla_domain::events::Event,
            ) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let inserted = ::sqlx::query(
                    "INSERT INTO license_notices (tenant_id, drop_at, window_days, sent_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(tenant.to_string())
                .bind($crate::rows::millis(drop_at))
                .bind(i64::from(window_days))
                .bind($crate::rows::millis(event.at))
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::shared::write_error(e, String::new, "tenant"))?
                .rows_affected();
                if inserted > 0 {
                    $crate::events::insert_event!(&mut *tx, event)?;
                }
                tx.commit().await?;
                Ok(inserted > 0)
            }

            async fn start_service_clock(
                &self,
                now: ::floatilla_domain::Timestamp,
                quiet: ::chrono::Duration,
            ) -> $crate::Result<::floatilla_domain::licensing::ServiceClock> {
                let now_ms = $crate::rows::millis(now);
                let mut tx = self.begin_write().await?;
                ::sqlx::query(
                    "INSERT INTO service_clock (id, downtime_ms, alive_at) VALUES (1, 0, $1) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                let (downtime, alive_at): (i64, i64) = ::sqlx::query_as(Self::LOCK_SERVICE_CLOCK)
                    .fetch_one(&mut *tx)
                    .await?;
                let mut clock = ::floatilla_domain::licensing::ServiceClock::with_downtime(
                    ::chrono::Duration::milliseconds(downtime),
                );
                if now_ms - alive_at > quiet.num_milliseconds() {
                    let last_alive = ::chrono::DateTime::from_timestamp_millis(alive_at)
                        .unwrap_or(now);
                    clock.record_outage(last_alive, now);
                }
                ::sqlx::query(
                    "UPDATE service_clock SET downtime_ms = $1, \
                     alive_at = CASE WHEN alive_at > $2 THEN alive_at ELSE $2 END WHERE id = 1",
                )
                .bind(clock.downtime().num_milliseconds())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(clock)
            }

            async fn service_alive(
                &self,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<::floatilla_domain::licensing::ServiceClock> {
                let downtime: i64 = ::sqlx::query_scalar(
                    "UPDATE service_clock SET \
                     alive_at = CASE WHEN alive_at > $1 THEN alive_at ELSE $1 END \
                     WHERE id = 1 RETURNING downtime_ms",
                )
                .bind($crate::rows::millis(now))
                .fetch_one(&self.pool)
                .await?;
                Ok(::floatilla_domain::licensing::ServiceClock::with_downtime(
                    ::chrono::Duration::milliseconds(downtime),
                ))
            }
        }
    };
}
pub(crate) use impl_license_pools;

/// Inserts `$license` with `$executor`; the caller bumps the tenant's license revision in the
/// same transaction.
macro_rules! insert_license {
    ($executor:expr, $license:expr) => {{
        let license: &$crate::License = $license;
        let term = &license.term;
        let signed = license.signed.as_ref();
        ::sqlx::query(
            "INSERT INTO licenses (id, tenant_id, name, seats, not_before, not_after, \
             grace_until, created_at, serial, customer, issued_at, supersedes, \
             entitlements, issuer_key_id, signed_text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(license.id.to_string())
        .bind(license.tenant_id.to_string())
        .bind(&license.name)
        .bind($crate::licensing::seats_column(term.seats))
        .bind($crate::rows::millis(term.not_before))
        .bind($crate::rows::opt_millis(term.not_after))
        .bind($crate::rows::opt_millis(term.grace_until))
        .bind($crate::rows::millis(license.created_at))
        .bind(signed.map(|s| s.serial.clone()))
        .bind(signed.map(|s| s.customer.clone()))
        .bind(signed.map(|s| $crate::rows::millis(s.issued_at)))
        .bind($crate::licensing::list_json(
            signed.map_or(&[][..], |s| &s.supersedes),
        )?)
        .bind($crate::licensing::list_json(
            signed.map_or(&[][..], |s| &s.entitlements),
        )?)
        .bind(signed.map(|s| s.issuer_key_id.clone()))
        .bind(signed.map(|s| s.text.clone()))
        .execute($executor)
        .await
        .map_err(|e| {
            $crate::shared::write_error(
                e,
                || match signed {
                    Some(signed) => format!("license {} is installed already", signed.serial),
                    None => format!("license {} already exists", license.id),
                },
                "tenant",
            )
        })
        .map(|_| ())
    }};
}
pub(crate) use insert_license;

/// Bumps the tenant's license revision (creating its pool row if needed) with `$executor`.
macro_rules! bump_licenses {
    ($executor:expr, $tenant:expr) => {
        ::sqlx::query(
            "INSERT INTO license_pools (tenant_id, version, next_place, licenses_revision) \
             VALUES ($1, 0, 1, 1) ON CONFLICT (tenant_id) DO UPDATE SET \
             licenses_revision = license_pools.licenses_revision + 1",
        )
        .bind($tenant.to_string())
        .execute($executor)
        .await
        .map_err(|e| $crate::shared::write_error(e, String::new, "tenant"))
    };
}
pub(crate) use bump_licenses;

/// Reads, in the transaction `$tx`, what brings a copy at `$known` to `$head`.
macro_rules! read_after {
    ($tx:ident, $tenant:expr, $head:expr, $known:expr) => {{
        let tenant: ::floatilla_domain::TenantId = $tenant;
        let head: $crate::PoolHead = $head;
        let known: $crate::PoolPosition = $known;
        let result: $crate::Result<$crate::PoolRead> = async {
            let licenses = if known.licenses_revision == Some(head.licenses_revision) {
                None
            } else {
                let rows: Vec<$crate::rows::LicenseRow> =
                    ::sqlx::query_as($crate::licensing::select_licenses!())
                        .bind(tenant.to_string())
                        .fetch_all(&mut *$tx)
                        .await?;
                Some(
                    rows.into_iter()
                        .map(TryInto::try_into)
                        .collect::<$crate::Result<Vec<$crate::License>>>()?,
                )
            };
            let mut log = None;
            if let Some(version) = known.version.filter(|v| *v <= head.version) {
                let rows: Vec<(i64, String)> = ::sqlx::query_as(
                    "SELECT position, op FROM license_log WHERE tenant_id = $1 \
                     AND position > $2 ORDER BY position",
                )
                .bind(tenant.to_string())
                .bind(version as i64)
                .fetch_all(&mut *$tx)
                .await?;
                log = $crate::licensing::contiguous_log(version, head.version, rows)?;
            }
            let history = match log {
                Some(ops) => $crate::PoolHistory::Log(ops),
                None => {
                    let rows: Vec<$crate::rows::LedgerRow> = ::sqlx::query_as(
                        "SELECT id, managed, pinned, license_place, license_session, \
                         linger_until, license_state FROM devices WHERE tenant_id = $1 \
                         AND (license_place IS NOT NULL OR NOT managed OR pinned)",
                    )
                    .bind(tenant.to_string())
                    .fetch_all(&mut *$tx)
                    .await?;
                    $crate::PoolHistory::Snapshot(
                        rows.into_iter()
                            .map(TryInto::try_into)
                            .collect::<$crate::Result<Vec<_>>>()?,
                    )
                }
            };
            Ok($crate::PoolRead {
                head,
                history,
                licenses,
            })
        }
        .await;
        result
    }};
}
pub(crate) use read_after;

/// The operations after `version` up to `head`, if the log still holds all of them in order.
pub(crate) fn contiguous_log(
    version: u64,
    head: u64,
    rows: Vec<(i64, String)>,
) -> Result<Option<Vec<PoolOp>>> {
    let mut ops = Vec::with_capacity(rows.len());
    for (expected, (position, op)) in (version + 1..).zip(rows) {
        if position != expected as i64 {
            return Ok(None);
        }
        ops.push(
            serde_json::from_str(&op)
                .map_err(|e| crate::StoreError::Corrupt(format!("license_log {position}: {e}")))?,
        );
    }
    Ok((version + ops.len() as u64 == head).then_some(ops))
}

/// Every column of `licenses`, for a tenant's licenses in order of their start.
macro_rules! select_licenses {
    () => {
        "SELECT id, tenant_id, name, seats, not_before, not_after, grace_until, created_at, \
         serial, customer, issued_at, supersedes, entitlements, issuer_key_id, signed_text \
         FROM licenses WHERE tenant_id = $1 ORDER BY not_before, id"
    };
}
pub(crate) use select_licenses;

/// A list of strings as its JSON column.
pub(crate) fn list_json(items: &[String]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| json_error("list", e))
}

/// `licenses.seats`: NULL for unlimited.
pub(crate) fn seats_column(seats: floatilla_domain::licensing::Seats) -> Option<i64> {
    match seats {
        floatilla_domain::licensing::Seats::Count(n) => Some(i64::from(n)),
        floatilla_domain::licensing::Seats::Unlimited => None,
    }
}

/// `license_pools.capacity`: NULL for unlimited.
pub(crate) fn capacity_column(capacity: Capacity) -> Option<i64> {
    match capacity {
        Capacity::Limited(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
        Capacity::Unlimited => None,
    }
}

fn json_error(what: &str, error: serde_json::Error) -> crate::StoreError {
    crate::StoreError::Corrupt(format!("{what}: {error}"))
}

/// The operations as the JSON array the log insert expands.
pub(crate) fn log_json(tenant: TenantId, after: u64, ops: &[PoolOp]) -> Result<String> {
    let rows: Vec<serde_json::Value> = ops
        .iter()
        .zip(after + 1..)
        .map(|(op, position)| {
            Ok(serde_json::json!({
                "tenant_id": tenant.to_string(),
                "position": position,
                "op": serde_json::to_string(op).map_err(|e| json_error("pool operation", e))?,
            }))
        })
        .collect::<Result<_>>()?;
    serde_json::to_string(&rows).map_err(|e| json_error("pool log", e))
}

/// The routers' license columns as the JSON array the bulk update expands.
pub(crate) fn routers_json(routers: &[RouterWrite]) -> Result<String> {
    let rows: Vec<serde_json::Value> = routers
        .iter()
        .map(|write| {
            let r = &write.router;
            serde_json::json!({
                "id": r.device.to_string(),
                "managed": r.managed,
                "pinned": r.pinned,
                "place": r.place,
                "session": r.session.map(|s| s.to_string()),
                "linger_until": r.linger_until.map(|t| t.millis()),
                "state": r.state.as_str(),
                "reason": write.reason.map(|reason| reason.as_str()),
            })
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| json_error("pool routers", e))
}

/// The events as the JSON array the bulk insert expands.
pub(crate) fn events_json(events: &[Event]) -> Result<String> {
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|event| {
            serde_json::json!({
                "id": event.id.to_string(),
                "tenant_id": event.tenant_id.to_string(),
                "at": crate::rows::millis(event.at),
                "kind": event.kind.as_str(),
                "device_id": event.device_id.map(|d| d.to_string()),
                "message": event.message,
            })
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| json_error("events", e))
}
