//! One router's control channel, from HELLO to its end, and why it ended.
//!
//! A session's task lives as long as its router stays connected, and its size is that of the
//! largest state its future can be in. So every step that is not the idle wait (HELLO, writes to
//! the store, answers, the goodbye) runs boxed: its state exists only while it runs, and an idle
//! router costs only what the wait itself needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use floatilla_domain::clones::is_clone;
use floatilla_domain::enrollment::EnrollmentState;
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::jobs::{ExecutionEvent, moves};
use floatilla_domain::licensing::{LicenseReason, LicenseState};
use floatilla_domain::model::{ConnectionRecord, Credential, Device, DeviceStatus};
use floatilla_domain::{
    CredentialId, DisconnectReason, ExecutionId, SessionId, TimerChange, Timers, Timestamp,
};
use floatilla_protocol::{
    CallResult, DeviceCredential, DeviceMessage, ErrorBody, HELLO_TIMEOUT_SECS, Hello, JobUpdate,
    JobUpdateState, PROTOCOL_VERSION, ServerMessage, Status, Welcome, WireArtifact, WireJob,
    WireLicense, WireTimers, encode,
};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::Error;
use crate::gateway::credentials;
use crate::gateway::registry::{CallRequest, Inbox, SessionCommand, SessionHandle};
use crate::licensing::Request;
use crate::metrics;
use crate::state::AppState;
use floatilla_store::ExecutionReport;

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How long one write to a router may take before the connection counts as lost.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A refusal on the channel: the error frame's code and text, and the close code after it.
struct Refusal {
    body: ErrorBody,
    close: CloseCode,
}

impl Refusal {
    fn protocol(code: &str, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
            close: CloseCode::Protocol,
        }
    }

    fn from_error(error: &Error) -> Self {
        Self {
            body: error.body(),
            close: CloseCode::Policy,
        }
    }
}

/// Serves one upgraded connection until it ends.
pub async fn run(state: AppState, mut socket: Socket, remote: SocketAddr) {
    let hello = match Box::pin(await_hello(&state, &mut socket)).await {
        Ok(hello) => hello,
        Err(Some(refusal)) => return Box::pin(refuse(&mut socket, refusal, remote)).await,
        Err(None) => return,
    };
    let (device, credential) = match Box::pin(authenticate(&state, &hello)).await {
        Ok(identity) => identity,
        Err(error) => {
            if error.status().is_server_error() {
                tracing::error!(%error, %remote, "cannot authenticate router");
            }
            return Box::pin(refuse(&mut socket, Refusal::from_error(&error), remote)).await;
        }
    };
    let session = match Box::pin(Session::start(state, device, credential, &hello, remote)).await {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%error, %remote, "cannot start session");
            return Box::pin(refuse(&mut socket, Refusal::from_error(&error), remote)).await;
        }
    };
    drop(hello);
    Box::pin(session.serve(socket)).await;
}

/// Waits for the first message, which must be HELLO. `Err(None)`: the peer left silently.
async fn await_hello(state: &AppState, socket: &mut Socket) -> Result<Hello, Option<Refusal>> {
    let deadline = state.clock.now() + chrono::Duration::seconds(HELLO_TIMEOUT_SECS as i64);
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            () = state.clock.sleep_until(deadline) => {
                return Err(Some(Refusal::protocol("hello_timeout", "no HELLO within 10 seconds")));
            }
            () = state.shutdown.cancelled() => return Err(None),
        };
        match frame {
            None => return Err(None),
            Some(Err(error)) => return Err(read_error_refusal(&error)),
            Some(Ok(Message::Text(text))) => {
                metrics::message("in", "hello");
                return match DeviceMessage::decode(&text) {
                    Ok(DeviceMessage::Hello(hello)) => Ok(hello),
                    Ok(_) => Err(Some(Refusal::protocol(
                        "hello_required",
                        "the first message must be HELLO",
                    ))),
                    Err(error) => Err(Some(Refusal::protocol(error.code(), error.to_string()))),
                };
            }
            Some(Ok(Message::Binary(_))) => return Err(Some(binary_refusal())),
            Some(Ok(Message::Close(_))) => return Err(None),
            Some(Ok(_)) => {}
        }
    }
}

fn binary_refusal() -> Refusal {
    Refusal::protocol("binary_not_supported", "messages are JSON text frames")
}

/// Maps a read failure to what the router is told, if it can still be told anything.
fn read_error_refusal(error: &tungstenite::Error) -> Option<Refusal> {
    match error {
        tungstenite::Error::Capacity(detail) => Some(Refusal {
            body: ErrorBody {
                code: "message_too_large".into(),
                message: format!(
                    "{detail} (messages are limited to {} bytes)",
                    floatilla_protocol::MAX_MESSAGE_BYTES
                ),
            },
            close: CloseCode::Size,
        }),
        tungstenite::Error::Protocol(detail) => Some(Refusal::protocol(
            "websocket_protocol_error",
            detail.to_string(),
        )),
        tungstenite::Error::Utf8(_) => Some(Refusal::protocol(
            "malformed_message",
            "text frame is not valid UTF-8",
        )),
        _ => None,
    }
}

/// Sends the error frame, closes, counts and logs the refusal.
async fn refuse(socket: &mut Socket, refusal: Refusal, remote: SocketAddr) {
    tracing::info!(%remote, code = %refusal.body.code, message = %refusal.body.message, "router refused");
    metrics::refusal(static_code(&refusal.body.code));
    let _ = send_text(socket, &ServerMessage::Error(refusal.body.clone())).await;
    close(socket, refusal.close, &refusal.body.code).await;
}

/// Metric labels must be 'static; every code the gateway produces is one of these.
fn static_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "hello_timeout",
        "hello_required",
        "unexpected_hello",
        "binary_not_supported",
        "message_too_large",
        "websocket_protocol_error",
        "malformed_message",
        "unknown_message_type",
        "invalid_message",
        "invalid_credential",
        "credential_expired",
        "credential_revoked",
        "serial_mismatch",
        "unsupported_protocol_version",
        "unknown_credential",
        "enrollment_pending",
        "enrollment_rejected",
        "credential_in_use",
        "tenant_suspended",
    ];
    CODES
        .iter()
        .copied()
        .find(|c| *c == code)
        .unwrap_or("other")
}

async fn send_text(socket: &mut Socket, message: &ServerMessage) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(encode(message)))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close(socket: &mut Socket, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(Some(frame))).await;
}

/// Checks HELLO's credential, in constant time, and finds the router it belongs to.
async fn authenticate(state: &AppState, hello: &Hello) -> Result<(Device, Credential), Error> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Error::UnsupportedProtocolVersion(hello.protocol_version));
    }
    let credential = credentials::verify(state, &hello.credential).await?;
    let device = state
        .store
        .device_by_id(credential.device_id)
        .await?
        .ok_or(Error::InvalidCredential)?;
    match device.enrollment {
        EnrollmentState::Accepted => {}
        EnrollmentState::Pending => return Err(Error::EnrollmentPending),
        EnrollmentState::Rejected | EnrollmentState::Preregistered => {
            return Err(Error::EnrollmentRejected);
        }
    }
    if state.tenancy.is_suspended(device.tenant_id) {
        return Err(Error::TenantSuspended);
    }
    if device.serial != hello.serial.trim() {
        return Err(Error::invalid(
            "serial_mismatch",
            format!(
                "this credential belongs to serial {}, not {}",
                device.serial, hello.serial
            ),
        ));
    }
    Ok((device, credential))
}

/// A welcomed router's live session.
struct Session {
    state: AppState,
    device: Device,
    credential: Credential,
    session_id: SessionId,
    /// When HELLO was accepted: the ping schedule counts from here.
    connected_at: Timestamp,
    inbox: Arc<Inbox>,
    pending_calls: HashMap<String, oneshot::Sender<CallResult>>,
    /// A renewed credential the router has not acknowledged yet.
    renewal: Option<Credential>,
    /// The executions sent on this session and not finished, with the downtime each declared:
    /// if the connection drops, the session lingers at least the longest of them.
    jobs_in_flight: HashMap<String, u32>,
}

/// Why the session loop stopped, and whether the router still needs to be told.
enum Ending {
    /// Tell the router with a DISCONNECT frame, then close.
    Announce(DisconnectReason),
    /// Tell the router with an error frame, then close.
    Refuse(Refusal),
    /// The router closed or vanished; nothing more to send.
    Quiet(DisconnectReason),
    /// The router stopped answering pings.
    Timeout,
}

impl Session {
    async fn start(
        state: AppState,
        mut device: Device,
        credential: Credential,
        hello: &Hello,
        remote: SocketAddr,
    ) -> Result<Self, Error> {
        let now = state.clock.now();
        let session_id = SessionId::new();
        let record = ConnectionRecord {
            session_id,
            device_id: device.id,
            node_id: state.config.node_id.clone(),
            remote_addr: remote.to_string(),
            connected_at: now,
            disconnected_at: None,
            reason: None,
        };
        if device.connection_state == floatilla_domain::ConnectionState::Online {
            refuse_clone(&state, &device, &record).await?;
        }
        let store = &state.store;
        if device.model != hello.model
            || device.firmware != hello.firmware
            || device.agent_version != hello.agent_version
        {
            store
                .record_inventory(
                    device.id,
                    &hello.model,
                    &hello.firmware,
                    &hello.agent_version,
                )
                .await?;
            device.model.clone_from(&hello.model);
            device.firmware.clone_from(&hello.firmware);
            device.agent_version.clone_from(&hello.agent_version);
        }
        let skew = clock_skew(hello.clock, now);
        if skew != device.status.clock_skew_secs {
            if let Some(skew) = skew {
                tracing::warn!(device = %device.id, skew_secs = skew, "router clock is off");
            }
            device.status.clock_skew_secs = skew;
            store.record_status(device.id, &device.status).await?;
        }
        // A router holds exactly one credential: the one it just used. Any other (the one a
        // renewal replaced, when its acknowledgement was lost) is retired with the connect.
        store.record_connect(&record, Some(credential.id)).await?;
        let inbox = Arc::new(Inbox::default());
        state.sessions.register(
            device.id,
            SessionHandle {
                session_id,
                inbox: inbox.clone(),
            },
        );
        crate::cluster::session_started(&state, device.id, session_id).await;
        let connected = Request::Connected {
            device: device.id,
            session: session_id,
        };
        // Registered first, so no license change decided from now on misses this session.
        let standing = match state.licensing.submit(device.tenant_id, connected).await {
            Ok(standing) => standing,
            Err(error) => {
                state.sessions.unregister(device.id, session_id);
                let now = state.clock.now();
                let lost = DisconnectReason::ConnectionLost;
                if let Err(error) = store
                    .record_disconnect(session_id, device.id, now, lost)
                    .await
                {
                    tracing::error!(%error, device = %device.id, "cannot record disconnect");
                }
                return Err(error.into());
            }
        };
        if let Some(standing) = standing {
            device.license.state = standing.state;
            device.license.reason = standing.reason.or(device.license.reason);
        }
        metrics::connect();
        tracing::debug!(device = %device.id, serial = %device.serial, %remote, "router connected");
        Ok(Self {
            state,
            device,
            credential,
            session_id,
            connected_at: now,
            inbox,
            pending_calls: HashMap::new(),
            renewal: None,
            jobs_in_flight: HashMap::new(),
        })
    }

    async fn serve(mut self, mut socket: Socket) {
        let ending = Box::pin(self.exchange(&mut socket)).await;
        let reason = match ending {
            Ending::Announce(reason) => {
                let reconnect_after_secs = (reason == DisconnectReason::ServerShutdown)
                    .then(|| self.shutdown_reconnect_after());
                let _ = Box::pin(send_text(
                    &mut socket,
                    &ServerMessage::Disconnect {
                        reason: reason.as_str().to_owned(),
                        message: announce_text(reason).to_owned(),
                        reconnect_after_secs,
                    },
                ))
                .await;
                Box::pin(close(&mut socket, close_code(reason), reason.as_str())).await;
                reason
            }
            Ending::Refuse(refusal) => {
                tracing::info!(device = %self.device.id, code = %refusal.body.code, "router sent bad input");
                metrics::refusal(static_code(&refusal.body.code));
                let _ = Box::pin(send_text(
                    &mut socket,
                    &ServerMessage::Error(refusal.body.clone()),
                ))
                .await;
                Box::pin(close(&mut socket, refusal.close, &refusal.body.code)).await;
                DisconnectReason::ProtocolError
            }
            Ending::Timeout => {
                Box::pin(close(&mut socket, CloseCode::Away, "ping_timeout")).await;
                DisconnectReason::PingTimeout
            }
            Ending::Quiet(reason) => reason,
        };
        Box::pin(self.finish(reason)).await;
    }

    /// The message loop: frames in, commands from the server, pings on schedule.
    async fn exchange(&mut self, socket: &mut Socket) -> Ending {
        let connected_at = self.connected_at;
        let mut timers = self.timers();
        if Box::pin(self.welcome(socket, connected_at)).await.is_err() {
            return Ending::Quiet(DisconnectReason::ConnectionLost);
        }
        if Box::pin(self.jobs_follow_license(socket)).await.is_err() {
            return Ending::Quiet(DisconnectReason::ConnectionLost);
        }
        let mut next_ping = connected_at + timers.ping_interval();
        let mut pong_deadline: Option<Timestamp> = None;
        loop {
            let wake = pong_deadline.map_or(next_ping, |deadline| deadline.min(next_ping));
            tokio::select! {
                biased;
                () = self.state.shutdown.cancelled() => {
                    return Ending::Announce(DisconnectReason::ServerShutdown);
                }
                command = self.inbox.recv() => match command {
                    SessionCommand::Disconnect(reason) => return Ending::Announce(reason),
                    SessionCommand::RecheckCredential => {
                        if !Box::pin(self.credential_still_valid()).await {
                            return Ending::Announce(DisconnectReason::CredentialRevoked);
                        }
                    }
                    SessionCommand::EndIfTenant { tenant, reason } => {
                        if tenant == self.device.tenant_id {
                            return Ending::Announce(reason);
                        }
                    }
                    SessionCommand::Retime(change) => {
                        self.apply(change);
                        let changed = self.timers();
                        if changed != timers {
                            timers = changed;
                            next_ping = self.state.clock.now() + timers.ping_interval();
                        }
                    }
                    SessionCommand::License { state, reason } => {
                        if state != self.device.license.state {
                            self.device.license.state = state;
                            self.device.license.reason = reason;
                            metrics::message("out", "license");
                            let told = Box::pin(send_text(socket, &ServerMessage::License(wire_license(state, reason)))).await;
                            if told.is_err() || Box::pin(self.jobs_follow_license(socket)).await.is_err() {
                                return Ending::Quiet(DisconnectReason::ConnectionLost);
                            }
                        }
                    }
                    SessionCommand::Job(job) => {
                        if Box::pin(self.send_job(socket, *job)).await.is_err() {
                            return Ending::Quiet(DisconnectReason::ConnectionLost);
                        }
                    }
                    SessionCommand::SendJobs => {
                        if Box::pin(self.send_jobs(socket)).await.is_err() {
                            return Ending::Quiet(DisconnectReason::ConnectionLost);
                        }
                    }
                    SessionCommand::Call(request) => {
                        let CallRequest { method, params, reply } = *request;
                        if Box::pin(self.call(socket, method, params, reply)).await.is_err() {
                            return Ending::Quiet(DisconnectReason::ConnectionLost);
                        }
                    }
                },
                frame = socket.next() => {
                    let message = match frame {
                        None => return Ending::Quiet(DisconnectReason::ConnectionLost),
                        Some(Err(error)) => {
                            return match read_error_refusal(&error) {
                                Some(refusal) => Ending::Refuse(refusal),
                                None => Ending::Quiet(DisconnectReason::ConnectionLost),
                            };
                        }
                        Some(Ok(message)) => message,
                    };
                    // Anything from the router proves it is alive.
                    pong_deadline = None;
                    self.state.last_seen.touch(self.device.id, self.state.clock.now());
                    match message {
                        Message::Text(text) => {
                            if let Err(refusal) = Box::pin(self.handle_text(&text)).await {
                                return refusal;
                            }
                        }
                        Message::Binary(_) => return Ending::Refuse(binary_refusal()),
                        Message::Close(_) => return Ending::Quiet(DisconnectReason::CleanClose),
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                () = self.state.clock.sleep_until(wake) => {
                    let now = self.state.clock.now();
                    if pong_deadline.is_some_and(|deadline| now >= deadline) {
                        return Ending::Timeout;
                    }
                    if now >= next_ping {
                        // Deadlines follow the schedule, not the moment this task ran, so a
                        // late wake-up never grants a router extra time.
                        // Woken so late that the pong deadline has passed already (a suspended
                        // host, a clock step): restart the schedule from now rather than drop a
                        // router that never had the chance to answer.
                        let scheduled = if now - next_ping >= timers.pong_timeout() { now } else { next_ping };
                        next_ping = scheduled + timers.ping_interval();
                        pong_deadline.get_or_insert(scheduled + timers.pong_timeout());
                        let sent = Box::pin(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default())))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            return Ending::Quiet(DisconnectReason::ConnectionLost);
                        }
                        if Box::pin(self.renew_credential_if_due(socket, now)).await.is_err() {
                            return Ending::Quiet(DisconnectReason::ConnectionLost);
                        }
                    }
                }
            }
        }
    }

    async fn welcome(&mut self, socket: &mut Socket, now: Timestamp) -> Result<(), ()> {
        let timers = self.timers();
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            session_id: self.session_id.to_string(),
            device_id: self.device.id.to_string(),
            server_time: now,
            timers: WireTimers {
                ping_interval_secs: timers.ping_interval_secs,
                pong_timeout_secs: timers.pong_timeout_secs,
                reconnect_backoff_cap_secs: timers.reconnect_backoff_cap_secs,
            },
            license: wire_license(self.device.license.state, self.device.license.reason),
        });
        send_text(socket, &welcome).await?;
        metrics::message("out", "welcome");
        self.renew_credential_if_due(socket, now).await
    }

    /// Hands the router a new credential once its current one is close to expiry.
    async fn renew_credential_if_due(
        &mut self,
        socket: &mut Socket,
        now: Timestamp,
    ) -> Result<(), ()> {
        let config = &self.state.config;
        if self.renewal.is_some() || self.credential.expires_at - now > config.renewal_window() {
            return Ok(());
        }
        let secret: [u8; 32] = rand::rng().random();
        let renewed = Credential {
            id: CredentialId::new(),
            device_id: self.device.id,
            secret_hash: floatilla_protocol::secrets::secret_hash(&secret),
            created_at: now,
            expires_at: now + config.credential_lifetime,
            revoked_at: None,
        };
        if let Err(error) = self.state.store.add_credential(&renewed).await {
            tracing::warn!(%error, device = %self.device.id, "cannot renew credential now; will retry");
            return Ok(());
        }
        let message = ServerMessage::CredentialRenewal {
            credential_id: renewed.id.to_string(),
            credential: DeviceCredential {
                id: renewed.id.to_string(),
                secret,
            }
            .to_string(),
            expires_at: renewed.expires_at,
        };
        self.renewal = Some(renewed);
        metrics::message("out", "credential_renewal");
        send_text(socket, &message).await
    }

    async fn handle_text(&mut self, text: &str) -> Result<(), Ending> {
        let message = DeviceMessage::decode(text)
            .map_err(|error| Ending::Refuse(Refusal::protocol(error.code(), error.to_string())))?;
        match message {
            DeviceMessage::Hello(_) => {
                metrics::message("in", "hello");
                return Err(Ending::Refuse(Refusal::protocol(
                    "unexpected_hello",
                    "HELLO is only allowed as the first message",
                )));
            }
            DeviceMessage::Status(status) => {
                metrics::message("in", "status");
                self.record_status(status).await;
            }
            DeviceMessage::Result(result) => {
                metrics::message("in", "result");
                match self.pending_calls.remove(&result.call_id) {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        tracing::debug!(call = %result.call_id, "answer to a call nobody waits for")
                    }
                }
            }
            DeviceMessage::CredentialAck { credential_id } => {
                metrics::message("in", "credential_ack");
                self.acknowledge_renewal(&credential_id).await?;
            }
            DeviceMessage::JobUpdate(update) => {
                metrics::message("in", "job_update");
                self.record_job_update(update).await;
            }
        }
        Ok(())
    }

    /// Moves the router's waiting executions as its seat says, then sends it what it may run:
    /// a router without a seat receives no job (those it already has run to their end).
    async fn jobs_follow_license(&mut self, socket: &mut Socket) -> Result<(), ()> {
        match self.state.store.has_open_executions(self.device.id).await {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(error) => {
                tracing::warn!(%error, device = %self.device.id, "cannot read the router's jobs");
                return Ok(());
            }
        }
        let licensed = self.device.license.state == LicenseState::Licensed;
        let now = self.state.clock.now();
        if let Err(error) = self
            .state
            .store
            .relicense_executions(self.device.tenant_id, self.device.id, licensed, now)
            .await
        {
            tracing::warn!(%error, device = %self.device.id, "cannot move the router's executions");
        }
        if licensed {
            self.send_jobs(socket).await
        } else {
            Ok(())
        }
    }

    /// Sends the router its queued executions (now `sent`) and again those it already has.
    async fn send_jobs(&mut self, socket: &mut Socket) -> Result<(), ()> {
        if self.device.license.state != LicenseState::Licensed {
            return Ok(());
        }
        let now = self.state.clock.now();
        let jobs = match self
            .state
            .store
            .take_executions_to_send(self.device.tenant_id, self.device.id, now)
            .await
        {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, device = %self.device.id, "cannot read the router's jobs");
                return Ok(());
            }
        };
        for (job, execution) in jobs {
            metrics::message("out", "job");
            let wire = wire_job(&job, &execution);
            self.jobs_in_flight
                .insert(wire.execution_id.clone(), wire.expected_downtime_secs);
            send_text(socket, &ServerMessage::Job(wire)).await?;
        }
        Ok(())
    }

    /// Sends one execution the dispatcher marked sent; a router that lost its seat meanwhile
    /// does not get it: it goes back to wait.
    async fn send_job(&mut self, socket: &mut Socket, job: WireJob) -> Result<(), ()> {
        if self.device.license.state != LicenseState::Licensed {
            if let Ok(id) = job.execution_id.parse::<ExecutionId>()
                && let Ok(Some(execution)) = self
                    .state
                    .store
                    .device_execution(self.device.tenant_id, self.device.id, id)
                    .await
            {
                crate::cluster::undeliver(&self.state, &execution).await;
            }
            return self.jobs_follow_license(socket).await;
        }
        metrics::message("out", "job");
        self.jobs_in_flight
            .insert(job.execution_id.clone(), job.expected_downtime_secs);
        send_text(socket, &ServerMessage::Job(job)).await
    }

    /// Queues what the router says of one of its executions, to be written with others in one
    /// batch; a stale or repeated update (after a reconnect) changes nothing.
    async fn record_job_update(&mut self, update: JobUpdate) {
        let Ok(id) = update.execution_id.parse::<ExecutionId>() else {
            tracing::debug!(device = %self.device.id, execution = %update.execution_id, "update for no execution");
            return;
        };
        let event = match update.state {
            JobUpdateState::Downloading => ExecutionEvent::Downloading,
            JobUpdateState::Installing => ExecutionEvent::Installing,
            JobUpdateState::Succeeded => ExecutionEvent::Succeeded,
            JobUpdateState::Failed => ExecutionEvent::Failed,
        };
        let moves = moves(event);
        let Some(&(_, to)) = moves.first() else {
            return;
        };
        if to.is_terminal() {
            self.jobs_in_flight.remove(&update.execution_id);
        }
        self.state.job_reports.push(ExecutionReport {
            tenant: self.device.tenant_id,
            device: self.device.id,
            execution: id,
            from: moves.iter().map(|(from, _)| *from).collect(),
            to,
            reason: update.message,
            attempt: update.attempt,
            at: self.state.clock.now(),
        });
    }

    async fn record_status(&mut self, status: Status) {
        let now = self.state.clock.now();
        let store = &self.state.store;
        let inventory_changed = status
            .firmware
            .as_ref()
            .is_some_and(|f| *f != self.device.firmware)
            || status
                .model
                .as_ref()
                .is_some_and(|m| *m != self.device.model);
        if inventory_changed {
            if let Some(firmware) = status.firmware.clone() {
                self.device.firmware = firmware;
            }
            if let Some(model) = status.model.clone() {
                self.device.model = model;
            }
            if let Err(error) = store
                .record_inventory(
                    self.device.id,
                    &self.device.model,
                    &self.device.firmware,
                    &self.device.agent_version,
                )
                .await
            {
                tracing::warn!(%error, device = %self.device.id, "cannot record inventory");
            }
        }
        self.device.status = self.device.status.merged(DeviceStatus {
            uptime_secs: status.uptime_secs,
            cellular_signal_dbm: status.cellular_signal_dbm,
            rx_bytes: status.rx_bytes,
            tx_bytes: status.tx_bytes,
            wan_address: status.wan_address,
            reported_at: Some(now),
            clock_skew_secs: None,
        });
        if let Err(error) = store
            .record_status(self.device.id, &self.device.status)
            .await
        {
            tracing::warn!(%error, device = %self.device.id, "cannot record status");
        }
    }

    async fn acknowledge_renewal(&mut self, credential_id: &str) -> Result<(), Ending> {
        let Some(renewed) = self.renewal.take_if(|r| r.id.to_string() == credential_id) else {
            return Err(Ending::Refuse(Refusal::protocol(
                "unknown_credential",
                "no renewal with that credential id is pending",
            )));
        };
        let now = self.state.clock.now();
        if let Err(error) = self
            .state
            .store
            .revoke_device_credentials(self.device.id, Some(renewed.id), now)
            .await
        {
            tracing::warn!(%error, device = %self.device.id, "cannot retire the old credential");
        }
        self.credential = renewed;
        Ok(())
    }

    /// Whether the credential this session runs on (or its pending renewal) is still valid:
    /// asked when another node revoked some of the router's credentials.
    async fn credential_still_valid(&self) -> bool {
        let now = self.state.clock.now();
        for id in std::iter::once(self.credential.id).chain(self.renewal.as_ref().map(|r| r.id)) {
            match self.state.store.credential(id).await {
                Ok(Some(credential)) if credential.is_valid_at(now) => return true,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, device = %self.device.id, "cannot recheck credential; keeping the session");
                    return true;
                }
            }
        }
        false
    }

    async fn call(
        &mut self,
        socket: &mut Socket,
        method: String,
        params: serde_json::Value,
        reply: oneshot::Sender<CallResult>,
    ) -> Result<(), ()> {
        let call_id = uuid::Uuid::new_v4().to_string();
        self.pending_calls.retain(|_, waiting| !waiting.is_closed());
        self.pending_calls.insert(call_id.clone(), reply);
        metrics::message("out", "call");
        send_text(
            socket,
            &ServerMessage::Call {
                call_id,
                method,
                params,
            },
        )
        .await
    }

    /// Takes up a timer change that concerns this router.
    fn apply(&mut self, change: TimerChange) {
        match change {
            TimerChange::Group { group, profile } if self.device.group_id == Some(group) => {
                self.device.timer_profile = profile;
            }
            TimerChange::Group { .. } => {}
            TimerChange::Router { group, profile } => {
                self.device.group_id = group;
                self.device.timer_profile = profile;
            }
        }
    }

    /// The server's timers, with the heartbeat of the router's group if it has its own.
    fn timers(&self) -> Timers {
        self.state
            .config
            .timers
            .with_profile(self.device.timer_profile)
    }

    fn shutdown_reconnect_after(&self) -> u32 {
        let base = self.state.config.shutdown_reconnect_after_secs;
        base + rand::rng().random_range(0..=base)
    }

    /// Records the end everywhere: registry, heartbeat bookkeeping, history, metrics.
    async fn finish(self, reason: DisconnectReason) {
        let now = self.state.clock.now();
        // Commands still queued, and any sent from now on, learn at once that the session ended.
        self.inbox.close();
        self.state
            .sessions
            .unregister(self.device.id, self.session_id);
        self.state.last_seen.forget(self.device.id);
        metrics::disconnect(reason);
        if let Err(error) = self
            .state
            .store
            .record_disconnect(self.session_id, self.device.id, now, reason)
            .await
        {
            tracing::error!(%error, device = %self.device.id, %reason, "cannot record disconnect");
        }
        let dropped = Request::Dropped {
            device: self.device.id,
            session: self.session_id,
            at: now,
            at_least: chrono::Duration::seconds(
                self.jobs_in_flight
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(0)
                    .into(),
            ),
        };
        if let Err(error) = self
            .state
            .licensing
            .submit(self.device.tenant_id, dropped)
            .await
        {
            tracing::error!(%error, device = %self.device.id, "cannot start the session's linger");
        }
        tracing::debug!(device = %self.device.id, %reason, "router disconnected");
    }
}

/// Refuses a connection that would supersede the router's live connection from another address
/// once too often: one credential in two places is a cloned image. The connection in place is
/// kept, and an alarm names the router (once per episode).
async fn refuse_clone(
    state: &AppState,
    device: &Device,
    newcomer: &ConnectionRecord,
) -> Result<(), Error> {
    use floatilla_domain::clones::{CLONE_SUPERSEDES, CLONE_WINDOW_MINUTES};
    let recent = state
        .store
        .connection_history(device.id, 2 * CLONE_SUPERSEDES as u32 + 2)
        .await?;
    let now = newcomer.connected_at;
    if !is_clone(&recent, &newcomer.remote_addr, now) {
        return Ok(());
    }
    let in_place = recent.first().map_or("", |r| r.remote_addr.as_str());
    let alarm = Event::new(
        device.tenant_id,
        now,
        EventKind::CredentialCloned,
        Some(device.id),
        format!(
            "router {} ({}) is connected from {in_place} and its credential keeps being used from {} too: the router image appears to be cloned; the connection in place is kept and the other is refused",
            device.name, device.serial, newcomer.remote_addr
        ),
    );
    let window = chrono::Duration::minutes(CLONE_WINDOW_MINUTES);
    if crate::events::record_unless_recent(state, alarm, window).await {
        tracing::warn!(device = %device.id, serial = %device.serial, in_place, newcomer = %newcomer.remote_addr, "cloned router credential");
    }
    Err(Error::CredentialInUse)
}

fn wire_license(state: LicenseState, reason: Option<LicenseReason>) -> WireLicense {
    WireLicense {
        state: state.as_str().to_owned(),
        reason: reason.map(|reason| reason.as_str().to_owned()),
    }
}

/// A job as a router is sent it.
pub fn wire_job(job: &floatilla_store::Job, execution: &floatilla_store::Execution) -> WireJob {
    WireJob {
        execution_id: execution.id.to_string(),
        job_id: job.id.to_string(),
        kind: job.kind.as_str().to_owned(),
        params: job.params.clone(),
        attempt: execution.attempt,
        timeout_secs: job.timeout_secs,
        expected_downtime_secs: job.expected_downtime_secs,
        artifact: job.artifact.as_ref().map(|artifact| WireArtifact {
            path: floatilla_protocol::artifact_path(&execution.id.to_string()),
            name: artifact.name.clone(),
            version: artifact.version.clone(),
            size: artifact.size,
            sha256: artifact.sha256.clone(),
        }),
    }
}

/// The router's clock error in whole seconds, when it is beyond the tolerance.
fn clock_skew(router_clock: Timestamp, now: Timestamp) -> Option<i64> {
    let skew = (router_clock - now).num_seconds();
    (skew.abs() > DeviceStatus::CLOCK_SKEW_TOLERANCE_SECS).then_some(skew)
}

fn announce_text(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::Superseded => "a newer connection of this router replaced this one",
        DisconnectReason::ServerShutdown => "the server is shutting down; come back later",
        DisconnectReason::CredentialRevoked => "this router's credential was revoked",
        DisconnectReason::TenantSuspended => {
            "the provider suspended this router's tenant; come back once it is resumed"
        }
        _ => "the server ended the connection",
    }
}

fn close_code(reason: DisconnectReason) -> CloseCode {
    match reason {
        DisconnectReason::ServerShutdown => CloseCode::Restart,
        DisconnectReason::CredentialRevoked | DisconnectReason::TenantSuspended => {
            CloseCode::Policy
        }
        _ => CloseCode::Normal,
    }
}
