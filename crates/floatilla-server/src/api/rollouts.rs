//! `/api/v1/rollouts`: a job sent in phases, with a concurrency cap, thresholds that advance or
//! abort, jitter, retries and maintenance windows. A rollout shares its job's id; the job's
//! routes (`/api/v1/jobs/{id}`, its executions) work for it too. The background driver
//! ([`crate::rollouts`]) moves it along.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::jobs::{PhaseSize, PhaseTally, RolloutPolicy, RolloutStatus};
use floatilla_domain::licensing::LicenseState;
use floatilla_domain::model::checked_tag;
use floatilla_domain::{JobId, Role, TenantId};
use floatilla_store::{Execution, Job, PhaseCount, Rollout, RolloutChange, StateCounts};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::{ApiJson, ApiQuery, cursor, next_cursor, page_limit};
use super::jobs::{CreateJobRequest, JobView, PreparedJob, left_out_text};
use super::views::ErrorView;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The most phases a rollout has.
pub const MAX_PHASES: usize = 20;
/// The longest random delay before an execution starts: an hour.
pub const MAX_JITTER_SECS: u32 = 60 * 60;
/// The most retries of a failed execution.
pub const MAX_RETRIES: u32 = 10;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRolloutRequest {
    /// The job, as for `POST /api/v1/jobs`.
    pub job: CreateJobRequest,
    /// Cumulative phases, each `{"count": N}` or `{"percent": P}` of the routers; the last
    /// phase always reaches everyone. None: one phase.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub phases: Vec<PhaseSize>,
    /// At most this many executions under way at once (default: no limit).
    pub max_concurrent: Option<u32>,
    /// Share of a phase's finished executions that must succeed for the next phase to start,
    /// else the rollout pauses (default 90).
    pub success_threshold_percent: Option<u8>,
    /// Share of finished executions that, failed, aborts the rollout once 10 finished
    /// (default 20).
    pub failure_threshold_percent: Option<u8>,
    /// Each execution starts after a random delay of up to this many seconds (default 0, at
    /// most 3600).
    pub jitter_secs: Option<u32>,
    /// How often a failed or timed-out execution is tried again (default 0, at most 10).
    pub max_retries: Option<u32>,
    /// For a group or tag target: keep taking in routers that join it later, in the last
    /// phase. Such a rollout runs until it is cancelled (default false: it completes).
    #[serde(default)]
    pub follow_target: bool,
}

/// One phase's executions, by where they stand.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhaseView {
    /// How many of the planned routers the rollout reaches by the end of this phase.
    pub reaches: u32,
    /// Waiting to start (queued or waiting for their maintenance window).
    pub ready: u32,
    /// Waiting for a seat: neither holding the phase back nor counted as failures.
    pub waiting_for_license: u32,
    /// Let start and not finished.
    pub in_flight: u32,
    pub succeeded: u32,
    /// Failed or timed out, retries spent.
    pub failed: u32,
    /// Cancelled or expired.
    pub dropped: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    /// The rollout's id, which is its job's.
    pub id: String,
    /// `running`, `paused`, `completed`, `aborted` or `cancelled`.
    pub status: String,
    /// The phase under way, from 0.
    pub phase: u32,
    pub phases: Vec<PhaseView>,
    /// Routers when it was created: what percentages are taken of.
    pub planned: u32,
    pub max_concurrent: Option<u32>,
    pub success_threshold_percent: u8,
    pub failure_threshold_percent: u8,
    pub jitter_secs: u32,
    pub max_retries: u32,
    /// Routers joining this group later join the last phase.
    pub target_group_id: Option<String>,
    /// Routers given this tag later join the last phase.
    pub target_tag: Option<String>,
    /// Why it paused, aborted, completed or was cancelled.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub job: JobView,
}

async fn view(state: &AppState, rollout: &Rollout) -> Result<RolloutView> {
    let job = state
        .store
        .job(rollout.tenant_id, rollout.job_id)
        .await?
        .ok_or(Error::NotFound("rollout"))?;
    let phase_counts = state.store.phase_counts(job.id).await?;
    Ok(view_of(rollout, &job, &phase_counts))
}

/// The rollout as shown, from its job and its executions counted by phase (which also give
/// the job's counts by state).
fn view_of(rollout: &Rollout, job: &Job, phase_counts: &[PhaseCount]) -> RolloutView {
    let mut counts = StateCounts::new();
    for count in phase_counts {
        *counts.entry(count.state).or_default() += u64::from(count.count);
    }
    let ends = rollout.policy.phase_ends(rollout.planned);
    let phases = crate::rollouts::tallies(rollout, phase_counts)
        .into_iter()
        .zip(ends)
        .map(|(t, reaches)| PhaseView {
            reaches,
            ready: t.ready,
            waiting_for_license: t.waiting_for_license,
            in_flight: t.in_flight,
            succeeded: t.succeeded,
            failed: t.failed,
            dropped: t.dropped,
        })
        .collect();
    RolloutView {
        id: rollout.job_id.to_string(),
        status: rollout.status.as_str().to_owned(),
        phase: rollout.phase,
        phases,
        planned: rollout.planned,
        max_concurrent: rollout.policy.max_concurrent,
        success_threshold_percent: rollout.policy.success_threshold_percent,
        failure_threshold_percent: rollout.policy.failure_threshold_percent,
        jitter_secs: rollout.jitter_secs,
        max_retries: rollout.max_retries,
        target_group_id: rollout.target_group.map(|g| g.to_string()),
        target_tag: rollout.target_tag.clone(),
        reason: rollout.reason.clone(),
        created_at: rollout.created_at,
        updated_at: rollout.updated_at,
        job: JobView::new(job, Some(&counts)),
    }
}

fn checked_policy(request: &CreateRolloutRequest) -> Result<RolloutPolicy> {
    if request.phases.len() > MAX_PHASES {
        return Err(Error::invalid(
            "invalid_phases",
            format!("a rollout has at most {MAX_PHASES} phases"),
        ));
    }
    for phase in &request.phases {
        let valid = match phase {
            PhaseSize::Count(count) => *count > 0,
            PhaseSize::Percent(percent) => (1..=100).contains(percent),
        };
        if !valid {
            return Err(Error::invalid(
                "invalid_phases",
                "a phase is {\"count\": N} with N at least 1, or {\"percent\": P} with P from 1 to 100",
            ));
        }
    }
    let success = request.success_threshold_percent.unwrap_or(90);
    let failure = request.failure_threshold_percent.unwrap_or(20);
    if success > 100 || !(1..=100).contains(&failure) {
        return Err(Error::invalid(
            "invalid_threshold",
            "success_threshold_percent is 0 to 100, failure_threshold_percent 1 to 100",
        ));
    }
    if request.max_concurrent == Some(0) {
        return Err(Error::invalid(
            "invalid_field",
            "max_concurrent is at least 1",
        ));
    }
    Ok(RolloutPolicy {
        phases: request.phases.clone(),
        max_concurrent: request.max_concurrent,
        success_threshold_percent: success,
        failure_threshold_percent: failure,
    })
}

/// Starts a rollout: the job's routers in phases. Nothing is sent by this request; the
/// rollout's driver starts the first phase at once.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts", request_body = CreateRolloutRequest,
    responses((status = 201, body = RolloutView),
        (status = 400, body = ErrorView, description = "as for jobs, and invalid_phases, invalid_threshold, invalid_field"),
        (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "device_not_licensed")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateRolloutRequest>,
) -> Result<(StatusCode, Json<RolloutView>)> {
    let tenant = caller.require(Role::Operator)?;
    let policy = checked_policy(&request)?;
    let follow_target = request.follow_target;
    let jitter_secs = request.jitter_secs.unwrap_or(0);
    let max_retries = request.max_retries.unwrap_or(0);
    if jitter_secs > MAX_JITTER_SECS || max_retries > MAX_RETRIES {
        return Err(Error::invalid(
            "invalid_field",
            format!("jitter_secs is at most {MAX_JITTER_SECS}, max_retries at most {MAX_RETRIES}"),
        ));
    }
    let target = &request.job.target;
    let (follow_group, follow_tag) = (target.group.clone(), target.tag.clone());
    let PreparedJob {
        job,
        devices,
        left_out,
    } = super::jobs::prepare(&state, &caller, tenant, request.job).await?;
    let (group, tag) = match (follow_target, follow_group, follow_tag) {
        (false, _, _) => (None, None),
        (true, Some(name), None) => (
            Some(super::groups::group_id_by_name(&state, tenant, &name).await?),
            None,
        ),
        (true, None, Some(tag)) => (
            None,
            Some(checked_tag(&tag).map_err(|e| Error::invalid("invalid_tag", e))?),
        ),
        (true, _, _) => {
            return Err(Error::invalid(
                "invalid_field",
                "follow_target needs a group or tag target",
            ));
        }
    };
    let planned = u32::try_from(devices.len()).unwrap_or(u32::MAX);
    let executions: Vec<Execution> = devices
        .iter()
        .enumerate()
        .map(|(position, device)| {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let phase = u32::try_from(policy.phase_of(position, planned)).unwrap_or(0);
            let licensed = device.license.state == LicenseState::Licensed;
            crate::jobs::new_execution(&job, device.id, licensed, None, position, phase)
        })
        .collect();
    let now = job.created_at;
    let rollout = Rollout {
        job_id: job.id,
        tenant_id: tenant,
        policy,
        status: RolloutStatus::Running,
        phase: 0,
        planned,
        target_group: group,
        target_tag: tag,
        jitter_secs,
        max_retries,
        reason: None,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_rollout(&rollout, &job, &executions)
        .await?;
    let message = format!(
        "{} started a rollout of a {} job to {planned} routers in {} phases{}",
        job.created_by,
        job.kind,
        rollout.policy.phase_ends(planned).len(),
        left_out_text(left_out)
    );
    crate::events::record(
        &state,
        Event::new(tenant, now, EventKind::RolloutCreated, None, message),
    )
    .await;
    let driver = state.clone();
    let started = rollout.clone();
    tokio::spawn(async move { crate::rollouts::drive_one(&driver, started).await });
    // As just stored: nothing released yet.
    let mut counts: Vec<PhaseCount> = Vec::new();
    for execution in &executions {
        match counts
            .iter_mut()
            .find(|c| (c.phase, c.state) == (execution.phase, execution.state))
        {
            Some(count) => count.count += 1,
            None => counts.push(PhaseCount {
                phase: execution.phase,
                state: execution.state,
                released: false,
                count: 1,
            }),
        }
    }
    let mut answer = view_of(&rollout, &job, &counts);
    answer.job.left_out = left_out;
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RolloutListQuery {
    /// 1 to 1000, default 100.
    limit: Option<u32>,
    /// The `next` of the previous page.
    before: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    pub items: Vec<RolloutView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next: Option<String>,
}

/// The tenant's rollouts, newest first, with their progress.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts", params(RolloutListQuery),
    responses((status = 200, body = RolloutList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RolloutListQuery>,
) -> Result<Json<RolloutList>> {
    let tenant = caller.require(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let before = cursor::<JobId>(query.before.as_deref(), "before is a rollout id")?;
    let rollouts = state.store.rollouts(tenant, limit, before).await?;
    let mut items = Vec::with_capacity(rollouts.len());
    for rollout in &rollouts {
        items.push(view(&state, rollout).await?);
    }
    let next = next_cursor(&rollouts, limit, |r| r.job_id.to_string());
    Ok(Json(RolloutList { items, next }))
}

async fn find(state: &AppState, tenant: TenantId, id: &str) -> Result<Rollout> {
    let id: JobId = id.parse().map_err(|_| Error::NotFound("rollout"))?;
    state
        .store
        .rollout(tenant, id)
        .await?
        .ok_or(Error::NotFound("rollout"))
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts",
    responses((status = 200, body = RolloutView), (status = 404, body = ErrorView)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>> {
    let tenant = caller.require(Role::Viewer)?;
    let rollout = find(&state, tenant, &id).await?;
    Ok(Json(view(&state, &rollout).await?))
}

/// Changes a rollout's status as an operator asked, records the event and answers the result.
async fn change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    from: &[RolloutStatus],
    to: RolloutStatus,
    kind: EventKind,
) -> Result<Json<RolloutView>> {
    let tenant = caller.require(Role::Operator)?;
    let rollout = find(state, tenant, id).await?;
    let now = state.clock.now();
    let mut phase = rollout.phase;
    let mut to = to;
    if to == RolloutStatus::Running {
        // A phase that paused below the success threshold is done: resuming means going on,
        // to the next phase, or to the end after the last.
        let counts = state.store.phase_counts(rollout.job_id).await?;
        let tallies = crate::rollouts::tallies(&rollout, &counts);
        let current = usize::try_from(phase).unwrap_or(usize::MAX);
        if tallies.get(current).is_some_and(PhaseTally::is_done) {
            if current + 1 < tallies.len() {
                phase += 1;
            } else if !rollout.is_open_ended() && tallies.iter().all(|t| t.waiting_for_license == 0)
            {
                to = RolloutStatus::Completed;
            }
        }
    }
    let verb = match to {
        RolloutStatus::Running | RolloutStatus::Completed => "resumed",
        RolloutStatus::Paused => "paused",
        _ => "cancelled",
    };
    let reason = format!("{verb} by {}", caller.name());
    let changed = state
        .store
        .set_rollout_status(
            tenant,
            rollout.job_id,
            RolloutChange {
                from,
                to,
                phase,
                reason: Some(&reason),
            },
            now,
        )
        .await?;
    if !changed {
        return Err(Error::invalid_state(
            "invalid_rollout_state",
            format!(
                "the rollout is {}: it cannot be {verb} now",
                rollout.status.as_str()
            ),
        ));
    }
    let message = format!("{} {verb} rollout {}", caller.name(), rollout.job_id);
    crate::events::record(state, Event::new(tenant, now, kind, None, message)).await;
    let rollout = find(state, tenant, id).await?;
    if to == RolloutStatus::Completed {
        let message = format!("rollout {}: every phase finished", rollout.job_id);
        crate::events::record(
            state,
            Event::new(tenant, now, EventKind::RolloutCompleted, None, message),
        )
        .await;
    }
    if to == RolloutStatus::Running {
        let driver = state.clone();
        let resumed = rollout.clone();
        tokio::spawn(async move { crate::rollouts::drive_one(&driver, resumed).await });
    }
    Ok(Json(view(state, &rollout).await?))
}

/// Pauses a running rollout: nothing new starts; what runs runs to its end.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/pause", tag = "rollouts",
    responses((status = 200, body = RolloutView), (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "invalid_rollout_state")))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>> {
    change(
        &state,
        &caller,
        &id,
        &[RolloutStatus::Running],
        RolloutStatus::Paused,
        EventKind::RolloutPaused,
    )
    .await
}

/// Resumes a paused rollout; one that paused below the success threshold goes on to the next
/// phase (the operator judged the failures).
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/resume", tag = "rollouts",
    responses((status = 200, body = RolloutView), (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "invalid_rollout_state")))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>> {
    change(
        &state,
        &caller,
        &id,
        &[RolloutStatus::Paused],
        RolloutStatus::Running,
        EventKind::RolloutResumed,
    )
    .await
}

/// Cancels a rollout: executions not sent yet end as cancelled; those under way run to their
/// end.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/cancel", tag = "rollouts",
    responses((status = 200, body = RolloutView), (status = 404, body = ErrorView),
        (status = 409, body = ErrorView, description = "invalid_rollout_state")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>> {
    change(
        &state,
        &caller,
        &id,
        &[RolloutStatus::Running, RolloutStatus::Paused],
        RolloutStatus::Cancelled,
        EventKind::RolloutCancelled,
    )
    .await
}
