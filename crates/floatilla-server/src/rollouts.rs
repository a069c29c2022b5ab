//! Rollouts in the background. Every node ticks once a second: one node at a time drives each
//! running rollout (a lease in the database), taking in late joiners, retrying failures,
//! following maintenance windows, asking the domain's planner what to start and releasing that
//! many executions; every node sends the released executions of the routers it holds.

use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::jobs::{MaintenanceWindow, PhaseTally, RolloutStatus, StatusChange, plan};
use floatilla_store::{PhaseCount, Rollout, RolloutChange};
use rand::Rng;

use crate::error::Result;
use crate::state::AppState;

/// How often each node looks at the running rollouts.
pub const TICK: chrono::Duration = chrono::Duration::seconds(1);
/// How long a node's right to drive a rollout lasts without renewal: another node takes over
/// this long after the driving node stopped.
const LEASE: chrono::Duration = chrono::Duration::seconds(15);

pub async fn run(state: AppState) {
    loop {
        let now = state.clock.now();
        match state.store.active_rollouts().await {
            Ok(rollouts) => {
                for rollout in rollouts {
                    drive_one(&state, rollout).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the active rollouts"),
        }
        tokio::select! {
            () = state.clock.sleep_until(now + TICK) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}

/// Drives the rollout if it runs and this node holds (or takes) its lease; either way sends
/// the released executions of the routers connected here (a paused rollout's too: it starts
/// nothing new, but what it started, waiting out its jitter, still goes).
pub async fn drive_one(state: &AppState, rollout: Rollout) {
    let now = state.clock.now();
    let job = rollout.job_id;
    let tenant = rollout.tenant_id;
    let mut released = 0;
    if rollout.status == RolloutStatus::Running {
        match state
            .store
            .lease_rollout(job, &state.config.node_id, now, now + LEASE)
            .await
        {
            Ok(true) => {
                let _one_step_at_a_time = state.rollout_steps.lock().await;
                match step(state, &rollout).await {
                    Ok(count) => released = count,
                    Err(error) => tracing::warn!(%error, %job, "cannot drive a rollout"),
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, %job, "cannot lease a rollout"),
        }
    }
    if released > 0 {
        // The other nodes hear of it now rather than at their next tick.
        crate::cluster::job_created(state, tenant, job).await;
    } else {
        crate::cluster::send_job_here(state, tenant, job).await;
    }
}

/// Executions counted by phase as the planner sees them: one tally per phase of the
/// rollout's plan (late joiners in the last).
pub fn tallies(rollout: &Rollout, counts: &[PhaseCount]) -> Vec<PhaseTally> {
    let phases = rollout.policy.phase_ends(rollout.planned).len();
    let mut tallies = vec![PhaseTally::default(); phases];
    for count in counts {
        let phase = usize::try_from(count.phase)
            .unwrap_or(usize::MAX)
            .min(phases - 1);
        tallies[phase].add(count.state, count.released, count.count);
    }
    tallies
}

/// One step of a rollout this node drives; answers how many executions it released. (A
/// cancelled job cancels its rollout, so a running rollout's job is never cancelled.)
async fn step(state: &AppState, read_before: &Rollout) -> Result<u64> {
    let store = &state.store;
    let now = state.clock.now();
    let job = read_before.job_id;
    // As it stands now: a step that ran meanwhile may have moved it on.
    let Some(rollout) = store.rollout(read_before.tenant_id, job).await? else {
        return Ok(0);
    };
    if rollout.status != RolloutStatus::Running {
        return Ok(0);
    }
    let rollout = &rollout;
    if rollout.is_open_ended() {
        take_in_late_joiners(state, rollout).await?;
    }
    if rollout.max_retries > 0 {
        store
            .retry_executions(job, rollout.max_retries + 1, now)
            .await?;
    }
    let windows = store.window_groups(job).await?;
    let closed: Vec<_> = windows
        .iter()
        .filter(|(_, window)| {
            window
                .parse::<MaintenanceWindow>()
                .is_ok_and(|w| !w.is_open(now))
        })
        .map(|(group, _)| *group)
        .collect();
    store.follow_windows(job, &closed, now).await?;

    let counts = store.phase_counts(job).await?;
    let tallies = tallies(rollout, &counts);
    let current = usize::try_from(rollout.phase).unwrap_or(usize::MAX);
    let planned = plan(
        &rollout.policy,
        rollout.status,
        current,
        &tallies,
        rollout.is_open_ended(),
    );
    let phase = u32::try_from(planned.phase).unwrap_or(u32::MAX);
    if planned.status != rollout.status || phase != rollout.phase {
        let (kind, reason) = match planned.change {
            Some(StatusChange::Advanced { to_phase }) => (
                EventKind::RolloutAdvanced,
                format!(
                    "phase {} of {} began: the phase before met the success threshold",
                    to_phase + 1,
                    tallies.len()
                ),
            ),
            Some(StatusChange::HeldBelowSuccessThreshold {
                succeeded,
                finished,
            }) => (
                EventKind::RolloutPaused,
                format!(
                    "only {succeeded} of {finished} finished executions of phase {} of {} \
                     succeeded, below the {} % needed: resume to go on",
                    current + 1,
                    tallies.len(),
                    rollout.policy.success_threshold_percent
                ),
            ),
            Some(StatusChange::Aborted { failed, finished }) => (
                EventKind::RolloutAborted,
                format!(
                    "{failed} of {finished} finished executions failed, at or above the {} % \
                     threshold: nothing more starts",
                    rollout.policy.failure_threshold_percent
                ),
            ),
            Some(StatusChange::Completed) | None => (
                EventKind::RolloutCompleted,
                "every phase finished".to_owned(),
            ),
        };
        let changed = store
            .set_rollout_status(
                rollout.tenant_id,
                job,
                RolloutChange {
                    from: &[RolloutStatus::Running],
                    to: planned.status,
                    phase,
                    reason: Some(&reason),
                },
                now,
            )
            .await?;
        if !changed {
            // An operator paused or cancelled it meanwhile: their word stands.
            return Ok(0);
        }
        let message = format!("rollout {job}: {reason}");
        crate::events::record(
            state,
            Event::new(rollout.tenant_id, now, kind, None, message),
        )
        .await;
    }
    if planned.status != RolloutStatus::Running || planned.start == 0 {
        return Ok(0);
    }
    let ready = store.ready_executions(job, phase, planned.start).await?;
    let releases: Vec<_> = {
        let mut rng = rand::rng();
        ready
            .into_iter()
            .map(|execution| {
                let jitter = if rollout.jitter_secs == 0 {
                    0
                } else {
                    rng.random_range(0..=i64::from(rollout.jitter_secs) * 1000)
                };
                (execution, now + chrono::Duration::milliseconds(jitter))
            })
            .collect()
    };
    Ok(store.release_executions(&releases, now).await?)
}

/// Gives the routers that joined the rollout's group or tag an execution in its last phase,
/// behind the others; routers of models the artifact is not for stay out, as they did at the
/// start.
async fn take_in_late_joiners(state: &AppState, rollout: &Rollout) -> Result<()> {
    let store = &state.store;
    let mut joiners = store.late_joiners(rollout).await?;
    if joiners.is_empty() {
        return Ok(());
    }
    let Some(job) = store.job(rollout.tenant_id, rollout.job_id).await? else {
        return Ok(());
    };
    if let Some(carried) = &job.artifact
        && let Some(artifact) = store.artifact(rollout.tenant_id, carried.id).await?
    {
        joiners.retain(|(_, _, model)| artifact.fits(model));
    }
    let existing: u32 = store
        .phase_counts(job.id)
        .await?
        .iter()
        .map(|c| c.count)
        .sum();
    let last_phase = rollout.policy.phase_ends(rollout.planned).len() - 1;
    let phase = u32::try_from(last_phase).unwrap_or(0);
    let executions: Vec<_> = joiners
        .iter()
        .enumerate()
        .map(|(offset, (device, licensed, _))| {
            let position = existing + u32::try_from(offset).unwrap_or(u32::MAX);
            crate::jobs::new_execution(&job, *device, *licensed, None, position, phase)
        })
        .collect();
    if !executions.is_empty() {
        store.add_executions(&executions).await?;
        tracing::info!(job = %job.id, joined = executions.len(), "routers joined a rollout");
    }
    Ok(())
}
