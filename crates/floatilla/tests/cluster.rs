//! Two `floatilla serve` processes on one PostgreSQL database, as an installation behind a load
//! balancer runs them: a router may enroll on one node and connect to the other, a newer
//! connection on one node ends the older one on the other, tokens made on one node work on the
//! other, an operator's call reaches the router whichever node holds it, and a tenant the provider
//! suspends on one node is refused on the other at once, and a job or rollout created on one node
//! reaches a router connected to the other at once.
//!
//! Without a reachable PostgreSQL these tests return early after a notice (in CI they fail).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{A, B, Cluster, NODE_IDS};
use floatilla_agent::connection::{ChannelStream, recv_message, send_message};
use floatilla_protocol::{CallResult, DeviceMessage, ServerMessage, Status};
use reqwest::Method;
use serde_json::{Value, json};

/// How long a test waits for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(10);

/// How soon a router on one node hears that a newer connection on another node replaced it: a
/// notification between nodes, far sooner than a node's 10-second heartbeat.
const SUPERSEDE_WITHIN: Duration = Duration::from_secs(5);

impl Cluster {
    /// Polls the router on `node`'s API until `check` holds.
    async fn wait_for_device(
        &self,
        node: usize,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let (status, device) = self
                .api(node, Method::GET, &format!("/api/v1/devices/{id}"), None)
                .await;
            assert_eq!(status, 200, "{device}");
            if check(&device) {
                return device;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s API never showed the router {what}: {device:#}",
                NODE_IDS[node]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The entries of a router's connection history that are still open.
fn open_sessions(device: &Value) -> Vec<&Value> {
    device["connection_history"]
        .as_array()
        .expect("connection_history")
        .iter()
        .filter(|c| c["disconnected_at"].is_null())
        .collect()
}

/// Whether the router is online with exactly one open session, that session on `node`.
fn online_on(device: &Value, node: usize, session_id: &str) -> bool {
    let open = open_sessions(device);
    device["connection_state"] == "online"
        && open.len() == 1
        && open[0]["node_id"] == NODE_IDS[node]
        && open[0]["session_id"] == session_id
}

/// A router that answers `report_status` calls until its connection ends; the task yields the
/// other messages the server sent, in order.
fn answer_calls(mut stream: ChannelStream) -> tokio::task::JoinHandle<Vec<ServerMessage>> {
    tokio::spawn(async move {
        let mut others = Vec::new();
        while let Ok(Some(message)) = recv_message(&mut stream).await {
            match message {
                ServerMessage::Call {
                    call_id, method, ..
                } if method == "report_status" => {
                    let status = Status {
                        uptime_secs: Some(4242),
                        cellular_signal_dbm: Some(-71),
                        wan_address: Some("198.51.100.7".into()),
                        ..Status::default()
                    };
                    let answer = DeviceMessage::Result(CallResult {
                        call_id,
                        ok: true,
                        result: Some(serde_json::to_value(status).unwrap()),
                        error: None,
                    });
                    if send_message(&mut stream, &answer).await.is_err() {
                        break;
                    }
                }
                other => others.push(other),
            }
        }
        others
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_enrolled_on_one_node_connects_to_the_other_and_both_show_it_online() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let token = cluster.enrollment_token(A, "line 3").await;
    let enrolled = cluster.enroll(A, &token, "MRX5-00001").await;
    let channel = cluster.connect(B, &enrolled, "MRX5-00001").await;
    assert_eq!(channel.welcome.device_id, enrolled.device_id);

    let session = channel.welcome.session_id.as_str();
    for node in [A, B] {
        let device = cluster
            .wait_for_device(node, &enrolled.device_id, "online on node B", |d| {
                online_on(d, B, session)
            })
            .await;
        assert_eq!(device["serial"], "MRX5-00001");
    }
    let (status, online) = cluster
        .api(
            A,
            Method::GET,
            "/api/v1/devices?connection_state=online",
            None,
        )
        .await;
    assert_eq!(status, 200, "{online}");
    assert_eq!(online["total"], 1, "{online}");
    assert_eq!(online["items"][0]["id"], enrolled.device_id.as_str());
    drop(channel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_another_node_supersedes_the_older_one_promptly() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let token = cluster.enrollment_token(A, "line 3").await;
    let enrolled = cluster.enroll(A, &token, "MRX5-00002").await;
    let mut older = cluster.connect(A, &enrolled, "MRX5-00002").await;
    let older_session = older.welcome.session_id.clone();
    cluster
        .wait_for_device(A, &enrolled.device_id, "online on node A", |d| {
            online_on(d, A, &older_session)
        })
        .await;

    let newer = cluster.connect(B, &enrolled, "MRX5-00002").await;
    let connected = Instant::now();
    let told = tokio::time::timeout(SUPERSEDE_WITHIN, recv_message(&mut older.stream))
        .await
        .unwrap_or_else(|_| {
            panic!("node A did not tell the older connection within {SUPERSEDE_WITHIN:?}")
        })
        .expect("readable message");
    match told {
        Some(ServerMessage::Disconnect { reason, .. }) => assert_eq!(reason, "superseded"),
        other => panic!("expected DISCONNECT superseded, got {other:?}"),
    }
    let took = connected.elapsed();

    let newer_session = newer.welcome.session_id.as_str();
    for node in [A, B] {
        let device = cluster
            .wait_for_device(node, &enrolled.device_id, "online on node B only", |d| {
                online_on(d, B, newer_session)
            })
            .await;
        let history = device["connection_history"].as_array().unwrap();
        let ended = history
            .iter()
            .find(|c| c["session_id"] == older_session.as_str())
            .unwrap_or_else(|| panic!("the older session is in the history: {device:#}"));
        assert_eq!(ended["node_id"], NODE_IDS[A], "{device:#}");
        assert_eq!(ended["reason"], "superseded", "{device:#}");
        assert!(!ended["disconnected_at"].is_null(), "{device:#}");
    }
    assert!(took < SUPERSEDE_WITHIN, "took {took:?}");
    drop(newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_created_through_one_node_work_on_the_other() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let (status, created) = cluster
        .api(
            A,
            Method::POST,
            "/api/v1/api-tokens",
            Some(json!({"name": "dashboard", "role": "operator"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let operator = created["token"].as_str().expect("the token's text");
    let (status, devices) = cluster
        .api_as(B, operator, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!((status, &devices["total"]), (200, &json!(0)), "{devices}");

    let token = cluster.enrollment_token(A, "line 4").await;
    let enrolled = cluster.enroll(B, &token, "MRX5-00003").await;
    let (status, device) = cluster
        .api_as(
            A,
            operator,
            Method::GET,
            &format!("/api/v1/devices/{}", enrolled.device_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["serial"], "MRX5-00003");
    let (status, tokens) = cluster
        .api(A, Method::GET, "/api/v1/enrollment-tokens", None)
        .await;
    assert_eq!(status, 200, "{tokens}");
    let used = tokens
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == "line 4"))
        .unwrap_or_else(|| panic!("the token is listed: {tokens:#}"));
    assert_eq!(used["uses"], 1, "the enrollment on B counted: {used:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_one_node_reaches_the_router_on_the_other() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let token = cluster.enrollment_token(A, "line 5").await;
    let enrolled = cluster.enroll(A, &token, "MRX5-00004").await;
    let channel = cluster.connect(B, &enrolled, "MRX5-00004").await;
    let session = channel.welcome.session_id.clone();
    let router = answer_calls(channel.stream);
    cluster
        .wait_for_device(A, &enrolled.device_id, "online on node B", |d| {
            online_on(d, B, &session)
        })
        .await;

    let (status, reported) = cluster
        .api(
            A,
            Method::POST,
            &format!("/api/v1/devices/{}/refresh-status", enrolled.device_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reported}");
    assert_eq!(reported["uptime_secs"], 4242, "{reported}");
    assert_eq!(reported["cellular_signal_dbm"], -71, "{reported}");
    assert_eq!(reported["wan_address"], "198.51.100.7", "{reported}");

    // Recorded in the database, so the other node shows it too.
    let device = cluster
        .wait_for_device(B, &enrolled.device_id, "with the reported status", |d| {
            d["status"]["uptime_secs"] == 4242
        })
        .await;
    assert_eq!(device["status"]["wan_address"], "198.51.100.7");
    assert!(!router.is_finished(), "the router is still connected");
    router.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_suspended_on_one_node_is_refused_on_the_other_at_once() {
    let Some(cluster) = Cluster::start(&["--mode", "cloud"]).await else {
        return;
    };
    let (status, tenant) = cluster
        .api(
            A,
            Method::POST,
            "/api/v1/provider/tenants",
            Some(json!({"name": "Harbour"})),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap();
    let tenant_admin = common::cluster::admin(
        &cluster.database_url,
        &["create-token", "--role", "admin", "--tenant", tenant_id],
    )
    .trim()
    .to_owned();
    let (status, token) = cluster
        .api_as(
            B,
            &tenant_admin,
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(json!({"name": "field"})),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    let enrolled = cluster
        .enroll(B, token["token"].as_str().unwrap(), "HB-1")
        .await;
    let mut router = cluster.connect(B, &enrolled, "HB-1").await;

    let suspend = format!("/api/v1/provider/tenants/{tenant_id}/suspend");
    let (status, _) = cluster.api(A, Method::POST, &suspend, None).await;
    assert_eq!(status, 200);
    let suspended = Instant::now();
    let told = tokio::time::timeout(SUPERSEDE_WITHIN, recv_message(&mut router.stream))
        .await
        .expect("node B tells the router promptly")
        .expect("readable message");
    match told {
        Some(ServerMessage::Disconnect { reason, .. }) => assert_eq!(reason, "tenant_suspended"),
        other => panic!("expected DISCONNECT tenant_suspended, got {other:?}"),
    }
    assert!(suspended.elapsed() < SUPERSEDE_WITHIN);
    let (status, refused) = cluster
        .api_as(B, &tenant_admin, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("tenant_suspended"))
    );

    let resume = format!("/api/v1/provider/tenants/{tenant_id}/resume");
    let (status, _) = cluster.api(A, Method::POST, &resume, None).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let (status, _) = cluster
            .api_as(B, &tenant_admin, Method::GET, "/api/v1/devices", None)
            .await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B still refuses the resumed tenant"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _router = cluster.connect(B, &enrolled, "HB-1").await;
}

/// The next JOB message on the channel, answering pings meanwhile.
async fn next_job(stream: &mut ChannelStream) -> floatilla_protocol::WireJob {
    loop {
        match recv_message(stream).await {
            Ok(Some(ServerMessage::Job(job))) => return job,
            Ok(Some(_)) => {}
            other => panic!("the channel ended before a JOB message: {other:?}"),
        }
    }
}

async fn job_counts_become(cluster: &Cluster, node: usize, job: &str, expected: Value) {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let (_, view) = cluster
            .api(node, Method::GET, &format!("/api/v1/jobs/{job}"), None)
            .await;
        if view["executions"] == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_and_a_rollout_created_on_one_node_reach_a_router_on_the_other() {
    let Some(cluster) = Cluster::start(&["--allow-unsigned-licenses"]).await else {
        return;
    };
    let (status, license) = cluster
        .api(
            A,
            Method::POST,
            "/api/v1/licenses",
            Some(json!({"name": "lab", "seats": 1})),
        )
        .await;
    assert_eq!(status, 201, "{license}");
    let token = cluster.enrollment_token(A, "line 6").await;
    let enrolled = cluster.enroll(A, &token, "MRX5-00006").await;
    let mut channel = cluster.connect(B, &enrolled, "MRX5-00006").await;
    cluster
        .wait_for_device(A, &enrolled.device_id, "licensed", |d| {
            d["license_state"] == "licensed"
        })
        .await;

    for (path, body) in [
        (
            "/api/v1/jobs",
            json!({"kind": "reboot", "target": {"ids": [enrolled.device_id]},
            "expected_downtime_secs": 0}),
        ),
        (
            "/api/v1/rollouts",
            json!({"job": {"kind": "software_remove",
            "target": {"ids": [enrolled.device_id]}}}),
        ),
    ] {
        let (status, created) = cluster.api(A, Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let job = tokio::time::timeout(SUPERSEDE_WITHIN, next_job(&mut channel.stream))
            .await
            .unwrap_or_else(|_| panic!("{path}: the job never reached the router on node B"));
        assert_eq!(job.job_id, id);
        send_message(
            &mut channel.stream,
            &DeviceMessage::JobUpdate(floatilla_protocol::JobUpdate {
                execution_id: job.execution_id.clone(),
                attempt: Some(job.attempt),
                state: floatilla_protocol::JobUpdateState::Succeeded,
                message: None,
            }),
        )
        .await
        .unwrap();
        job_counts_become(&cluster, A, &id, json!({"succeeded": 1})).await;
    }
}
