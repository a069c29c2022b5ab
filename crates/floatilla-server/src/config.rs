//! Everything a server node is told at start. The binary fills it from flags, a config file and
//! the environment; tests fill it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use floatilla_domain::accounts::SessionLifetime;
use floatilla_domain::licensing::signed::RootPublicKey;
use floatilla_domain::{Mode, Timers};

use crate::installation::Trial;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the device channel (and the API, unless a console listener is set) is served.
    pub listen: SocketAddr,
    /// Extra names the device certificate covers.
    pub hostnames: Vec<String>,
    /// An optional second listener for the console and API with the operator's own certificate.
    pub console: Option<ConsoleListener>,
    pub mode: Mode,
    pub timers: Timers,
    /// Names this node in connection history; unique among running nodes and stable across
    /// restarts, so a restarted node can close what it left open. Empty: `HOST:PORT`.
    pub node_id: String,
    /// Connections to the device listener start with a PROXY protocol header (version 1 or 2)
    /// from a TCP load balancer, which names the router's own address.
    pub proxy_protocol: bool,
    /// How long a router credential is valid.
    pub credential_lifetime: chrono::Duration,
    /// A credential is renewed over the channel once less than this remains (at most half its
    /// lifetime, see [`ServerConfig::renewal_window`]).
    pub credential_renew_before: chrono::Duration,
    /// How often heartbeat bookkeeping (last seen) is written, in one batch.
    pub last_seen_flush_interval: Duration,
    /// On shutdown, routers are told to come back after this long (plus jitter).
    pub shutdown_reconnect_after_secs: u32,
    /// How long a server call to a router may take before the caller gets `call_timeout`.
    pub call_timeout: Duration,
    /// Connection history that ended, and events that happened, longer ago than this are
    /// deleted.
    pub retention: chrono::Duration,
    /// The most router channels this node holds; beyond it routers are told to retry later.
    /// The default leaves 2,000 of a 20,000 open-file limit for the database, API and downloads.
    pub max_router_connections: usize,
    /// The most new router channels a second (a reconnect storm is spread out, not refused).
    pub max_connects_per_sec: u32,
    /// How long a router's session (and its seat) outlives its dropped connection.
    pub license_linger: chrono::Duration,
    /// Accept licenses posted as plain JSON, unsigned: for tests, demos and development.
    pub allow_unsigned_licenses: bool,
    /// Days before a capacity drop at which a warning is given.
    pub license_notice_days: Vec<u32>,
    /// The vendor roots whose certified issuers' license files this installation accepts.
    pub trusted_license_roots: Vec<RootPublicKey>,
    /// The trial license of a tenant the provider creates (cloud).
    pub trial: Trial,
    /// Where e-mail goes out, if anywhere: notices reach tenants' contact addresses.
    pub smtp: Option<SmtpSettings>,
    /// The largest artifact an operator may upload.
    pub max_artifact_bytes: u64,
    /// The most artifact downloads this node serves at once; more are told to retry later.
    pub max_downloads: usize,
    /// How long a console login lasts.
    pub session_lifetime: SessionLifetime,
    /// Audit log entries older than this are deleted.
    pub audit_retention: chrono::Duration,
}

/// The SMTP relay that sends the server's e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// `smtps://host:port` (TLS from the start), `smtp://host:port?tls=required` (STARTTLS),
    /// `smtp://host:port?tls=opportunistic` (STARTTLS when offered) or plain `smtp://host:port`
    /// (a relay on the same host or network only); `user:password@` before the host to log in.
    pub url: String,
    /// The sender, `Floatilla <floatilla@example.com>`.
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct ConsoleListener {
    pub listen: SocketAddr,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8443).into(),
            hostnames: Vec::new(),
            console: None,
            mode: Mode::OnPrem,
            timers: Timers::default(),
            node_id: String::new(),
            proxy_protocol: false,
            credential_lifetime: chrono::Duration::days(365),
            credential_renew_before: chrono::Duration::days(30),
            last_seen_flush_interval: Duration::from_secs(5),
            shutdown_reconnect_after_secs: 10,
            call_timeout: Duration::from_secs(30),
            retention: chrono::Duration::days(90),
            max_router_connections: 18_000,
            max_connects_per_sec: 10_000,
            license_linger: chrono::Duration::minutes(10),
            allow_unsigned_licenses: false,
            license_notice_days: vec![30, 14, 7, 1],
            trusted_license_roots: Vec::new(),
            trial: Trial::default(),
            smtp: None,
            max_artifact_bytes: 2 * 1024 * 1024 * 1024,
            max_downloads: 500,
            session_lifetime: SessionLifetime::default(),
            audit_retention: chrono::Duration::days(365),
        }
    }
}

impl ServerConfig {
    /// How long before expiry a credential is renewed: the configured time, but never more than
    /// half a lifetime, so a fresh credential is not itself due for renewal at once.
    pub fn renewal_window(&self) -> chrono::Duration {
        self.credential_renew_before
            .min(self.credential_lifetime / 2)
    }
}

/// The default node id: this host's name and the device listener's port.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    format!("{host}:{port}")
}
