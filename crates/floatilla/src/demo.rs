//! `floatilla demo`: a server on the embedded database and a simulated fleet, in one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use floatilla_agent::ServerAddress;
use floatilla_agent::simulate::{Simulator, SimulatorConfig};
use floatilla_domain::licensing::Seats;
use floatilla_domain::{Role, SystemClock};
use floatilla_server::{RunningServer, ServerConfig};

/// The demo's console account; its password is new at every start.
const DEMO_ACCOUNT: &str = "demo@floatilla.local";

use crate::options::{raise_open_file_limit, wait_for_signal};
use crate::storage::StorageOptions;

#[derive(Debug, Args)]
pub struct DemoCommand {
    /// Where the demo keeps its database, CA certificate and simulated routers' credentials.
    #[arg(long, env = "FLOATILLA_DATA_DIR", default_value = "floatilla-demo")]
    data_dir: PathBuf,
    /// Address of the server.
    #[arg(long, env = "FLOATILLA_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// How many simulated routers.
    #[arg(long, env = "FLOATILLA_DEMO_DEVICES", default_value_t = 50)]
    devices: u32,
}

impl DemoCommand {
    /// On the first run, licenses for most of the fleet, part of them for 15 minutes only, so
    /// the pool sheds routers while you watch. Answers what it installed.
    async fn give_seats(&self, server: &RunningServer) -> anyhow::Result<Option<String>> {
        if !server.licenses().await?.is_empty() {
            return Ok(None);
        }
        let permanent = self.devices * 7 / 10;
        let temporary = self.devices / 5;
        server
            .add_unsigned_license("demo: permanent", Seats::Count(permanent), None)
            .await?;
        let ends = chrono::Utc::now() + chrono::Duration::minutes(15);
        server
            .add_unsigned_license("demo: 15 minutes", Seats::Count(temporary), Some(ends))
            .await?;
        Ok(Some(format!(
            "Licenses: {permanent} permanent seats and {temporary} more for 15 minutes; the rest of the fleet is excess."
        )))
    }

    pub async fn run(self) -> anyhow::Result<()> {
        raise_open_file_limit();
        let storage = StorageOptions {
            data_dir: Some(self.data_dir.clone()),
            database_url: None,
        };
        let store = storage.open().await?;
        let config = ServerConfig {
            listen: self.listen,
            allow_unsigned_licenses: true,
            ..ServerConfig::default()
        };
        let server = floatilla_server::start(config, store, Arc::new(SystemClock))
            .await
            .context("cannot start the server")?;
        let url = server.url();
        let ca_file = self.data_dir.join("ca.pem");
        std::fs::write(&ca_file, server.ca_certificate_pem())?;
        let api_token = server.create_api_token("demo", Role::Admin).await?;
        let console_password = server.console_account(DEMO_ACCOUNT, Role::Admin).await?;
        let seats = self.give_seats(&server).await?;
        let enroll_token = server
            .create_enrollment_token("demo fleet", chrono::Duration::days(1))
            .await?;
        let simulator = Simulator::start(SimulatorConfig {
            server: ServerAddress::parse(&url)?,
            enroll_token: Some(enroll_token),
            devices: self.devices,
            rate: 100,
            serial_prefix: "DEMO-".into(),
            state_dir: Some(self.data_dir.join("simulator")),
            job_failure_percent: 0,
            jobs_log: None,
        })?;
        println!("listening on {url}");
        println!();
        println!(
            "Floatilla demo: {} simulated routers are connecting.",
            self.devices
        );
        if let Some(seats) = seats {
            println!("{seats}");
        }
        println!(
            "  Console:        {url}/  (log in as {DEMO_ACCOUNT}, password {console_password})"
        );
        println!("  API token:      {api_token}");
        println!("  CA certificate: {}", ca_file.display());
        println!();
        println!(
            "  curl --cacert {} -H 'Authorization: Bearer {api_token}' {url}/api/v1/devices?limit=5",
            ca_file.display()
        );
        println!(
            "  curl --cacert {} -H 'Authorization: Bearer {api_token}' {url}/api/v1/license-pool",
            ca_file.display()
        );
        println!("  curl --cacert {} {url}/metrics", ca_file.display());
        println!("  OpenAPI:        {url}/api/v1/openapi.json");
        println!();
        println!("Ctrl-C stops the demo; run it again to continue with the same routers.");
        wait_for_signal().await;
        simulator.stop().await?;
        server.shutdown().await;
        Ok(())
    }
}
