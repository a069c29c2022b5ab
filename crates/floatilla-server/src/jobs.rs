//! Jobs in the background: executions past their deadline end on every node.

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
