//! Rollouts: a job sent in phases, with concurrency, thresholds, windows, retries and late
//! joiners, over simulated fleets and hand-driven routers, on a controlled clock.

mod common;

use std::time::Duration;

use chrono::{DurationRound, Utc};
use common::*;
use floatilla_agent::simulate::{Simulator, SimulatorConfig};
use floatilla_domain::Clock;
use floatilla_protocol::{DeviceMessage, JobUpdate, JobUpdateState, WireJob};
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    a_rollout_goes_phase_by_phase_inside_its_maintenance_window,
    a_rollout_aborts_when_failures_reach_its_threshold,
    a_capacity_drop_mid_rollout_lets_installs_finish_and_holds_the_rest,
    rollouts_retry_pause_resume_take_in_late_joiners_and_cancel,
    jitter_spreads_the_start_of_a_phase_and_a_pause_lets_what_started_go,
);

const FLEET: u32 = 1000;

async fn create_rollout(server: &TestServer, body: Value) -> Value {
    let (status, rollout) = server
        .api(Method::POST, "/api/v1/rollouts", Some(body))
        .await;
    assert_eq!(status, 201, "{rollout}");
    rollout
}

/// A simulated fleet enrolled into group `site`, every router online and licensed.
async fn simulated_fleet(server: &TestServer, prefix: &str, failure_percent: u8) -> Simulator {
    add_license(server, json!({"name": "fleet", "seats": FLEET})).await;
    server.create_group(json!({"name": "site"})).await;
    let token = server
        .enrollment_token(json!({"name": "fleet", "group": "site"}))
        .await;
    let simulator = Simulator::start(SimulatorConfig {
        server: server.address.clone(),
        enroll_token: Some(token),
        devices: FLEET,
        rate: 2000,
        serial_prefix: prefix.into(),
        state_dir: None,
        job_failure_percent: failure_percent,
        jobs_log: None,
    })
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pool = server.get("/api/v1/license-pool").await;
        if pool["in_use"] == FLEET {
            return simulator;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every execution of the job (at most 1,000).
async fn executions(server: &TestServer, job: &str) -> Vec<Value> {
    server
        .get(&format!("/api/v1/jobs/{job}/executions?limit=1000"))
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn a_rollout_goes_phase_by_phase_inside_its_maintenance_window(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    // A window that opens a few minutes from now, by the server's clock.
    let now = server.clock.now();
    let opens =
        now.duration_trunc(chrono::Duration::minutes(1)).unwrap() + chrono::Duration::minutes(3);
    let closes = opens + chrono::Duration::hours(2);
    let window = format!("{}-{} UTC", opens.format("%H:%M"), closes.format("%H:%M"));
    let simulator = simulated_fleet(&server, "RW", 0).await;
    let (status, _) = server.api(Method::GET, "/api/v1/groups", None).await;
    assert_eq!(status, 200);
    let group = &server.get("/api/v1/groups").await[0];
    let (status, patched) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/groups/{}", group["id"].as_str().unwrap()),
            Some(json!({"maintenance_window": window})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["maintenance_window"], window.as_str());

    let rollout = create_rollout(
        &server,
        json!({"job": {"kind": "reboot", "target": {"group": "site"}, "expected_downtime_secs": 0},
            "phases": [{"count": 10}, {"percent": 30}], "max_concurrent": 200}),
    )
    .await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    assert_eq!(
        rollout["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["reaches"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [10, 300, 1000]
    );
    // Before the window opens nothing is sent: every router waits for it.
    let before = opens - chrono::Duration::seconds(2);
    while server.clock.now() < before {
        server.clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counts_become(&server, &id, json!({"waiting_for_window": FLEET})).await;
    let done = rollout_becomes(&server, &id, "completed").await;
    assert_eq!(done["job"]["executions"], json!({"succeeded": FLEET}));
    assert_eq!(server.events("rollout_advanced").await.len(), 2);
    assert_eq!(server.events("rollout_completed").await.len(), 1);

    // Every execution was sent in the window, and each phase only after the one before it
    // finished.
    let all = executions(&server, &id).await;
    let window_opens = opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut first_sent = [String::from("~"), String::from("~"), String::from("~")];
    let mut last_finished = [String::new(), String::new(), String::new()];
    for execution in &all {
        let phase = execution["phase"].as_u64().unwrap() as usize;
        let sent = execution["sent_at"].as_str().unwrap().to_owned();
        let finished = execution["finished_at"].as_str().unwrap().to_owned();
        assert!(sent >= window_opens, "{execution}");
        first_sent[phase] = first_sent[phase].clone().min(sent);
        last_finished[phase] = last_finished[phase].clone().max(finished);
    }
    for phase in 1..3 {
        assert!(
            first_sent[phase] >= last_finished[phase - 1],
            "phase {phase} began at {} before phase {} ended at {}",
            first_sent[phase],
            phase - 1,
            last_finished[phase - 1]
        );
    }
    simulator.stop().await.unwrap();
}

async fn a_rollout_aborts_when_failures_reach_its_threshold(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let simulator = simulated_fleet(&server, "RF", 50).await;
    let rollout = create_rollout(
        &server,
        json!({"job": {"kind": "software_remove", "target": {"group": "site"},
                "params": {"package": "legacy-vpn"}},
            "phases": [{"percent": 10}], "max_concurrent": 50,
            "failure_threshold_percent": 20}),
    )
    .await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    let aborted = rollout_becomes(&server, &id, "aborted").await;
    assert!(
        aborted["reason"]
            .as_str()
            .unwrap()
            .contains("at or above the 20 % threshold"),
        "{aborted}"
    );
    assert_eq!(server.events("rollout_aborted").await.len(), 1);
    // What was under way ran to its end; nothing more started; the rest ended cancelled.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let counts = loop {
        let job = server.get(&format!("/api/v1/jobs/{id}")).await;
        let counts = job["executions"].clone();
        let open = [
            "queued",
            "sent",
            "downloading",
            "installing",
            "waiting_for_license",
        ]
        .iter()
        .any(|state| counts.get(state).is_some());
        if !open {
            break counts;
        }
        assert!(tokio::time::Instant::now() < deadline, "{counts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let succeeded = counts["succeeded"].as_u64().unwrap_or(0);
    let failed = counts["failed"].as_u64().unwrap();
    let cancelled = counts["cancelled"].as_u64().unwrap();
    assert_eq!(succeeded + failed + cancelled, u64::from(FLEET), "{counts}");
    assert!(failed >= 2, "{counts}");
    assert!(
        succeeded + failed <= 100,
        "nothing beyond the first phase started: {counts}"
    );
    for _ in 0..5 {
        server.clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let later = server.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(
        later["executions"], counts,
        "an aborted rollout stays stopped"
    );
    simulator.stop().await.unwrap();
}

/// The next JOB message, stepping the clock so the rollout's driver ticks.
async fn next_job_ticking(server: &TestServer, router: &mut TestRouter) -> WireJob {
    for _ in 0..100 {
        server.clock.advance(chrono::Duration::seconds(1));
        if let Ok(job) = tokio::time::timeout(Duration::from_millis(100), next_job(router)).await {
            return job;
        }
    }
    panic!("no job reached the router");
}

fn report(router: &TestRouter, job: &WireJob, state: JobUpdateState) {
    router.send(DeviceMessage::JobUpdate(JobUpdate {
        execution_id: job.execution_id.clone(),
        attempt: Some(job.attempt),
        state,
        message: None,
    }));
}

async fn a_capacity_drop_mid_rollout_lets_installs_finish_and_holds_the_rest(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "base", "seats": 1})).await;
    let extra = add_license(&server, json!({"name": "extra", "seats": 5})).await;
    let mut routers = connect_fleet(&server, "CD", 6).await;
    let ids: Vec<String> = routers.iter().map(|(id, _)| id.clone()).collect();
    let rollout = create_rollout(
        &server,
        json!({"job": {"kind": "reboot", "target": {"ids": ids}, "expected_downtime_secs": 0},
            "max_concurrent": 3}),
    )
    .await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for (_, router) in routers.iter_mut().take(3) {
        let job = next_job_ticking(&server, router).await;
        report(router, &job, JobUpdateState::Installing);
        sent.push(job);
    }
    counts_become(&server, &id, json!({"installing": 3, "queued": 3})).await;

    // The capacity drops to one seat: routers 2 to 6 are shed. Routers 2 and 3 are installing
    // and finish; 4 to 6 wait for a seat.
    let (status, answer) = server
        .api(
            Method::DELETE,
            &format!(
                "/api/v1/licenses/{}?acknowledge_downgrade=true",
                extra["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert!(status < 300, "{answer}");
    counts_become(
        &server,
        &id,
        json!({"installing": 3, "waiting_for_license": 3}),
    )
    .await;
    let shed = server.get(&format!("/api/v1/devices/{}", ids[1])).await;
    assert_eq!(shed["license_state"], "excess", "{shed}");
    for ((_, router), job) in routers.iter().zip(&sent) {
        report(router, job, JobUpdateState::Succeeded);
    }
    counts_become(
        &server,
        &id,
        json!({"succeeded": 3, "waiting_for_license": 3}),
    )
    .await;
    for _ in 0..5 {
        server.clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = server.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(
        waiting["status"], "running",
        "not done while routers wait for a seat"
    );
    assert_eq!(
        waiting["job"]["executions"],
        json!({"succeeded": 3, "waiting_for_license": 3})
    );

    // A license comes back: the waiting routers get their seats and their job.
    add_license(&server, json!({"name": "renewal", "seats": 5})).await;
    for (_, router) in routers.iter_mut().skip(3) {
        let job = next_job_ticking(&server, router).await;
        report(router, &job, JobUpdateState::Succeeded);
    }
    let done = rollout_becomes(&server, &id, "completed").await;
    assert_eq!(done["job"]["executions"], json!({"succeeded": 6}));
}

async fn rollouts_retry_pause_resume_take_in_late_joiners_and_cancel(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "ten", "seats": 10})).await;
    server.create_group(json!({"name": "g"})).await;
    let token = server
        .enrollment_token(json!({"name": "g", "group": "g"}))
        .await;
    let mut routers = Vec::new();
    for serial in ["LJ-01", "LJ-02"] {
        let enrolled = server.enroll(&token, serial).await;
        routers.push(server.router(&enrolled.credential, serial).await);
    }
    let refusals = [
        (
            json!({"job": {"kind": "reboot", "target": {"group": "g"}}, "phases": [{"percent": 0}]}),
            "invalid_phases",
        ),
        (
            json!({"job": {"kind": "reboot", "target": {"group": "g"}}, "failure_threshold_percent": 0}),
            "invalid_threshold",
        ),
        (
            json!({"job": {"kind": "reboot", "target": {"ids": []}}, "follow_target": true}),
            "empty_target",
        ),
        (
            json!({"job": {"kind": "reboot", "target": {"group": "g"}}, "jitter_secs": 3601}),
            "invalid_field",
        ),
    ];
    for (request, code) in refusals {
        let (status, answer) = server
            .api(Method::POST, "/api/v1/rollouts", Some(request.clone()))
            .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{request}: {answer}"
        );
    }
    let rollout = create_rollout(
        &server,
        json!({"job": {"kind": "software_remove", "target": {"group": "g"}},
            "max_concurrent": 1, "max_retries": 1, "follow_target": true}),
    )
    .await;
    let id = rollout["id"].as_str().unwrap().to_owned();

    // The first router fails once and is tried again, as attempt 2.
    let first = next_job_ticking(&server, &mut routers[0]).await;
    assert_eq!(first.attempt, 1);
    report(&routers[0], &first, JobUpdateState::Failed);
    let retry = next_job_ticking(&server, &mut routers[0]).await;
    assert_eq!(
        (retry.execution_id.as_str(), retry.attempt),
        (first.execution_id.as_str(), 2)
    );
    let (status, paused) = server
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/pause"), None)
        .await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    report(&routers[0], &retry, JobUpdateState::Succeeded);
    counts_become(&server, &id, json!({"succeeded": 1, "queued": 1})).await;
    // Paused: the second router gets nothing.
    for _ in 0..5 {
        server.clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), next_job(&mut routers[1]))
            .await
            .is_err(),
        "nothing starts while paused"
    );
    let (status, resumed) = server
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("running")));
    let second = next_job_ticking(&server, &mut routers[1]).await;
    report(&routers[1], &second, JobUpdateState::Succeeded);

    // A router joining the group later is rolled out to as well.
    let late = server.enroll(&token, "LJ-03").await;
    let mut joiner = server.router(&late.credential, "LJ-03").await;
    let joined = next_job_ticking(&server, &mut joiner).await;
    assert_eq!(joined.job_id, id);
    report(&joiner, &joined, JobUpdateState::Succeeded);
    counts_become(&server, &id, json!({"succeeded": 3})).await;
    let following = server.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(
        following["status"], "running",
        "it keeps following the group"
    );

    let other = other_tenant_admin(&server).await;
    let (status, _) = server
        .api_as(
            &other,
            Method::POST,
            &format!("/api/v1/rollouts/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, cancelled) = server
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/cancel"), None)
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, again) = server
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("invalid_rollout_state"))
    );
    let list = server.get("/api/v1/rollouts").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    for kind in [
        "rollout_created",
        "rollout_paused",
        "rollout_resumed",
        "rollout_cancelled",
    ] {
        assert_eq!(server.events(kind).await.len(), 1, "{kind}");
    }
}

async fn jitter_spreads_the_start_of_a_phase_and_a_pause_lets_what_started_go(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "three", "seats": 3})).await;
    let mut routers = connect_fleet(&server, "JT", 3).await;
    let ids: Vec<String> = routers.iter().map(|(id, _)| id.clone()).collect();
    let start = server.clock.now();
    let rollout = create_rollout(
        &server,
        json!({"job": {"kind": "reboot", "target": {"ids": ids}, "expected_downtime_secs": 0},
            "jitter_secs": 60}),
    )
    .await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    // All three start at once, each sent after its own delay; a pause meanwhile starts nothing
    // new, but what was started still goes out.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while server.get(&format!("/api/v1/rollouts/{id}")).await["phases"][0]["in_flight"] != 3 {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = server
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/pause"), None)
        .await;
    assert_eq!(status, 200);
    for (_, router) in &mut routers {
        let job = next_job_ticking(&server, router).await;
        report(router, &job, JobUpdateState::Succeeded);
    }
    counts_become(&server, &id, json!({"succeeded": 3})).await;
    let (status, _) = server
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    assert_eq!(status, 200);
    rollout_becomes(&server, &id, "completed").await;
    let sent: Vec<chrono::DateTime<Utc>> = executions(&server, &id)
        .await
        .iter()
        .map(|e| e["sent_at"].as_str().unwrap().parse().unwrap())
        .collect();
    let latest = sent.iter().max().unwrap();
    assert!(
        *latest <= start + chrono::Duration::seconds(62),
        "within the jitter: {sent:?}"
    );
    assert!(
        *latest > start + chrono::Duration::seconds(1),
        "not all at once: {sent:?}"
    );
}
