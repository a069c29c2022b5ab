//! Which routers hold a control channel on this node, and how to reach their session tasks.

use std::collections::HashMap;
use std::sync::Mutex;

use floatilla_domain::{DeviceId, DisconnectReason, SessionId, TenantId, Timestamp};
use floatilla_protocol::CallResult;
use tokio::sync::{mpsc, oneshot};

/// What other parts of the server ask of a live session. Kept small: every session's channel
/// holds a block of these.
#[derive(Debug)]
pub enum SessionCommand {
    /// End the session, telling the router why.
    Disconnect(DisconnectReason),
    /// Send a call and hand back the router's answer.
    Call(Box<CallRequest>),
}

#[derive(Debug)]
pub struct CallRequest {
    pub method: String,
    pub params: serde_json::Value,
    pub reply: oneshot::Sender<CallResult>,
}

#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub session_id: SessionId,
    pub tenant_id: TenantId,
    pub connected_since: Timestamp,
    pub commands: mpsc::Sender<SessionCommand>,
}

#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<DeviceId, SessionHandle>>,
}

impl SessionRegistry {
    /// Makes `handle` the device's live session. An older session of the same device is told to
    /// end as superseded.
    pub fn register(&self, device: DeviceId, handle: SessionHandle) {
        let previous = self.lock().insert(device, handle);
        crate::metrics::connected(self.len());
        if let Some(previous) = previous {
            // The old task may already be ending; then it needs no telling.
            let _ = previous
                .commands
                .try_send(SessionCommand::Disconnect(DisconnectReason::Superseded));
        }
    }

    /// Forgets the device's session if it is still `session`.
    pub fn unregister(&self, device: DeviceId, session: SessionId) {
        let mut sessions = self.lock();
        if sessions
            .get(&device)
            .is_some_and(|h| h.session_id == session)
        {
            sessions.remove(&device);
        }
        drop(sessions);
        crate::metrics::connected(self.len());
    }

    pub fn get(&self, device: DeviceId) -> Option<SessionHandle> {
        self.lock().get(&device).cloned()
    }

    /// Tells the device's live session, if any, to end.
    pub fn disconnect(&self, device: DeviceId, reason: DisconnectReason) {
        if let Some(handle) = self.get(device) {
            let _ = handle.commands.try_send(SessionCommand::Disconnect(reason));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, SessionHandle>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
