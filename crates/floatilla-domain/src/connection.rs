//! Whether a router is connected, and why it is not.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Online,
    Offline,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Online => "online",
            ConnectionState::Offline => "offline",
        }
    }
}

impl FromStr for ConnectionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "online" => Ok(ConnectionState::Online),
            "offline" => Ok(ConnectionState::Offline),
            other => Err(format!(
                "unknown connection state `{other}` (expected online or offline)"
            )),
        }
    }
}

/// Why a control-channel connection ended. Stable names: they appear in the API, in metrics
/// labels and in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The router closed the WebSocket properly.
    CleanClose,
    /// The transport broke without a close handshake.
    ConnectionLost,
    /// The router did not answer a ping within the pong timeout.
    PingTimeout,
    /// A newer connection of the same router replaced this one.
    Superseded,
    /// The server shut down and told the router when to come back.
    ServerShutdown,
    /// The router sent something the protocol does not allow.
    ProtocolError,
    /// The router's credential was revoked, or the router was deleted.
    CredentialRevoked,
    /// The provider suspended the router's tenant.
    TenantSuspended,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 8] = [
        DisconnectReason::CleanClose,
        DisconnectReason::ConnectionLost,
        DisconnectReason::PingTimeout,
        DisconnectReason::Superseded,
        DisconnectReason::ServerShutdown,
        DisconnectReason::ProtocolError,
        DisconnectReason::CredentialRevoked,
        DisconnectReason::TenantSuspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::CleanClose => "clean_close",
            DisconnectReason::ConnectionLost => "connection_lost",
            DisconnectReason::PingTimeout => "ping_timeout",
            DisconnectReason::Superseded => "superseded",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::CredentialRevoked => "credential_revoked",
            DisconnectReason::TenantSuspended => "tenant_suspended",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DisconnectReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DisconnectReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| format!("unknown disconnect reason `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_names() {
        for reason in DisconnectReason::ALL {
            assert_eq!(reason.as_str().parse::<DisconnectReason>(), Ok(reason));
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
    }
}
