//! Which routers hold a control channel on this node, and how to reach their session tasks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use floatilla_domain::licensing::{LicenseReason, LicenseState};
use floatilla_domain::{DeviceId, DisconnectReason, SessionId, TenantId, TimerChange};
use floatilla_protocol::{CallResult, WireJob};
use tokio::sync::{Notify, oneshot};

/// What other parts of the server ask of a live session; queued in its [`Inbox`].
#[derive(Debug)]
pub enum SessionCommand {
    /// End the session, telling the router why.
    Disconnect(DisconnectReason),
    /// Send a call and hand back the router's answer.
    Call(Box<CallRequest>),
    /// Another node revoked credentials of this router: end the session if its own is one.
    RecheckCredential,
    /// The tenant was suspended or deleted: end the session if its router is the tenant's.
    EndIfTenant {
        tenant: TenantId,
        reason: DisconnectReason,
    },
    /// New executions may wait for the router: send them, if it holds a seat.
    SendJobs,
    /// Send this execution, already marked sent; if the router holds no seat, put it back.
    Job(Box<WireJob>),
    /// A timer profile changed: ping on the new schedule from now on.
    Retime(TimerChange),
    /// The router's license state is now this: tell it, if that is news.
    License {
        state: LicenseState,
        reason: Option<LicenseReason>,
    },
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
    pub inbox: Arc<Inbox>,
}

/// Why a command did not reach a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDelivered {
    Ended,
    Busy,
}

/// How many commands may wait for one session before senders are told it is busy.
const INBOX_CAPACITY: usize = 16;

/// A session's queue of commands. Lighter than a channel, which would allocate a block of slots
/// for every connected router; an empty queue allocates nothing.
#[derive(Debug, Default)]
pub struct Inbox {
    queue: Mutex<VecDeque<SessionCommand>>,
    closed: std::sync::atomic::AtomicBool,
    arrived: Notify,
}

impl Inbox {
    /// Queues a command, unless the session has ended or is not keeping up.
    pub fn send(&self, command: SessionCommand) -> Result<(), NotDelivered> {
        let mut queue = self.lock();
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(NotDelivered::Ended);
        }
        if queue.len() >= INBOX_CAPACITY {
            return Err(NotDelivered::Busy);
        }
        queue.push_back(command);
        drop(queue);
        self.arrived.notify_one();
        Ok(())
    }

    /// The next command, waiting for one if needed.
    pub async fn recv(&self) -> SessionCommand {
        loop {
            if let Some(command) = self.lock().pop_front() {
                return command;
            }
            // `notify_one` leaves a permit when nobody waits, so no command is missed.
            self.arrived.notified().await;
        }
    }

    /// Refuses further commands and drops queued ones, whose callers then learn the session
    /// ended instead of waiting for an answer.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SessionCommand>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
                .inbox
                .send(SessionCommand::Disconnect(DisconnectReason::Superseded));
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
            let _ = handle.inbox.send(SessionCommand::Disconnect(reason));
        }
    }

    /// Tells every live session to end.
    pub fn disconnect_all(&self, reason: DisconnectReason) {
        self.broadcast(|| SessionCommand::Disconnect(reason));
    }

    /// Sends a command to every live session; each decides whether it concerns it.
    pub fn broadcast(&self, command: impl Fn() -> SessionCommand) {
        for handle in self.lock().values() {
            let _ = handle.inbox.send(command());
        }
    }

    /// The devices with a live session here, and their sessions.
    pub fn sessions(&self) -> Vec<(DeviceId, SessionId)> {
        self.lock()
            .iter()
            .map(|(device, handle)| (*device, handle.session_id))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_arrive_in_order_and_stop_when_closed() {
        let inbox = Inbox::default();
        inbox
            .send(SessionCommand::Disconnect(DisconnectReason::Superseded))
            .unwrap();
        inbox
            .send(SessionCommand::Disconnect(
                DisconnectReason::CredentialRevoked,
            ))
            .unwrap();
        assert!(matches!(
            inbox.recv().await,
            SessionCommand::Disconnect(DisconnectReason::Superseded)
        ));
        assert!(matches!(
            inbox.recv().await,
            SessionCommand::Disconnect(DisconnectReason::CredentialRevoked)
        ));
        inbox.close();
        assert_eq!(
            inbox
                .send(SessionCommand::Disconnect(DisconnectReason::Superseded))
                .unwrap_err(),
            NotDelivered::Ended
        );
    }

    #[tokio::test]
    async fn a_full_inbox_refuses_more() {
        let inbox = Inbox::default();
        for _ in 0..INBOX_CAPACITY {
            inbox
                .send(SessionCommand::Disconnect(DisconnectReason::Superseded))
                .unwrap();
        }
        assert_eq!(
            inbox
                .send(SessionCommand::Disconnect(DisconnectReason::Superseded))
                .unwrap_err(),
            NotDelivered::Busy
        );
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_for_a_command() {
        let inbox = Arc::new(Inbox::default());
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.recv().await }
        });
        tokio::task::yield_now().await;
        inbox
            .send(SessionCommand::Disconnect(DisconnectReason::ServerShutdown))
            .unwrap();
        assert!(matches!(
            waiting.await.unwrap(),
            SessionCommand::Disconnect(DisconnectReason::ServerShutdown)
        ));
    }
}
