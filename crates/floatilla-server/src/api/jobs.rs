//! `/api/v1/jobs`: management tasks for routers, and where each router's execution stands.
//!
//! Licenses decide who takes part: a job that names routers explicitly is refused as a whole
//! (`409 device_not_licensed`) if any of them is excess or unmanaged; in a group or tag target
//! such routers (and those offline without a seat) wait in `waiting_for_license` and continue
//! once they hold a seat, until the job expires.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::jobs::{ArtifactKind, ExecutionState, JobKind, RolloutStatus};
use floatilla_domain::licensing::LicenseState;
use floatilla_domain::model::Device;
use floatilla_domain::{ArtifactId, ExecutionId, JobId, Role, TenantId};
use floatilla_store::{Execution, Job, JobArtifact, RolloutChange, StateCounts};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::devices::{Selection, parse_device_id};
use super::extract::{ApiJson, ApiQuery, cursor, next_cursor, page_limit};
use super::views::{ErrorView, RouterRef};
use crate::error::{Error, Result, checked_range};
use crate::state::AppState;

/// How long an execution may run from when it is sent, unless the job says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30 * 60;
/// The longest timeout a job may set: a day.
pub const MAX_TIMEOUT_SECS: u32 = 24 * 60 * 60;
/// How long a router that restarts for a job is expected to be away, unless the job says.
pub const DEFAULT_RESTART_DOWNTIME_SECS: u32 = 5 * 60;
/// The longest downtime a job may declare: an hour.
pub const MAX_DOWNTIME_SECS: u32 = 60 * 60;
/// The most bytes of a job's parameters.
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;
/// The executions listed per router.
const DEVICE_EXECUTIONS_SHOWN: u32 = 100;

/// Which routers a job is for: exactly one of the three.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTarget {
    /// Router ids: each must be licensed or offline (not excess or unmanaged).
    pub ids: Option<Vec<String>>,
    /// A group's name: its routers now.
    pub group: Option<String>,
    /// A tag: the routers carrying it now.
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// `reboot` or `software_remove` (the kinds that need no artifact), `firmware_update`,
    /// `software_install`, `config_update` or `certificate_update`.
    pub kind: String,
    pub target: JobTarget,
    /// Handed to the router's hook as they are (a JSON object, at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Executions not sent by then end as `expired`.
    pub expires_at: Option<DateTime<Utc>>,
    /// How long an execution may run from when it is sent (default 1800, at most 86400).
    pub timeout_secs: Option<u32>,
    /// How long the router may be away applying it (default 300 for `reboot` and
    /// `firmware_update`, else 0; at most 3600): its session and seat wait that long.
    pub expected_downtime_secs: Option<u32>,
    /// The artifact to install: required for `firmware_update` (a `firmware` artifact),
    /// `software_install` (`software`), `config_update` (`config`) and `certificate_update`
    /// (`certificates`); refused for the others.
    pub artifact_id: Option<String>,
}

/// A job with its executions counted by state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub timeout_secs: u32,
    pub expected_downtime_secs: u32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The artifact it installs.
    pub artifact: Option<JobArtifactView>,
    /// Executions by state (`queued`, `waiting_for_license`, `sent`, …, `succeeded`); states
    /// with none are left out.
    #[schema(value_type = Object)]
    pub executions: HashMap<String, u64>,
    /// In the answer to creating it: routers of the group or tag left out because the
    /// artifact is not for their model.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl JobView {
    pub(crate) fn new(job: &Job, counts: Option<&StateCounts>) -> Self {
        Self {
            id: job.id.to_string(),
            kind: job.kind.as_str().to_owned(),
            params: job.params.clone(),
            expires_at: job.expires_at,
            timeout_secs: job.timeout_secs,
            expected_downtime_secs: job.expected_downtime_secs,
            created_by: job.created_by.clone(),
            created_at: job.created_at,
            cancelled_at: job.cancelled_at,
            artifact: job.artifact.as_ref().map(|a| JobArtifactView {
                id: a.id.to_string(),
                name: a.name.clone(),
                version: a.version.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
            }),
            executions: counts
                .map(|counts| {
                    counts
                        .iter()
                        .map(|(state, count)| (state.as_str().to_owned(), *count))
                        .collect()
                })
                .unwrap_or_default(),
            left_out: 0,
        }
    }
}

/// The artifact a job installs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobArtifactView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub sha256: String,
}

/// One router's execution of a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionView {
    pub id: String,
    pub job_id: String,
    pub device_id: String,
    /// `queued`, `waiting_for_license`, `waiting_for_window`, `sent`, `downloading`,
    /// `installing`, `succeeded`, `failed`, `cancelled`, `timed_out` or `expired`.
    pub state: String,
    /// Why it failed, timed out, expired or was cancelled; or the router's last message.
    pub reason: Option<String>,
    pub attempt: u32,
    /// Its rollout phase, from 0 (0 for a plain job).
    pub phase: u32,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&Execution> for ExecutionView {
    fn from(e: &Execution) -> Self {
        Self {
            id: e.id.to_string(),
            job_id: e.job_id.to_string(),
            device_id: e.device_id.to_string(),
            state: e.state.as_str().to_owned(),
            reason: e.reason.clone(),
            attempt: e.attempt,
            phase: e.phase,
            created_at: e.created_at,
            sent_at: e.sent_at,
            updated_at: e.updated_at,
            finished_at: e.finished_at,
        }
    }
}

fn job_id(text: &str) -> Result<JobId> {
    text.parse().map_err(|_| Error::NotFound("job"))
}

/// A job as requested, checked, with the routers it is for.
pub(crate) struct PreparedJob {
    pub job: Job,
    pub devices: Vec<Device>,
    /// Routers of the group or tag left out because the artifact is not for their model.
    pub left_out: usize,
}

/// Checks a job request and finds its routers; nothing is stored.
pub(crate) async fn prepare(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
    request: CreateJobRequest,
) -> Result<PreparedJob> {
    let kind: JobKind = request
        .kind
        .parse()
        .map_err(|e: String| Error::invalid("invalid_kind", e))?;
    let artifact = match (ArtifactKind::for_job(kind), request.artifact_id) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::invalid(
                "artifact_not_expected",
                format!("a {kind} job carries no artifact"),
            ));
        }
        (Some(needed), None) => {
            return Err(Error::invalid(
                "artifact_required",
                format!("a {kind} job installs a {needed} artifact: give its artifact_id"),
            ));
        }
        (Some(needed), Some(id)) => {
            let artifact = match id.parse::<ArtifactId>() {
                Ok(id) => state.store.artifact(tenant, id).await?,
                Err(_) => None,
            }
            .ok_or(Error::NotFound("artifact"))?;
            if artifact.kind != needed {
                return Err(Error::invalid(
                    "artifact_kind_mismatch",
                    format!(
                        "a {kind} job installs a {needed} artifact, and this one holds {}",
                        artifact.kind
                    ),
                ));
            }
            Some(artifact)
        }
    };
    let params = match request.params {
        serde_json::Value::Null => serde_json::json!({}),
        object @ serde_json::Value::Object(_) => object,
        _ => return Err(Error::invalid("invalid_params", "params is a JSON object")),
    };
    if params.to_string().len() > MAX_PARAMS_BYTES {
        return Err(Error::invalid(
            "invalid_params",
            format!("params hold at most {MAX_PARAMS_BYTES} bytes of JSON"),
        ));
    }
    let now = state.clock.now();
    if request.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::invalid(
            "invalid_field",
            "expires_at must be in the future",
        ));
    }
    let timeout_secs = checked_range(
        request.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
        MAX_TIMEOUT_SECS,
        "timeout_secs",
    )?;
    let default_downtime = if kind.restarts_router() {
        DEFAULT_RESTART_DOWNTIME_SECS
    } else {
        0
    };
    let expected_downtime_secs = request.expected_downtime_secs.unwrap_or(default_downtime);
    if expected_downtime_secs > MAX_DOWNTIME_SECS {
        return Err(Error::invalid(
            "invalid_field",
            format!("expected_downtime_secs is at most {MAX_DOWNTIME_SECS}"),
        ));
    }
    let explicit = request.target.ids.is_some();
    let selection = Selection {
        ids: request.target.ids,
        group: request.target.group,
        tag: request.target.tag,
    };
    let mut devices = selection.routers(state, tenant).await?;
    let mut left_out = 0;
    if let Some(artifact) = &artifact {
        let (fit, unfit): (Vec<Device>, Vec<Device>) =
            devices.into_iter().partition(|d| artifact.fits(&d.model));
        if explicit && !unfit.is_empty() {
            let names: Vec<String> = unfit.iter().map(|d| d.serial.clone()).collect();
            return Err(Error::invalid(
                "model_mismatch",
                format!(
                    "the artifact is for {}; these routers are other models: {}",
                    artifact.models.join(", "),
                    names.join(", ")
                ),
            ));
        }
        left_out = unfit.len();
        devices = fit;
    }
    if devices.is_empty() {
        return Err(Error::invalid(
            "empty_target",
            "the target holds no routers (that the artifact is for)",
        ));
    }
    if explicit {
        refuse_unlicensed(&devices)?;
    }
    let job = Job {
        id: JobId::new(),
        tenant_id: tenant,
        kind,
        params,
        expires_at: request.expires_at,
        timeout_secs,
        expected_downtime_secs,
        created_by: caller.name().to_owned(),
        created_at: now,
        cancelled_at: None,
        artifact: artifact.map(|a| JobArtifact {
            id: a.id,
            name: a.name,
            version: a.version,
            size: a.size,
            sha256: a.sha256,
        }),
    };
    Ok(PreparedJob {
        job,
        devices,
        left_out,
    })
}

/// Creates a job for the target's routers: each gets an execution, `queued` if it holds a seat,
/// `waiting_for_license` if not.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = CreateJobRequest,
    responses((status = 201, body = JobView),
        (status = 400, body = ErrorView, description = "invalid_kind, artifact_required, artifact_not_expected, artifact_kind_mismatch, model_mismatch, invalid_field, invalid_params, invalid_target, empty_target"),
        (status = 404, body = ErrorView, description = "a router, group, tag or artifact of the request does not exist"),
        (status = 409, body = ErrorView, description = "device_not_licensed: the routers named that are excess or unmanaged")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateJobRequest>,
) -> Result<(StatusCode, Json<JobView>)> {
    let tenant = caller.require(Role::Operator)?;
    let PreparedJob {
        job,
        devices,
        left_out,
        ..
    } = prepare(&state, &caller, tenant, request).await?;
    let now = job.created_at;
    let executions: Vec<Execution> = devices
        .iter()
        .map(|device| {
            let licensed = device.license.state == LicenseState::Licensed;
            crate::jobs::new_execution(&job, device.id, licensed, Some(now), 0, 0)
        })
        .collect();
    state.store.create_job(&job, &executions).await?;
    // Counted from what was just stored: dispatch runs after the answer.
    let counts = count_states(&executions);
    let waiting = counts
        .get(&ExecutionState::WaitingForLicense)
        .copied()
        .unwrap_or(0);
    let message = format!(
        "{} created a {} job for {} routers ({waiting} waiting for a license{})",
        job.created_by,
        job.kind,
        executions.len(),
        left_out_text(left_out)
    );
    crate::events::record(
        &state,
        Event::new(tenant, now, EventKind::JobCreated, None, message),
    )
    .await;
    // The answer need not wait for thousands of routers to be handed their job.
    let dispatch = state.clone();
    let id = job.id;
    tokio::spawn(async move { crate::cluster::job_created(&dispatch, tenant, id).await });
    let mut view = JobView::new(&job, Some(&counts));
    view.left_out = left_out;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(crate) fn count_states(executions: &[Execution]) -> StateCounts {
    let mut counts = StateCounts::new();
    for execution in executions {
        *counts.entry(execution.state).or_default() += 1;
    }
    counts
}

pub(crate) fn left_out_text(left_out: usize) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!("; {left_out} left out: the artifact is not for their model")
    }
}

/// Refuses the whole job if any router named in it is excess or unmanaged, naming them all.
fn refuse_unlicensed(devices: &[Device]) -> Result<()> {
    let refused: Vec<RouterRef> = devices
        .iter()
        .filter(|d| {
            matches!(
                d.license.state,
                LicenseState::Excess | LicenseState::Unmanaged
            )
        })
        .map(|d| RouterRef {
            id: d.id.to_string(),
            serial: d.serial.clone(),
            name: d.name.clone(),
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::DeviceNotLicensed { routers: refused })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobListQuery {
    /// 1 to 1000, default 100.
    limit: Option<u32>,
    /// The `next` of the previous page.
    before: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next: Option<String>,
}

/// The tenant's jobs, newest first, each with its executions counted by state.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobListQuery),
    responses((status = 200, body = JobList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<JobList>> {
    let tenant = caller.require(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let before = cursor::<JobId>(query.before.as_deref(), "before is a job id")?;
    let jobs = state.store.jobs(tenant, limit, before).await?;
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let counts = state.store.execution_counts(tenant, &ids).await?;
    let next = next_cursor(&jobs, limit, |j| j.id.to_string());
    Ok(Json(JobList {
        items: jobs
            .iter()
            .map(|job| JobView::new(job, counts.get(&job.id)))
            .collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    responses((status = 200, body = JobView), (status = 404, body = ErrorView)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>> {
    let tenant = caller.require(Role::Viewer)?;
    let job = state
        .store
        .job(tenant, job_id(&id)?)
        .await?
        .ok_or(Error::NotFound("job"))?;
    let counts = state.store.execution_counts(tenant, &[job.id]).await?;
    Ok(Json(JobView::new(&job, counts.get(&job.id))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExecutionQuery {
    /// 1 to 1000, default 100.
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionList {
    pub items: Vec<ExecutionView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// The job's executions, one per router, in a stable order.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/executions", tag = "jobs", params(ExecutionQuery),
    responses((status = 200, body = ExecutionList), (status = 404, body = ErrorView)))]
pub async fn executions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ExecutionQuery>,
) -> Result<Json<ExecutionList>> {
    let tenant = caller.require(Role::Viewer)?;
    let job = job_id(&id)?;
    state
        .store
        .job(tenant, job)
        .await?
        .ok_or(Error::NotFound("job"))?;
    let limit = page_limit(query.limit)?;
    let after = cursor::<ExecutionId>(query.after.as_deref(), "after is an execution id")?;
    let items = state
        .store
        .job_executions(tenant, job, limit, after)
        .await?;
    let next = next_cursor(&items, limit, |e| e.id.to_string());
    Ok(Json(ExecutionList {
        items: items.iter().map(ExecutionView::from).collect(),
        next,
    }))
}

/// The most jobs one bulk status request asks about.
pub const MAX_BULK_STATUS_JOBS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStatusRequest {
    /// Job ids, at most 1,000.
    pub ids: Vec<String>,
}

/// Many jobs' executions counted by state, in one request: for dashboards that follow many
/// jobs. Ids that are not the tenant's jobs are left out of the answer.
#[utoipa::path(post, path = "/api/v1/jobs/status", tag = "jobs", request_body = JobStatusRequest,
    responses((status = 200, body = Vec<JobView>), (status = 400, body = ErrorView, description = "too_many_jobs or invalid_id")))]
pub async fn bulk_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<JobStatusRequest>,
) -> Result<Json<Vec<JobView>>> {
    let tenant = caller.require(Role::Viewer)?;
    if request.ids.len() > MAX_BULK_STATUS_JOBS {
        return Err(Error::invalid(
            "too_many_jobs",
            format!("ask about at most {MAX_BULK_STATUS_JOBS} jobs at once"),
        ));
    }
    let asked = request
        .ids
        .iter()
        .map(|id| {
            id.parse::<JobId>()
                .map_err(|_| Error::invalid("invalid_id", format!("{id:?} is no job id")))
        })
        .collect::<Result<Vec<_>>>()?;
    let jobs = state.store.jobs_by_id(tenant, &asked).await?;
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let counts = state.store.execution_counts(tenant, &ids).await?;
    Ok(Json(
        jobs.iter()
            .map(|job| JobView::new(job, counts.get(&job.id)))
            .collect(),
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelResult {
    /// Executions that ended as `cancelled`; those already sent run to their end.
    pub cancelled: u64,
}

/// Cancels the job: what was not sent yet ends as `cancelled`; what routers already have runs
/// to its end (an install is never cut off halfway).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    responses((status = 200, body = CancelResult), (status = 404, body = ErrorView)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CancelResult>> {
    let tenant = caller.require(Role::Operator)?;
    let job = job_id(&id)?;
    let now = state.clock.now();
    let cancelled = state.store.cancel_job(tenant, job, now).await?;
    // The job of a rollout: the rollout ends with it.
    if let Some(rollout) = state.store.rollout(tenant, job).await? {
        let reason = format!("its job was cancelled by {}", caller.name());
        state
            .store
            .set_rollout_status(
                tenant,
                job,
                RolloutChange {
                    from: &[RolloutStatus::Running, RolloutStatus::Paused],
                    to: RolloutStatus::Cancelled,
                    phase: rollout.phase,
                    reason: Some(&reason),
                },
                now,
            )
            .await?;
    }
    let message = format!(
        "{} cancelled job {job}: {cancelled} executions not sent yet ended",
        caller.name()
    );
    crate::events::record(
        &state,
        Event::new(tenant, now, EventKind::JobCancelled, None, message),
    )
    .await;
    Ok(Json(CancelResult { cancelled }))
}

/// The router's executions, newest first (the latest 100).
#[utoipa::path(get, path = "/api/v1/devices/{id}/executions", tag = "jobs",
    responses((status = 200, body = Vec<ExecutionView>), (status = 404, body = ErrorView)))]
pub async fn device_executions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ExecutionView>>> {
    let tenant = caller.require(Role::Viewer)?;
    let device = parse_device_id(&id)?;
    state
        .store
        .device(tenant, device)
        .await?
        .ok_or(Error::NotFound("device"))?;
    let executions = state
        .store
        .device_executions(tenant, device, DEVICE_EXECUTIONS_SHOWN)
        .await?;
    Ok(Json(executions.iter().map(ExecutionView::from).collect()))
}
