//! The audit log: every state-changing request to the API and the console that came with valid
//! credentials is recorded with who made it (user or token), what it was (the route), when,
//! from which address and how it ended, whether it succeeded or was refused. Logins are
//! recorded too, failed ones included. Requests without valid credentials are not: anyone can
//! make those, and they change nothing.

use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use floatilla_domain::AuditEntryId;
use floatilla_domain::TenantId;
use floatilla_domain::accounts::{Actor, AuditEntry};
use http::Method;
use http::request::Parts;

use crate::api::auth::Caller;
use crate::error::ErrorCode;
use crate::server::RemoteAddr;
use crate::state::AppState;

/// Where the route's authentication leaves who the caller is, for the audit layer to read
/// once the route has answered.
#[derive(Clone, Default)]
struct Identified(Arc<Mutex<Option<Caller>>>);

/// Tells the audit layer who is calling (called where credentials are checked).
pub fn identified(parts: &Parts, caller: &Caller) {
    if let Some(slot) = parts.extensions.get::<Identified>() {
        *slot.0.lock().expect("audit slot") = Some(caller.clone());
    }
}

/// Middleware (a route layer, so the matched route is known) recording every state-changing
/// request of an identified caller.
pub async fn record_changes(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |matched| matched.as_str().to_owned());
    let action = format!("{} {route}", request.method());
    let address = request
        .extensions()
        .get::<RemoteAddr>()
        .map(|remote| remote.0.ip().to_string());
    let slot = Identified::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let caller = slot.0.lock().expect("audit slot").take();
    if let Some(caller) = caller {
        let entry = AuditEntry {
            id: AuditEntryId::new(),
            tenant_id: caller.tenant_id,
            at: state.clock.now(),
            actor: caller.actor,
            action,
            target: target_of(&route, &path),
            address,
            status: response.status().as_u16(),
            error: response
                .extensions()
                .get::<ErrorCode>()
                .map(|code| code.0.to_owned()),
        };
        write(&state, &entry).await;
    }
    response
}

/// Records something done outside a route's request (a login, an invitation accepted).
pub async fn record(
    state: &AppState,
    tenant_id: Option<TenantId>,
    actor: Actor,
    action: &str,
    address: Option<String>,
    status: u16,
    error: Option<&str>,
) {
    let entry = AuditEntry {
        id: AuditEntryId::new(),
        tenant_id,
        at: state.clock.now(),
        actor,
        action: action.to_owned(),
        target: None,
        address,
        status,
        error: error.map(str::to_owned),
    };
    write(state, &entry).await;
}

async fn write(state: &AppState, entry: &AuditEntry) {
    if let Err(error) = state.store.record_audit(entry).await {
        tracing::warn!(%error, action = %entry.action, actor = %entry.actor, "cannot write the audit log");
    }
}

/// The ids in `path` where `route` has parameters: `/api/v1/devices/{id}/accept` and
/// `/api/v1/devices/7f…/accept` give `7f…`.
fn target_of(route: &str, path: &str) -> Option<String> {
    let ids: Vec<&str> = route
        .split('/')
        .zip(path.split('/'))
        .filter(|(pattern, _)| pattern.starts_with('{'))
        .map(|(_, value)| value)
        .collect();
    (!ids.is_empty()).then(|| ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_paths_ids() {
        assert_eq!(
            target_of("/api/v1/devices/{id}/accept", "/api/v1/devices/abc/accept").as_deref(),
            Some("abc")
        );
        assert_eq!(
            target_of("/api/v1/devices/bulk", "/api/v1/devices/bulk"),
            None
        );
    }
}
