//! The router control channel's wire format, shared by the agent and the server.
//!
//! Routers enroll once over HTTPS (`POST /device/v1/enroll`) and then keep one WebSocket at
//! `/device/v1/connect`. Every WebSocket message is one JSON text frame with a `type` field; the
//! server pings with WebSocket ping frames. docs/protocol.md describes the exchange in full.

pub mod secrets;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use secrets::{CaFingerprint, DeviceCredential, EnrollmentTokenString, SecretFormatError};

/// The protocol version this build speaks. A router announces its own in HELLO.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest WebSocket message either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long the server waits for HELLO after the WebSocket opens.
pub const HELLO_TIMEOUT_SECS: u64 = 10;

/// The path of the control channel.
pub const CONNECT_PATH: &str = "/device/v1/connect";
/// The path of enrollment.
pub const ENROLL_PATH: &str = "/device/v1/enroll";
/// Where a router downloads the artifact of one of its executions, with `Authorization: Bearer
/// <credential>` and, to resume, `Range: bytes=N-`.
pub const ARTIFACT_PATH: &str = "/device/v1/executions/{execution_id}/artifact";

/// [`ARTIFACT_PATH`] for one execution.
pub fn artifact_path(execution_id: &str) -> String {
    ARTIFACT_PATH.replace("{execution_id}", execution_id)
}

/// `POST /device/v1/enroll` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The enrollment token as the operator handed it out (secret and CA fingerprint).
    pub token: String,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub agent_version: String,
    /// The router's current credential, when it re-enrolls a serial it already owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `POST /device/v1/enroll` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device_id: String,
    /// The router's own credential; shown once, keep it secret.
    pub credential: String,
    pub credential_expires_at: DateTime<Utc>,
    /// The server's CA certificate (PEM), to verify the server on every later connection.
    pub ca_certificate: String,
    /// `accepted`, or `pending` while the router waits for an admin to accept it (its channel
    /// is refused with `enrollment_pending` until then).
    #[serde(default = "accepted")]
    pub enrollment: String,
}

fn accepted() -> String {
    "accepted".to_owned()
}

/// An error answer on the device HTTP endpoints, and the body of an [`ServerMessage::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// The timers a server hands a router, each in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTimers {
    pub ping_interval_secs: u32,
    pub pong_timeout_secs: u32,
    pub reconnect_backoff_cap_secs: u32,
}

/// Messages a router sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceMessage {
    /// The first message on every connection.
    Hello(Hello),
    /// What the router reports about itself, whenever it changes or is asked to.
    Status(Status),
    /// The answer to a server [`ServerMessage::Call`].
    Result(CallResult),
    /// The router has stored the credential of a [`ServerMessage::CredentialRenewal`].
    CredentialAck { credential_id: String },
    /// How one of the router's jobs ([`ServerMessage::Job`]) is getting on.
    JobUpdate(JobUpdate),
}

/// Where the router's execution of a job stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub execution_id: String,
    /// The attempt it is about (the job's `attempt`): a late report of an earlier attempt is
    /// ignored once a retry is under way. Absent: the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub state: JobUpdateState,
    /// For people: what the router is doing, or why it failed (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The states a router reports a job in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobUpdateState {
    Downloading,
    Installing,
    Succeeded,
    Failed,
}

/// A job for the router: run it once, report with [`DeviceMessage::JobUpdate`]. The same
/// execution is sent again after a reconnect while it is not finished; the router recognises
/// it by `execution_id` and never applies it twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireJob {
    pub execution_id: String,
    pub job_id: String,
    /// `firmware_update`, `software_install`, `software_remove`, `config_update`,
    /// `certificate_update` or `reboot`.
    pub kind: String,
    /// The job's parameters as the operator gave them (a JSON object).
    #[serde(default)]
    pub params: serde_json::Value,
    /// 1 for the first attempt; a retry is a new attempt of the same execution.
    pub attempt: u32,
    /// The server gives up on the execution this long after sending it.
    pub timeout_secs: u32,
    /// How long the router may be away applying it.
    pub expected_downtime_secs: u32,
    /// The file to install, for the kinds that carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<WireArtifact>,
}

/// The file a job installs: download it from `path` on the server, check its size and SHA-256,
/// then apply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireArtifact {
    /// [`ARTIFACT_PATH`] for this execution.
    pub path: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    pub credential: String,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// The router's own clock, so the server can spot a router whose clock is wrong.
    pub clock: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Received signal strength of the cellular modem, in dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellular_signal_dbm: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallResult {
    pub call_id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to a valid HELLO.
    Welcome(Welcome),
    /// A request the router answers with a [`DeviceMessage::Result`] carrying the same `call_id`.
    Call {
        call_id: String,
        method: String,
        #[serde(default)]
        params: serde_json::Value,
    },
    /// A new credential replacing the current one before it expires. The router stores it, then
    /// answers [`DeviceMessage::CredentialAck`]; the old one stays valid until the ack arrives.
    CredentialRenewal {
        credential_id: String,
        credential: String,
        expires_at: DateTime<Utc>,
    },
    /// Something the router sent was refused; the server closes the connection after it.
    Error(ErrorBody),
    /// The router's license state changed. Excess and unmanaged routers receive no management
    /// tasks; the channel itself (heartbeats, credential renewal) carries on regardless.
    License(WireLicense),
    /// A job to run.
    Job(WireJob),
    /// The server ends the connection for a reason that is not the router's fault.
    Disconnect {
        reason: String,
        message: String,
        /// When to try again; absent means "with the usual backoff".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reconnect_after_secs: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u32,
    pub session_id: String,
    pub device_id: String,
    pub server_time: DateTime<Utc>,
    pub timers: WireTimers,
    /// The router's license state as the session starts.
    pub license: WireLicense,
}

/// A router's standing in its tenant's floating license pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLicense {
    /// `licensed`, `excess`, `inactive` or `unmanaged`.
    pub state: String,
    /// Why: the code of the router's last license transition (`granted`, `denied_pool_full`,
    /// `shed_capacity_dropped`, ...), absent before its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a message from the other side could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not valid JSON: {0}")]
    Malformed(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("message of type `{kind}` is invalid: {detail}")]
    Invalid { kind: String, detail: String },
}

impl DecodeError {
    /// The stable error code sent back in an error frame.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed_message",
            DecodeError::UnknownType(_) => "unknown_message_type",
            DecodeError::Invalid { .. } => "invalid_message",
        }
    }
}

const DEVICE_MESSAGE_TYPES: [&str; 5] =
    ["hello", "status", "result", "credential_ack", "job_update"];
const SERVER_MESSAGE_TYPES: [&str; 7] = [
    "welcome",
    "call",
    "credential_renewal",
    "license",
    "job",
    "error",
    "disconnect",
];

/// The longest message a router may attach to a job update.
pub const MAX_JOB_MESSAGE_CHARS: usize = 1000;

/// The longest text field a router may send (serial, model, firmware, versions, ids).
pub const MAX_FIELD_CHARS: usize = 128;

impl DeviceMessage {
    /// Parses and checks a router's message: text fields are bounded and printable.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let message: Self = decode_tagged(text, &DEVICE_MESSAGE_TYPES)?;
        message.check_fields()?;
        Ok(message)
    }

    fn check_fields(&self) -> Result<(), DecodeError> {
        let (kind, fields): (&str, Vec<(&str, Option<&str>)>) = match self {
            DeviceMessage::Hello(h) => (
                "hello",
                vec![
                    ("serial", Some(&h.serial)),
                    ("model", Some(&h.model)),
                    ("firmware", Some(&h.firmware)),
                    ("agent_version", Some(&h.agent_version)),
                    ("credential", Some(&h.credential)),
                ],
            ),
            DeviceMessage::Status(s) => (
                "status",
                vec![
                    ("firmware", s.firmware.as_deref()),
                    ("model", s.model.as_deref()),
                    ("wan_address", s.wan_address.as_deref()),
                ],
            ),
            DeviceMessage::Result(r) => ("result", vec![("call_id", Some(&r.call_id))]),
            DeviceMessage::CredentialAck { credential_id } => (
                "credential_ack",
                vec![("credential_id", Some(credential_id))],
            ),
            DeviceMessage::JobUpdate(update) => {
                if update
                    .message
                    .as_ref()
                    .is_some_and(|m| m.chars().count() > MAX_JOB_MESSAGE_CHARS)
                {
                    return Err(DecodeError::Invalid {
                        kind: "job_update".into(),
                        detail: format!(
                            "`message` must be at most {MAX_JOB_MESSAGE_CHARS} characters"
                        ),
                    });
                }
                (
                    "job_update",
                    vec![("execution_id", Some(&update.execution_id))],
                )
            }
        };
        for (name, value) in fields {
            if let Some(value) = value
                && (value.chars().count() > MAX_FIELD_CHARS || value.chars().any(char::is_control))
            {
                return Err(DecodeError::Invalid {
                    kind: kind.to_owned(),
                    detail: format!(
                        "`{name}` must be at most {MAX_FIELD_CHARS} printable characters"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl ServerMessage {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode_tagged(text, &SERVER_MESSAGE_TYPES)
    }
}

/// Encodes any message as the JSON text of one WebSocket frame.
pub fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("protocol messages always serialize")
}

/// Tells a malformed frame from an unknown type from a known type with bad fields, so each gets
/// its own error code.
fn decode_tagged<T: serde::de::DeserializeOwned>(
    text: &str,
    known: &[&str],
) -> Result<T, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        _ => return Err(DecodeError::Malformed("missing string field `type`".into())),
    };
    if !known.contains(&kind.as_str()) {
        return Err(DecodeError::UnknownType(kind));
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid {
        kind,
        detail: e.to_string(),
    })
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let hello = DeviceMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            credential: "c".into(),
            serial: "SN1".into(),
            model: "MRX".into(),
            firmware: "5.2".into(),
            clock: Utc::now(),
        });
        let text = encode(&hello);
        assert!(text.contains(r#""type":"hello""#));
        assert_eq!(DeviceMessage::decode(&text).unwrap(), hello);
    }

    #[test]
    fn decode_errors_are_told_apart() {
        assert_eq!(
            DeviceMessage::decode("{nope").unwrap_err().code(),
            "malformed_message"
        );
        assert_eq!(
            DeviceMessage::decode(r#"{"kind":"hello"}"#)
                .unwrap_err()
                .code(),
            "malformed_message"
        );
        assert_eq!(
            DeviceMessage::decode(r#"{"type":"teleport"}"#).unwrap_err(),
            DecodeError::UnknownType("teleport".into())
        );
        assert_eq!(
            DeviceMessage::decode(r#"{"type":"hello","serial":"x"}"#)
                .unwrap_err()
                .code(),
            "invalid_message"
        );
        // A server-only type is unknown in the router's direction.
        assert_eq!(
            DeviceMessage::decode(r#"{"type":"welcome"}"#)
                .unwrap_err()
                .code(),
            "unknown_message_type"
        );
    }

    #[test]
    fn overlong_or_unprintable_fields_are_invalid() {
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        let status = format!(r#"{{"type":"status","firmware":"{long}"}}"#);
        assert_eq!(
            DeviceMessage::decode(&status).unwrap_err().code(),
            "invalid_message"
        );
        let control = r#"{"type":"status","wan_address":"10.0.0.1\u0000"}"#;
        assert_eq!(
            DeviceMessage::decode(control).unwrap_err().code(),
            "invalid_message"
        );
        let fine = format!(
            r#"{{"type":"status","firmware":"{}"}}"#,
            "x".repeat(MAX_FIELD_CHARS)
        );
        assert!(DeviceMessage::decode(&fine).is_ok());
    }

    #[test]
    fn status_fields_are_optional() {
        let status = DeviceMessage::decode(r#"{"type":"status","uptime_secs":5}"#).unwrap();
        assert_eq!(
            status,
            DeviceMessage::Status(Status {
                uptime_secs: Some(5),
                ..Status::default()
            })
        );
    }
}
