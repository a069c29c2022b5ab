//! The agent on a real router (or any Linux host): its identity, its state directory, and the
//! status it reports. It only reports and runs what it is asked to; it never changes the host's
//! networking by itself.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use floatilla_protocol::{Status, WireJob};

use crate::download::Downloader;
use crate::jobs::{JobReports, JobRunner};
use crate::router::{Enrolled, RouterEvent, RouterHost, RouterIdentity};

const ENROLLMENT_FILE: &str = "enrollment.json";
/// The hook that adds router-specific status (signal strength, WAN address, data usage).
const STATUS_HOOK: &str = "status";
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the identity comes from when not given: `/etc/machine-id` and `/etc/os-release`.
pub fn default_identity() -> RouterIdentity {
    let serial = std::fs::read_to_string("/etc/machine-id")
        .map(|id| id.trim().to_owned())
        .ok()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |name: &str| {
        os_release.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|value| value.trim_matches('"').to_owned())
        })
    };
    RouterIdentity {
        serial,
        model: field("NAME").unwrap_or_else(|| "Linux".to_owned()),
        firmware: field("VERSION_ID")
            .or_else(|| field("VERSION"))
            .unwrap_or_else(|| "unknown".to_owned()),
    }
}

/// The agent's host: identity, state directory (credential files 0600) and hooks directory.
#[derive(Debug)]
pub struct AgentHost {
    identity: RouterIdentity,
    state_dir: PathBuf,
    hooks_dir: PathBuf,
    jobs: Arc<JobRunner>,
}

impl AgentHost {
    /// Creates the state directory (0700) if needed.
    pub fn new(
        identity: RouterIdentity,
        state_dir: &Path,
        hooks_dir: &Path,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            identity,
            state_dir: state_dir.to_owned(),
            hooks_dir: hooks_dir.to_owned(),
            jobs: Arc::new(JobRunner::new(state_dir, hooks_dir)?),
        })
    }

    fn enrollment_path(&self) -> PathBuf {
        self.state_dir.join(ENROLLMENT_FILE)
    }
}

#[async_trait::async_trait]
impl RouterHost for AgentHost {
    fn identity(&self) -> RouterIdentity {
        self.identity.clone()
    }

    async fn status(&self) -> Status {
        let mut status = Status {
            firmware: Some(self.identity.firmware.clone()),
            model: Some(self.identity.model.clone()),
            uptime_secs: read_uptime(),
            ..Status::default()
        };
        if let Some((rx, tx)) = read_traffic() {
            status.rx_bytes = Some(rx);
            status.tx_bytes = Some(tx);
        }
        let hook = self.hooks_dir.join(STATUS_HOOK);
        if hook.is_file() {
            match run_status_hook(&hook).await {
                Ok(output) => apply_hook_output(&mut status, &output),
                Err(error) => tracing::warn!(%error, hook = %hook.display(), "status hook failed"),
            }
        }
        status
    }

    fn load(&self) -> Option<Enrolled> {
        let text = std::fs::read_to_string(self.enrollment_path()).ok()?;
        match serde_json::from_str(&text) {
            Ok(enrolled) => Some(enrolled),
            Err(error) => {
                tracing::error!(%error, file = %self.enrollment_path().display(), "unreadable enrollment file");
                None
            }
        }
    }

    /// Writes a new file (0600), flushes it to disk, then renames it over the old one: a crash
    /// leaves either the old credential or the new one, never half of one.
    fn save(&self, enrolled: &Enrolled) -> std::io::Result<()> {
        let path = self.enrollment_path();
        let temporary = path.with_extension("json.new");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(serde_json::to_string_pretty(enrolled)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.state_dir)?.sync_all()
    }

    fn run_job(&self, job: WireJob, reports: JobReports, downloads: Downloader) {
        self.jobs.run(job, reports, Some(downloads));
    }

    fn event(&self, event: RouterEvent) {
        match event {
            RouterEvent::Enrolled => tracing::info!(serial = %self.identity.serial, "enrolled"),
            RouterEvent::Connected => tracing::info!("connected"),
            RouterEvent::License(license) => tracing::info!(
                state = %license.state,
                reason = license.reason.as_deref().unwrap_or("-"),
                "license"
            ),
            RouterEvent::Disconnected { reason } => {
                tracing::info!(
                    reason = reason.as_deref().unwrap_or("connection ended"),
                    "disconnected"
                )
            }
            RouterEvent::Refused(error) => tracing::error!(code = %error.code, "{}", error.message),
            RouterEvent::Unreachable(reason) => tracing::warn!("{reason}"),
        }
    }
}

fn read_uptime() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(seconds as u64)
}

/// Bytes received and sent over all interfaces but loopback, from `/proc/net/dev`.
fn read_traffic() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/dev").ok()?;
    let mut total = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 9 {
            total.0 += fields[0];
            total.1 += fields[8];
        }
    }
    Some(total)
}

async fn run_status_hook(hook: &Path) -> std::io::Result<String> {
    let child = tokio::process::Command::new(hook)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(HOOK_TIMEOUT, child)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "took over 10 s"))??;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "exited with {}",
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Reads `key=value` lines; unknown keys and unparsable values are ignored.
fn apply_hook_output(status: &mut Status, output: &str) {
    for line in output.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "cellular_signal_dbm" => status.cellular_signal_dbm = value.parse().ok(),
            "wan_address" if !value.is_empty() => status.wan_address = Some(value.to_owned()),
            "rx_bytes" => status.rx_bytes = value.parse().ok().or(status.rx_bytes),
            "tx_bytes" => status.tx_bytes = value.parse().ok().or(status.tx_bytes),
            "uptime_secs" => status.uptime_secs = value.parse().ok().or(status.uptime_secs),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_output_fills_status_fields() {
        let mut status = Status {
            rx_bytes: Some(1),
            ..Status::default()
        };
        apply_hook_output(
            &mut status,
            "cellular_signal_dbm=-67\nwan_address=100.64.1.9\nnoise\nrx_bytes=oops\ncolour=blue\n",
        );
        assert_eq!(status.cellular_signal_dbm, Some(-67));
        assert_eq!(status.wan_address.as_deref(), Some("100.64.1.9"));
        assert_eq!(
            status.rx_bytes,
            Some(1),
            "an unparsable value leaves the field alone"
        );
    }

    #[test]
    fn the_credential_file_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let host =
            AgentHost::new(default_identity(), &dir.path().join("state"), dir.path()).unwrap();
        assert!(host.load().is_none());
        let enrolled = Enrolled {
            device_id: "d".into(),
            credential: "fc1.x.y".into(),
            ca_certificate: "pem".into(),
        };
        host.save(&enrolled).unwrap();
        assert_eq!(host.load(), Some(enrolled));
        let mode = std::fs::metadata(host.enrollment_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!host.enrollment_path().with_extension("json.new").exists());
    }

    #[tokio::test]
    async fn the_status_hook_is_run_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join(STATUS_HOOK);
        std::fs::write(&hook, "#!/bin/sh\necho cellular_signal_dbm=-55\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host =
            AgentHost::new(default_identity(), &dir.path().join("state"), dir.path()).unwrap();
        let status = host.status().await;
        assert_eq!(status.cellular_signal_dbm, Some(-55));
        assert!(status.uptime_secs.is_some());
    }
}
