//! `floatilla simulate`: a fleet of virtual routers in one process.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use floatilla_agent::ServerAddress;
use floatilla_agent::simulate::{Simulator, SimulatorConfig};

use crate::options::{raise_open_file_limit, wait_for_signal};

#[derive(Debug, Args)]
pub struct SimulateCommand {
    /// The server as `serve` prints it: https://HOST:PORT.
    #[arg(long, env = "FLOATILLA_SERVER")]
    server: String,
    /// An enrollment token (needed for routers not enrolled yet).
    #[arg(long, env = "FLOATILLA_ENROLL_TOKEN")]
    enroll_token: Option<String>,
    /// How many routers.
    #[arg(long, env = "FLOATILLA_SIMULATE_DEVICES")]
    devices: u32,
    /// Routers started per second, in serial order.
    #[arg(long, env = "FLOATILLA_SIMULATE_RATE", default_value_t = 100)]
    rate: u32,
    /// Serials are PREFIX000001, PREFIX000002, …
    #[arg(long, env = "FLOATILLA_SIMULATE_SERIAL_PREFIX", default_value = "SIM-")]
    serial_prefix: String,
    /// Keep credentials here, so another run reuses the same routers.
    #[arg(long, env = "FLOATILLA_SIMULATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The share of job executions (0 to 100) that fail at random.
    #[arg(long, env = "FLOATILLA_SIMULATE_JOB_FAILURE_PERCENT", default_value_t = 0,
        value_parser = clap::value_parser!(u8).range(0..=100))]
    job_failure_percent: u8,
    /// Append `EXECUTION_ID ATTEMPT OUTCOME` here for every job execution a router applied.
    #[arg(long, env = "FLOATILLA_SIMULATE_JOBS_LOG")]
    jobs_log: Option<PathBuf>,
}

impl SimulateCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        raise_open_file_limit();
        let simulator = Simulator::start(SimulatorConfig {
            server: ServerAddress::parse(&self.server)?,
            enroll_token: self.enroll_token,
            devices: self.devices,
            rate: self.rate,
            serial_prefix: self.serial_prefix,
            state_dir: self.state_dir,
            job_failure_percent: self.job_failure_percent,
            jobs_log: self.jobs_log,
        })?;
        let counters = simulator.counters.clone();
        let devices = simulator.devices();
        let progress = tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let line = counters.line(devices);
                let mut stderr = std::io::stderr();
                if terminal {
                    let _ = write!(stderr, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(stderr, "{line}");
                }
            }
        });
        wait_for_signal().await;
        progress.abort();
        let summary = simulator.counters.line(devices);
        simulator.stop().await?;
        eprintln!("\nstopped: {summary}");
        Ok(())
    }
}
