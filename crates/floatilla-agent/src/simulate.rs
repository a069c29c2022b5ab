//! Thousands of virtual routers in one process, each speaking the real protocol with its own
//! enrollment, credential and connection: for trying Floatilla out, for tests and for load figures.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floatilla_protocol::{
    CaFingerprint, EnrollmentTokenString, JobUpdate, JobUpdateState, Status, WireJob,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::RouterClock;
use crate::connection::{ChannelError, ServerAddress};
use crate::download::Downloader;
use crate::jobs::{JobReports, record_key};
use crate::router::{
    Connections, Enrolled, RouterEvent, RouterHost, RouterIdentity, RouterSettings,
    first_contact_trust, run_router,
};

const STATE_FILE: &str = "simulator.json";
/// Loopback source addresses the routers are spread over, so one address's ephemeral ports
/// (about 28,000) never run out.
const SOURCE_ADDRESSES: u32 = 32;

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub server: ServerAddress,
    pub enroll_token: Option<String>,
    pub devices: u32,
    /// New routers started per second.
    pub rate: u32,
    pub serial_prefix: String,
    /// Keeps credentials here so a later run reuses the same routers.
    pub state_dir: Option<PathBuf>,
    /// The share of job executions (0 to 100 %) that fail, at random: for trying out a
    /// rollout's failure threshold.
    pub job_failure_percent: u8,
    /// Appends a line `EXECUTION_ID ATTEMPT OUTCOME` for every execution a virtual router
    /// applied: what shows that none was applied twice.
    pub jobs_log: Option<PathBuf>,
}

/// How the virtual routers carry out jobs.
struct JobBehaviour {
    failure_percent: u8,
    /// Where artifacts are downloaded (and deleted once checked).
    downloads_dir: PathBuf,
    log: Option<Mutex<std::fs::File>>,
}

impl JobBehaviour {
    fn new(config: &SimulatorConfig) -> std::io::Result<Self> {
        let downloads_dir = match &config.state_dir {
            Some(dir) => dir.join("downloads"),
            None => std::env::temp_dir().join(format!(
                "floatilla-simulator-{}-downloads",
                std::process::id()
            )),
        };
        std::fs::create_dir_all(&downloads_dir)?;
        let log = config
            .jobs_log
            .as_ref()
            .map(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
            })
            .transpose()?
            .map(Mutex::new);
        Ok(Self {
            failure_percent: config.job_failure_percent.min(100),
            downloads_dir,
            log,
        })
    }

    fn record(&self, job: &WireJob, outcome: JobUpdateState) {
        use std::io::Write;
        if let Some(log) = &self.log {
            let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = if outcome == JobUpdateState::Succeeded {
                "succeeded"
            } else {
                "failed"
            };
            if let Err(error) = writeln!(file, "{} {} {outcome}", job.execution_id, job.attempt) {
                tracing::error!(%error, "cannot write the jobs log");
            }
        }
    }
}

/// Running totals, readable while the simulator runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub started: AtomicU64,
    pub enrolled: AtomicU64,
    pub connected: AtomicU64,
    /// Connected routers the server last told they hold a license seat.
    pub licensed: AtomicU64,
    pub connects: AtomicU64,
    pub refused: AtomicU64,
    pub failures: AtomicU64,
}

impl Counters {
    pub fn line(&self, devices: u32) -> String {
        format!(
            "{}/{devices} connected ({} licensed), {} started, {} enrolled, {} connects, {} refused, {} failed attempts",
            self.connected.load(Ordering::Relaxed),
            self.licensed.load(Ordering::Relaxed),
            self.started.load(Ordering::Relaxed),
            self.enrolled.load(Ordering::Relaxed),
            self.connects.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// Every virtual router's credentials, saved to the state directory in one file.
#[derive(Debug, Default)]
struct Fleet {
    enrolled: Mutex<HashMap<String, Enrolled>>,
    dirty: AtomicBool,
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default)]
struct FleetFile {
    /// The server installation's CA (SHA-256, hex): credentials are only good there.
    ca_fingerprint: String,
    routers: HashMap<String, Enrolled>,
}

impl Fleet {
    /// Opens the saved fleet, unless it belongs to an installation other than `expected`.
    fn open(state_dir: Option<&Path>, expected: Option<CaFingerprint>) -> std::io::Result<Self> {
        let Some(dir) = state_dir else {
            return Ok(Self::default());
        };
        std::fs::create_dir_all(dir)?;
        let path = dir.join(STATE_FILE);
        let routers = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: FleetFile = serde_json::from_str(&text)?;
                match expected {
                    Some(expected) if expected.to_hex() != file.ca_fingerprint => {
                        tracing::warn!(
                            "the saved routers belong to another installation; enrolling afresh"
                        );
                        HashMap::new()
                    }
                    _ => file.routers,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            enrolled: Mutex::new(routers),
            dirty: AtomicBool::new(false),
            path: Some(path),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Enrolled>> {
        self.enrolled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the file if anything changed since the last write.
    fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let routers = self.lock().clone();
        let ca_fingerprint = routers
            .values()
            .next()
            .and_then(|enrolled| {
                CertificateDer::from_pem_slice(enrolled.ca_certificate.as_bytes()).ok()
            })
            .map(|der| CaFingerprint::of_der(&der).to_hex())
            .unwrap_or_default();
        let file = FleetFile {
            ca_fingerprint,
            routers,
        };
        let temporary = path.with_extension("json.new");
        std::fs::write(&temporary, serde_json::to_vec(&file)?)?;
        std::fs::rename(temporary, path)
    }
}

struct VirtualRouter {
    identity: RouterIdentity,
    index: u32,
    fleet: Arc<Fleet>,
    counters: Arc<Counters>,
    started_at: Instant,
    online: AtomicBool,
    licensed: AtomicBool,
    /// Executions this virtual router ran, by id, with their outcome: a job sent again is
    /// recognised and not run twice.
    jobs: Arc<Mutex<HashMap<String, JobUpdateState>>>,
    behaviour: Arc<JobBehaviour>,
}

/// How long a virtual router takes to apply a job.
const SIMULATED_JOB_TIME: Duration = Duration::from_millis(50);

#[async_trait::async_trait]
impl RouterHost for VirtualRouter {
    fn identity(&self) -> RouterIdentity {
        self.identity.clone()
    }

    async fn status(&self) -> Status {
        let uptime = self.started_at.elapsed().as_secs();
        Status {
            firmware: Some(self.identity.firmware.clone()),
            model: Some(self.identity.model.clone()),
            uptime_secs: Some(uptime),
            cellular_signal_dbm: Some(-60 - (self.index % 40) as i32),
            rx_bytes: Some(uptime * 120),
            tx_bytes: Some(uptime * 80),
            wan_address: Some(format!(
                "100.64.{}.{}",
                self.index / 250 % 250,
                self.index % 250 + 1
            )),
        }
    }

    fn load(&self) -> Option<Enrolled> {
        self.fleet.lock().get(&self.identity.serial).cloned()
    }

    fn save(&self, enrolled: &Enrolled) -> std::io::Result<()> {
        self.fleet
            .lock()
            .insert(self.identity.serial.clone(), enrolled.clone());
        self.fleet.dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn run_job(&self, job: WireJob, reports: JobReports, downloads: Downloader) {
        self.simulate_job(job, reports, downloads);
    }

    fn event(&self, event: RouterEvent) {
        let counters = &self.counters;
        match event {
            RouterEvent::Enrolled => {
                counters.enrolled.fetch_add(1, Ordering::Relaxed);
            }
            RouterEvent::Connected => {
                counters.connects.fetch_add(1, Ordering::Relaxed);
                if !self.online.swap(true, Ordering::Relaxed) {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
            }
            RouterEvent::License(license) => {
                let licensed = license.state == "licensed";
                if self.licensed.swap(licensed, Ordering::Relaxed) != licensed {
                    if licensed {
                        counters.licensed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.licensed.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            RouterEvent::Disconnected { .. } => self.went_offline(),
            RouterEvent::Refused(error) => {
                self.went_offline();
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(serial = %self.identity.serial, code = %error.code, "refused");
            }
            RouterEvent::Unreachable(reason) => {
                self.went_offline();
                counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(serial = %self.identity.serial, %reason, "connection failed");
            }
        }
    }
}

impl VirtualRouter {
    /// A virtual router applies every job: it downloads and checks the artifact if there is
    /// one, reports `installing`, takes a moment and reports the outcome (a failure at the
    /// configured rate); an attempt sent again gets its outcome again.
    fn simulate_job(&self, job: WireJob, reports: JobReports, downloads: Downloader) {
        let key = record_key(&job);
        let attempt = job.attempt;
        let report = move |reports: &JobReports, execution_id: &str, state, message| {
            let _ = reports.send(JobUpdate {
                execution_id: execution_id.to_owned(),
                attempt: Some(attempt),
                state,
                message,
            });
        };
        let known = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), JobUpdateState::Installing);
        match known {
            Some(JobUpdateState::Installing) => {}
            Some(outcome) => {
                self.jobs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, outcome);
                report(&reports, &job.execution_id, outcome, None);
            }
            None => {
                let jobs = self.jobs.clone();
                let behaviour = self.behaviour.clone();
                tokio::spawn(async move {
                    let mut failure = None;
                    if let Some(artifact) = &job.artifact {
                        report(
                            &reports,
                            &job.execution_id,
                            JobUpdateState::Downloading,
                            None,
                        );
                        let destination = behaviour.downloads_dir.join(format!("{key}.artifact"));
                        match downloads.fetch(artifact, &destination).await {
                            Ok(path) => {
                                tokio::fs::remove_file(path).await.ok();
                            }
                            Err(error) => failure = Some(format!("cannot download: {error}")),
                        }
                    }
                    if failure.is_none() {
                        report(
                            &reports,
                            &job.execution_id,
                            JobUpdateState::Installing,
                            None,
                        );
                        tokio::time::sleep(SIMULATED_JOB_TIME).await;
                        if rand::random_range(0..100u8) < behaviour.failure_percent {
                            failure = Some("a simulated failure".to_owned());
                        }
                    }
                    let outcome = if failure.is_some() {
                        JobUpdateState::Failed
                    } else {
                        JobUpdateState::Succeeded
                    };
                    behaviour.record(&job, outcome);
                    jobs.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, outcome);
                    report(&reports, &job.execution_id, outcome, failure);
                });
            }
        }
    }

    fn went_offline(&self) {
        if self.online.swap(false, Ordering::Relaxed) {
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
        if self.licensed.swap(false, Ordering::Relaxed) {
            self.counters.licensed.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The serial of the `index`-th router (from 1): `P000001`, `P000002`, …
pub fn serial(prefix: &str, index: u32) -> String {
    format!("{prefix}{index:06}")
}

/// A running simulation.
pub struct Simulator {
    pub counters: Arc<Counters>,
    config: SimulatorConfig,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Simulator {
    /// Starts the routers at the configured rate, in serial order, in the background.
    pub fn start(config: SimulatorConfig) -> Result<Self, ChannelError> {
        let expected_ca = config
            .enroll_token
            .as_deref()
            .and_then(|token| token.parse::<EnrollmentTokenString>().ok())
            .map(|token| token.ca_fingerprint);
        let fleet = Arc::new(
            Fleet::open(config.state_dir.as_deref(), expected_ca).map_err(ChannelError::Io)?,
        );
        let trust = first_contact_trust(config.enroll_token.as_deref(), None)
            .map_err(ChannelError::Unexpected)?;
        let connections = Arc::new(Connections::new(
            config.server.clone(),
            trust.as_ref(),
            Arc::new(RouterClock::default()),
        )?);
        let counters = Arc::new(Counters::default());
        let behaviour = Arc::new(JobBehaviour::new(&config).map_err(ChannelError::Io)?);
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let loopback_server = config
            .server
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() && ip.is_ipv4())
            || config.server.host == "localhost";
        let interval = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
        {
            let (config, fleet, counters, stop) = (
                config.clone(),
                fleet.clone(),
                counters.clone(),
                stop.clone(),
            );
            tasks.spawn(async move {
                let mut routers = tokio::task::JoinSet::new();
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for index in 1..=config.devices {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        () = stop.cancelled() => return,
                    }
                    let host = Arc::new(VirtualRouter {
                        identity: RouterIdentity {
                            serial: serial(&config.serial_prefix, index),
                            model: "Floatilla SIM-1".into(),
                            firmware: "1.0.0".into(),
                        },
                        index,
                        fleet: fleet.clone(),
                        counters: counters.clone(),
                        started_at: Instant::now(),
                        online: AtomicBool::new(false),
                        jobs: Arc::default(),
                        behaviour: behaviour.clone(),
                        licensed: AtomicBool::new(false),
                    });
                    let settings = RouterSettings {
                        connections: connections.clone(),
                        enroll_token: config.enroll_token.clone(),
                        local_addr: loopback_server.then(|| source_address(index)),
                        close_on_shutdown: false,
                    };
                    counters.started.fetch_add(1, Ordering::Relaxed);
                    routers.spawn(run_router(host, settings, stop.clone()));
                }
                stop.cancelled().await;
                routers.shutdown().await;
            });
        }
        {
            let (fleet, stop) = (fleet.clone(), stop.clone());
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        () = stop.cancelled() => return,
                    }
                    if let Err(error) = fleet.persist() {
                        tracing::error!(%error, "cannot save the simulator's state");
                    }
                }
            });
        }
        Ok(Self {
            counters,
            config,
            fleet,
            stop,
            tasks,
        })
    }

    pub fn devices(&self) -> u32 {
        self.config.devices
    }

    /// Stops every router without saying goodbye (as if their power went) and saves the state.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.fleet.persist()
    }
}

fn source_address(index: u32) -> SocketAddr {
    let host = 1 + (index % SOURCE_ADDRESSES) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_numbered_in_order() {
        assert_eq!(serial("SIM-", 1), "SIM-000001");
        assert_eq!(serial("P", 123_456), "P123456");
    }

    #[test]
    fn routers_are_spread_over_loopback_addresses() {
        let addresses: std::collections::HashSet<_> = (1..=1000).map(source_address).collect();
        assert_eq!(addresses.len(), SOURCE_ADDRESSES as usize);
        assert!(
            addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 0)
        );
    }

    #[test]
    fn saved_routers_of_another_installation_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec![])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ours = CaFingerprint::of_der(ca.der());
        let fleet = Fleet::open(Some(dir.path()), Some(ours)).unwrap();
        fleet.lock().insert(
            "S1".into(),
            Enrolled {
                device_id: "d".into(),
                credential: "c".into(),
                ca_certificate: ca.pem(),
            },
        );
        fleet.dirty.store(true, Ordering::Release);
        fleet.persist().unwrap();
        assert_eq!(
            Fleet::open(Some(dir.path()), Some(ours))
                .unwrap()
                .lock()
                .len(),
            1
        );
        assert_eq!(Fleet::open(Some(dir.path()), None).unwrap().lock().len(), 1);
        let theirs = CaFingerprint::of_der(b"another CA");
        assert!(
            Fleet::open(Some(dir.path()), Some(theirs))
                .unwrap()
                .lock()
                .is_empty()
        );
    }
}
