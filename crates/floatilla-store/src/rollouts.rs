//! Rollouts: a job sent in phases. The store keeps where each stands and answers the questions
//! the domain's planner ([`floatilla_domain::jobs::plan`]) needs; the server's driver decides.

use async_trait::async_trait;
use floatilla_domain::jobs::{ExecutionState, RolloutPolicy, RolloutStatus};
use floatilla_domain::{DeviceId, ExecutionId, GroupId, JobId, TenantId, Timestamp};
use sqlx::FromRow;

use crate::rows::{parse, timestamp};
use crate::{Execution, Job, Result, StoreError};

/// A job's rollout: how it proceeds and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The rollout shares its job's id.
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub policy: RolloutPolicy,
    pub status: RolloutStatus,
    /// The phase under way (from 0).
    pub phase: u32,
    /// Routers at creation: what the phases' percentages are taken of.
    pub planned: u32,
    /// The group whose later members join the last phase.
    pub target_group: Option<GroupId>,
    /// The tag whose later bearers join the last phase.
    pub target_tag: Option<String>,
    /// Each execution starts after a random delay of up to this many seconds.
    pub jitter_secs: u32,
    /// How often a failed or timed-out execution is tried again.
    pub max_retries: u32,
    /// Why it paused, aborted, completed or was cancelled.
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Rollout {
    /// Routers joining its group or tag later join it.
    pub fn is_open_ended(&self) -> bool {
        self.target_group.is_some() || self.target_tag.is_some()
    }
}

/// How many executions of one phase stand in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseCount {
    pub phase: u32,
    pub state: ExecutionState,
    /// The rollout let them start.
    pub released: bool,
    pub count: u32,
}

#[async_trait]
pub trait Rollouts {
    /// Stores a rollout with its job and executions, all or nothing.
    async fn create_rollout(
        &self,
        rollout: &Rollout,
        job: &Job,
        executions: &[Execution],
    ) -> Result<()>;
    async fn rollout(&self, tenant: TenantId, job: JobId) -> Result<Option<Rollout>>;
    /// The tenant's rollouts, newest first, at most `limit`, older than `before` if given.
    async fn rollouts(
        &self,
        tenant: TenantId,
        limit: u32,
        before: Option<JobId>,
    ) -> Result<Vec<Rollout>>;
    /// Every tenant's running and paused rollouts: what the drivers look after (a paused one
    /// starts nothing new, but what it started is still sent).
    async fn active_rollouts(&self) -> Result<Vec<Rollout>>;
    /// Takes or keeps the right to drive the rollout until `until`: granted to `node` if it
    /// holds it or nobody does since the last lease ran out. One node drives each rollout.
    async fn lease_rollout(
        &self,
        job: JobId,
        node: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool>;
    /// Executions counted by phase, state and whether they were released.
    async fn phase_counts(&self, job: JobId) -> Result<Vec<PhaseCount>>;
    /// Up to `limit` executions of phases up to `phase` that wait to start (queued, not yet
    /// released) and whose routers are online, in rollout order.
    async fn ready_executions(
        &self,
        job: JobId,
        phase: u32,
        limit: u32,
    ) -> Result<Vec<ExecutionId>>;
    /// Lets each execution start at its time, unless it moved meanwhile; answers how many.
    async fn release_executions(
        &self,
        releases: &[(ExecutionId, Timestamp)],
        now: Timestamp,
    ) -> Result<u64>;
    /// Queues the job's failed and timed-out executions again as their next attempt, if they
    /// had fewer than `max_attempts`; they wait to be released again. Answers how many.
    async fn retry_executions(&self, job: JobId, max_attempts: u32, now: Timestamp) -> Result<u64>;
    /// Holds the job's queued executions of routers in the `closed` groups in
    /// `waiting_for_window` (no longer released), and queues again those waiting whose group's
    /// window is open now. Answers how many moved.
    async fn follow_windows(&self, job: JobId, closed: &[GroupId], now: Timestamp) -> Result<u64>;
    /// The groups with a maintenance window among the routers of the job's unfinished
    /// executions.
    async fn window_groups(&self, job: JobId) -> Result<Vec<(GroupId, String)>>;
    /// The routers of the rollout's group or tag that have no execution of it yet, with
    /// whether each holds a seat, and its model.
    async fn late_joiners(&self, rollout: &Rollout) -> Result<Vec<(DeviceId, bool, String)>>;
    /// Adds executions to an existing job.
    async fn add_executions(&self, executions: &[Execution]) -> Result<()>;
    /// Changes the rollout's status and phase if it is in one of `from`; `stop` also ends its
    /// executions not sent yet as cancelled with `reason` (and, for a cancellation, cancels
    /// the job). Answers whether it changed.
    async fn set_rollout_status(
        &self,
        tenant: TenantId,
        job: JobId,
        change: RolloutChange<'_>,
        now: Timestamp,
    ) -> Result<bool>;
}

/// A change of a rollout's status, made only from the statuses in `from`.
#[derive(Debug, Clone, Copy)]
pub struct RolloutChange<'a> {
    pub from: &'a [RolloutStatus],
    pub to: RolloutStatus,
    pub phase: u32,
    pub reason: Option<&'a str>,
}

#[derive(FromRow)]
pub(crate) struct RolloutRow {
    job_id: String,
    tenant_id: String,
    policy: String,
    status: String,
    phase: i64,
    planned: i64,
    target_group_id: Option<String>,
    target_tag: Option<String>,
    jitter_secs: i64,
    max_retries: i64,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

fn count(column: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} {value}")))
}

impl TryFrom<RolloutRow> for Rollout {
    type Error = StoreError;
    fn try_from(row: RolloutRow) -> Result<Self> {
        let status = match row.status.as_str() {
            "running" => RolloutStatus::Running,
            "paused" => RolloutStatus::Paused,
            "completed" => RolloutStatus::Completed,
            "aborted" => RolloutStatus::Aborted,
            "cancelled" => RolloutStatus::Cancelled,
            other => return Err(StoreError::Corrupt(format!("rollouts.status {other}"))),
        };
        Ok(Rollout {
            job_id: parse("rollouts.job_id", &row.job_id)?,
            tenant_id: parse("rollouts.tenant_id", &row.tenant_id)?,
            policy: serde_json::from_str(&row.policy)
                .map_err(|e| StoreError::Corrupt(format!("rollouts.policy: {e}")))?,
            status,
            phase: count("rollouts.phase", row.phase)?,
            planned: count("rollouts.planned", row.planned)?,
            target_group: row
                .target_group_id
                .map(|g| parse("rollouts.target_group_id", &g))
                .transpose()?,
            target_tag: row.target_tag,
            jitter_secs: count("rollouts.jitter_secs", row.jitter_secs)?,
            max_retries: count("rollouts.max_retries", row.max_retries)?,
            reason: row.reason,
            created_at: timestamp("rollouts.created_at", row.created_at)?,
            updated_at: timestamp("rollouts.updated_at", row.updated_at)?,
        })
    }
}

/// Implements [`Rollouts`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_rollouts {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Rollouts for $store {
            async fn create_rollout(
                &self,
                rollout: &$crate::Rollout,
                job: &$crate::Job,
                executions: &[$crate::Execution],
            ) -> $crate::Result<()> {
                let policy = ::serde_json::to_string(&rollout.policy)
                    .map_err(|e| $crate::StoreError::Corrupt(e.to_string()))?;
                let mut tx = self.begin_write().await?;
                $crate::jobs::insert_job!(tx, job);
                ::sqlx::query(
                    "INSERT INTO rollouts (job_id, tenant_id, policy, status, phase, planned, \
                     target_group_id, target_tag, jitter_secs, max_retries, reason, created_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(rollout.job_id.to_string())
                .bind(rollout.tenant_id.to_string())
                .bind(policy)
                .bind(rollout.status.as_str())
                .bind(i64::from(rollout.phase))
                .bind(i64::from(rollout.planned))
                .bind(rollout.target_group.map(|g| g.to_string()))
                .bind(rollout.target_tag.clone())
                .bind(i64::from(rollout.jitter_secs))
                .bind(i64::from(rollout.max_retries))
                .bind(rollout.reason.clone())
                .bind($crate::rows::millis(rollout.created_at))
                .bind($crate::rows::millis(rollout.updated_at))
                .execute(&mut *tx)
                .await?;
                $crate::jobs::insert_executions!(tx, executions);
                tx.commit().await?;
                Ok(())
            }

            async fn rollout(
                &self,
                tenant: ::floatilla_domain::TenantId,
                job: ::floatilla_domain::JobId,
            ) -> $crate::Result<Option<$crate::Rollout>> {
                let row: Option<$crate::rollouts::RolloutRow> = ::sqlx::query_as(
                    "SELECT * FROM rollouts WHERE tenant_id = $1 AND job_id = $2",
                )
                .bind(tenant.to_string())
                .bind(job.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn rollouts(
                &self,
                tenant: ::floatilla_domain::TenantId,
                limit: u32,
                before: Option<::floatilla_domain::JobId>,
            ) -> $crate::Result<Vec<$crate::Rollout>> {
                let rows: Vec<$crate::rollouts::RolloutRow> = ::sqlx::query_as(
                    "SELECT * FROM rollouts WHERE tenant_id = $1 AND ($2 IS NULL OR job_id < $2) \
                     ORDER BY job_id DESC LIMIT $3",
                )
                .bind(tenant.to_string())
                .bind(before.map(|id| id.to_string()))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn active_rollouts(&self) -> $crate::Result<Vec<$crate::Rollout>> {
                let rows: Vec<$crate::rollouts::RolloutRow> = ::sqlx::query_as(
                    "SELECT * FROM rollouts WHERE status IN ('running', 'paused') ORDER BY job_id",
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn lease_rollout(
                &self,
                job: ::floatilla_domain::JobId,
                node: &str,
                now: ::floatilla_domain::Timestamp,
                until: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<bool> {
                let leased = ::sqlx::query(
                    "UPDATE rollouts SET lease_node = $2, lease_until = $4 WHERE job_id = $1 \
                     AND (lease_node = $2 OR lease_until IS NULL OR lease_until < $3)",
                )
                .bind(job.to_string())
                .bind(node)
                .bind($crate::rows::millis(now))
                .bind($crate::rows::millis(until))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(leased == 1)
            }

            async fn phase_counts(
                &self,
                job: ::floatilla_domain::JobId,
            ) -> $crate::Result<Vec<$crate::PhaseCount>> {
                let rows: Vec<(i64, String, i32, i64)> = ::sqlx::query_as(
                    "SELECT phase, state, CASE WHEN release_at IS NULL THEN 0 ELSE 1 END, \
                     COUNT(*) FROM job_executions WHERE job_id = $1 \
                     GROUP BY phase, state, CASE WHEN release_at IS NULL THEN 0 ELSE 1 END",
                )
                .bind(job.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(phase, state, released, count)| {
                        Ok($crate::PhaseCount {
                            phase: u32::try_from(phase).map_err(|_| {
                                $crate::StoreError::Corrupt(format!("job_executions.phase {phase}"))
                            })?,
                            state: $crate::rows::parse("job_executions.state", &state)?,
                            released: released == 1,
                            count: u32::try_from(count).unwrap_or(u32::MAX),
                        })
                    })
                    .collect()
            }

            async fn ready_executions(
                &self,
                job: ::floatilla_domain::JobId,
                phase: u32,
                limit: u32,
            ) -> $crate::Result<Vec<::floatilla_domain::ExecutionId>> {
                let ids: Vec<String> = ::sqlx::query_scalar(
                    "SELECT e.id FROM job_executions e JOIN devices d ON d.id = e.device_id \
                     WHERE e.job_id = $1 AND e.state = 'queued' AND e.release_at IS NULL \
                     AND e.phase <= $2 AND d.connection_state = 'online' \
                     ORDER BY e.phase, e.position LIMIT $3",
                )
                .bind(job.to_string())
                .bind(i64::from(phase))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                ids.iter()
                    .map(|id| $crate::rows::parse("job_executions.id", id))
                    .collect()
            }

            async fn release_executions(
                &self,
                releases: &[(::floatilla_domain::ExecutionId, ::floatilla_domain::Timestamp)],
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let mut released = 0;
                for (execution, at) in releases {
                    released += ::sqlx::query(
                        "UPDATE job_executions SET release_at = $2, updated_at = $3 \
                         WHERE id = $1 AND state = 'queued' AND release_at IS NULL",
                    )
                    .bind(execution.to_string())
                    .bind($crate::rows::millis(*at))
                    .bind($crate::rows::millis(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(released)
            }

            async fn retry_executions(
                &self,
                job: ::floatilla_domain::JobId,
                max_attempts: u32,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                Ok(::sqlx::query(
                    "UPDATE job_executions SET state = 'queued', attempt = attempt + 1, \
                     release_at = NULL, sent_at = NULL, finished_at = NULL, updated_at = $3 \
                     WHERE job_id = $1 AND state IN ('failed', 'timed_out') AND attempt < $2",
                )
                .bind(job.to_string())
                .bind(i64::from(max_attempts))
                .bind($crate::rows::millis(now))
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn follow_windows(
                &self,
                job: ::floatilla_domain::JobId,
                closed: &[::floatilla_domain::GroupId],
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let groups = if closed.is_empty() {
                    "NULL".to_owned()
                } else {
                    $crate::tags::placeholders(3, closed.len())
                };
                let in_closed = format!(
                    "device_id IN (SELECT id FROM devices WHERE group_id IN ({groups}))"
                );
                let hold = format!(
                    "UPDATE job_executions SET state = 'waiting_for_window', release_at = NULL, \
                     updated_at = $2 WHERE job_id = $1 AND state = 'queued' AND {in_closed}"
                );
                let open = format!(
                    "UPDATE job_executions SET state = 'queued', updated_at = $2 \
                     WHERE job_id = $1 AND state = 'waiting_for_window' AND NOT {in_closed}"
                );
                let mut moved = 0;
                for sql in [hold, open] {
                    let mut query = ::sqlx::query(::sqlx::AssertSqlSafe(sql))
                        .bind(job.to_string())
                        .bind($crate::rows::millis(now));
                    for group in closed {
                        query = query.bind(group.to_string());
                    }
                    moved += query.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(moved)
            }

            async fn window_groups(
                &self,
                job: ::floatilla_domain::JobId,
            ) -> $crate::Result<Vec<(::floatilla_domain::GroupId, String)>> {
                let sql = format!(
                    "SELECT DISTINCT g.id, g.maintenance_window FROM job_executions e \
                     JOIN devices d ON d.id = e.device_id JOIN groups g ON g.id = d.group_id \
                     WHERE e.job_id = $1 AND e.state IN {} AND g.maintenance_window IS NOT NULL",
                    $crate::jobs::PENDING_STATES
                );
                let rows: Vec<(String, String)> = ::sqlx::query_as(::sqlx::AssertSqlSafe(sql))
                    .bind(job.to_string())
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(group, window)| Ok(($crate::rows::parse("groups.id", &group)?, window)))
                    .collect()
            }

            async fn late_joiners(
                &self,
                rollout: &$crate::Rollout,
            ) -> $crate::Result<Vec<(::floatilla_domain::DeviceId, bool, String)>> {
                let (filter, value) = match (&rollout.target_group, &rollout.target_tag) {
                    (Some(group), _) => ("d.group_id = $3", group.to_string()),
                    (None, Some(tag)) => (
                        "EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id \
                         AND t.tag = $3)",
                        tag.clone(),
                    ),
                    (None, None) => return Ok(Vec::new()),
                };
                let sql = format!(
                    "SELECT d.id, d.license_state, d.model FROM devices d WHERE d.tenant_id = $1 \
                     AND {filter} AND NOT EXISTS (SELECT 1 FROM job_executions e \
                     WHERE e.job_id = $2 AND e.device_id = d.id) ORDER BY d.serial"
                );
                let rows: Vec<(String, String, String)> =
                    ::sqlx::query_as(::sqlx::AssertSqlSafe(sql))
                    .bind(rollout.tenant_id.to_string())
                    .bind(rollout.job_id.to_string())
                    .bind(value)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(device, license, model)| {
                        Ok((
                            $crate::rows::parse("devices.id", &device)?,
                            license == "licensed",
                            model,
                        ))
                    })
                    .collect()
            }

            async fn add_executions(
                &self,
                executions: &[$crate::Execution],
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                $crate::jobs::insert_executions!(tx, executions);
                tx.commit().await?;
                Ok(())
            }

            async fn set_rollout_status(
                &self,
                tenant: ::floatilla_domain::TenantId,
                job: ::floatilla_domain::JobId,
                change: $crate::RolloutChange<'_>,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<bool> {
                use ::floatilla_domain::jobs::RolloutStatus as R;
                let $crate::RolloutChange {
                    from,
                    to,
                    phase,
                    reason,
                } = change;
                let mut tx = self.begin_write().await?;
                let sql = format!(
                    "UPDATE rollouts SET status = $3, phase = $4, reason = $5, updated_at = $6 \
                     WHERE tenant_id = $1 AND job_id = $2 AND status IN ({})",
                    $crate::tags::placeholders(7, from.len().max(1))
                );
                let mut query = ::sqlx::query(::sqlx::AssertSqlSafe(sql))
                    .bind(tenant.to_string())
                    .bind(job.to_string())
                    .bind(to.as_str())
                    .bind(i64::from(phase))
                    .bind(reason)
                    .bind($crate::rows::millis(now));
                if from.is_empty() {
                    query = query.bind("");
                }
                for status in from {
                    query = query.bind(status.as_str());
                }
                if query.execute(&mut *tx).await?.rows_affected() == 0 {
                    return Ok(false);
                }
                if matches!(to, R::Aborted | R::Cancelled) {
                    let sql = format!(
                        "UPDATE job_executions SET state = 'cancelled', reason = $3, \
                         updated_at = $2, finished_at = $2 WHERE job_id = $1 AND state IN {}",
                        $crate::jobs::PENDING_STATES
                    );
                    ::sqlx::query(::sqlx::AssertSqlSafe(sql))
                        .bind(job.to_string())
                        .bind($crate::rows::millis(now))
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?;
                }
                if to == R::Cancelled {
                    ::sqlx::query(
                        "UPDATE jobs SET cancelled_at = COALESCE(cancelled_at, $2) WHERE id = $1",
                    )
                    .bind(job.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}
pub(crate) use impl_rollouts;
