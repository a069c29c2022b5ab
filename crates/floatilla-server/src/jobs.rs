//! Jobs in the background: executions past their deadline end on every node.

use floatilla_domain::jobs::pending_state;
use floatilla_domain::{DeviceId, ExecutionId, Timestamp};
use floatilla_store::{Execution, Job};

use crate::state::AppState;

/// Ends executions whose deadline passed (the job's expiry before they were sent, the job's
/// timeout after) every few seconds, on every node (ending one twice is harmless: the second
/// finds nothing to end).
pub async fn end_overdue(state: AppState) {
    loop {
        let now = state.clock.now();
        match state.store.end_overdue_executions(now).await {
            Ok(ended) if !ended.is_empty() => {
                tracing::info!(ended = ended.len(), "executions ended past their deadline");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot end overdue executions"),
        }
        tokio::select! {
            () = state.clock.sleep_until(now + OVERDUE_SWEEP) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}

/// How often overdue executions are looked for.
pub const OVERDUE_SWEEP: chrono::Duration = chrono::Duration::seconds(5);

/// A router's new execution of `job`: waiting for a license unless it holds a seat; sent
/// from `release_at` (`None`: when its rollout lets it start).
pub fn new_execution(
    job: &Job,
    device: DeviceId,
    licensed: bool,
    release_at: Option<Timestamp>,
    position: u32,
    phase: u32,
) -> Execution {
    Execution {
        id: ExecutionId::new(),
        job_id: job.id,
        tenant_id: job.tenant_id,
        device_id: device,
        state: pending_state(licensed, true),
        reason: None,
        attempt: 1,
        created_at: job.created_at,
        sent_at: None,
        updated_at: job.created_at,
        finished_at: None,
        release_at,
        position,
        phase,
    }
}
