//! Running jobs on a router through hooks: an executable named after the job's kind in the hooks
//! directory (`reboot`, `software_remove`, …), given the job in environment variables, reporting
//! progress as lines on stdout and its outcome by exit code. Each execution is recorded in the
//! state directory before it starts, so that a job sent again after a reconnect, or after the
//! agent restarted, is recognised and never applied twice.
//!
//! The hook's environment:
//!
//! | Variable | Value |
//! |---|---|
//! | `FLOATILLA_EXECUTION_ID` | this router's execution of the job |
//! | `FLOATILLA_JOB_ID` | the job |
//! | `FLOATILLA_JOB_KIND` | the kind, also the hook's name |
//! | `FLOATILLA_JOB_ATTEMPT` | 1 for the first attempt |
//! | `FLOATILLA_JOB_PARAMS` | the job's parameters, a JSON object |
//! | `FLOATILLA_ARTIFACT_PATH` | the downloaded, verified artifact (kinds that carry one) |
//! | `FLOATILLA_ARTIFACT_SHA256` | its SHA-256, checked before the hook runs |
//! | `FLOATILLA_ARTIFACT_NAME`, `FLOATILLA_ARTIFACT_VERSION` | what the operator called it |
//!
//! A job with an artifact is downloaded first (reported as `downloading`, resumed with `Range`
//! requests when the transfer breaks off), its SHA-256 checked, and deleted once the hook ends.
//!
//! A line on stdout that starts with `downloading` or `installing` reports that state (the rest
//! of the line is its message); other lines are ignored. Exit code 0 reports success, any other
//! failure (with the last line on stderr as the reason). A hook still running when the job's
//! timeout passes is killed and the execution fails.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floatilla_protocol::{JobUpdate, JobUpdateState, WireJob};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;

use crate::download::Downloader;

/// Where a router's job reports go: the router's channel sends them when it is connected.
pub type JobReports = UnboundedSender<JobUpdate>;

/// The kinds whose hook restarts the router: an execution found running after the agent
/// restarted is taken as done.
const RESTARTING_KINDS: [&str; 2] = ["reboot", "firmware_update"];

/// An execution as recorded in the state directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    kind: String,
    /// `downloading`, `running`, `succeeded` or `failed`.
    state: String,
    message: Option<String>,
}

/// Runs jobs through the hooks of one router.
#[derive(Debug)]
pub struct JobRunner {
    records_dir: PathBuf,
    downloads_dir: PathBuf,
    hooks_dir: PathBuf,
    /// Executions whose hook runs in this process now.
    running: Mutex<HashSet<String>>,
}

impl JobRunner {
    /// Keeps its records in `state_dir/jobs` and downloads in `state_dir/downloads`.
    pub fn new(state_dir: &Path, hooks_dir: &Path) -> std::io::Result<Self> {
        let records_dir = state_dir.join("jobs");
        std::fs::create_dir_all(&records_dir)?;
        let downloads_dir = state_dir.join("downloads");
        std::fs::create_dir_all(&downloads_dir)?;
        Ok(Self {
            records_dir,
            downloads_dir,
            hooks_dir: hooks_dir.to_owned(),
            running: Mutex::default(),
        })
    }

    /// Starts the job unless this attempt of the execution was seen before; either way the
    /// server hears where it stands. `downloads` fetches the job's artifact, if it has one.
    pub fn run(self: &Arc<Self>, job: WireJob, reports: JobReports, downloads: Option<Downloader>) {
        let report = |state, message: Option<String>| {
            let _ = reports.send(JobUpdate {
                execution_id: job.execution_id.clone(),
                attempt: Some(job.attempt),
                state,
                message,
            });
        };
        let valid_id = !job.execution_id.is_empty()
            && job.execution_id.len() <= 64
            && job
                .execution_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_id {
            report(
                JobUpdateState::Failed,
                Some("the execution id is not one this agent can record".into()),
            );
            return;
        }
        let key = record_key(&job);
        if self.lock().contains(&key) {
            return;
        }
        // An attempt that was still downloading when the agent stopped installed nothing: it
        // starts again (the download resumes).
        if let Some(record) = self.read(&key).filter(|r| r.state != "downloading") {
            let (state, message) = match record.state.as_str() {
                "succeeded" => (JobUpdateState::Succeeded, record.message),
                "failed" => (JobUpdateState::Failed, record.message),
                _ if RESTARTING_KINDS.contains(&record.kind.as_str()) => (
                    JobUpdateState::Succeeded,
                    Some("the router restarted as the job asked".to_owned()),
                ),
                _ => (
                    JobUpdateState::Failed,
                    Some("interrupted: the agent restarted while the hook ran".to_owned()),
                ),
            };
            self.finish(&job, state, message.clone());
            report(state, message);
            return;
        }
        let first_step = if job.artifact.is_some() {
            "downloading"
        } else {
            "running"
        };
        if let Err(error) = self.write(&key, &job.kind, first_step, None) {
            report(
                JobUpdateState::Failed,
                Some(format!("cannot record the job before running it: {error}")),
            );
            return;
        }
        self.lock().insert(key.clone());
        let runner = self.clone();
        tokio::spawn(async move {
            let (state, message) = match &job.artifact {
                None => runner.run_hook(&job, &reports, None).await,
                Some(artifact) => {
                    let _ = reports.send(JobUpdate {
                        execution_id: job.execution_id.clone(),
                        attempt: Some(job.attempt),
                        state: JobUpdateState::Downloading,
                        message: Some(format!("{} {}", artifact.name, artifact.version)),
                    });
                    let destination = runner.downloads_dir.join(format!("{key}.artifact"));
                    let fetched = match &downloads {
                        Some(downloads) => downloads
                            .fetch(artifact, &destination)
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("this router cannot download artifacts now".to_owned()),
                    };
                    match fetched {
                        Ok(path) => {
                            if let Err(error) = runner.write(&key, &job.kind, "running", None) {
                                tracing::error!(%error, "cannot record a job as running");
                            }
                            let outcome = runner.run_hook(&job, &reports, Some(&path)).await;
                            tokio::fs::remove_file(&path).await.ok();
                            outcome
                        }
                        Err(why) => (
                            JobUpdateState::Failed,
                            Some(format!("cannot download the artifact: {why}")),
                        ),
                    }
                }
            };
            runner.finish(&job, state, message.clone());
            runner.lock().remove(&key);
            let _ = reports.send(JobUpdate {
                execution_id: job.execution_id.clone(),
                attempt: Some(job.attempt),
                state,
                message,
            });
        });
    }

    async fn run_hook(
        &self,
        job: &WireJob,
        reports: &JobReports,
        artifact: Option<&Path>,
    ) -> (JobUpdateState, Option<String>) {
        let hook = self.hooks_dir.join(&job.kind);
        if job.kind.contains(['/', '.']) || !hook.is_file() {
            return (
                JobUpdateState::Failed,
                Some(format!(
                    "no hook for {} jobs ({})",
                    job.kind,
                    hook.display()
                )),
            );
        }
        let mut command = tokio::process::Command::new(&hook);
        if let (Some(path), Some(artifact)) = (artifact, &job.artifact) {
            command
                .env("FLOATILLA_ARTIFACT_PATH", path)
                .env("FLOATILLA_ARTIFACT_SHA256", &artifact.sha256)
                .env("FLOATILLA_ARTIFACT_NAME", &artifact.name)
                .env("FLOATILLA_ARTIFACT_VERSION", &artifact.version);
        }
        let child = command
            .env("FLOATILLA_EXECUTION_ID", &job.execution_id)
            .env("FLOATILLA_JOB_ID", &job.job_id)
            .env("FLOATILLA_JOB_KIND", &job.kind)
            .env("FLOATILLA_JOB_ATTEMPT", job.attempt.to_string())
            .env("FLOATILLA_JOB_PARAMS", job.params.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                return (
                    JobUpdateState::Failed,
                    Some(format!("cannot run {}: {error}", hook.display())),
                );
            }
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let progress = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(update) = progress_line(job, &line) {
                    let _ = reports.send(update);
                }
            }
        };
        let last_error = async {
            let mut lines = BufReader::new(stderr).lines();
            let mut last = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.trim().is_empty() {
                    last = Some(line);
                }
            }
            last
        };
        let limit = Duration::from_secs(job.timeout_secs.into());
        let ran = tokio::time::timeout(limit, async {
            let ((), last_error, status) = tokio::join!(progress, last_error, child.wait());
            (last_error, status)
        })
        .await;
        match ran {
            Err(_) => {
                let _ = child.kill().await;
                (
                    JobUpdateState::Failed,
                    Some(format!(
                        "the {} hook ran longer than the job's {} s timeout and was stopped",
                        job.kind, job.timeout_secs
                    )),
                )
            }
            Ok((_, Ok(status))) if status.success() => (JobUpdateState::Succeeded, None),
            Ok((last_error, Ok(status))) => {
                let code = status
                    .code()
                    .map_or_else(|| "a signal".to_owned(), |c| format!("code {c}"));
                let reason = match last_error {
                    Some(line) => format!("the {} hook exited with {code}: {line}", job.kind),
                    None => format!("the {} hook exited with {code}", job.kind),
                };
                (JobUpdateState::Failed, Some(reason))
            }
            Ok((_, Err(error))) => (
                JobUpdateState::Failed,
                Some(format!("cannot wait for the {} hook: {error}", job.kind)),
            ),
        }
    }

    fn finish(&self, job: &WireJob, state: JobUpdateState, message: Option<String>) {
        let state = match state {
            JobUpdateState::Succeeded => "succeeded",
            _ => "failed",
        };
        if let Err(error) = self.write(&record_key(job), &job.kind, state, message) {
            tracing::error!(%error, execution = %job.execution_id, "cannot record a job's outcome");
        }
    }

    fn path(&self, execution: &str) -> PathBuf {
        self.records_dir.join(format!("{execution}.json"))
    }

    fn read(&self, execution: &str) -> Option<Record> {
        let text = std::fs::read_to_string(self.path(execution)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the record whole (a new file renamed over the old one, flushed to disk).
    fn write(
        &self,
        execution: &str,
        kind: &str,
        state: &str,
        message: Option<String>,
    ) -> std::io::Result<()> {
        let record = Record {
            kind: kind.to_owned(),
            state: state.to_owned(),
            message,
        };
        let path = self.path(execution);
        let temporary = path.with_extension("json.new");
        std::fs::write(&temporary, serde_json::to_vec(&record)?)?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, &path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an attempt of an execution is recorded under: a retry is a new attempt, run anew.
pub(crate) fn record_key(job: &WireJob) -> String {
    format!("{}-attempt-{}", job.execution_id, job.attempt)
}

/// A hook's stdout line as a progress report, if it is one.
fn progress_line(job: &WireJob, line: &str) -> Option<JobUpdate> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let state = match word {
        "downloading" => JobUpdateState::Downloading,
        "installing" => JobUpdateState::Installing,
        _ => return None,
    };
    let rest = rest.trim();
    Some(JobUpdate {
        execution_id: job.execution_id.clone(),
        attempt: Some(job.attempt),
        state,
        message: (!rest.is_empty()).then(|| rest.chars().take(1000).collect()),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn job(kind: &str, timeout_secs: u32) -> WireJob {
        WireJob {
            execution_id: uuid_like(),
            job_id: "job-1".into(),
            kind: kind.into(),
            params: serde_json::json!({"file": "settings.conf"}),
            attempt: 1,
            timeout_secs,
            expected_downtime_secs: 0,
            artifact: None,
        }
    }

    fn uuid_like() -> String {
        format!("0193-{}", rand::random::<u32>())
    }

    fn hook(dir: &Path, kind: &str, script: &str) {
        let path = dir.join(kind);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    async fn reports_until_the_end(
        receiver: &mut tokio::sync::mpsc::UnboundedReceiver<JobUpdate>,
    ) -> Vec<JobUpdate> {
        let mut seen = Vec::new();
        loop {
            let update = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
                .await
                .expect("a report in time")
                .expect("the channel stays open");
            let last = matches!(
                update.state,
                JobUpdateState::Succeeded | JobUpdateState::Failed
            );
            seen.push(update);
            if last {
                return seen;
            }
        }
    }

    #[tokio::test]
    async fn a_hook_reports_progress_and_success_and_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let effect = dir.path().join("effect");
        hook(
            &hooks,
            "software_remove",
            &format!(
                "#!/bin/sh\necho installing removing\necho \"$FLOATILLA_JOB_PARAMS $FLOATILLA_JOB_ATTEMPT\" >> {}\n",
                effect.display()
            ),
        );
        let runner = Arc::new(JobRunner::new(&dir.path().join("state"), &hooks).unwrap());
        let (reports, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let sent = job("software_remove", 30);
        runner.run(sent.clone(), reports.clone(), None);
        let seen = reports_until_the_end(&mut receiver).await;
        let states: Vec<JobUpdateState> = seen.iter().map(|u| u.state).collect();
        assert_eq!(
            states,
            [JobUpdateState::Installing, JobUpdateState::Succeeded]
        );
        assert_eq!(seen[0].message.as_deref(), Some("removing"));

        // Sent again (a reconnect): recognised, reported, not run again.
        runner.run(sent, reports, None);
        let again = reports_until_the_end(&mut receiver).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].state, JobUpdateState::Succeeded);
        let effect = std::fs::read_to_string(&effect).unwrap();
        assert_eq!(
            effect, "{\"file\":\"settings.conf\"} 1\n",
            "applied exactly once"
        );
    }

    #[tokio::test]
    async fn failures_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        hook(
            &hooks,
            "software_remove",
            "#!/bin/sh\necho 'package not installed' >&2\nexit 3\n",
        );
        hook(&hooks, "reboot", "#!/bin/sh\nsleep 5\n");
        let runner = Arc::new(JobRunner::new(&dir.path().join("state"), &hooks).unwrap());
        let (reports, mut receiver) = tokio::sync::mpsc::unbounded_channel();

        runner.run(job("software_remove", 30), reports.clone(), None);
        let failed = reports_until_the_end(&mut receiver).await;
        assert_eq!(
            failed.last().unwrap().message.as_deref(),
            Some("the software_remove hook exited with code 3: package not installed")
        );
        runner.run(job("certificate_update", 30), reports.clone(), None);
        let missing = reports_until_the_end(&mut receiver).await;
        assert!(
            missing[0]
                .message
                .as_deref()
                .unwrap()
                .starts_with("no hook for certificate_update jobs"),
            "{missing:?}"
        );
        runner.run(job("reboot", 1), reports, None);
        let slow = reports_until_the_end(&mut receiver).await;
        assert!(
            slow[0]
                .message
                .as_deref()
                .unwrap()
                .contains("longer than the job's 1 s timeout"),
            "{slow:?}"
        );
    }

    #[tokio::test]
    async fn an_execution_found_running_after_a_restart_is_judged_by_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let hooks = dir.path().join("hooks");
        let before = JobRunner::new(&state, &hooks).unwrap();
        let reboot = job("reboot", 30);
        let removal = job("software_remove", 30);
        before
            .write(&record_key(&reboot), "reboot", "running", None)
            .unwrap();
        before
            .write(&record_key(&removal), "software_remove", "running", None)
            .unwrap();

        let after = Arc::new(JobRunner::new(&state, &hooks).unwrap());
        let (reports, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        after.run(reboot, reports.clone(), None);
        let rebooted = reports_until_the_end(&mut receiver).await;
        assert_eq!(rebooted[0].state, JobUpdateState::Succeeded);
        after.run(removal, reports, None);
        let interrupted = reports_until_the_end(&mut receiver).await;
        assert_eq!(interrupted[0].state, JobUpdateState::Failed);
    }

    #[tokio::test]
    async fn an_attempt_stopped_while_downloading_starts_again_rather_than_counting_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let runner = Arc::new(JobRunner::new(&state, &dir.path().join("hooks")).unwrap());
        let mut firmware = job("firmware_update", 30);
        firmware.artifact = Some(floatilla_protocol::WireArtifact {
            path: "/device/v1/executions/x/artifact".into(),
            name: "mrx".into(),
            version: "5.3.0".into(),
            size: 10,
            sha256: "00".repeat(32),
        });
        runner
            .write(
                &record_key(&firmware),
                "firmware_update",
                "downloading",
                None,
            )
            .unwrap();
        let (reports, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        runner.run(firmware, reports, None);
        let seen = reports_until_the_end(&mut receiver).await;
        let states: Vec<JobUpdateState> = seen.iter().map(|u| u.state).collect();
        assert_eq!(
            states,
            [JobUpdateState::Downloading, JobUpdateState::Failed],
            "downloaded again (here impossible), not taken as installed: {seen:?}"
        );
    }

    #[test]
    fn only_state_words_are_progress() {
        let job = job("reboot", 30);
        let update = progress_line(&job, "downloading 40%").unwrap();
        assert_eq!(
            (update.state, update.message.as_deref()),
            (JobUpdateState::Downloading, Some("40%"))
        );
        assert_eq!(progress_line(&job, "installing").unwrap().message, None);
        assert!(progress_line(&job, "hello").is_none());
    }
}
