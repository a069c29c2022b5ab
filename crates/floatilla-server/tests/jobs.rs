//! Jobs through the API, and the licenses that decide who takes part: a group's routers without
//! a seat wait for one, a job naming an excess or unmanaged router is refused as a whole, a job
//! past its expiry ends what still waits, and cancelling ends what was not sent.

mod common;

use chrono::Duration;
use common::*;
use floatilla_domain::{Clock, Role};
use floatilla_protocol::{DeviceMessage, JobUpdate, JobUpdateState, WireJob};
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    a_job_reaches_licensed_routers_and_follows_their_reports,
    a_job_in_flight_is_sent_again_after_a_reconnect,
    a_router_restarting_for_a_job_keeps_its_seat_through_the_declared_downtime,
    a_group_job_waits_where_a_router_has_no_seat,
    a_job_naming_an_excess_or_unmanaged_router_is_refused_whole,
    a_job_past_its_expiry_ends_what_still_waits,
    jobs_are_checked_cancelled_and_kept_to_their_tenant,
);

async fn create_job(server: &TestServer, body: Value) -> (u16, Value) {
    server.api(Method::POST, "/api/v1/jobs", Some(body)).await
}

/// The states of the job's executions by router id.
async fn execution_states(server: &TestServer, job: &str) -> Vec<(String, String)> {
    let list = server.get(&format!("/api/v1/jobs/{job}/executions")).await;
    let mut states: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

fn report(router: &TestRouter, job: &WireJob, state: JobUpdateState, message: Option<&str>) {
    router.send(DeviceMessage::JobUpdate(JobUpdate {
        execution_id: job.execution_id.clone(),
        attempt: Some(job.attempt),
        state,
        message: message.map(str::to_owned),
    }));
}

async fn a_job_reaches_licensed_routers_and_follows_their_reports(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "two", "seats": 2})).await;
    let mut routers = connect_fleet(&server, "JR", 3).await;
    tag_all(&server, &routers).await;
    let (status, job) = create_job(
        &server,
        json!({"kind": "reboot", "target": {"tag": "line-1"}, "params": {"delay_secs": 5}}),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    let first = next_job(&mut routers[0].1).await;
    assert_eq!((first.kind.as_str(), first.attempt), ("reboot", 1));
    assert_eq!(first.params, json!({"delay_secs": 5}));
    assert_eq!(
        (first.job_id.as_str(), first.expected_downtime_secs),
        (id.as_str(), 300)
    );
    let second = next_job(&mut routers[1].1).await;
    counts_become(&server, &id, json!({"sent": 2, "waiting_for_license": 1})).await;

    report(
        &routers[0].1,
        &first,
        JobUpdateState::Installing,
        Some("rebooting"),
    );
    report(&routers[0].1, &first, JobUpdateState::Succeeded, None);
    report(
        &routers[1].1,
        &second,
        JobUpdateState::Failed,
        Some("hook exited with 3"),
    );
    counts_become(
        &server,
        &id,
        json!({"succeeded": 1, "failed": 1, "waiting_for_license": 1}),
    )
    .await;
    // A repeated report after the end changes nothing.
    report(&routers[1].1, &second, JobUpdateState::Succeeded, None);
    let executions = server.get(&format!("/api/v1/jobs/{id}/executions")).await;
    let failed = executions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == second.execution_id.as_str())
        .unwrap();
    assert_eq!(failed["reason"], "hook exited with 3");

    // The excess router gets its seat when a license is added, and its job with it.
    add_license(&server, json!({"name": "one more", "seats": 1})).await;
    let third = next_job(&mut routers[2].1).await;
    report(&routers[2].1, &third, JobUpdateState::Succeeded, None);
    counts_become(&server, &id, json!({"succeeded": 2, "failed": 1})).await;
}

async fn a_job_in_flight_is_sent_again_after_a_reconnect(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "one", "seats": 1})).await;
    let enrolled = server.enrolled("JRC-1").await;
    let mut router = server.router(&enrolled.credential, "JRC-1").await;
    let (status, job) = create_job(
        &server,
        json!({"kind": "reboot", "target": {"ids": [enrolled.device_id]}}),
    )
    .await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().unwrap().to_owned();
    let sent = next_job(&mut router).await;
    report(&router, &sent, JobUpdateState::Installing, None);
    counts_become(&server, &id, json!({"installing": 1})).await;
    router.close().await;

    let mut again = server.router(&enrolled.credential, "JRC-1").await;
    let resent = next_job(&mut again).await;
    assert_eq!(
        resent.execution_id, sent.execution_id,
        "the same execution, recognisable"
    );
    report(&again, &resent, JobUpdateState::Succeeded, None);
    counts_become(&server, &id, json!({"succeeded": 1})).await;
}

/// Waits until the router's license state is `expected`.
async fn license_state_becomes(server: &TestServer, device: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let router = server.get(&format!("/api/v1/devices/{device}")).await;
        if router["license_state"] == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{device} is {}, not {expected}",
            router["license_state"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_router_restarting_for_a_job_keeps_its_seat_through_the_declared_downtime(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "one", "seats": 1})).await;
    let mut routers = connect_fleet(&server, "JD", 2).await;
    let (restarting, waiting) = (routers[0].0.clone(), routers[1].0.clone());
    license_state_becomes(&server, &waiting, "excess").await;
    let (status, _) = create_job(
        &server,
        json!({"kind": "reboot", "target": {"ids": [restarting]}, "expected_downtime_secs": 1800}),
    )
    .await;
    assert_eq!(status, 201);
    let (_, mut router) = routers.remove(0);
    let job = next_job(&mut router).await;
    report(&router, &job, JobUpdateState::Installing, Some("rebooting"));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    router.vanish();
    server
        .wait_offline_with(&restarting, "connection_lost")
        .await;

    // Past the pool's 10-minute linger, within the 30 minutes the job declared: the seat waits.
    advance_minutes(&server, 20).await;
    for _ in 0..20 {
        let router = server.get(&format!("/api/v1/devices/{waiting}")).await;
        assert_eq!(router["license_state"], "excess", "the seat was given away");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Past the declared downtime the seat goes to the next in line.
    advance_minutes(&server, 11).await;
    license_state_becomes(&server, &waiting, "licensed").await;
}

/// Moves the clock on in 20-second steps, each shorter than what the server takes for an
/// outage, so that the time counts against lingers.
async fn advance_minutes(server: &TestServer, minutes: u32) {
    for _ in 0..minutes * 3 {
        server.clock.advance(chrono::Duration::seconds(20));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Tags every router `line-1`.
async fn tag_all(server: &TestServer, routers: &[(String, TestRouter)]) {
    let ids: Vec<&str> = routers.iter().map(|(id, _)| id.as_str()).collect();
    let (status, _) = server
        .api(
            Method::POST,
            "/api/v1/devices/tags",
            Some(json!({"ids": ids, "add": ["line-1"]})),
        )
        .await;
    assert_eq!(status, 200);
}

async fn a_group_job_waits_where_a_router_has_no_seat(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "two", "seats": 2})).await;
    server.create_group(json!({"name": "depot"})).await;
    let routers = connect_fleet(&server, "JG", 3).await;
    for (id, _) in &routers {
        let (status, _) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/devices/{id}"),
                Some(json!({"group": "depot"})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, job) = create_job(
        &server,
        json!({"kind": "software_remove", "target": {"group": "depot"}, "params": {"package": "telnetd"}}),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["kind"], "software_remove");
    assert_eq!(job["params"], json!({"package": "telnetd"}));
    assert_eq!(job["timeout_secs"], 1800);
    assert_eq!(job["expected_downtime_secs"], 0);
    assert_eq!(
        job["executions"]["waiting_for_license"], 1,
        "the third router is excess: {job}"
    );
    let id = job["id"].as_str().unwrap();
    let states = execution_states(&server, id).await;
    let excess = &routers[2].0;
    assert_eq!(
        states
            .iter()
            .find(|(device, _)| device == excess)
            .unwrap()
            .1,
        "waiting_for_license"
    );
    let mine = server
        .get(&format!("/api/v1/devices/{excess}/executions"))
        .await;
    assert_eq!(mine[0]["job_id"], id);
    assert_eq!(server.get("/api/v1/jobs").await["items"][0]["id"], id);
}

async fn a_job_naming_an_excess_or_unmanaged_router_is_refused_whole(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "two", "seats": 2})).await;
    let routers = connect_fleet(&server, "JX", 3).await;
    let offline = server.enrolled("JX-OFF").await;
    let ids: Vec<&str> = routers.iter().map(|(id, _)| id.as_str()).collect();
    let (status, refused) =
        create_job(&server, json!({"kind": "reboot", "target": {"ids": ids}})).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "device_not_licensed");
    assert_eq!(refused["routers"].as_array().unwrap().len(), 1);
    assert_eq!(refused["routers"][0]["serial"], "JX-03");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("renew or add licenses, or unmanage other routers"),
        "{refused}"
    );
    assert!(
        server.get("/api/v1/jobs").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Unmanaging a licensed router hands its seat to the excess one; the unmanaged one is now
    // the one refused.
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", ids[0]),
            Some(json!({"managed": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, refused) =
        create_job(&server, json!({"kind": "reboot", "target": {"ids": ids}})).await;
    assert_eq!(status, 409);
    assert_eq!(refused["routers"][0]["serial"], "JX-01");

    // Licensed routers, and one that is merely offline, are fine.
    let (status, job) = create_job(
        &server,
        json!({"kind": "reboot", "target": {"ids": [ids[1], ids[2], offline.device_id]}}),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        job["expected_downtime_secs"], 300,
        "a reboot's default downtime"
    );
    assert_eq!(job["executions"]["waiting_for_license"], 1, "{job}");
}

async fn a_job_past_its_expiry_ends_what_still_waits(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let offline = server.enrolled("JE-1").await;
    let expires = server.clock.now() + Duration::hours(1);
    let (status, job) = create_job(
        &server,
        json!({"kind": "reboot", "target": {"ids": [offline.device_id]}, "expires_at": expires}),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        execution_states(&server, id).await[0].1,
        "waiting_for_license"
    );
    server
        .clock
        .advance(Duration::hours(1) - Duration::seconds(1));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        execution_states(&server, id).await[0].1,
        "waiting_for_license"
    );
    server.clock.advance(Duration::seconds(6));
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let job = server.get(&format!("/api/v1/jobs/{id}")).await;
        if job["executions"] == json!({"expired": 1}) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let executions = server.get(&format!("/api/v1/jobs/{id}/executions")).await;
    let execution = &executions["items"][0];
    assert!(execution["reason"].as_str().unwrap().contains("expired"));
    assert!(execution["finished_at"].is_string());
}

async fn jobs_are_checked_cancelled_and_kept_to_their_tenant(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let router = server.enrolled("JC-1").await;
    let target = json!({"ids": [router.device_id]});
    for (body, code) in [
        (json!({"kind": "upgrade", "target": target}), "invalid_kind"),
        (
            json!({"kind": "firmware_update", "target": target}),
            "artifact_required",
        ),
        (
            json!({"kind": "reboot", "target": target, "params": [1]}),
            "invalid_params",
        ),
        (
            json!({"kind": "reboot", "target": target, "timeout_secs": 0}),
            "invalid_field",
        ),
        (json!({"kind": "reboot", "target": {}}), "invalid_target"),
        (
            json!({"kind": "reboot", "target": {"tag": "nobody"}}),
            "empty_target",
        ),
    ] {
        let (status, refused) = create_job(&server, body).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some(code)),
            "{refused}"
        );
    }
    let (status, job) = create_job(&server, json!({"kind": "reboot", "target": target})).await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().unwrap();

    let tenant = server.running().installation().on_prem_tenant.unwrap();
    let viewer =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Viewer).await;
    let (status, _) = server
        .api_as(
            &viewer,
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"kind": "reboot", "target": target})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .api_as(
            &viewer,
            Method::POST,
            &format!("/api/v1/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .api_as(&viewer, Method::GET, &format!("/api/v1/jobs/{id}"), None)
        .await;
    assert_eq!(status, 200);

    let stranger = other_tenant_admin(&server).await;
    for path in [
        format!("/api/v1/jobs/{id}"),
        format!("/api/v1/jobs/{id}/executions"),
        format!("/api/v1/devices/{}/executions", router.device_id),
    ] {
        let (status, _) = server.api_as(&stranger, Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = server
        .api_as(
            &stranger,
            Method::POST,
            &format!("/api/v1/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api_as(
            &stranger,
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"kind": "reboot", "target": target})),
        )
        .await;
    assert_eq!(
        status, 404,
        "another tenant's router is answered as missing"
    );

    let (status, cancelled) = server
        .api(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!((status, &cancelled["cancelled"]), (200, &json!(1)));
    let job = server.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["executions"], json!({"cancelled": 1}));
    assert!(job["cancelled_at"].is_string());
    let created = server.events("job_created").await;
    assert_eq!(created.len(), 1);
    assert!(
        created[0]["message"]
            .as_str()
            .unwrap()
            .contains("created a reboot job for 1 routers"),
        "{created:?}"
    );
    assert_eq!(server.events("job_cancelled").await.len(), 1);

    // Many jobs' status at once; another tenant's and unknown ids are left out.
    let (status, other) = create_job(&server, json!({"kind": "reboot", "target": target})).await;
    assert_eq!(status, 201);
    let ids = json!({"ids": [id, other["id"], floatilla_domain::JobId::new().to_string()]});
    let (status, statuses) = server
        .api(Method::POST, "/api/v1/jobs/status", Some(ids.clone()))
        .await;
    assert_eq!(status, 200, "{statuses}");
    let listed: Vec<&Value> = statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["executions"])
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], &json!({"cancelled": 1}));
    let (status, seen) = server
        .api_as(&stranger, Method::POST, "/api/v1/jobs/status", Some(ids))
        .await;
    assert_eq!((status, seen), (200, json!([])));
    let too_many: Vec<String> = (0..1001)
        .map(|_| floatilla_domain::JobId::new().to_string())
        .collect();
    let (status, refused) = server
        .api(
            Method::POST,
            "/api/v1/jobs/status",
            Some(json!({"ids": too_many})),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("too_many_jobs"))
    );
}
