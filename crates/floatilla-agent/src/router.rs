//! One router's life with its server, shared by the agent and by every virtual router of the
//! simulator: enroll once, then hold the control channel forever, reconnecting with backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floatilla_protocol::{
    CallResult, DeviceMessage, EnrollRequest, EnrollmentTokenString, ErrorBody, Hello, JobUpdate,
    PROTOCOL_VERSION, ServerMessage, Status, WireJob, WireLicense,
};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::clock::RouterClock;
use crate::connection::{ChannelError, ChannelStream, Connector, ServerAddress, send_message};
use crate::download::Downloader;
use crate::jobs::JobReports;
use crate::tls::ServerTrust;

/// The agent's version, sent in HELLO and at enrollment.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a router says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterIdentity {
    pub serial: String,
    pub model: String,
    pub firmware: String,
}

/// What enrollment gave the router; kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub device_id: String,
    pub credential: String,
    pub ca_certificate: String,
}

/// Something worth telling whoever runs the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterEvent {
    Enrolled,
    Connected,
    /// The server told the router its license state (in WELCOME, then whenever it changes).
    License(WireLicense),
    /// The connection ended; `reason` is what the server said, if anything.
    Disconnected {
        reason: Option<String>,
    },
    /// The server refused the router; it waits for an operator (or the advised cap) and retries.
    Refused(ErrorBody),
    /// The server could not be reached or the connection failed.
    Unreachable(String),
}

/// Where a router keeps its credential and gets its status: the agent's files and host, or a
/// virtual router's slot in the simulator.
#[async_trait::async_trait]
pub trait RouterHost: Send + Sync + 'static {
    fn identity(&self) -> RouterIdentity;
    async fn status(&self) -> Status;
    fn load(&self) -> Option<Enrolled>;
    /// Stores durably; a renewed credential is acknowledged only after this succeeds.
    fn save(&self, enrolled: &Enrolled) -> std::io::Result<()>;
    fn event(&self, event: RouterEvent);
    /// Runs a job the server sent, once per attempt of an execution however often it is sent,
    /// reporting to `reports` (sent to the server whenever the router is connected) and
    /// fetching its artifact, if any, with `downloads`.
    fn run_job(&self, job: WireJob, reports: JobReports, downloads: Downloader);
}

/// Verified connections for every router of one server, made once: TLS configuration is costly.
pub struct Connections {
    server: ServerAddress,
    clock: Arc<RouterClock>,
    first_contact: Option<Connector>,
    /// By CA certificate (PEM): normally one entry.
    channel: Mutex<HashMap<String, Connector>>,
}

impl Connections {
    /// `first_contact` verifies the server before enrollment: the enrollment token's CA
    /// fingerprint or a CA certificate the operator supplied.
    pub fn new(
        server: ServerAddress,
        first_contact: Option<&ServerTrust>,
        clock: Arc<RouterClock>,
    ) -> Result<Self, ChannelError> {
        let first_contact = first_contact
            .map(|trust| Connector::new(server.clone(), trust, clock.clone()))
            .transpose()?;
        Ok(Self {
            server,
            clock,
            first_contact,
            channel: Mutex::new(HashMap::new()),
        })
    }

    fn for_channel(&self, ca_pem: &str) -> Result<Connector, ChannelError> {
        let mut channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(connector) = channel.get(ca_pem) {
            return Ok(connector.clone());
        }
        let trust = ServerTrust::from_ca_pem(ca_pem)?;
        let connector = Connector::new(self.server.clone(), &trust, self.clock.clone())?;
        channel.insert(ca_pem.to_owned(), connector.clone());
        Ok(connector)
    }
}

/// How one router reaches its server.
#[derive(Clone)]
pub struct RouterSettings {
    pub connections: Arc<Connections>,
    /// Needed to enroll; a router that is already enrolled runs without it.
    pub enroll_token: Option<String>,
    /// The local address to connect from (the simulator spreads routers over 127.0.0.x).
    pub local_addr: Option<SocketAddr>,
    /// Close the channel properly when `shutdown` fires (the agent); otherwise just stop.
    pub close_on_shutdown: bool,
}

/// Exponential backoff with jitter, capped by what the server advised.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    cap: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Used until a server advises its own cap.
const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(60);

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempt: 0,
            cap: DEFAULT_BACKOFF_CAP,
        }
    }
}

impl Backoff {
    /// The next wait: doubling from 1 s up to the cap, each drawn from its upper half so that
    /// routers that dropped together come back spread out.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST_BACKOFF
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        jittered(ceiling)
    }

    /// A wait at the cap, for refusals that need an operator before a retry can succeed.
    pub fn at_cap(&self) -> Duration {
        jittered(self.cap)
    }

    pub fn reset(&mut self, cap: Duration) {
        self.attempt = 0;
        self.cap = cap.max(FIRST_BACKOFF);
    }
}

fn jittered(ceiling: Duration) -> Duration {
    let half = ceiling / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// How a connection ended, and so how long to wait before the next one.
enum Outcome {
    Stop,
    /// The server asked for a pause (shutdown) of this many seconds.
    ComeBackAfter(u32),
    Retry,
    /// The server will not serve this router until an operator acts (accepts it, or deals with
    /// a clone of it): retry at the cap.
    AwaitOperator,
    /// The credential was refused: waiting will not help until an operator acts.
    CredentialRefused(ErrorBody),
}

/// Runs one router until `shutdown`.
pub async fn run_router(
    host: Arc<dyn RouterHost>,
    settings: RouterSettings,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    // Reports outlive connections: a job that ends while the router is away is reported when
    // it is back.
    let (reports, mut pending_reports) = tokio::sync::mpsc::unbounded_channel();
    loop {
        let enrolled = match host.load() {
            Some(enrolled) => Some(enrolled),
            None => enroll(host.as_ref(), &settings, None, &mut backoff, &shutdown).await,
        };
        let Some(enrolled) = enrolled else { return };
        let jobs = Jobs {
            reports: &reports,
            pending: &mut pending_reports,
        };
        let wait = match serve(
            host.as_ref(),
            &settings,
            enrolled,
            jobs,
            &mut backoff,
            &shutdown,
        )
        .await
        {
            Outcome::Stop => return,
            Outcome::ComeBackAfter(secs) => Duration::from_secs(secs.into()),
            Outcome::Retry => backoff.next_delay(),
            Outcome::AwaitOperator => backoff.at_cap(),
            Outcome::CredentialRefused(error) => {
                host.event(RouterEvent::Refused(error));
                // An admin may have allowed this serial to enroll again: try that first.
                let current = host.load().map(|e| e.credential);
                if settings.enroll_token.is_some()
                    && enroll_once(host.as_ref(), &settings, current).await.is_ok()
                {
                    continue;
                }
                backoff.at_cap()
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Enrolls, retrying until it works or `shutdown`. `None` when shut down or impossible.
async fn enroll(
    host: &dyn RouterHost,
    settings: &RouterSettings,
    credential: Option<String>,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Option<Enrolled> {
    loop {
        let wait = match enroll_once(host, settings, credential.clone()).await {
            Ok(enrolled) => return Some(enrolled),
            Err(EnrollFailure::Impossible(reason)) => {
                host.event(RouterEvent::Unreachable(reason));
                return None;
            }
            Err(EnrollFailure::Refused(error)) => {
                host.event(RouterEvent::Refused(error));
                backoff.at_cap()
            }
            Err(EnrollFailure::Unreachable(reason)) => {
                host.event(RouterEvent::Unreachable(reason));
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

enum EnrollFailure {
    Impossible(String),
    Refused(ErrorBody),
    Unreachable(String),
}

async fn enroll_once(
    host: &dyn RouterHost,
    settings: &RouterSettings,
    credential: Option<String>,
) -> Result<Enrolled, EnrollFailure> {
    let (Some(token), Some(connector)) =
        (&settings.enroll_token, &settings.connections.first_contact)
    else {
        return Err(EnrollFailure::Impossible(
            "not enrolled, and no enrollment token to enroll with".into(),
        ));
    };
    let identity = host.identity();
    let request = EnrollRequest {
        token: token.clone(),
        serial: identity.serial,
        model: identity.model,
        firmware: identity.firmware,
        agent_version: AGENT_VERSION.to_owned(),
        credential,
    };
    let response = connector
        .enroll(&request)
        .await
        .map_err(|error| match error {
            ChannelError::Refused(body) => EnrollFailure::Refused(body),
            other => EnrollFailure::Unreachable(other.to_string()),
        })?;
    let enrolled = Enrolled {
        device_id: response.device_id,
        credential: response.credential,
        ca_certificate: response.ca_certificate,
    };
    host.save(&enrolled)
        .map_err(|e| EnrollFailure::Impossible(format!("cannot store the credential: {e}")))?;
    host.event(RouterEvent::Enrolled);
    Ok(enrolled)
}

/// Where jobs report, and the reports waiting to be sent.
struct Jobs<'a> {
    reports: &'a JobReports,
    pending: &'a mut tokio::sync::mpsc::UnboundedReceiver<JobUpdate>,
}

/// Opens the channel and serves it until it ends.
async fn serve(
    host: &dyn RouterHost,
    settings: &RouterSettings,
    mut enrolled: Enrolled,
    jobs: Jobs<'_>,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Outcome {
    let connections = &settings.connections;
    let connector = match connections.for_channel(&enrolled.ca_certificate) {
        Ok(connector) => connector,
        Err(error) => {
            host.event(RouterEvent::Unreachable(error.to_string()));
            return Outcome::Retry;
        }
    };
    let identity = host.identity();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_owned(),
        credential: enrolled.credential.clone(),
        serial: identity.serial,
        model: identity.model,
        firmware: identity.firmware,
        clock: connections.clock.local_now(),
    };
    let opened = tokio::select! {
        opened = connector.open_channel(hello, settings.local_addr) => opened,
        () = shutdown.cancelled() => return Outcome::Stop,
    };
    let channel = match opened {
        Ok(channel) => channel,
        Err(ChannelError::Refused(error)) if is_credential_refusal(&error.code) => {
            return Outcome::CredentialRefused(error);
        }
        Err(ChannelError::Refused(error)) => {
            let awaits_operator = awaits_operator(&error.code);
            host.event(RouterEvent::Refused(error));
            return if awaits_operator {
                Outcome::AwaitOperator
            } else {
                Outcome::Retry
            };
        }
        Err(ChannelError::Busy {
            code,
            retry_after_secs,
        }) => {
            host.event(RouterEvent::Refused(ErrorBody {
                code,
                message: format!("the server asked to retry in {retry_after_secs} s"),
            }));
            return Outcome::ComeBackAfter(retry_after_secs);
        }
        Err(ChannelError::Disconnected {
            reason,
            reconnect_after_secs,
            ..
        }) => {
            host.event(RouterEvent::Disconnected {
                reason: Some(reason),
            });
            return reconnect_after_secs.map_or(Outcome::Retry, Outcome::ComeBackAfter);
        }
        Err(error) => {
            host.event(RouterEvent::Unreachable(error.to_string()));
            return Outcome::Retry;
        }
    };
    let welcome = channel.welcome;
    let mut stream = channel.stream;
    connections.clock.learn_server_time(welcome.server_time);
    backoff.reset(Duration::from_secs(
        welcome.timers.reconnect_backoff_cap_secs.into(),
    ));
    host.event(RouterEvent::Connected);
    host.event(RouterEvent::License(welcome.license.clone()));
    // Silence longer than a ping interval plus the pong timeout means the server is gone.
    let silence_limit = Duration::from_secs(
        u64::from(welcome.timers.ping_interval_secs)
            + u64::from(welcome.timers.pong_timeout_secs)
            + 10,
    );
    if send_message(&mut stream, &DeviceMessage::Status(host.status().await))
        .await
        .is_err()
    {
        host.event(RouterEvent::Disconnected { reason: None });
        return Outcome::Retry;
    }
    let mut announced: Option<(String, Option<u32>)> = None;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(silence_limit, stream.next()) => frame,
            Some(update) = jobs.pending.recv() => {
                if send_message(&mut stream, &DeviceMessage::JobUpdate(update)).await.is_err() {
                    break;
                }
                continue;
            }
            () = shutdown.cancelled() => {
                if settings.close_on_shutdown {
                    let _ = stream.close(None).await;
                }
                return Outcome::Stop;
            }
        };
        let message = match frame {
            Err(_) => {
                host.event(RouterEvent::Unreachable("the server went silent".into()));
                return Outcome::Retry;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Ping(_)))) => {
                // Sends the pong tungstenite queued.
                if stream.flush().await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Some(Ok(Message::Text(text)))) => match ServerMessage::decode(&text) {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "ignoring a message this agent does not understand");
                    continue;
                }
            },
            Ok(Some(Ok(_))) => continue,
        };
        let answered = match message {
            ServerMessage::Call {
                call_id, method, ..
            } => answer_call(host, &mut stream, call_id, &method).await,
            ServerMessage::CredentialRenewal {
                credential_id,
                credential,
                ..
            } => {
                let renewed = Enrolled {
                    credential,
                    ..enrolled.clone()
                };
                match host.save(&renewed) {
                    Ok(()) => {
                        enrolled = renewed;
                        send_message(&mut stream, &DeviceMessage::CredentialAck { credential_id })
                            .await
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot store the renewed credential; keeping the old one");
                        Ok(())
                    }
                }
            }
            ServerMessage::Disconnect {
                reason,
                reconnect_after_secs,
                ..
            } => {
                announced = Some((reason, reconnect_after_secs));
                Ok(())
            }
            ServerMessage::Error(error) => {
                tracing::warn!(%error, "the server refused something this router sent");
                Ok(())
            }
            ServerMessage::License(license) => {
                host.event(RouterEvent::License(license));
                Ok(())
            }
            ServerMessage::Job(job) => {
                let downloads = Downloader::new(connector.clone(), enrolled.credential.clone());
                host.run_job(job, jobs.reports.clone(), downloads);
                Ok(())
            }
            ServerMessage::Welcome(_) => Ok(()),
        };
        if answered.is_err() {
            break;
        }
    }
    let (reason, reconnect_after) = announced.map_or((None, None), |(r, a)| (Some(r), a));
    let credential_refused = reason.as_deref().is_some_and(is_credential_refusal);
    host.event(RouterEvent::Disconnected {
        reason: reason.clone(),
    });
    match (credential_refused, reconnect_after) {
        (true, _) => Outcome::CredentialRefused(ErrorBody {
            code: reason.unwrap_or_default(),
            message: "the server revoked this router's credential".into(),
        }),
        (false, Some(secs)) => Outcome::ComeBackAfter(secs),
        (false, None) => Outcome::Retry,
    }
}

/// Refusals that enrolling again may cure, when an admin allowed it.
fn is_credential_refusal(code: &str) -> bool {
    matches!(
        code,
        "invalid_credential" | "credential_expired" | "credential_revoked" | "enrollment_rejected"
    )
}

/// Refusals that only an operator's action ends: waiting for approval, a clone of this router
/// holding the channel, or a suspended tenant.
fn awaits_operator(code: &str) -> bool {
    matches!(
        code,
        "enrollment_pending" | "credential_in_use" | "tenant_suspended"
    )
}

async fn answer_call(
    host: &dyn RouterHost,
    stream: &mut ChannelStream,
    call_id: String,
    method: &str,
) -> Result<(), ChannelError> {
    let result = match method {
        "report_status" => CallResult {
            call_id,
            ok: true,
            result: serde_json::to_value(host.status().await).ok(),
            error: None,
        },
        other => CallResult {
            call_id,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: "unknown_method".into(),
                message: format!("this agent does not know `{other}`"),
            }),
        },
    };
    send_message(stream, &DeviceMessage::Result(result)).await
}

/// The trust for first contact: a CA certificate if given, else the token's CA fingerprint.
pub fn first_contact_trust(
    enroll_token: Option<&str>,
    ca_certificate_pem: Option<&str>,
) -> Result<Option<ServerTrust>, String> {
    if let Some(pem) = ca_certificate_pem {
        return ServerTrust::from_ca_pem(pem)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    enroll_token
        .map(|token| {
            token
                .parse::<EnrollmentTokenString>()
                .map(|token| ServerTrust::CaFingerprint(token.ca_fingerprint))
                .map_err(|e| e.to_string())
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::default();
        backoff.reset(Duration::from_secs(8));
        let ceilings = [1, 2, 4, 8, 8, 8];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} for {ceiling:?}"
            );
        }
        backoff.reset(Duration::from_secs(8));
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
