//! The real agent and the simulator against a real server: enrollment, first-contact refusal, a
//! router clock in 1970, server restarts, and a simulated fleet. SQLite and PostgreSQL.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use floatilla_agent::agent::AgentHost;
use floatilla_agent::download::Downloader;
use floatilla_agent::jobs::JobReports;
use floatilla_agent::router::{Connections, first_contact_trust};
use floatilla_agent::simulate::{Simulator, SimulatorConfig};
use floatilla_agent::{
    Enrolled, RouterClock, RouterEvent, RouterHost, RouterIdentity, RouterSettings, run_router,
};
use floatilla_protocol::{Status, WireJob};
use floatilla_store::testing::TestDb;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

on_both_backends!(
    the_agent_enrolls_and_keeps_its_credential_private,
    the_agent_refuses_a_server_whose_ca_does_not_match_its_token,
    the_agent_connects_with_its_clock_in_1970,
    the_agent_reconnects_after_a_server_restart,
    a_simulated_fleet_connects_in_serial_order_and_comes_back_after_a_restart,
    the_agent_runs_jobs_through_its_hooks_once_each,
    the_agent_applies_artifacts_of_every_kind_through_its_hooks,
    a_simulated_fleet_runs_every_kind_of_job,
);

/// The artifact kinds with the job kind that installs each, and some content.
const ARTIFACT_JOBS: [(&str, &str, &[u8]); 4] = [
    ("firmware", "firmware_update", b"firmware image 7.4.2"),
    (
        "software",
        "software_install",
        b"container image: telemetry 1.2",
    ),
    ("config", "config_update", b"firewall { allow 22/tcp }"),
    (
        "certificates",
        "certificate_update",
        b"-----BEGIN CERTIFICATE-----",
    ),
];

/// Uploads one artifact of each kind; answers their ids in [`ARTIFACT_JOBS`] order.
async fn artifact_of_each_kind(server: &TestServer) -> Vec<String> {
    let mut ids = Vec::new();
    for (kind, _, bytes) in ARTIFACT_JOBS {
        let (status, artifact) = upload_artifact(
            server,
            &format!("kind={kind}&name={kind}&version=1"),
            bytes.to_vec(),
        )
        .await;
        assert_eq!(status, 201, "{artifact}");
        ids.push(artifact["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// The real agent host, with every event it reports kept for the test.
struct Recorded {
    host: AgentHost,
    events: Mutex<Vec<RouterEvent>>,
}

#[async_trait::async_trait]
impl RouterHost for Recorded {
    fn identity(&self) -> RouterIdentity {
        self.host.identity()
    }
    async fn status(&self) -> Status {
        self.host.status().await
    }
    fn load(&self) -> Option<Enrolled> {
        self.host.load()
    }
    fn save(&self, enrolled: &Enrolled) -> std::io::Result<()> {
        self.host.save(enrolled)
    }
    fn event(&self, event: RouterEvent) {
        self.events.lock().unwrap().push(event);
    }
    fn run_job(&self, job: WireJob, reports: JobReports, downloads: Downloader) {
        self.host.run_job(job, reports, downloads);
    }
}

struct RunningAgent {
    host: Arc<Recorded>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl RunningAgent {
    fn start(server: &TestServer, token: &str, serial: &str, clock: RouterClock) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let identity = RouterIdentity {
            serial: serial.to_owned(),
            model: "RT-1".into(),
            firmware: "2.0".into(),
        };
        let host = Arc::new(Recorded {
            host: AgentHost::new(
                identity,
                &dir.path().join("state"),
                &dir.path().join("hooks"),
            )
            .unwrap(),
            events: Mutex::new(Vec::new()),
        });
        let trust = first_contact_trust(Some(token), None).unwrap();
        let settings = RouterSettings {
            connections: Arc::new(
                Connections::new(server.address.clone(), trust.as_ref(), Arc::new(clock)).unwrap(),
            ),
            enroll_token: Some(token.to_owned()),
            local_addr: None,
            close_on_shutdown: true,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_router(host.clone(), settings, stop.clone()));
        Self {
            host,
            stop,
            task,
            dir,
        }
    }

    /// Writes an executable hook into the agent's hooks directory.
    fn hook(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let hooks = self.dir.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let path = hooks.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn events(&self) -> Vec<RouterEvent> {
        self.host.events.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&[RouterEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while !check(&self.events()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {what}: {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn count(events: &[RouterEvent], wanted: &RouterEvent) -> usize {
    events.iter().filter(|e| *e == wanted).count()
}

async fn device_by_serial(server: &TestServer, serial: &str) -> Value {
    let page = server.get(&format!("/api/v1/devices?q={serial}")).await;
    assert_eq!(page["total"], 1, "{page}");
    page["items"][0].clone()
}

async fn the_agent_enrolls_and_keeps_its_credential_private(db: TestDb) {
    let server = TestServer::start(db).await;
    let token = server.enrollment_token(json!({"name": "agents"})).await;
    let agent = RunningAgent::start(&server, &token, "AG-1", RouterClock::default());
    agent
        .wait_for("connected", |e| count(e, &RouterEvent::Connected) == 1)
        .await;
    let device = device_by_serial(&server, "AG-1").await;
    let id = device["id"].as_str().unwrap().to_owned();
    let device = server
        .wait_for_device(&id, "reported", |d| d["status"]["uptime_secs"].is_u64())
        .await;
    assert_eq!(
        (device["model"].as_str(), device["firmware"].as_str()),
        (Some("RT-1"), Some("2.0"))
    );
    assert_eq!(device["connection_state"], "online");
    let enrolled = agent.host.load().expect("credential stored");
    assert_eq!(enrolled.device_id, id);

    // Answers calls.
    let (status, body) = server
        .api(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{id}/refresh-status"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    agent.stop().await;
    server.wait_offline_with(&id, "clean_close").await;
}

async fn the_agent_refuses_a_server_whose_ca_does_not_match_its_token(db: TestDb) {
    let server = TestServer::start(db).await;
    let impostor = TestServer::start(TestDb::sqlite()).await;
    let token = server.enrollment_token(json!({"name": "agents"})).await;
    // The token of one installation, the address of another.
    let agent = RunningAgent::start(&impostor, &token, "AG-2", RouterClock::default());
    agent
        .wait_for("refusing the server", |e| {
            e.iter().any(
                |e| matches!(e, RouterEvent::Unreachable(reason) if reason.contains("fingerprint")),
            )
        })
        .await;
    assert!(agent.host.load().is_none(), "nothing was enrolled");
    assert_eq!(impostor.get("/api/v1/devices").await["total"], 0);
    agent.stop().await;
}

async fn the_agent_connects_with_its_clock_in_1970(db: TestDb) {
    let server = TestServer::start(db).await;
    let token = server.enrollment_token(json!({"name": "agents"})).await;
    let in_1970 = chrono::DateTime::UNIX_EPOCH - chrono::Utc::now();
    let agent = RunningAgent::start(
        &server,
        &token,
        "AG-1970",
        RouterClock::with_local_skew(in_1970),
    );
    agent
        .wait_for("connected", |e| count(e, &RouterEvent::Connected) == 1)
        .await;
    let device = device_by_serial(&server, "AG-1970").await;
    let detail = server
        .get(&format!(
            "/api/v1/devices/{}",
            device["id"].as_str().unwrap()
        ))
        .await;
    let skew = detail["status"]["clock_skew_secs"].as_i64().unwrap();
    assert!(
        skew < -50 * 365 * 86_400,
        "the server saw the router's clock in 1970: {skew}"
    );
    agent.stop().await;
}

async fn the_agent_reconnects_after_a_server_restart(db: TestDb) {
    let mut config = test_config();
    config.shutdown_reconnect_after_secs = 1;
    let mut server = TestServer::start_with(db, config).await;
    let token = server.enrollment_token(json!({"name": "agents"})).await;
    let agent = RunningAgent::start(&server, &token, "AG-R", RouterClock::default());
    agent
        .wait_for("connected", |e| count(e, &RouterEvent::Connected) == 1)
        .await;
    server.restart().await;
    agent
        .wait_for("reconnected", |e| count(e, &RouterEvent::Connected) == 2)
        .await;
    let events = agent.events();
    assert!(
        events.contains(&RouterEvent::Disconnected {
            reason: Some("server_shutdown".into())
        }),
        "{events:?}"
    );
    assert_eq!(
        count(&events, &RouterEvent::Enrolled),
        1,
        "the credential survived the restart"
    );
    let device = device_by_serial(&server, "AG-R").await;
    let detail = server
        .get(&format!(
            "/api/v1/devices/{}",
            device["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(detail["connection_state"], "online");
    assert_eq!(detail["connection_history"][1]["reason"], "server_shutdown");
    agent.stop().await;
}

async fn a_simulated_fleet_connects_in_serial_order_and_comes_back_after_a_restart(db: TestDb) {
    let mut config = test_config();
    config.shutdown_reconnect_after_secs = 1;
    let mut server = TestServer::start_with(db, config).await;
    let token = server.enrollment_token(json!({"name": "fleet"})).await;
    let state = tempfile::tempdir().unwrap();
    let address = server.address.clone();
    let simulate = || SimulatorConfig {
        server: address.clone(),
        enroll_token: Some(token.clone()),
        devices: 40,
        rate: 400,
        serial_prefix: "P".into(),
        state_dir: Some(state.path().to_owned()),
        job_failure_percent: 0,
        jobs_log: None,
    };

    let simulator = Simulator::start(simulate()).unwrap();
    let page = all_in_state(&server, "online", 40).await;
    let serials: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("P{i:06}")).collect();
    assert_eq!(serials, expected);
    // Enrolled in serial order: the device list by creation time matches.
    let first = device_by_serial(&server, "P000001").await;
    let last = device_by_serial(&server, "P000040").await;
    assert!(first["created_at"].as_str() <= last["created_at"].as_str());

    // The server restarts: every router comes back by itself.
    server.restart().await;
    all_in_state(&server, "online", 40).await;

    // The simulator stops as if the power went: all offline, connection lost.
    simulator.stop().await.unwrap();
    let page = all_in_state(&server, "offline", 40).await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["last_disconnect_reason"] == "connection_lost"),
        "{page}"
    );

    // Run again with the same state: the same routers, no new enrollments.
    let again = Simulator::start(simulate()).unwrap();
    all_in_state(&server, "online", 40).await;
    assert_eq!(
        again
            .counters
            .enrolled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(server.get("/api/v1/devices").await["total"], 40);
    again.stop().await.unwrap();
}

/// Waits until `count` routers are in `state`; answers that listing.
async fn all_in_state(server: &TestServer, state: &str, count: u64) -> Value {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let page = server
            .get(&format!(
                "/api/v1/devices?connection_state={state}&limit=1000"
            ))
            .await;
        if page["total"] == count {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} {state}",
            page["total"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_job(server: &TestServer, body: Value) -> String {
    let (status, job) = server
        .api(reqwest::Method::POST, "/api/v1/jobs", Some(body))
        .await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

async fn the_agent_applies_artifacts_of_every_kind_through_its_hooks(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "lab", "seats": 5})).await;
    let token = server.enrollment_token(json!({"name": "lab"})).await;
    let agent = RunningAgent::start(&server, &token, "AG-ART", RouterClock::default());
    agent
        .wait_for("connected", |e| e.contains(&RouterEvent::Connected))
        .await;
    let applied = agent.dir.path().join("applied");
    std::fs::create_dir_all(&applied).unwrap();
    for (_, kind, _) in ARTIFACT_JOBS {
        // Applies by copying the verified file; checks the digest it was told once more.
        let script = r#"#!/bin/sh
set -e
echo installing "$FLOATILLA_ARTIFACT_NAME $FLOATILLA_ARTIFACT_VERSION"
echo "$FLOATILLA_ARTIFACT_SHA256  $FLOATILLA_ARTIFACT_PATH" | sha256sum -c - >/dev/null
cp "$FLOATILLA_ARTIFACT_PATH" "APPLIED/$FLOATILLA_JOB_KIND"
"#;
        agent.hook(
            kind,
            &script.replace("APPLIED", &applied.display().to_string()),
        );
    }
    let device = device_by_serial(&server, "AG-ART").await;
    let artifacts = artifact_of_each_kind(&server).await;
    for ((_, kind, bytes), artifact) in ARTIFACT_JOBS.iter().zip(&artifacts) {
        let job = create_job(
            &server,
            json!({"kind": kind, "artifact_id": artifact, "target": {"ids": [device["id"]]},
                "expected_downtime_secs": 0}),
        )
        .await;
        counts_become(&server, &job, json!({"succeeded": 1})).await;
        assert_eq!(
            std::fs::read(applied.join(kind)).unwrap(),
            *bytes,
            "the {kind} hook applied the artifact's exact bytes"
        );
    }
    let downloads = agent.dir.path().join("state/downloads");
    assert_eq!(
        std::fs::read_dir(&downloads).unwrap().count(),
        0,
        "downloads are removed once applied"
    );
    agent.stop().await;
}

async fn the_agent_runs_jobs_through_its_hooks_once_each(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "lab", "seats": 5})).await;
    let token = server.enrollment_token(json!({"name": "lab"})).await;
    let agent = RunningAgent::start(&server, &token, "AG-JOB", RouterClock::default());
    agent
        .wait_for("connected", |e| e.contains(&RouterEvent::Connected))
        .await;
    let removed = agent.dir.path().join("removed");
    let reboots = agent.dir.path().join("reboots");
    agent.hook(
        "software_remove",
        &format!(
            "#!/bin/sh\necho installing removing\nprintf '%s' \"$FLOATILLA_JOB_PARAMS\" > {}\n",
            removed.display()
        ),
    );
    agent.hook(
        "reboot",
        &format!(
            "#!/bin/sh\necho \"$FLOATILLA_JOB_KIND $FLOATILLA_EXECUTION_ID\" >> {}\n",
            reboots.display()
        ),
    );
    let device = device_by_serial(&server, "AG-JOB").await;
    let target = json!({"ids": [device["id"]]});

    let removal = create_job(
        &server,
        json!({"kind": "software_remove", "target": target, "params": {"package": "telnetd"}}),
    )
    .await;
    counts_become(&server, &removal, json!({"succeeded": 1})).await;
    assert_eq!(
        std::fs::read_to_string(&removed).unwrap(),
        r#"{"package":"telnetd"}"#
    );

    let reboot = create_job(&server, json!({"kind": "reboot", "target": target})).await;
    counts_become(&server, &reboot, json!({"succeeded": 1})).await;
    let executions = server
        .get(&format!("/api/v1/jobs/{reboot}/executions"))
        .await;
    let execution = executions["items"][0]["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(&reboots).unwrap(),
        format!("reboot {execution}\n"),
        "the hook ran once"
    );

    // A kind without a hook fails, saying so.
    std::fs::remove_file(agent.dir.path().join("hooks/reboot")).unwrap();
    let missing = create_job(&server, json!({"kind": "reboot", "target": target})).await;
    counts_become(&server, &missing, json!({"failed": 1})).await;
    let executions = server
        .get(&format!("/api/v1/jobs/{missing}/executions"))
        .await;
    assert!(
        executions["items"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no hook for reboot jobs"),
        "{executions}"
    );
    agent.stop().await;
}

async fn a_simulated_fleet_runs_every_kind_of_job(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "fleet", "seats": 30})).await;
    let token = server.enrollment_token(json!({"name": "fleet"})).await;
    let simulator = Simulator::start(SimulatorConfig {
        server: server.address.clone(),
        enroll_token: Some(token),
        devices: 30,
        rate: 300,
        serial_prefix: "SJ".into(),
        state_dir: None,
        job_failure_percent: 0,
        jobs_log: None,
    })
    .unwrap();
    all_in_state(&server, "online", 30).await;
    server.create_group(json!({"name": "all"})).await;
    let page = server.get("/api/v1/devices?limit=100").await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let job = create_job(&server, json!({"kind": "reboot", "target": {"ids": ids}})).await;
    counts_become(&server, &job, json!({"succeeded": 30})).await;
    let removal = create_job(
        &server,
        json!({"kind": "software_remove", "target": {"ids": ids}, "params": {"package": "x"}}),
    )
    .await;
    counts_become(&server, &removal, json!({"succeeded": 30})).await;
    // Each simulated router downloads the artifact, checks its digest and applies it.
    let artifacts = artifact_of_each_kind(&server).await;
    for ((_, kind, _), artifact) in ARTIFACT_JOBS.iter().zip(&artifacts) {
        let job = create_job(
            &server,
            json!({"kind": kind, "artifact_id": artifact, "target": {"ids": ids},
                "expected_downtime_secs": 0}),
        )
        .await;
        counts_become(&server, &job, json!({"succeeded": 30})).await;
    }
    simulator.stop().await.unwrap();
}
