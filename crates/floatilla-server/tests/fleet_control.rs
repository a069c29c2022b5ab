//! Holding the fleet under control: enrollment by approval or pre-registration, cloned
//! credentials refused, heartbeat profiles per group, the event log and its retention, and nodes
//! that vanish. Each test runs on SQLite and PostgreSQL.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use chrono::Duration;
use common::*;
use floatilla_agent::{ChannelError, Connector, ServerAddress};
use floatilla_domain::{Clock, Role};
use floatilla_protocol::{EnrollRequest, ServerMessage};
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    approval_holds_new_routers_until_an_admin_accepts_them,
    a_rejected_router_is_locked_out,
    only_preregistered_serials_enroll_when_the_policy_says_so,
    an_import_answers_every_row_and_skips_only_the_bad_ones,
    a_cloned_credential_is_refused_and_raises_one_alarm,
    a_router_that_moves_to_a_new_address_is_no_clone,
    a_group_timer_profile_sets_the_heartbeat_of_its_routers,
    a_changed_profile_reaches_connected_routers_at_once,
    events_are_pruned_after_the_retention_period,
    a_silent_nodes_sessions_are_closed_by_the_others,
    behind_a_load_balancer_the_proxy_header_names_the_router,
);

fn refusal_code(result: Result<impl std::fmt::Debug, ChannelError>) -> String {
    match result {
        Err(ChannelError::Refused(body)) => body.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn set_policy(server: &TestServer, policy: &str) {
    let (status, body) = server
        .api(
            Method::PUT,
            "/api/v1/enrollment-policy",
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.get("/api/v1/enrollment-policy").await["policy"],
        policy
    );
}

async fn approval_holds_new_routers_until_an_admin_accepts_them(db: TestDb) {
    let server = TestServer::start(db).await;
    set_policy(&server, "approval").await;
    let enrolled = server.enrolled("AP-1").await;
    assert_eq!(enrolled.enrollment, "pending");
    assert_eq!(
        refusal_code(server.open_channel(&enrolled.credential, "AP-1").await),
        "enrollment_pending"
    );
    let pending = server.get("/api/v1/devices?enrollment=pending").await;
    assert_eq!(pending["total"], 1);
    assert_eq!(pending["items"][0]["serial"], "AP-1");
    assert_eq!(
        server.events("enrollment_requested").await[0]["device_id"],
        enrolled.device_id.as_str()
    );

    let accept = format!("/api/v1/devices/{}/accept", enrolled.device_id);
    let operator = TestServer::token_for(
        server.store.as_ref(),
        &server.clock,
        server.running().installation().on_prem_tenant.unwrap(),
        Role::Operator,
    )
    .await;
    let (status, _) = server.api_as(&operator, Method::POST, &accept, None).await;
    assert_eq!(status, 403, "accepting is an admin's decision");
    let (status, body) = server.api(Method::POST, &accept, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enrollment"], "accepted");
    let router = server.router(&enrolled.credential, "AP-1").await;
    assert_eq!(router.welcome.device_id, enrolled.device_id);
    assert_eq!(server.events("enrollment_accepted").await.len(), 1);

    let (status, body) = server
        .api(
            Method::PUT,
            "/api/v1/enrollment-policy",
            Some(json!({"policy": "closed"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_policy"))
    );
}

async fn a_rejected_router_is_locked_out(db: TestDb) {
    let server = TestServer::start(db).await;
    set_policy(&server, "approval").await;
    let token = server.enrollment_token(json!({"name": "line"})).await;
    let enrolled = server.enroll(&token, "RJ-1").await;
    let (status, body) = server
        .api(
            Method::POST,
            &format!("/api/v1/devices/{}/reject", enrolled.device_id),
            None,
        )
        .await;
    assert_eq!(
        (status, body["enrollment"].as_str()),
        (200, Some("rejected"))
    );
    assert_eq!(
        refusal_code(server.open_channel(&enrolled.credential, "RJ-1").await),
        "credential_revoked"
    );
    assert_eq!(
        refusal_code(
            server
                .try_enroll(&token, "RJ-1", Some(enrolled.credential.clone()))
                .await
        ),
        "enrollment_rejected"
    );
    // Accepting it after all lets the same router enroll again with its token.
    let (status, _) = server
        .api(
            Method::POST,
            &format!("/api/v1/devices/{}/accept", enrolled.device_id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let again = server.enroll(&token, "RJ-1").await;
    assert_eq!(again.device_id, enrolled.device_id);
    assert_eq!(again.enrollment, "accepted");
    server.router(&again.credential, "RJ-1").await;
}

async fn only_preregistered_serials_enroll_when_the_policy_says_so(db: TestDb) {
    let server = TestServer::start(db).await;
    set_policy(&server, "preregistered").await;
    server.create_group(json!({"name": "pumps"})).await;
    let (status, report) = server
        .import_csv("serial,name,group\nPR-1,North pump,pumps\n")
        .await;
    assert_eq!(
        (status, report["created"].as_u64()),
        (200, Some(1)),
        "{report}"
    );
    let imported = report["rows"][0]["device_id"].as_str().unwrap().to_owned();
    let listed = server.get(&format!("/api/v1/devices/{imported}")).await;
    assert_eq!(listed["enrollment"], "preregistered");
    assert_eq!(listed["connection_state"], "offline");

    let token = server.enrollment_token(json!({"name": "factory"})).await;
    assert_eq!(
        refusal_code(server.try_enroll(&token, "PR-STRANGER", None).await),
        "serial_not_preregistered"
    );
    let refused = server.events("enrollment_refused").await;
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains("PR-STRANGER")
    );
    // A flood of strangers leaves one event a minute.
    for serial in ["PR-X1", "PR-X2"] {
        server.try_enroll(&token, serial, None).await.unwrap_err();
    }
    assert_eq!(server.events("enrollment_refused").await.len(), 1);
    server.clock.advance(Duration::seconds(61));
    server.try_enroll(&token, "PR-X3", None).await.unwrap_err();
    assert_eq!(server.events("enrollment_refused").await.len(), 2);

    let enrolled = server.enroll(&token, "PR-1").await;
    assert_eq!(enrolled.device_id, imported);
    assert_eq!(enrolled.enrollment, "accepted");
    let device = server.get(&format!("/api/v1/devices/{imported}")).await;
    assert_eq!(device["name"], "North pump");
    assert_eq!(device["group"], "pumps");
    assert_eq!(device["enrollment"], "accepted");
    assert_eq!(device["model"], "MRX5");
    let _router = server.router(&enrolled.credential, "PR-1").await;
    // Importing an enrolled serial renames it, and nothing else changes.
    let (_, report) = server.import_csv("PR-1,South pump\n").await;
    assert_eq!(report["updated"], 1, "{report}");
    let device = server.get(&format!("/api/v1/devices/{imported}")).await;
    assert_eq!(
        (&device["name"], &device["connection_state"]),
        (&json!("South pump"), &json!("online"))
    );
}

async fn an_import_answers_every_row_and_skips_only_the_bad_ones(db: TestDb) {
    let server = TestServer::start(db).await;
    server.create_group(json!({"name": "depot"})).await;
    let long_name = "n".repeat(201);
    let csv = format!(
        "serial,name,group\n\
         IM-1,First,depot\n\
         ,No serial,depot\n\
         IM-2,Second,nowhere\n\
         IM-3,Third,depot,extra\n\
         IM-1,Again,depot\n\
         IM-4,{long_name},\n\
         \n\
         IM-5\n\
         \"IM-6\",\"Quoted, with a comma\",depot\n"
    );
    let (status, report) = server.import_csv(&csv).await;
    assert_eq!(status, 200, "{report}");
    assert_import_rows(
        &report,
        &[
            (2, "created", None),
            (3, "failed", Some("invalid_field")),
            (4, "failed", Some("unknown_group")),
            (5, "failed", Some("invalid_row")),
            (6, "failed", Some("duplicate_serial")),
            (7, "failed", Some("invalid_name")),
            (9, "created", None),
            (10, "created", None),
        ],
    );
    assert_eq!(
        (&report["created"], &report["updated"], &report["failed"]),
        (&json!(3), &json!(0), &json!(5))
    );
    let listed = server.get("/api/v1/devices?enrollment=preregistered").await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["First", "IM-5", "Quoted, with a comma"]);

    let (status, body) = server.import_csv("serial,name,group\n").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("empty_import")));
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Opens a channel from `source` and waits until the router is online from there.
async fn connect_from(
    server: &TestServer,
    credential: &str,
    serial: &str,
    device: &str,
    source: IpAddr,
) -> TestRouter {
    let router = TestRouter::spawn(
        server
            .open_channel_from(credential, serial, source)
            .await
            .expect("channel opens"),
    );
    let session = router.welcome.session_id.clone();
    server
        .wait_for_device(device, "the new session", |d| {
            d["connection_history"][0]["session_id"] == session.as_str()
        })
        .await;
    router
}

async fn expect_superseded(mut router: TestRouter) {
    match tokio::time::timeout(PROMPTLY, router.next_message()).await {
        Ok(Some(ServerMessage::Disconnect { reason, .. })) => assert_eq!(reason, "superseded"),
        other => panic!("expected a superseded disconnect, got {other:?}"),
    }
}

async fn a_cloned_credential_is_refused_and_raises_one_alarm(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("CL-1").await;
    let (credential, device) = (&enrolled.credential, &enrolled.device_id);
    let (here, there) = (loopback(21), loopback(22));
    // Two routers with one credential take the channel from each other: three times is a
    // tug of war that may still be a flaky link...
    let mut in_place = connect_from(&server, credential, "CL-1", device, here).await;
    for source in [there, here, there] {
        server.clock.advance(Duration::seconds(30));
        let newcomer = connect_from(&server, credential, "CL-1", device, source).await;
        expect_superseded(std::mem::replace(&mut in_place, newcomer)).await;
    }
    assert!(server.events("credential_cloned").await.is_empty());
    // ...the fourth is a clone: refused, and the connection in place stays.
    for attempt in 0..3 {
        server.clock.advance(Duration::seconds(30));
        assert_eq!(
            refusal_code(server.open_channel_from(credential, "CL-1", here).await),
            "credential_in_use",
            "attempt {attempt}"
        );
    }
    assert!(!in_place.is_finished());
    let detail = server.get(&format!("/api/v1/devices/{device}")).await;
    assert_eq!(detail["connection_state"], "online");
    assert!(
        detail["connection_history"][0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.22:")
    );
    let alarms = server.events("credential_cloned").await;
    assert_eq!(alarms.len(), 1, "one alarm per episode: {alarms:?}");
    assert_eq!(alarms[0]["severity"], "alarm");
    assert_eq!(alarms[0]["device_id"], device.as_str());
    assert!(alarms[0]["message"].as_str().unwrap().contains("CL-1"));
    assert!(server.counted_refusal("credential_in_use").await);
    // The router in place may still reconnect from where it is.
    let again = connect_from(&server, credential, "CL-1", device, there).await;
    expect_superseded(in_place).await;
    drop(again);
}

async fn a_router_that_moves_to_a_new_address_is_no_clone(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("MV-1").await;
    let (credential, device) = (&enrolled.credential, &enrolled.device_id);
    // A cellular router changes address; its old connection lingers half-open, so each new
    // one supersedes the last, once per move.
    let mut in_place = connect_from(&server, credential, "MV-1", device, loopback(31)).await;
    for last in 32..=40 {
        server.clock.advance(Duration::minutes(4));
        let moved = connect_from(&server, credential, "MV-1", device, loopback(last)).await;
        expect_superseded(std::mem::replace(&mut in_place, moved)).await;
    }
    // And after a lost connection it comes back from yet another address.
    in_place.vanish();
    server.wait_offline_with(device, "connection_lost").await;
    connect_from(&server, credential, "MV-1", device, loopback(41)).await;
    assert!(server.events("credential_cloned").await.is_empty());
}

async fn a_group_timer_profile_sets_the_heartbeat_of_its_routers(db: TestDb) {
    let server = TestServer::start(db).await;
    let (status, body) = server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "metered", "timer_profile": {"ping_interval_secs": 60, "pong_timeout_secs": 60}})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_timers"))
    );
    let group = server
        .create_group(json!({"name": "metered", "timer_profile": {"ping_interval_secs": 1800, "pong_timeout_secs": 60}}))
        .await;
    assert_eq!(group["timer_profile"]["ping_interval_secs"], 1800);
    let token = server
        .enrollment_token(json!({"name": "metered", "group": "metered"}))
        .await;
    let metered = server.enroll(&token, "LD-1").await;
    let plain = server.enrolled("LD-2").await;
    let slow = server.router(&metered.credential, "LD-1").await;
    let fast = server.router(&plain.credential, "LD-2").await;
    assert_eq!(slow.welcome.timers.ping_interval_secs, 1800);
    assert_eq!(slow.welcome.timers.pong_timeout_secs, 60);
    assert_eq!(slow.welcome.timers.reconnect_backoff_cap_secs, 60);
    assert_eq!(fast.welcome.timers.ping_interval_secs, 120);

    server.clock.advance(Duration::seconds(120));
    fast.wait_for_pings(1).await;
    server.clock.advance(Duration::seconds(1800 - 120));
    slow.wait_for_pings(1).await;
    assert_eq!(
        slow.pings.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one ping in 30 minutes"
    );

    // Clearing the profile: the router's next connection uses the server's timing.
    let group_path = format!("/api/v1/groups/{}", group["id"].as_str().unwrap());
    let (status, cleared) = server
        .api(
            Method::PATCH,
            &group_path,
            Some(json!({"timer_profile": null})),
        )
        .await;
    assert_eq!((status, &cleared["timer_profile"]), (200, &Value::Null));
    slow.close().await;
    let again = server.router(&metered.credential, "LD-1").await;
    assert_eq!(again.welcome.timers.ping_interval_secs, 120);
}

async fn events_are_pruned_after_the_retention_period(db: TestDb) {
    let mut config = test_config();
    config.retention = Duration::days(30);
    let server = TestServer::start_with(db, config).await;
    server.enrolled("EV-1").await;
    server.clock.advance(Duration::days(20));
    server.enrolled("EV-2").await;
    assert_eq!(server.events("router_enrolled").await.len(), 2);
    // Day 31: the first event goes at the daily pruning, the second stays.
    server.clock.advance(Duration::days(11));
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let events = server.events("router_enrolled").await;
        if events.len() == 1 {
            assert!(events[0]["message"].as_str().unwrap().contains("EV-2"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not pruned: {events:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_silent_nodes_sessions_are_closed_by_the_others(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("ND-1").await;
    // Another node held this router's session and then stopped dead: no goodbye, no more
    // heartbeats.
    let lost = "lost-node:8443";
    let connected_at = server.clock.now();
    let record = floatilla_domain::model::ConnectionRecord {
        session_id: floatilla_domain::SessionId::new(),
        device_id: enrolled.device_id.parse().unwrap(),
        node_id: lost.into(),
        remote_addr: "192.0.2.7:40000".into(),
        connected_at,
        disconnected_at: None,
        reason: None,
    };
    server.store.record_connect(&record, None).await.unwrap();
    server
        .store
        .node_heartbeat(lost, connected_at)
        .await
        .unwrap();
    // Fifty seconds of silence is not yet death...
    for _ in 0..5 {
        server.clock.advance(Duration::seconds(10));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let device = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert_eq!(device["connection_state"], "online");
    // ...past sixty seconds, the living node closes its sessions.
    for _ in 0..2 {
        server.clock.advance(Duration::seconds(10));
    }
    let device = server
        .wait_offline_with(&enrolled.device_id, "connection_lost")
        .await;
    assert_eq!(device["connection_history"][0]["node_id"], lost);
    assert!(!device["connection_history"][0]["disconnected_at"].is_null());
}

/// A TCP load balancer that sends the PROXY protocol: it passes each connection on to `node`
/// after a header naming the client as 198.51.100.N, N being the last byte of its loopback
/// address.
async fn proxy_balancer(node: SocketAddr) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let IpAddr::V4(ip) = peer.ip() else { return };
                let mut upstream = tokio::net::TcpStream::connect(node).await.unwrap();
                let header = format!(
                    "PROXY TCP4 198.51.100.{} {} {} {}\r\n",
                    ip.octets()[3],
                    node.ip(),
                    peer.port(),
                    node.port()
                );
                upstream.write_all(header.as_bytes()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    address
}

async fn behind_a_load_balancer_the_proxy_header_names_the_router(db: TestDb) {
    let mut config = test_config();
    config.proxy_protocol = true;
    let server = TestServer::start_with(db, config).await;
    let balancer = proxy_balancer(server.running().local_addr).await;
    let through_balancer = Connector::new(
        ServerAddress::parse(&format!("https://{balancer}")).unwrap(),
        &server.trust(),
        Arc::default(),
    )
    .unwrap();
    let token = server
        .running()
        .create_enrollment_token("balanced", Duration::hours(1))
        .await
        .unwrap();
    let enrolled = through_balancer
        .enroll(&EnrollRequest {
            token,
            serial: "LB-1".into(),
            model: "MRX5".into(),
            firmware: "5.2.1".into(),
            agent_version: "test".into(),
            credential: None,
        })
        .await
        .unwrap();
    let _channel = through_balancer
        .open_channel(
            hello(&enrolled.credential, "LB-1"),
            Some(SocketAddr::new(loopback(23), 0)),
        )
        .await
        .unwrap();
    let device = enrolled.device_id.parse().unwrap();
    let history = server.store.connection_history(device, 1).await.unwrap();
    assert!(
        history[0].remote_addr.starts_with("198.51.100.23:"),
        "{history:?}"
    );
    // Only the balancer may connect: a connection without its header gets no TLS handshake.
    assert!(matches!(
        server.open_channel(&enrolled.credential, "LB-1").await,
        Err(ChannelError::Io(_))
    ));
}

async fn a_changed_profile_reaches_connected_routers_at_once(db: TestDb) {
    let server = TestServer::start(db).await;
    let group = server.create_group(json!({"name": "field"})).await;
    let token = server
        .enrollment_token(json!({"name": "field", "group": "field"}))
        .await;
    let enrolled = server.enroll(&token, "RT-1").await;
    let router = server.router(&enrolled.credential, "RT-1").await;
    assert_eq!(router.welcome.timers.ping_interval_secs, 120);
    // A call's round trip goes through the session's queue after any earlier command, so once it
    // is answered the session has taken up the change.
    let settled = || async {
        let path = format!("/api/v1/devices/{}/refresh-status", enrolled.device_id);
        let (status, body) = server.api(Method::POST, &path, None).await;
        assert_eq!(status, 200, "{body}");
    };

    let group_path = format!("/api/v1/groups/{}", group["id"].as_str().unwrap());
    let (status, _) = server
        .api(
            Method::PATCH,
            &group_path,
            Some(json!({"timer_profile": {"ping_interval_secs": 1800, "pong_timeout_secs": 60}})),
        )
        .await;
    assert_eq!(status, 200);
    settled().await;
    server.clock.advance(Duration::seconds(120));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(router.pings.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.clock.advance(Duration::seconds(1800 - 120));
    router.wait_for_pings(1).await;

    // Out of the group, the server's own timing applies again.
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", enrolled.device_id),
            Some(json!({"group": null})),
        )
        .await;
    assert_eq!(status, 200);
    settled().await;
    server.clock.advance(Duration::seconds(120));
    router.wait_for_pings(2).await;
}
