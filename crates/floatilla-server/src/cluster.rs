//! Several nodes on one PostgreSQL database: every node may hold any router's session, so what
//! one node does to a router's session elsewhere travels as a [`ClusterMessage`]. Each node also
//! says it is alive; one that falls silent has its sessions closed by the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use floatilla_domain::jobs::{ExecutionEvent, ExecutionState, next_state};
use floatilla_domain::{DeviceId, DisconnectReason, ExecutionId, JobId, SessionId, TenantId};
use floatilla_protocol::CallResult;
use floatilla_store::{CallOutcome, ClusterMessage, Execution, Received, Store};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::{Error, Result};
use floatilla_domain::TimerChange;

use crate::gateway::registry::{CallRequest, NotDelivered, SessionCommand};
use crate::state::AppState;

/// How often a node says it is alive.
pub const HEARTBEAT_INTERVAL: chrono::Duration = chrono::Duration::seconds(10);
/// How long a node may stay silent before the others take it for dead.
pub const NODE_TIMEOUT: chrono::Duration = chrono::Duration::seconds(60);

/// Calls this node forwarded to the node holding the router's session, by call id.
#[derive(Debug, Default)]
pub struct ForwardedCalls {
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<CallOutcome>>>,
}

impl ForwardedCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<CallOutcome>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends a message to the other nodes; a single-node installation (SQLite) has none, and builds
/// no message at all: this runs on every router's connect.
async fn publish(state: &AppState, message: impl FnOnce() -> ClusterMessage) {
    if state.store.backend() == floatilla_store::Backend::Sqlite {
        return;
    }
    let message = message();
    if let Err(error) = state.store.publish(&message).await {
        tracing::warn!(%error, ?message, "cannot tell the other nodes");
    }
}

/// Announces a new session, so that an older one of the same router on another node ends.
pub async fn session_started(state: &AppState, device: DeviceId, session: SessionId) {
    publish(state, || ClusterMessage::SessionStarted {
        device,
        session,
        node: state.config.node_id.clone(),
    })
    .await;
}

/// Ends the router's session, on whichever node holds it, after its credentials were revoked
/// or the router was deleted or rejected.
pub async fn credentials_revoked(state: &AppState, device: DeviceId) {
    state
        .sessions
        .disconnect(device, DisconnectReason::CredentialRevoked);
    publish(state, || ClusterMessage::CredentialsRevoked {
        device,
        node: state.config.node_id.clone(),
    })
    .await;
}

/// Tells the sessions concerned, on every node, that their heartbeat timing changed.
pub async fn timers_changed(state: &AppState, device: Option<DeviceId>, change: TimerChange) {
    retime_here(state, device, change);
    publish(state, || ClusterMessage::TimersChanged {
        device,
        change,
        node: state.config.node_id.clone(),
    })
    .await;
}

fn retime_here(state: &AppState, device: Option<DeviceId>, change: TimerChange) {
    match device {
        Some(device) => {
            if let Some(session) = state.sessions.get(device) {
                let _ = session.inbox.send(SessionCommand::Retime(change));
            }
        }
        None => state.sessions.broadcast(|| SessionCommand::Retime(change)),
    }
}

/// Sends a new job to its routers connected here, and tells the other nodes to do the same:
/// a job reaches routers on any node at once, without polling.
pub async fn job_created(state: &AppState, tenant: TenantId, job: JobId) {
    send_job_here(state, tenant, job).await;
    publish(state, || ClusterMessage::JobCreated {
        tenant,
        job,
        node: state.config.node_id.clone(),
    })
    .await;
}

/// Queued executions read at a time when a job is sent: each page is marked sent in one
/// transaction.
const DISPATCH_PAGE: u32 = 20_000;

/// Hands the job to the sessions here of routers whose execution is queued and may be sent now
/// (for a rollout: released, its jitter passed): marked sent in a few statements for all of
/// them, then given to each session, which sends it. An execution a session cannot take (it
/// just ended, or its router lost its seat) goes back to the queue.
pub async fn send_job_here(state: &AppState, tenant: TenantId, job: JobId) {
    if state.sessions.is_empty() {
        return;
    }
    let store = &state.store;
    let Ok(Some(details)) = store.job(tenant, job).await else {
        return;
    };
    let mut after = None;
    loop {
        let queued = match store
            .queued_executions(job, state.clock.now(), DISPATCH_PAGE, after)
            .await
        {
            Ok(queued) => queued,
            Err(error) => {
                tracing::warn!(%error, %job, "cannot read a new job's queued routers");
                return;
            }
        };
        let here: Vec<ExecutionId> = queued
            .iter()
            .filter(|(_, device)| state.sessions.get(*device).is_some())
            .map(|(execution, _)| *execution)
            .collect();
        let now = state.clock.now();
        match store.mark_sent(&here, now).await {
            Ok(marked) => {
                for execution in marked {
                    hand_to_session(state, &details, execution).await;
                }
            }
            Err(error) => tracing::warn!(%error, %job, "cannot mark a job's executions sent"),
        }
        match queued.last() {
            Some((last, _)) if queued.len() == DISPATCH_PAGE as usize => after = Some(*last),
            _ => return,
        }
    }
}

async fn hand_to_session(state: &AppState, job: &floatilla_store::Job, execution: Execution) {
    let wire = crate::gateway::session::wire_job(job, &execution);
    let taken = state
        .sessions
        .get(execution.device_id)
        .is_some_and(|session| {
            session
                .inbox
                .send(SessionCommand::Job(Box::new(wire)))
                .is_ok()
        });
    if !taken {
        undeliver(state, &execution).await;
    }
}

/// Puts back in the queue an execution marked sent that never reached its router.
pub async fn undeliver(state: &AppState, execution: &Execution) {
    let Ok(queued) = next_state(ExecutionState::Sent, ExecutionEvent::Undelivered) else {
        return;
    };
    if let Err(error) = state
        .store
        .move_execution(
            execution.id,
            ExecutionState::Sent,
            queued,
            None,
            state.clock.now(),
        )
        .await
    {
        tracing::warn!(%error, execution = %execution.id, "cannot put an undelivered execution back");
    }
}

/// Tells the other nodes that the provider suspended, resumed or deleted a tenant.
pub async fn tenant_changed(state: &AppState, tenant: TenantId) {
    publish(state, || ClusterMessage::TenantChanged {
        tenant,
        node: state.config.node_id.clone(),
    })
    .await;
}

/// Another node changed the tenant: read how it stands now and act on it here.
async fn tenant_changed_elsewhere(state: &AppState, tenant: TenantId) {
    match state.store.tenant(tenant).await {
        Ok(stored) => crate::tenancy::apply_here(state, tenant, stored.as_ref()),
        Err(error) => tracing::warn!(%error, %tenant, "cannot read a tenant another node changed"),
    }
}

/// Tells the other nodes that a tenant's license pool or licenses changed.
pub async fn pool_changed(store: &Arc<dyn Store>, node: &str, tenant: TenantId) {
    if store.backend() == floatilla_store::Backend::Sqlite {
        return;
    }
    let message = ClusterMessage::PoolChanged {
        tenant,
        node: node.to_owned(),
    };
    if let Err(error) = store.publish(&message).await {
        tracing::warn!(%error, ?message, "cannot tell the other nodes");
    }
}

/// Sends a call to the router, wherever its session is, and waits for the answer.
pub async fn call(
    state: &AppState,
    device: DeviceId,
    method: &str,
    params: serde_json::Value,
) -> Result<CallResult> {
    if state.sessions.get(device).is_none() {
        return Box::pin(forward_call(state, device, method, params)).await;
    }
    call_here(state, device, method, params)
        .await
        .map_err(|failure| match failure {
            CallFailed::Refused(refused) => not_delivered(refused),
            CallFailed::TimedOut => Error::CallTimeout,
            CallFailed::Ended => offline("the router disconnected"),
        })
}

/// A call for a router whose session is on another node, if it is online at all.
async fn forward_call(
    state: &AppState,
    device: DeviceId,
    method: &str,
    params: serde_json::Value,
) -> Result<CallResult> {
    // A single node (SQLite) has no other node to hold the session.
    if state.store.backend() == floatilla_store::Backend::Sqlite {
        return Err(offline("the router is not connected"));
    }
    let online = state
        .store
        .device_by_id(device)
        .await?
        .is_some_and(|d| d.connection_state == floatilla_domain::ConnectionState::Online);
    if !online {
        return Err(offline("the router is not connected"));
    }
    let call = Uuid::new_v4();
    let (reply, answer) = oneshot::channel();
    state.forwarded_calls.lock().insert(call, reply);
    let message = ClusterMessage::Call {
        call,
        device,
        method: method.to_owned(),
        params,
        from: state.config.node_id.clone(),
    };
    let sent = state.store.publish(&message).await;
    let outcome = match sent {
        Ok(()) => tokio::time::timeout(state.config.call_timeout, answer).await,
        Err(error) => {
            state.forwarded_calls.lock().remove(&call);
            return Err(error.into());
        }
    };
    state.forwarded_calls.lock().remove(&call);
    match outcome {
        Err(_) => Err(Error::CallTimeout),
        Ok(Err(_)) => Err(offline("the router disconnected")),
        Ok(Ok(CallOutcome::Answered { result })) => serde_json::from_value(result).map_err(|e| {
            Error::invalid_state(
                "call_failed",
                format!("the router's answer is invalid: {e}"),
            )
        }),
        Ok(Ok(CallOutcome::NotConnected)) => Err(offline("the router disconnected")),
        Ok(Ok(CallOutcome::Busy)) => Err(not_delivered(NotDelivered::Busy)),
    }
}

fn offline(message: &str) -> Error {
    Error::invalid_state("device_offline", message)
}

fn not_delivered(refused: NotDelivered) -> Error {
    match refused {
        NotDelivered::Ended => offline("the router is not connected"),
        NotDelivered::Busy => {
            Error::invalid_state("device_busy", "the router has too many requests pending")
        }
    }
}

/// Receives the other nodes' messages until shutdown (nothing to do on a single-node store).
pub async fn listen(state: AppState) {
    let mut subscription = match state.store.subscribe().await {
        Ok(Some(subscription)) => subscription,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, "cannot listen to the other nodes; sessions on them will not be superseded promptly");
            return;
        }
    };
    loop {
        let received = tokio::select! {
            received = subscription.recv() => received,
            () = state.shutdown.cancelled() => return,
        };
        match received {
            Received::Message(message) => handle(&state, message).await,
            Received::Gap => reconcile(&state).await,
        }
    }
}

async fn handle(state: &AppState, message: ClusterMessage) {
    let me = state.config.node_id.as_str();
    match message {
        ClusterMessage::SessionStarted {
            device,
            session,
            node,
        } if node != me => {
            if let Some(local) = state.sessions.get(device)
                && local.session_id != session
            {
                end_if_superseded(state, device, local.session_id).await;
            }
        }
        ClusterMessage::TimersChanged {
            device,
            change,
            node,
        } if node != me => retime_here(state, device, change),
        ClusterMessage::PoolChanged { tenant, node } if node != me => {
            state.licensing.refresh_soon(tenant);
        }
        ClusterMessage::JobCreated { tenant, job, node } if node != me => {
            send_job_here(state, tenant, job).await;
        }
        ClusterMessage::TenantChanged { tenant, node } if node != me => {
            tenant_changed_elsewhere(state, tenant).await;
        }
        ClusterMessage::CredentialsRevoked { device, node } if node != me => {
            if let Some(local) = state.sessions.get(device) {
                let _ = local.inbox.send(SessionCommand::RecheckCredential);
            }
        }
        // Only the node holding the session answers; the others stay silent.
        ClusterMessage::Call {
            call,
            device,
            method,
            params,
            from,
        } if state.sessions.get(device).is_some() => {
            let state = state.clone();
            tokio::spawn(async move {
                let outcome = match call_here(&state, device, &method, params).await {
                    Ok(result) => CallOutcome::Answered {
                        result: serde_json::to_value(result).unwrap_or_default(),
                    },
                    Err(CallFailed::Refused(NotDelivered::Busy)) => CallOutcome::Busy,
                    Err(_) => CallOutcome::NotConnected,
                };
                publish(&state, || ClusterMessage::Answer {
                    call,
                    to: from,
                    outcome,
                })
                .await;
            });
        }
        ClusterMessage::Answer { call, to, outcome } if to == me => {
            if let Some(waiting) = state.forwarded_calls.lock().remove(&call) {
                let _ = waiting.send(outcome);
            }
        }
        _ => {}
    }
}

/// Why a call on a session of this node brought no answer.
enum CallFailed {
    Refused(NotDelivered),
    TimedOut,
    /// The session ended before the router answered.
    Ended,
}

/// Runs a call on the router's session on this node.
async fn call_here(
    state: &AppState,
    device: DeviceId,
    method: &str,
    params: serde_json::Value,
) -> Result<CallResult, CallFailed> {
    let session = state
        .sessions
        .get(device)
        .ok_or(CallFailed::Refused(NotDelivered::Ended))?;
    let (reply, answer) = oneshot::channel();
    session
        .inbox
        .send(SessionCommand::Call(Box::new(CallRequest {
            method: method.to_owned(),
            params,
            reply,
        })))
        .map_err(CallFailed::Refused)?;
    drop(session);
    match tokio::time::timeout(state.config.call_timeout, answer).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(_)) => Err(CallFailed::Ended),
        Err(_) => Err(CallFailed::TimedOut),
    }
}

/// Ends this node's session of the router if the database says a newer one took over: the
/// database, not the order messages arrive in, decides which session is current.
async fn end_if_superseded(state: &AppState, device: DeviceId, local: SessionId) {
    match state.store.current_session(device).await {
        Ok(current) if current != Some(local) => {
            if let Some(handle) = state.sessions.get(device)
                && handle.session_id == local
            {
                let _ = handle
                    .inbox
                    .send(SessionCommand::Disconnect(DisconnectReason::Superseded));
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, %device, "cannot check which session is current"),
    }
}

/// After messages may have been lost, checks every local session against the database and
/// rereads every license pool.
async fn reconcile(state: &AppState) {
    state.licensing.refresh_all_soon();
    if let Err(error) = state.tenancy.reload(state.store.as_ref()).await {
        tracing::warn!(%error, "cannot read which tenants are suspended");
    }
    let sessions = state.sessions.sessions();
    tracing::info!(
        sessions = sessions.len(),
        "rechecking sessions after a gap in the cluster channel"
    );
    for (device, session) in sessions {
        end_if_superseded(state, device, session).await;
        if let Some(local) = state.sessions.get(device) {
            let _ = local.inbox.send(SessionCommand::RecheckCredential);
        }
    }
}

/// Says this node is alive every [`HEARTBEAT_INTERVAL`], and closes the sessions of nodes that
/// stopped saying so for [`NODE_TIMEOUT`] (they stopped without closing them).
pub async fn watch_nodes(state: AppState) {
    let mut first = true;
    loop {
        let now = state.clock.now();
        match state.store.node_heartbeat(&state.config.node_id, now).await {
            Ok(false) if !first => {
                // The others took this node for dead and closed its sessions in the database:
                // its routers reconnect so that their sessions are recorded again.
                tracing::error!(node = %state.config.node_id, "this node was taken for dead; its routers will reconnect");
                state
                    .sessions
                    .disconnect_all(DisconnectReason::ConnectionLost);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot record this node's heartbeat"),
        }
        first = false;
        match state.store.silent_nodes(now - NODE_TIMEOUT).await {
            Ok(silent) => {
                for node in silent.into_iter().filter(|n| *n != state.config.node_id) {
                    close_lost_node(&state, &node, now).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot look for silent nodes"),
        }
        let next = now + HEARTBEAT_INTERVAL;
        tokio::select! {
            () = state.clock.sleep_until(next) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}

async fn close_lost_node(state: &AppState, node: &str, now: floatilla_domain::Timestamp) {
    match state
        .store
        .close_node_sessions(node, now, DisconnectReason::ConnectionLost)
        .await
    {
        Ok(closed) => {
            tracing::warn!(
                node,
                closed = closed.len(),
                "a node fell silent; closed its sessions"
            );
            // Its routers' lingers count from when it was last heard of, not from now.
            let dropped_at = now - NODE_TIMEOUT;
            crate::licensing::sessions_closed(&state.licensing, &closed, dropped_at).await;
            if let Err(error) = state.store.forget_node(node).await {
                tracing::warn!(%error, node, "cannot forget a silent node");
            }
        }
        Err(error) => tracing::warn!(%error, node, "cannot close a silent node's sessions"),
    }
}
