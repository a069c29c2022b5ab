//! Writing to the event log from anywhere in the server.

use floatilla_domain::events::{Event, EventFilter};

use crate::state::AppState;

/// Records `event`. The action it reports has already happened, so a failure to record it is
/// logged with the whole event rather than undoing anything.
pub async fn record(state: &AppState, event: Event) {
    if let Err(error) = state.store.record_event(&event).await {
        tracing::error!(%error, kind = %event.kind, tenant = %event.tenant_id, message = %event.message, "cannot record event");
    }
}

/// Records `event` unless one of its kind (about the same router, if it names one) was recorded
/// less than `window` before it: for events that a misbehaving router could otherwise repeat
/// without end. Answers whether it was recorded.
pub async fn record_unless_recent(
    state: &AppState,
    event: Event,
    window: chrono::Duration,
) -> bool {
    let filter = EventFilter {
        kind: Some(event.kind),
        device_id: event.device_id,
        ..EventFilter::default()
    };
    match state.store.events(event.tenant_id, &filter, 1).await {
        Ok(latest)
            if latest
                .first()
                .is_some_and(|last| event.at - last.at < window) =>
        {
            false
        }
        Ok(_) => {
            record(state, event).await;
            true
        }
        Err(error) => {
            tracing::error!(%error, kind = %event.kind, message = %event.message, "cannot look up recent events; not recorded");
            false
        }
    }
}
