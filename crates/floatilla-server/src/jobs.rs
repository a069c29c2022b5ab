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
        // An upload whose node stopped before it completed would otherwise hold its name and
        // version for ever.
        match state.store.abandon_stale_uploads(now - STALE_UPLOAD).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed artifact uploads that never completed"),
            Err(error) => tracing::warn!(%error, "cannot remove stale artifact uploads"),
        }
        tokio::select! {
            () = state.clock.sleep_until(now + OVERDUE_SWEEP) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}

/// How long an artifact upload may take before its remains are removed.
pub const STALE_UPLOAD: chrono::Duration = chrono::Duration::hours(24);

/// How often overdue executions are looked for.
pub const OVERDUE_SWEEP: chrono::Duration = chrono::Duration::seconds(5);
