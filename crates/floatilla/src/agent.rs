//! `floatilla agent`: runs on a router (or any Linux host) and keeps it managed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use floatilla_agent::agent::{AgentHost, default_identity};
use floatilla_agent::router::{Connections, first_contact_trust};
use floatilla_agent::{RouterClock, RouterHost, RouterSettings, ServerAddress, run_router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::options::{read_config_file, wait_for_signal};

#[derive(Debug, Args)]
pub struct AgentCommand {
    /// A TOML file with any of the options below (keys use `_`, e.g. `state_dir`).
    #[arg(long, env = "FLOATILLA_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: AgentOptions,
}

#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AgentOptions {
    /// The server as `serve` prints it: https://HOST:PORT.
    #[arg(long, env = "FLOATILLA_SERVER")]
    server: Option<String>,
    /// The enrollment token an operator created; only needed until the router is enrolled.
    #[arg(long, env = "FLOATILLA_ENROLL_TOKEN")]
    enroll_token: Option<String>,
    /// Where the credential is kept (created 0700, files 0600).
    #[arg(long, env = "FLOATILLA_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Trust this CA certificate (PEM) on first contact instead of the token's fingerprint.
    #[arg(long, env = "FLOATILLA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Serial number [default: /etc/machine-id].
    #[arg(long, env = "FLOATILLA_SERIAL")]
    serial: Option<String>,
    /// Hardware model [default: NAME from /etc/os-release].
    #[arg(long, env = "FLOATILLA_MODEL")]
    model: Option<String>,
    /// Firmware version [default: VERSION_ID from /etc/os-release].
    #[arg(long, env = "FLOATILLA_FIRMWARE")]
    firmware: Option<String>,
    /// Hooks: executables the agent runs; `status` adds router-specific status as `key=value`
    /// lines [default: <state-dir>/hooks].
    #[arg(long, env = "FLOATILLA_HOOKS_DIR")]
    hooks_dir: Option<PathBuf>,
}

impl AgentOptions {
    fn or(self, file: AgentOptions) -> Self {
        Self {
            server: self.server.or(file.server),
            enroll_token: self.enroll_token.or(file.enroll_token),
            state_dir: self.state_dir.or(file.state_dir),
            ca_cert: self.ca_cert.or(file.ca_cert),
            serial: self.serial.or(file.serial),
            model: self.model.or(file.model),
            firmware: self.firmware.or(file.firmware),
            hooks_dir: self.hooks_dir.or(file.hooks_dir),
        }
    }
}

impl AgentCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let file: AgentOptions = read_config_file(self.config.as_deref())?;
        let options = self.options.or(file);
        let server = options.server.context("--server is required")?;
        let server = ServerAddress::parse(&server)?;
        let state_dir = options.state_dir.context("--state-dir is required")?;
        let hooks_dir = options.hooks_dir.unwrap_or_else(|| state_dir.join("hooks"));
        let mut identity = default_identity();
        identity.serial = options.serial.unwrap_or(identity.serial);
        identity.model = options.model.unwrap_or(identity.model);
        identity.firmware = options.firmware.unwrap_or(identity.firmware);
        let host = Arc::new(
            AgentHost::new(identity, &state_dir, &hooks_dir).with_context(|| {
                format!("cannot use the state directory {}", state_dir.display())
            })?,
        );
        let ca_pem = options
            .ca_cert
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))
            })
            .transpose()?;
        if host.load().is_none() && options.enroll_token.is_none() {
            anyhow::bail!("this router is not enrolled yet: give --enroll-token");
        }
        let trust = first_contact_trust(options.enroll_token.as_deref(), ca_pem.as_deref())
            .map_err(|e| anyhow::anyhow!("invalid --enroll-token or --ca-cert: {e}"))?;
        let settings = RouterSettings {
            connections: Arc::new(Connections::new(
                server,
                trust.as_ref(),
                Arc::new(RouterClock::default()),
            )?),
            enroll_token: options.enroll_token,
            local_addr: None,
            close_on_shutdown: true,
        };
        let shutdown = CancellationToken::new();
        let router = tokio::spawn(run_router(host, settings, shutdown.clone()));
        wait_for_signal().await;
        shutdown.cancel();
        router.await?;
        Ok(())
    }
}
