//! Jobs and their executions: what operators asked of routers, and where each router's part
//! stands. The states and their moves are the domain's ([`floatilla_domain::jobs`]); the store
//! keeps them and changes many at once.

use std::collections::HashMap;

use async_trait::async_trait;
use floatilla_domain::jobs::{ExecutionState, JobKind};
use floatilla_domain::{ArtifactId, DeviceId, ExecutionId, JobId, TenantId, Timestamp};
use sqlx::FromRow;

use crate::rows::{opt_timestamp, parse, timestamp};
use crate::{Result, StoreError};

/// A job as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: JobKind,
    /// A JSON object, handed to the router as it is.
    pub params: serde_json::Value,
    /// Executions not sent by then end as expired.
    pub expires_at: Option<Timestamp>,
    /// How long an execution may run from when it was sent.
    pub timeout_secs: u32,
    /// How long the router may be away while applying it (its session lingers that long).
    pub expected_downtime_secs: u32,
    /// The token or user that created it.
    pub created_by: String,
    pub created_at: Timestamp,
    pub cancelled_at: Option<Timestamp>,
    /// The file it installs, for the kinds that carry one.
    pub artifact: Option<JobArtifact>,
}

/// What a job and its routers know of the artifact it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobArtifact {
    pub id: ArtifactId,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub sha256: String,
}

/// One router's execution of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub id: ExecutionId,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub device_id: DeviceId,
    pub state: ExecutionState,
    /// Why it failed, timed out, expired or was cancelled; or the router's last message.
    pub reason: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// From when it may be sent: at creation for a plain job; `None` until its rollout lets
    /// it start.
    pub release_at: Option<Timestamp>,
    /// Its place in its rollout's order of routers (0 for a plain job).
    pub position: u32,
    /// Its rollout phase (0 for a plain job).
    pub phase: u32,
}

/// What a router reported of one of its executions: move it to `to` if it is in one of `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub execution: ExecutionId,
    pub from: Vec<ExecutionState>,
    pub to: ExecutionState,
    pub reason: Option<String>,
    /// The attempt it is about, if the router said: a report of another attempt changes
    /// nothing.
    pub attempt: Option<u32>,
    pub at: Timestamp,
}

/// How many executions of a job stand in each state.
pub type StateCounts = HashMap<ExecutionState, u64>;

#[async_trait]
pub trait Jobs {
    /// Stores a job with its executions, all or nothing.
    async fn create_job(&self, job: &Job, executions: &[Execution]) -> Result<()>;
    async fn job(&self, tenant: TenantId, id: JobId) -> Result<Option<Job>>;
    /// The tenant's jobs, newest first, at most `limit`, older than `before` if given.
    async fn jobs(&self, tenant: TenantId, limit: u32, before: Option<JobId>) -> Result<Vec<Job>>;
    /// Those of `ids` that are the tenant's jobs, in the order asked.
    async fn jobs_by_id(&self, tenant: TenantId, ids: &[JobId]) -> Result<Vec<Job>>;
    /// Each job's executions counted by state.
    async fn execution_counts(
        &self,
        tenant: TenantId,
        jobs: &[JobId],
    ) -> Result<HashMap<JobId, StateCounts>>;
    /// A job's executions in router order (by id), at most `limit`, after `after` if given.
    async fn job_executions(
        &self,
        tenant: TenantId,
        job: JobId,
        limit: u32,
        after: Option<ExecutionId>,
    ) -> Result<Vec<Execution>>;
    /// A router's executions, newest first, at most `limit`.
    async fn device_executions(
        &self,
        tenant: TenantId,
        device: DeviceId,
        limit: u32,
    ) -> Result<Vec<Execution>>;
    /// Cancels the job: its executions not sent yet end as cancelled; those in flight run to
    /// their end. Answers how many were cancelled; `NotFound` for another tenant's job.
    async fn cancel_job(&self, tenant: TenantId, job: JobId, now: Timestamp) -> Result<u64>;
    /// Ends, as of `now`, executions past their deadline: not sent by the job's expiry
    /// (`expired`), or sent longer ago than the job's timeout (`timed_out`). Answers them as
    /// they now are.
    async fn end_overdue_executions(&self, now: Timestamp) -> Result<Vec<Execution>>;
    /// What the router is to be sent now, oldest first, with their jobs: its queued executions
    /// that may be sent at `now` (moved to `sent` as of `now` in the same transaction) and those it already has (sent,
    /// downloading, installing: sent again after a reconnect, the router recognises them).
    async fn take_executions_to_send(
        &self,
        tenant: TenantId,
        device: DeviceId,
        now: Timestamp,
    ) -> Result<Vec<(Job, Execution)>>;
    /// Whether the router has an execution that is not finished: read on every connect and
    /// license change, so that routers without jobs cost no write there.
    async fn has_open_executions(&self, device: DeviceId) -> Result<bool>;
    /// Moves the router's executions from `queued` to `waiting_for_license` when it lost its
    /// seat (`licensed` false), or back when it has one. Answers how many moved.
    async fn relicense_executions(
        &self,
        tenant: TenantId,
        device: DeviceId,
        licensed: bool,
        now: Timestamp,
    ) -> Result<u64>;
    /// Marks those of `executions` that are queued and may be sent at `now` sent as of `now`;
    /// answers those it marked.
    async fn mark_sent(&self, executions: &[ExecutionId], now: Timestamp)
    -> Result<Vec<Execution>>;
    /// The job's queued executions that may be sent at `now` and their routers, after `after`
    /// in execution order, at most `limit`.
    async fn queued_executions(
        &self,
        job: JobId,
        now: Timestamp,
        limit: u32,
        after: Option<ExecutionId>,
    ) -> Result<Vec<(ExecutionId, DeviceId)>>;
    /// Records what routers reported of their executions, in order, in one transaction: each
    /// moves its execution if it is in one of the report's `from` states (a stale or repeated
    /// report, or one about another router's execution, changes nothing). Answers how many moved.
    async fn report_executions(&self, reports: &[ExecutionReport]) -> Result<u64>;
    /// One of the router's executions.
    async fn device_execution(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: ExecutionId,
    ) -> Result<Option<Execution>>;
    /// Moves an execution from `from` to `to` as of `now`, unless it moved meanwhile (then
    /// `false`); records `reason`, the time it was sent or finished, and a retry's attempt.
    async fn move_execution(
        &self,
        id: ExecutionId,
        from: ExecutionState,
        to: ExecutionState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;
}

#[derive(FromRow)]
pub(crate) struct JobRow {
    id: String,
    tenant_id: String,
    kind: String,
    params: String,
    expires_at: Option<i64>,
    timeout_secs: i64,
    expected_downtime_secs: i64,
    created_by: String,
    created_at: i64,
    cancelled_at: Option<i64>,
    artifact_id: Option<String>,
    artifact_name: Option<String>,
    artifact_version: Option<String>,
    artifact_size: Option<i64>,
    artifact_sha256: Option<String>,
}

fn seconds(column: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} {value}")))
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(row: JobRow) -> Result<Self> {
        Ok(Job {
            id: parse("jobs.id", &row.id)?,
            tenant_id: parse("jobs.tenant_id", &row.tenant_id)?,
            kind: parse("jobs.kind", &row.kind)?,
            params: serde_json::from_str(&row.params)
                .map_err(|e| StoreError::Corrupt(format!("jobs.params: {e}")))?,
            expires_at: opt_timestamp("jobs.expires_at", row.expires_at)?,
            timeout_secs: seconds("jobs.timeout_secs", row.timeout_secs)?,
            expected_downtime_secs: seconds(
                "jobs.expected_downtime_secs",
                row.expected_downtime_secs,
            )?,
            created_by: row.created_by,
            created_at: timestamp("jobs.created_at", row.created_at)?,
            cancelled_at: opt_timestamp("jobs.cancelled_at", row.cancelled_at)?,
            artifact: match (
                row.artifact_id,
                row.artifact_name,
                row.artifact_version,
                row.artifact_size,
                row.artifact_sha256,
            ) {
                (Some(id), Some(name), Some(version), Some(size), Some(sha256)) => {
                    Some(JobArtifact {
                        id: parse("jobs.artifact_id", &id)?,
                        name,
                        version,
                        size: u64::try_from(size).map_err(|_| {
                            StoreError::Corrupt(format!("jobs.artifact_size {size}"))
                        })?,
                        sha256,
                    })
                }
                (None, None, None, None, None) => None,
                _ => return Err(StoreError::Corrupt("jobs.artifact_* partly set".into())),
            },
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ExecutionRow {
    id: String,
    job_id: String,
    tenant_id: String,
    device_id: String,
    state: String,
    reason: Option<String>,
    attempt: i64,
    created_at: i64,
    sent_at: Option<i64>,
    updated_at: i64,
    finished_at: Option<i64>,
    release_at: Option<i64>,
    position: i64,
    phase: i64,
}

impl TryFrom<ExecutionRow> for Execution {
    type Error = StoreError;
    fn try_from(row: ExecutionRow) -> Result<Self> {
        Ok(Execution {
            id: parse("job_executions.id", &row.id)?,
            job_id: parse("job_executions.job_id", &row.job_id)?,
            tenant_id: parse("job_executions.tenant_id", &row.tenant_id)?,
            device_id: parse("job_executions.device_id", &row.device_id)?,
            state: parse("job_executions.state", &row.state)?,
            reason: row.reason,
            attempt: seconds("job_executions.attempt", row.attempt)?,
            created_at: timestamp("job_executions.created_at", row.created_at)?,
            sent_at: opt_timestamp("job_executions.sent_at", row.sent_at)?,
            updated_at: timestamp("job_executions.updated_at", row.updated_at)?,
            finished_at: opt_timestamp("job_executions.finished_at", row.finished_at)?,
            release_at: opt_timestamp("job_executions.release_at", row.release_at)?,
            position: seconds("job_executions.position", row.position)?,
            phase: seconds("job_executions.phase", row.phase)?,
        })
    }
}

/// Executions per INSERT statement: 14 parameters each, 14,000 a statement, inside both
/// backends' limits (SQLite 32,766, PostgreSQL 65,535).
pub(crate) const EXECUTION_ROWS_PER_INSERT: usize = 1000;
/// The columns of an execution, in the order [`insert_executions`] binds them.
pub(crate) const EXECUTION_COLUMNS: usize = 14;

/// Inserts executions, [`EXECUTION_ROWS_PER_INSERT`] a statement, in the transaction `$tx`
/// (within the implementation of a store, whose placeholders it uses).
macro_rules! insert_executions {
    ($tx:expr, $executions:expr) => {{
        let columns = $crate::jobs::EXECUTION_COLUMNS;
        for chunk in $executions.chunks($crate::jobs::EXECUTION_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    format!(
                        "({})",
                        Self::sequential_placeholders(row * columns + 1, columns)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO job_executions (id, job_id, tenant_id, device_id, state, reason, \
                 attempt, created_at, sent_at, updated_at, finished_at, release_at, position, \
                 phase) VALUES {}",
                rows.join(", ")
            );
            let mut query = ::sqlx::query(::sqlx::AssertSqlSafe(sql));
            for execution in chunk {
                query = query
                    .bind(execution.id.to_string())
                    .bind(execution.job_id.to_string())
                    .bind(execution.tenant_id.to_string())
                    .bind(execution.device_id.to_string())
                    .bind(execution.state.as_str())
                    .bind(execution.reason.clone())
                    .bind(i64::from(execution.attempt))
                    .bind($crate::rows::millis(execution.created_at))
                    .bind($crate::rows::opt_millis(execution.sent_at))
                    .bind($crate::rows::millis(execution.updated_at))
                    .bind($crate::rows::opt_millis(execution.finished_at))
                    .bind($crate::rows::opt_millis(execution.release_at))
                    .bind(i64::from(execution.position))
                    .bind(i64::from(execution.phase));
            }
            query.execute(&mut *$tx).await.map_err(|e| {
                $crate::shared::write_error(e, || "a router is in the job twice".to_owned(), "job")
            })?;
        }
    }};
}
pub(crate) use insert_executions;

/// Inserts a job row in the transaction `$tx`.
macro_rules! insert_job {
    ($tx:expr, $job:expr) => {{
        let job: &$crate::Job = $job;
        ::sqlx::query(
            "INSERT INTO jobs (id, tenant_id, kind, params, expires_at, timeout_secs, \
             expected_downtime_secs, created_by, created_at, cancelled_at, artifact_id, \
             artifact_name, artifact_version, artifact_size, artifact_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(job.id.to_string())
        .bind(job.tenant_id.to_string())
        .bind(job.kind.as_str())
        .bind(job.params.to_string())
        .bind($crate::rows::opt_millis(job.expires_at))
        .bind(i64::from(job.timeout_secs))
        .bind(i64::from(job.expected_downtime_secs))
        .bind(&job.created_by)
        .bind($crate::rows::millis(job.created_at))
        .bind($crate::rows::opt_millis(job.cancelled_at))
        .bind(job.artifact.as_ref().map(|a| a.id.to_string()))
        .bind(job.artifact.as_ref().map(|a| a.name.clone()))
        .bind(job.artifact.as_ref().map(|a| a.version.clone()))
        .bind(
            job.artifact
                .as_ref()
                .map(|a| i64::try_from(a.size).unwrap_or(i64::MAX)),
        )
        .bind(job.artifact.as_ref().map(|a| a.sha256.clone()))
        .execute(&mut *$tx)
        .await
        .map_err(|e| {
            $crate::shared::write_error(e, || format!("job {} exists", job.id), "tenant")
        })?;
    }};
}
pub(crate) use insert_job;

/// Reports as JSON arrays for `REPORT_EXECUTIONS`, one statement each: as few as can be while
/// each execution's reports keep their order (a round holds at most one report per execution;
/// a router's `installing` and `succeeded` may arrive in the same batch).
pub(crate) fn report_rounds(reports: &[ExecutionReport]) -> Result<Vec<String>> {
    let mut rounds: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut seen: HashMap<ExecutionId, usize> = HashMap::new();
    for report in reports.iter().filter(|r| !r.from.is_empty()) {
        let round = seen.entry(report.execution).or_default();
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        let at = crate::rows::millis(report.at);
        rounds[*round].push(serde_json::json!({
            "id": report.execution.to_string(),
            "tenant": report.tenant.to_string(),
            "device": report.device.to_string(),
            "from_states": report.from.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "to_state": report.to.as_str(),
            "reason": report.reason,
            "at": at,
            "finished_at": report.to.is_terminal().then_some(at),
            "attempt": report.attempt,
        }));
        *round += 1;
    }
    rounds
        .iter()
        .map(|round| serde_json::to_string(round).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

/// Executions marked sent per statement: one parameter each.
pub(crate) const SENT_PER_STATEMENT: usize = 5000;

/// The states an execution waits in before it is sent, as an SQL list.
pub(crate) const PENDING_STATES: &str = "('queued', 'waiting_for_license', 'waiting_for_window')";
/// The states of an execution the router has, as an SQL list.
pub(crate) const IN_FLIGHT_STATES: &str = "('sent', 'downloading', 'installing')";

/// Implements [`Jobs`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_jobs {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Jobs for $store {
            async fn create_job(
                &self,
                job: &$crate::Job,
                executions: &[$crate::Execution],
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                $crate::jobs::insert_job!(tx, job);
                $crate::jobs::insert_executions!(tx, executions);
                tx.commit().await?;
                Ok(())
            }

            async fn job(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::JobId,
            ) -> $crate::Result<Option<$crate::Job>> {
                let row: Option<$crate::jobs::JobRow> =
                    ::sqlx::query_as("SELECT * FROM jobs WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn jobs(
                &self,
                tenant: ::floatilla_domain::TenantId,
                limit: u32,
                before: Option<::floatilla_domain::JobId>,
            ) -> $crate::Result<Vec<$crate::Job>> {
                // Job ids are time-ordered (UUIDv7): id order is creation order.
                let rows: Vec<$crate::jobs::JobRow> = ::sqlx::query_as(
                    "SELECT * FROM jobs WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(tenant.to_string())
                .bind(before.map(|id| id.to_string()))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn jobs_by_id(
                &self,
                tenant: ::floatilla_domain::TenantId,
                ids: &[::floatilla_domain::JobId],
            ) -> $crate::Result<Vec<$crate::Job>> {
                let mut found: ::std::collections::HashMap<::floatilla_domain::JobId, $crate::Job> =
                    ::std::collections::HashMap::new();
                for chunk in ids.chunks($crate::tags::TAG_CHUNK) {
                    let sql = format!(
                        "SELECT * FROM jobs WHERE tenant_id = $1 AND id IN ({})",
                        $crate::tags::placeholders(2, chunk.len())
                    );
                    let mut query =
                        ::sqlx::query_as::<_, $crate::jobs::JobRow>(::sqlx::AssertSqlSafe(sql))
                            .bind(tenant.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        let job: $crate::Job = row.try_into()?;
                        found.insert(job.id, job);
                    }
                }
                Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
            }

            async fn execution_counts(
                &self,
                tenant: ::floatilla_domain::TenantId,
                jobs: &[::floatilla_domain::JobId],
            ) -> $crate::Result<
                ::std::collections::HashMap<::floatilla_domain::JobId, $crate::StateCounts>,
            > {
                let mut counts: ::std::collections::HashMap<_, $crate::StateCounts> =
                    ::std::collections::HashMap::new();
                for chunk in jobs.chunks($crate::tags::TAG_CHUNK) {
                    let sql = format!(
                        "SELECT job_id, state, COUNT(*) FROM job_executions \
                         WHERE tenant_id = $1 AND job_id IN ({}) GROUP BY job_id, state",
                        $crate::tags::placeholders(2, chunk.len())
                    );
                    let mut query =
                        ::sqlx::query_as::<_, (String, String, i64)>(::sqlx::AssertSqlSafe(sql))
                            .bind(tenant.to_string());
                    for job in chunk {
                        query = query.bind(job.to_string());
                    }
                    for (job, state, count) in query.fetch_all(&self.pool).await? {
                        let job: ::floatilla_domain::JobId =
                            $crate::rows::parse("job_executions.job_id", &job)?;
                        let state: ::floatilla_domain::jobs::ExecutionState =
                            $crate::rows::parse("job_executions.state", &state)?;
                        counts
                            .entry(job)
                            .or_default()
                            .insert(state, u64::try_from(count).unwrap_or_default());
                    }
                }
                Ok(counts)
            }

            async fn job_executions(
                &self,
                tenant: ::floatilla_domain::TenantId,
                job: ::floatilla_domain::JobId,
                limit: u32,
                after: Option<::floatilla_domain::ExecutionId>,
            ) -> $crate::Result<Vec<$crate::Execution>> {
                let rows: Vec<$crate::jobs::ExecutionRow> = ::sqlx::query_as(
                    "SELECT * FROM job_executions WHERE tenant_id = $1 AND job_id = $2 \
                     AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
                )
                .bind(tenant.to_string())
                .bind(job.to_string())
                .bind(after.map(|id| id.to_string()))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn device_executions(
                &self,
                tenant: ::floatilla_domain::TenantId,
                device: ::floatilla_domain::DeviceId,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::Execution>> {
                let rows: Vec<$crate::jobs::ExecutionRow> = ::sqlx::query_as(
                    "SELECT * FROM job_executions WHERE tenant_id = $1 AND device_id = $2 \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(tenant.to_string())
                .bind(device.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn cancel_job(
                &self,
                tenant: ::floatilla_domain::TenantId,
                job: ::floatilla_domain::JobId,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let found = ::sqlx::query(
                    "UPDATE jobs SET cancelled_at = COALESCE(cancelled_at, $3) \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(job.to_string())
                .bind($crate::rows::millis(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                $crate::shared::found(found, "job")?;
                let sql = format!(
                    "UPDATE job_executions SET state = 'cancelled', reason = 'the job was cancelled', \
                     updated_at = $2, finished_at = $2 WHERE job_id = $1 AND state IN {}",
                    $crate::jobs::PENDING_STATES
                );
                let cancelled = ::sqlx::query(::sqlx::AssertSqlSafe(sql))
                    .bind(job.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(cancelled)
            }

            async fn end_overdue_executions(
                &self,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<Vec<$crate::Execution>> {
                let mut tx = self.begin_write().await?;
                let expired = format!(
                    "UPDATE job_executions SET state = 'expired', \
                     reason = 'the job expired before this router could take it', \
                     updated_at = $1, finished_at = $1 \
                     WHERE state IN {} AND job_id IN \
                     (SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= $1) \
                     RETURNING *",
                    $crate::jobs::PENDING_STATES
                );
                let mut rows: Vec<$crate::jobs::ExecutionRow> =
                    ::sqlx::query_as(::sqlx::AssertSqlSafe(expired))
                        .bind($crate::rows::millis(now))
                        .fetch_all(&mut *tx)
                        .await?;
                let timed_out = format!(
                    "UPDATE job_executions SET state = 'timed_out', \
                     reason = 'the router did not finish within the job''s timeout', \
                     updated_at = $1, finished_at = $1 \
                     WHERE state IN {} AND sent_at + 1000 * \
                     (SELECT timeout_secs FROM jobs WHERE jobs.id = job_executions.job_id) <= $1 \
                     RETURNING *",
                    $crate::jobs::IN_FLIGHT_STATES
                );
                rows.extend(
                    ::sqlx::query_as::<_, $crate::jobs::ExecutionRow>(::sqlx::AssertSqlSafe(
                        timed_out,
                    ))
                    .bind($crate::rows::millis(now))
                    .fetch_all(&mut *tx)
                    .await?,
                );
                tx.commit().await?;
                $crate::rows::convert(rows)
            }

            async fn take_executions_to_send(
                &self,
                tenant: ::floatilla_domain::TenantId,
                device: ::floatilla_domain::DeviceId,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<Vec<($crate::Job, $crate::Execution)>> {
                let mut tx = self.begin_write().await?;
                ::sqlx::query(
                    "UPDATE job_executions SET state = 'sent', sent_at = $3, updated_at = $3 \
                     WHERE tenant_id = $1 AND device_id = $2 AND state = 'queued' \
                     AND release_at IS NOT NULL AND release_at <= $3",
                )
                .bind(tenant.to_string())
                .bind(device.to_string())
                .bind($crate::rows::millis(now))
                .execute(&mut *tx)
                .await?;
                let sql = format!(
                    "SELECT * FROM job_executions WHERE tenant_id = $1 AND device_id = $2 \
                     AND state IN {} ORDER BY id",
                    $crate::jobs::IN_FLIGHT_STATES
                );
                let executions: Vec<$crate::Execution> = $crate::rows::convert(
                    ::sqlx::query_as::<_, $crate::jobs::ExecutionRow>(::sqlx::AssertSqlSafe(sql))
                        .bind(tenant.to_string())
                        .bind(device.to_string())
                        .fetch_all(&mut *tx)
                        .await?,
                )?;
                let mut jobs: ::std::collections::HashMap<::floatilla_domain::JobId, $crate::Job> =
                    ::std::collections::HashMap::new();
                for execution in &executions {
                    if jobs.contains_key(&execution.job_id) {
                        continue;
                    }
                    let row: $crate::jobs::JobRow =
                        ::sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
                            .bind(execution.job_id.to_string())
                            .fetch_one(&mut *tx)
                            .await?;
                    jobs.insert(execution.job_id, row.try_into()?);
                }
                tx.commit().await?;
                Ok(executions
                    .into_iter()
                    .map(|execution| (jobs[&execution.job_id].clone(), execution))
                    .collect())
            }

            async fn has_open_executions(
                &self,
                device: ::floatilla_domain::DeviceId,
            ) -> $crate::Result<bool> {
                let sql = format!(
                    "SELECT 1 FROM job_executions WHERE device_id = $1 \
                     AND (state IN {} OR state IN {}) LIMIT 1",
                    $crate::jobs::PENDING_STATES,
                    $crate::jobs::IN_FLIGHT_STATES
                );
                let found: Option<i32> = ::sqlx::query_scalar(::sqlx::AssertSqlSafe(sql))
                    .bind(device.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn relicense_executions(
                &self,
                tenant: ::floatilla_domain::TenantId,
                device: ::floatilla_domain::DeviceId,
                licensed: bool,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                let (from, to) = if licensed {
                    ("waiting_for_license", "queued")
                } else {
                    ("queued", "waiting_for_license")
                };
                Ok(::sqlx::query(
                    "UPDATE job_executions SET state = $4, updated_at = $5 \
                     WHERE tenant_id = $1 AND device_id = $2 AND state = $3",
                )
                .bind(tenant.to_string())
                .bind(device.to_string())
                .bind(from)
                .bind(to)
                .bind($crate::rows::millis(now))
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn mark_sent(
                &self,
                executions: &[::floatilla_domain::ExecutionId],
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<Vec<$crate::Execution>> {
                let mut marked = Vec::with_capacity(executions.len());
                // The time is a number of our own, written into the statement, so that the ids
                // are its only parameters and bind in order.
                let at = $crate::rows::millis(now);
                // One transaction: routers' reports, written meanwhile, wait once, not once per
                // chunk.
                let mut tx = self.begin_write().await?;
                for chunk in executions.chunks($crate::jobs::SENT_PER_STATEMENT) {
                    let sql = format!(
                        "UPDATE job_executions SET state = 'sent', sent_at = {at}, \
                         updated_at = {at} WHERE id IN ({}) AND state = 'queued' \
                         AND release_at IS NOT NULL AND release_at <= {at} RETURNING *",
                        Self::sequential_placeholders(1, chunk.len())
                    );
                    let mut query = ::sqlx::query_as::<_, $crate::jobs::ExecutionRow>(
                        ::sqlx::AssertSqlSafe(sql),
                    );
                    for execution in chunk {
                        query = query.bind(execution.to_string());
                    }
                    marked.extend($crate::rows::convert(query.fetch_all(&mut *tx).await?)?);
                }
                tx.commit().await?;
                Ok(marked)
            }

            async fn queued_executions(
                &self,
                job: ::floatilla_domain::JobId,
                now: ::floatilla_domain::Timestamp,
                limit: u32,
                after: Option<::floatilla_domain::ExecutionId>,
            ) -> $crate::Result<
                Vec<(::floatilla_domain::ExecutionId, ::floatilla_domain::DeviceId)>,
            > {
                let rows: Vec<(String, String)> = ::sqlx::query_as(
                    "SELECT id, device_id FROM job_executions WHERE job_id = $1 \
                     AND state = 'queued' AND release_at IS NOT NULL AND release_at <= $4 \
                     AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
                )
                .bind(job.to_string())
                .bind(after.map(|id| id.to_string()))
                .bind(i64::from(limit))
                .bind($crate::rows::millis(now))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|(id, device)| {
                        Ok((
                            $crate::rows::parse("job_executions.id", id)?,
                            $crate::rows::parse("job_executions.device_id", device)?,
                        ))
                    })
                    .collect()
            }

            async fn report_executions(
                &self,
                reports: &[$crate::ExecutionReport],
            ) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let mut moved = 0;
                for round in $crate::jobs::report_rounds(reports)? {
                    moved += ::sqlx::query(Self::REPORT_EXECUTIONS)
                        .bind(round)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(moved)
            }

            async fn device_execution(
                &self,
                tenant: ::floatilla_domain::TenantId,
                device: ::floatilla_domain::DeviceId,
                id: ::floatilla_domain::ExecutionId,
            ) -> $crate::Result<Option<$crate::Execution>> {
                let row: Option<$crate::jobs::ExecutionRow> = ::sqlx::query_as(
                    "SELECT * FROM job_executions WHERE tenant_id = $1 AND device_id = $2 \
                     AND id = $3",
                )
                .bind(tenant.to_string())
                .bind(device.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn move_execution(
                &self,
                id: ::floatilla_domain::ExecutionId,
                from: ::floatilla_domain::jobs::ExecutionState,
                to: ::floatilla_domain::jobs::ExecutionState,
                reason: Option<&str>,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<bool> {
                use ::floatilla_domain::jobs::ExecutionState as S;
                let at = $crate::rows::millis(now);
                let sent_at = (to == S::Sent).then_some(at);
                let finished_at = to.is_terminal().then_some(at);
                let retry = i64::from(from.is_failure() && to == S::Queued);
                let moved = ::sqlx::query(
                    "UPDATE job_executions SET state = $3, reason = COALESCE($4, reason), \
                     updated_at = $5, sent_at = COALESCE($6, sent_at), finished_at = $7, \
                     attempt = attempt + $8 WHERE id = $1 AND state = $2",
                )
                .bind(id.to_string())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(reason)
                .bind(at)
                .bind(sent_at)
                .bind(finished_at)
                .bind(retry)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(moved == 1)
            }
        }
    };
}
pub(crate) use impl_jobs;
