//! Writing to the event log from anywhere in the server.

use floatilla_domain::events::Event;

use crate::state::AppState;

/// Records `event`. The action it reports has already happened, so a failure to record it is
/// logged with the whole event rather than undoing anything.
pub async fn record(state: &AppState, event: Event) {
    if let Err(error) = state.store.record_event(&event).await {
        tracing::error!(%error, kind = %event.kind, tenant = %event.tenant_id, message = %event.message, "cannot record event");
    }
}
