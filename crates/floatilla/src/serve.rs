//! `floatilla serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use floatilla_domain::accounts::SessionLifetime;
use floatilla_domain::licensing::signed::RootPublicKey;
use floatilla_domain::{Mode, SystemClock, Timers};
use floatilla_server::{ConsoleListener, ServerConfig, SmtpSettings, Trial};
use serde::Deserialize;

use crate::options::{raise_open_file_limit, read_config_file, wait_for_signal};
use crate::storage::StorageOptions;

#[derive(Debug, Args)]
pub struct ServeCommand {
    /// A TOML file with any of the options below (keys use `_`, e.g. `ping_interval_secs`).
    #[arg(long, env = "FLOATILLA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: ServeOptions,
}

#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServeOptions {
    #[command(flatten)]
    #[serde(flatten)]
    storage: StorageOptions,
    /// Address of the device channel and API [default: 0.0.0.0:8443; port 0 picks one].
    #[arg(long, env = "FLOATILLA_LISTEN")]
    listen: Option<SocketAddr>,
    /// A name routers use to reach this server, added to its certificate (repeatable).
    #[arg(long = "hostname", env = "FLOATILLA_HOSTNAME", value_delimiter = ',')]
    #[serde(alias = "hostname")]
    hostnames: Option<Vec<String>>,
    /// on-prem (one tenant) or cloud (many) [default: on-prem].
    #[arg(long, env = "FLOATILLA_MODE")]
    mode: Option<Mode>,
    /// A separate listener for the console and API with your own certificate.
    #[arg(long, env = "FLOATILLA_CONSOLE_LISTEN", requires_all = ["console_cert", "console_key"])]
    console_listen: Option<SocketAddr>,
    /// PEM certificate chain for --console-listen.
    #[arg(long, env = "FLOATILLA_CONSOLE_CERT")]
    console_cert: Option<PathBuf>,
    /// PEM private key for --console-listen.
    #[arg(long, env = "FLOATILLA_CONSOLE_KEY")]
    console_key: Option<PathBuf>,
    /// Seconds between pings to an idle router [default: 120].
    #[arg(long, env = "FLOATILLA_PING_INTERVAL_SECS")]
    ping_interval_secs: Option<u32>,
    /// Seconds to wait for a pong before dropping the router [default: 30].
    #[arg(long, env = "FLOATILLA_PONG_TIMEOUT_SECS")]
    pong_timeout_secs: Option<u32>,
    /// Longest reconnect backoff routers are advised to use, in seconds [default: 60].
    #[arg(long, env = "FLOATILLA_RECONNECT_BACKOFF_CAP_SECS")]
    reconnect_backoff_cap_secs: Option<u32>,
    /// Days a router credential is valid before renewal [default: 365].
    #[arg(long, env = "FLOATILLA_CREDENTIAL_LIFETIME_DAYS")]
    credential_lifetime_days: Option<u32>,
    /// Days connection history is kept after a connection ended [default: 90].
    #[arg(long, env = "FLOATILLA_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// Router channels this node holds at most [default: 18000, leaving 2,000 of a 20,000
    /// open-file limit for the database, the API and downloads].
    #[arg(long, env = "FLOATILLA_MAX_ROUTER_CONNECTIONS")]
    max_router_connections: Option<usize>,
    /// New router channels a second at most [default: 10000].
    #[arg(long, env = "FLOATILLA_MAX_CONNECTS_PER_SEC")]
    max_connects_per_sec: Option<u32>,
    /// This node's name in connection history [default: HOST:PORT].
    #[arg(long, env = "FLOATILLA_NODE_ID")]
    node_id: Option<String>,
    /// Behind a TCP load balancer that sends the PROXY protocol (HAProxy's `send-proxy-v2`):
    /// every device connection must start with its header [default: false].
    #[arg(long, env = "FLOATILLA_PROXY_PROTOCOL", num_args = 0..=1, default_missing_value = "true")]
    proxy_protocol: Option<bool>,
    /// How long a router keeps its license seat after its connection drops, in seconds
    /// [default: 600].
    #[arg(long, env = "FLOATILLA_LICENSE_LINGER_SECS")]
    license_linger_secs: Option<u32>,
    /// Accept unsigned licenses posted as JSON to /api/v1/licenses: for tests, demos and
    /// development, never production [default: false].
    #[arg(long, env = "FLOATILLA_ALLOW_UNSIGNED_LICENSES", num_args = 0..=1, default_missing_value = "true")]
    allow_unsigned_licenses: Option<bool>,
    /// Days before a capacity drop at which a warning event is given [default: 30,14,7,1].
    #[arg(long, env = "FLOATILLA_LICENSE_NOTICE_DAYS", value_delimiter = ',')]
    license_notice_days: Option<Vec<u32>>,
    /// A license root's public key (`root.pub`): license files issued under it are accepted
    /// (repeatable; the file key is `trusted_roots`). Without any, every file is refused
    /// as `unknown_issuer`.
    #[arg(
        long = "trusted-root",
        env = "FLOATILLA_TRUSTED_ROOTS",
        value_delimiter = ','
    )]
    trusted_roots: Option<Vec<PathBuf>>,
    /// Days of the trial license a tenant the provider creates starts with (cloud)
    /// [default: 45].
    #[arg(long, env = "FLOATILLA_TRIAL_DAYS")]
    trial_days: Option<u32>,
    /// Seats of that trial license; 0 gives no trial [default: 25].
    #[arg(long, env = "FLOATILLA_TRIAL_SEATS")]
    trial_seats: Option<u32>,
    /// The SMTP relay for e-mail notices: `smtps://host:port`, `smtp://host:port?tls=required`
    /// (STARTTLS), or plain `smtp://host:port`; `user:password@` before the host to log in
    /// [default: no e-mail].
    #[arg(long, env = "FLOATILLA_SMTP_URL", requires = "smtp_from")]
    smtp_url: Option<String>,
    /// The sender of e-mail notices, e.g. `Floatilla <floatilla@example.com>`.
    #[arg(long, env = "FLOATILLA_SMTP_FROM")]
    smtp_from: Option<String>,
    /// The largest artifact an operator may upload, in MiB [default: 2048].
    #[arg(long, env = "FLOATILLA_MAX_ARTIFACT_MIB")]
    max_artifact_mib: Option<u64>,
    /// The most artifact downloads this node serves at once; more routers are asked to retry
    /// [default: 500].
    #[arg(long, env = "FLOATILLA_MAX_DOWNLOADS")]
    max_downloads: Option<usize>,
    /// Minutes without a request after which a console login ends [default: 120].
    #[arg(long, env = "FLOATILLA_SESSION_IDLE_MINUTES")]
    session_idle_minutes: Option<u32>,
    /// Hours after which a console login ends whatever happens [default: 12].
    #[arg(long, env = "FLOATILLA_SESSION_MAX_HOURS")]
    session_max_hours: Option<u32>,
    /// Days the audit log keeps an entry [default: 365].
    #[arg(long, env = "FLOATILLA_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
}

impl ServeOptions {
    fn or(self, file: ServeOptions) -> Self {
        Self {
            storage: self.storage.or(file.storage),
            listen: self.listen.or(file.listen),
            hostnames: self.hostnames.or(file.hostnames),
            mode: self.mode.or(file.mode),
            console_listen: self.console_listen.or(file.console_listen),
            console_cert: self.console_cert.or(file.console_cert),
            console_key: self.console_key.or(file.console_key),
            ping_interval_secs: self.ping_interval_secs.or(file.ping_interval_secs),
            pong_timeout_secs: self.pong_timeout_secs.or(file.pong_timeout_secs),
            reconnect_backoff_cap_secs: self
                .reconnect_backoff_cap_secs
                .or(file.reconnect_backoff_cap_secs),
            credential_lifetime_days: self
                .credential_lifetime_days
                .or(file.credential_lifetime_days),
            retention_days: self.retention_days.or(file.retention_days),
            max_router_connections: self.max_router_connections.or(file.max_router_connections),
            max_connects_per_sec: self.max_connects_per_sec.or(file.max_connects_per_sec),
            node_id: self.node_id.or(file.node_id),
            proxy_protocol: self.proxy_protocol.or(file.proxy_protocol),
            license_linger_secs: self.license_linger_secs.or(file.license_linger_secs),
            allow_unsigned_licenses: self
                .allow_unsigned_licenses
                .or(file.allow_unsigned_licenses),
            trusted_roots: self.trusted_roots.or(file.trusted_roots),
            license_notice_days: self.license_notice_days.or(file.license_notice_days),
            trial_days: self.trial_days.or(file.trial_days),
            trial_seats: self.trial_seats.or(file.trial_seats),
            smtp_url: self.smtp_url.or(file.smtp_url),
            smtp_from: self.smtp_from.or(file.smtp_from),
            max_artifact_mib: self.max_artifact_mib.or(file.max_artifact_mib),
            max_downloads: self.max_downloads.or(file.max_downloads),
            session_idle_minutes: self.session_idle_minutes.or(file.session_idle_minutes),
            session_max_hours: self.session_max_hours.or(file.session_max_hours),
            audit_retention_days: self.audit_retention_days.or(file.audit_retention_days),
        }
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let defaults = ServerConfig::default();
        let default_timers = Timers::default();
        let console = match (&self.console_listen, &self.console_cert, &self.console_key) {
            (Some(listen), Some(certificate), Some(private_key)) => Some(ConsoleListener {
                listen: *listen,
                certificate: certificate.clone(),
                private_key: private_key.clone(),
            }),
            (None, _, _) => None,
            _ => anyhow::bail!("--console-listen needs --console-cert and --console-key"),
        };
        Ok(ServerConfig {
            listen: self.listen.unwrap_or(defaults.listen),
            hostnames: self.hostnames.clone().unwrap_or_default(),
            console,
            mode: self.mode.unwrap_or_default(),
            timers: Timers {
                ping_interval_secs: self
                    .ping_interval_secs
                    .unwrap_or(default_timers.ping_interval_secs),
                pong_timeout_secs: self
                    .pong_timeout_secs
                    .unwrap_or(default_timers.pong_timeout_secs),
                reconnect_backoff_cap_secs: self
                    .reconnect_backoff_cap_secs
                    .unwrap_or(default_timers.reconnect_backoff_cap_secs),
            },
            node_id: self.node_id.clone().unwrap_or_default(),
            proxy_protocol: self.proxy_protocol.unwrap_or(false),
            license_linger: self
                .license_linger_secs
                .map_or(defaults.license_linger, |secs| {
                    chrono::Duration::seconds(secs.into())
                }),
            allow_unsigned_licenses: self.allow_unsigned_licenses.unwrap_or(false),
            trusted_license_roots: trusted_license_roots(self.trusted_roots.as_deref())?,
            license_notice_days: self
                .license_notice_days
                .clone()
                .unwrap_or(defaults.license_notice_days.clone()),
            max_router_connections: self
                .max_router_connections
                .unwrap_or(defaults.max_router_connections),
            max_connects_per_sec: self
                .max_connects_per_sec
                .unwrap_or(defaults.max_connects_per_sec),
            retention: self.retention_days.map_or(defaults.retention, |days| {
                chrono::Duration::days(days.into())
            }),
            credential_lifetime: self
                .credential_lifetime_days
                .map_or(defaults.credential_lifetime, |days| {
                    chrono::Duration::days(days.into())
                }),
            trial: Trial {
                days: self.trial_days.unwrap_or(defaults.trial.days),
                seats: self.trial_seats.unwrap_or(defaults.trial.seats),
            },
            smtp: match (&self.smtp_url, &self.smtp_from) {
                (Some(url), Some(from)) => Some(SmtpSettings {
                    url: url.clone(),
                    from: from.clone(),
                }),
                (None, _) => None,
                (Some(_), None) => anyhow::bail!("--smtp-url needs --smtp-from"),
            },
            max_artifact_bytes: self
                .max_artifact_mib
                .map_or(defaults.max_artifact_bytes, |mib| {
                    mib.saturating_mul(1024 * 1024)
                }),
            max_downloads: self.max_downloads.unwrap_or(defaults.max_downloads).max(1),
            session_lifetime: SessionLifetime {
                idle: self
                    .session_idle_minutes
                    .map_or(defaults.session_lifetime.idle, |minutes| {
                        chrono::Duration::minutes(minutes.max(1).into())
                    }),
                absolute: self
                    .session_max_hours
                    .map_or(defaults.session_lifetime.absolute, |hours| {
                        chrono::Duration::hours(hours.max(1).into())
                    }),
            },
            audit_retention: self
                .audit_retention_days
                .map_or(defaults.audit_retention, |days| {
                    chrono::Duration::days(days.into())
                }),
            ..defaults
        })
    }
}

/// The license roots this build trusts: the vendor's, pinned at build time (feature
/// `pinned-license-root`: an operator cannot add their own), or those given with
/// `--trusted-root`.
fn trusted_license_roots(files: Option<&[PathBuf]>) -> anyhow::Result<Vec<RootPublicKey>> {
    if cfg!(feature = "pinned-license-root") {
        if files.is_some_and(|files| !files.is_empty()) {
            anyhow::bail!(
                "this build trusts only its vendor's license root; --trusted-root is not accepted"
            );
        }
        return Ok(vec![pinned_root()?]);
    }
    files
        .unwrap_or_default()
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the license root {}", path.display()))?;
            RootPublicKey::from_armored(&text)
                .with_context(|| format!("{} is not a license root's public key", path.display()))
        })
        .collect()
}

/// The root a vendor build pins: `FLOATILLA_PINNED_LICENSE_ROOT` names its `root.pub` when
/// building with the feature.
#[cfg(feature = "pinned-license-root")]
fn pinned_root() -> anyhow::Result<RootPublicKey> {
    RootPublicKey::from_armored(include_str!(env!("FLOATILLA_PINNED_LICENSE_ROOT")))
        .context("the pinned license root is not a root's public key")
}

#[cfg(not(feature = "pinned-license-root"))]
fn pinned_root() -> anyhow::Result<RootPublicKey> {
    anyhow::bail!("this build pins no license root")
}

impl ServeCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let file: ServeOptions = read_config_file(self.config.as_deref())?;
        let options = self.options.or(file);
        let config = options.server_config()?;
        raise_open_file_limit();
        let store = options.storage.open().await?;
        let server = floatilla_server::start(config, store, Arc::new(SystemClock))
            .await
            .context("cannot start the server")?;
        println!("listening on {}", server.url());
        if let Some(console) = server.console_addr {
            println!("console and API on https://{console}");
        }
        tracing::info!(
            ca_fingerprint = %server.ca_fingerprint().to_hex(),
            mode = %server.installation().mode,
            "server ready"
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    }
}
