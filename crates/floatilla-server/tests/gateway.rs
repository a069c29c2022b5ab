//! Routers against a real server: enrollment, first contact, the control channel, its timers,
//! every disconnect reason and every kind of bad input. Each test runs on SQLite and PostgreSQL.

mod common;

use chrono::Duration;
use common::*;
use floatilla_agent::connection::send_message;
use floatilla_agent::{ChannelError, ServerTrust};
use floatilla_domain::Clock;
use floatilla_protocol::{CaFingerprint, DeviceMessage, ServerMessage, Status};
use floatilla_store::testing::TestDb;
use futures_util::SinkExt;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

on_both_backends!(
    enrolls_and_is_welcomed_with_the_configured_timers,
    a_wrong_ca_fingerprint_is_refused_on_first_contact,
    the_ca_certificate_file_is_accepted_as_trust,
    enrollment_tokens_enforce_uses_expiry_and_revocation,
    re_enrolling_a_serial_needs_its_credential_or_consent,
    credentials_are_renewed_over_the_channel_before_they_expire,
    a_renewal_is_offered_when_expiry_approaches_during_a_session,
    reconnecting_records_every_connection,
    a_newer_connection_supersedes_the_older_one,
    a_clean_close_and_a_lost_connection_are_told_apart,
    a_silent_router_is_dropped_after_the_pong_timeout,
    a_router_that_answers_pings_stays_connected,
    revoking_credentials_disconnects_and_locks_out,
    shutdown_tells_routers_when_to_come_back,
    bad_frames_are_refused_and_disturb_nobody_else,
    bad_credentials_are_refused,
    hello_must_come_first_and_in_time,
    status_reports_and_calls_reach_the_api,
    a_wrong_router_clock_is_reported,
    heartbeats_update_last_seen_in_batches,
    the_device_certificate_is_rotated_before_it_expires,
    connection_history_is_pruned_after_the_retention_period,
    a_full_server_tells_routers_when_to_retry,
    a_connect_flood_is_spread_out,
);

async fn enrolls_and_is_welcomed_with_the_configured_timers(db: TestDb) {
    let mut config = test_config();
    config.timers.ping_interval_secs = 90;
    config.timers.pong_timeout_secs = 20;
    config.timers.reconnect_backoff_cap_secs = 45;
    let server = TestServer::start_with(db, config).await;
    let enrolled = server.enrolled("SN-1").await;
    assert!(enrolled.credential.starts_with("fc1."));
    assert!(enrolled.ca_certificate.contains("BEGIN CERTIFICATE"));

    let channel = server
        .open_channel(&enrolled.credential, "SN-1")
        .await
        .unwrap();
    assert_eq!(channel.welcome.device_id, enrolled.device_id);
    assert_eq!(channel.welcome.timers.ping_interval_secs, 90);
    assert_eq!(channel.welcome.timers.pong_timeout_secs, 20);
    assert_eq!(channel.welcome.timers.reconnect_backoff_cap_secs, 45);
    assert_eq!(channel.welcome.server_time, server.clock.now());

    let device = server
        .wait_for_device(&enrolled.device_id, "online", |d| {
            d["connection_state"] == "online"
        })
        .await;
    assert_eq!(device["serial"], "SN-1");
    assert_eq!(device["model"], "MRX5");
    assert_eq!(device["firmware"], "5.2.1");
    assert_eq!(device["connected_since"], json!(server.clock.now()));
    assert_eq!(device["connection_history"].as_array().unwrap().len(), 1);
    assert_eq!(server.running().connected_routers(), 1);
}

async fn a_wrong_ca_fingerprint_is_refused_on_first_contact(db: TestDb) {
    let server = TestServer::start(db).await;
    let token = server.enrollment_token(json!({"name": "t"})).await;
    let mut forged: floatilla_protocol::EnrollmentTokenString = token.parse().unwrap();
    forged.ca_fingerprint = CaFingerprint::of_der(b"another CA");
    let result = server
        .connector_for(&ServerTrust::CaFingerprint(forged.ca_fingerprint))
        .enroll(&floatilla_protocol::EnrollRequest {
            token: forged.to_string(),
            serial: "SN-X".into(),
            model: "m".into(),
            firmware: "f".into(),
            agent_version: "a".into(),
            credential: None,
        })
        .await;
    let error = result.expect_err("an unknown server must not be accepted");
    assert!(matches!(error, ChannelError::Io(_)), "{error:?}");
    assert!(error.to_string().contains("fingerprint"), "{error}");
    let devices = server.get("/api/v1/devices").await;
    assert_eq!(devices["total"], 0, "nothing was enrolled");
}

async fn the_ca_certificate_file_is_accepted_as_trust(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("SN-CA").await;
    // The CA returned by enrollment is the one the server presents.
    let trust = ServerTrust::from_ca_pem(&enrolled.ca_certificate).unwrap();
    server
        .connector_for(&trust)
        .open_channel(hello(&enrolled.credential, "SN-CA"), None)
        .await
        .unwrap();
    // Another installation's CA is not.
    let other = TestServer::start(TestDb::sqlite()).await;
    let error = server
        .connector_for(&other.trust())
        .open_channel(hello(&enrolled.credential, "SN-CA"), None)
        .await
        .expect_err("a different CA must be refused");
    assert!(matches!(error, ChannelError::Io(_)), "{error:?}");
}

async fn enrollment_tokens_enforce_uses_expiry_and_revocation(db: TestDb) {
    let server = TestServer::start(db).await;
    let (status, group) = server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "north"})),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let limited = server
        .enrollment_token(json!({"name": "two", "max_uses": 2, "group": "north"}))
        .await;
    let first = server.enroll(&limited, "A1").await;
    server.enroll(&limited, "A2").await;
    let refused = server.try_enroll(&limited, "A3", None).await.unwrap_err();
    assert_refused(&refused, "enrollment_token_used_up");
    let device = server
        .get(&format!("/api/v1/devices/{}", first.device_id))
        .await;
    assert_eq!(device["group"], "north", "the token's group is applied");

    let expiring = server
        .enrollment_token(
            json!({"name": "soon", "expires_at": server.clock.now() + Duration::hours(1)}),
        )
        .await;
    server.clock.advance(Duration::hours(1));
    assert_refused(
        &server.try_enroll(&expiring, "B1", None).await.unwrap_err(),
        "enrollment_token_expired",
    );

    let (status, listed) = server
        .api(Method::GET, "/api/v1/enrollment-tokens", None)
        .await;
    assert_eq!(status, 200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none()),
        "secrets are never listed"
    );
    let never = server
        .enrollment_token(json!({"name": "forever", "expires_at": null}))
        .await;
    let (_, listed) = server
        .api(Method::GET, "/api/v1/enrollment-tokens", None)
        .await;
    let forever = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "forever")
        .unwrap()
        .clone();
    assert!(forever["expires_at"].is_null());
    let default = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "two")
        .unwrap()
        .clone();
    assert_eq!(default["uses"], 2);
    let (status, _) = server
        .api(
            Method::DELETE,
            &format!(
                "/api/v1/enrollment-tokens/{}",
                forever["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_refused(
        &server.try_enroll(&never, "C1", None).await.unwrap_err(),
        "enrollment_token_revoked",
    );

    let mut unknown: floatilla_protocol::EnrollmentTokenString = never.parse().unwrap();
    unknown.secret = [0; 32];
    assert_refused(
        &server
            .try_enroll(&unknown.to_string(), "D1", None)
            .await
            .unwrap_err(),
        "invalid_enrollment_token",
    );
    assert!(server.metrics().await.contains("enrollment_token_used_up"));
}

fn assert_refused(error: &ChannelError, code: &str) {
    match error {
        ChannelError::Refused(body) => assert_eq!(body.code, code, "{body}"),
        other => panic!("expected refusal {code}, got {other:?}"),
    }
}

async fn re_enrolling_a_serial_needs_its_credential_or_consent(db: TestDb) {
    let server = TestServer::start(db).await;
    let token = server.enrollment_token(json!({"name": "t"})).await;
    let first = server.enroll(&token, "R1").await;
    assert_refused(
        &server.try_enroll(&token, "R1", None).await.unwrap_err(),
        "serial_already_enrolled",
    );

    // With its own credential: same device, new credential, the old one revoked.
    let second = server
        .try_enroll(&token, "R1", Some(first.credential.clone()))
        .await
        .unwrap();
    assert_eq!(second.device_id, first.device_id);
    assert_refused(
        &server
            .open_channel(&first.credential, "R1")
            .await
            .err()
            .unwrap(),
        "credential_revoked",
    );
    server.open_channel(&second.credential, "R1").await.unwrap();

    // With an admin's consent, without the credential (a replaced unit).
    let path = format!("/api/v1/devices/{}/allow-reenrollment", first.device_id);
    let (status, _) = server.api(Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, 204);
    let third = server.try_enroll(&token, "R1", None).await.unwrap();
    assert_eq!(third.device_id, first.device_id);
    // Consent is used up by that enrollment.
    assert_refused(
        &server.try_enroll(&token, "R1", None).await.unwrap_err(),
        "serial_already_enrolled",
    );
}

async fn credentials_are_renewed_over_the_channel_before_they_expire(db: TestDb) {
    let mut config = test_config();
    config.credential_lifetime = Duration::days(20);
    config.credential_renew_before = Duration::days(30);
    let server = TestServer::start_with(db, config).await;
    let enrolled = server.enrolled("REN-1").await;
    // The renewal window is capped at half the lifetime: nothing to renew yet.
    let router = server.router(&enrolled.credential, "REN-1").await;
    router.close().await;
    server
        .wait_offline_with(&enrolled.device_id, "clean_close")
        .await;

    // Eleven days on, 9 of 20 days remain: WELCOME is followed by a renewal.
    server.clock.advance(Duration::days(11));
    let (renewed, _) = renew(&server, &enrolled.credential, true).await;
    assert_refused(
        &server
            .open_channel(&enrolled.credential, "REN-1")
            .await
            .err()
            .unwrap(),
        "credential_revoked",
    );

    // The next renewal's acknowledgement is lost, but the router stored the new credential and
    // uses it: that retires the previous one just the same.
    server.clock.advance(Duration::days(11));
    let (unacknowledged, expires_at) = renew(&server, &renewed, false).await;
    assert_eq!(expires_at, server.clock.now() + Duration::days(20));
    server.router(&unacknowledged, "REN-1").await.close().await;
    assert_refused(
        &server.open_channel(&renewed, "REN-1").await.err().unwrap(),
        "credential_revoked",
    );
}

/// Connects with `credential`, expects a renewal, acknowledges it if asked, and closes.
async fn renew(
    server: &TestServer,
    credential: &str,
    acknowledge: bool,
) -> (String, chrono::DateTime<chrono::Utc>) {
    let mut router = server.router(credential, "REN-1").await;
    let Some(ServerMessage::CredentialRenewal {
        credential_id,
        credential: renewed,
        expires_at,
    }) = router.next_message().await
    else {
        panic!("expected a credential renewal right after WELCOME");
    };
    if acknowledge {
        router.send(DeviceMessage::CredentialAck { credential_id });
    }
    let session = router.welcome.session_id.clone();
    let device_id = router.welcome.device_id.clone();
    router.close().await;
    server
        .wait_for_device(&device_id, "closed", |d| {
            d["connection_history"][0]["session_id"] == session.as_str()
                && d["connection_history"][0]["reason"] == "clean_close"
        })
        .await;
    (renewed, expires_at)
}

async fn a_renewal_is_offered_when_expiry_approaches_during_a_session(db: TestDb) {
    let mut config = test_config();
    config.credential_lifetime = Duration::days(60);
    config.credential_renew_before = Duration::days(30);
    let server = TestServer::start_with(db, config).await;
    let enrolled = server.enrolled("REN-2").await;
    let mut router = server.router(&enrolled.credential, "REN-2").await;
    assert!(
        router.messages.try_recv().is_err(),
        "no renewal while far from expiry"
    );
    // The router keeps answering pings; 31 days later the next ping tick offers a renewal.
    server.clock.advance(Duration::days(31));
    let Some(ServerMessage::CredentialRenewal { expires_at, .. }) = router.next_message().await
    else {
        panic!("expected a credential renewal");
    };
    assert_eq!(expires_at, server.clock.now() + Duration::days(60));
}

async fn reconnecting_records_every_connection(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("RC-1").await;
    for round in 1..=3 {
        let router = server.router(&enrolled.credential, "RC-1").await;
        server.clock.advance(Duration::seconds(5));
        router.close().await;
        server
            .wait_for_device(&enrolled.device_id, "closed", |d| {
                d["connection_history"].as_array().unwrap().len() == round
                    && d["connection_history"][0]["reason"] == "clean_close"
            })
            .await;
    }
}

async fn a_newer_connection_supersedes_the_older_one(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("SUP-1").await;
    let mut old = server.router(&enrolled.credential, "SUP-1").await;
    let new = server.router(&enrolled.credential, "SUP-1").await;
    match old.next_message().await {
        Some(ServerMessage::Disconnect { reason, .. }) => assert_eq!(reason, "superseded"),
        other => panic!("expected DISCONNECT superseded, got {other:?}"),
    }
    let device = server
        .wait_for_device(&enrolled.device_id, "superseded", |d| {
            d["connection_history"][1]["reason"] == "superseded"
        })
        .await;
    assert_eq!(
        device["connection_state"], "online",
        "the newer session keeps the router online"
    );
    assert_eq!(
        device["connection_history"][0]["session_id"],
        new.welcome.session_id
    );
    assert!(device["connection_history"][0]["reason"].is_null());
    assert_eq!(server.running().connected_routers(), 1);
    assert!(
        server
            .metrics()
            .await
            .contains(r#"floatilla_router_disconnects_total{reason="superseded"}"#)
    );
}

async fn a_clean_close_and_a_lost_connection_are_told_apart(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("CL-1").await;
    server
        .router(&enrolled.credential, "CL-1")
        .await
        .close()
        .await;
    server
        .wait_offline_with(&enrolled.device_id, "clean_close")
        .await;
    server.router(&enrolled.credential, "CL-1").await.vanish();
    let device = server
        .wait_offline_with(&enrolled.device_id, "connection_lost")
        .await;
    assert!(device["last_disconnect_at"].is_string());
    assert!(device["connected_since"].is_null());
    assert_eq!(server.running().connected_routers(), 0);
}

async fn a_silent_router_is_dropped_after_the_pong_timeout(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("PT-1").await;
    // A router that never reads never answers pings.
    let mut socket = server.raw_socket().await;
    say_hello(&mut socket, &enrolled.credential, "PT-1").await;
    server.clock.advance(Duration::seconds(120));
    server.clock.advance(Duration::seconds(29));
    // Nothing happens before the pong timeout has fully passed.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let device = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert_eq!(device["connection_state"], "online");
    server.clock.advance(Duration::seconds(1));
    server
        .wait_offline_with(&enrolled.device_id, "ping_timeout")
        .await;
    expect_closed(&mut socket).await;
}

async fn a_router_that_answers_pings_stays_connected(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("PP-1").await;
    let router = server.router(&enrolled.credential, "PP-1").await;
    let refresh = format!("/api/v1/devices/{}/refresh-status", enrolled.device_id);
    for ping in 1..=5 {
        // Each ping on schedule, every 120 s; each pong well inside the 30 s timeout.
        server
            .clock
            .advance(Duration::seconds(if ping == 1 { 120 } else { 91 }));
        router.wait_for_pings(ping).await;
        // A call round trip: the pong, sent before the answer, has been processed after it.
        let (status, body) = server.api(Method::POST, &refresh, None).await;
        let device = server
            .get(&format!("/api/v1/devices/{}", enrolled.device_id))
            .await;
        assert_eq!(status, 200, "ping {ping}: {body} {device}");
        server.clock.advance(Duration::seconds(29));
    }
    let device = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert_eq!(device["connection_state"], "online");
    assert!(!router.is_finished());
}

async fn revoking_credentials_disconnects_and_locks_out(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("RV-1").await;
    let mut router = server.router(&enrolled.credential, "RV-1").await;
    let path = format!("/api/v1/devices/{}/revoke-credentials", enrolled.device_id);
    let (status, _) = server.api(Method::POST, &path, None).await;
    assert_eq!(status, 204);
    match router.next_message().await {
        Some(ServerMessage::Disconnect { reason, .. }) => assert_eq!(reason, "credential_revoked"),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    server
        .wait_offline_with(&enrolled.device_id, "credential_revoked")
        .await;
    assert_refused(
        &server
            .open_channel(&enrolled.credential, "RV-1")
            .await
            .err()
            .unwrap(),
        "credential_revoked",
    );
}

async fn shutdown_tells_routers_when_to_come_back(db: TestDb) {
    let mut server = TestServer::start(db).await;
    let enrolled = server.enrolled("SD-1").await;
    let mut router = server.router(&enrolled.credential, "SD-1").await;
    server.shutdown().await;
    match router.next_message().await {
        Some(ServerMessage::Disconnect {
            reason,
            reconnect_after_secs,
            ..
        }) => {
            assert_eq!(reason, "server_shutdown");
            let after = reconnect_after_secs.expect("a reconnect hint");
            assert!((5..=10).contains(&after), "{after}");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let device = server
        .store
        .device_by_id(enrolled.device_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        device.connection_state,
        floatilla_domain::ConnectionState::Offline
    );
    assert_eq!(
        device.last_disconnect_reason,
        Some(floatilla_domain::DisconnectReason::ServerShutdown)
    );
}

async fn bad_frames_are_refused_and_disturb_nobody_else(db: TestDb) {
    let server = TestServer::start(db).await;
    let bystander = server.enrolled("OK-1").await;
    let router = server.router(&bystander.credential, "OK-1").await;
    let offender = server.enrolled("BAD-1").await;
    let oversized = "x".repeat(floatilla_protocol::MAX_MESSAGE_BYTES + 1);
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "malformed_message"),
        (
            Message::text(r#"{"type":"teleport"}"#),
            "unknown_message_type",
        ),
        (
            Message::text(r#"{"type":"status","uptime_secs":"soon"}"#),
            "invalid_message",
        ),
        (Message::binary(vec![1, 2, 3]), "binary_not_supported"),
        (
            Message::text(format!(
                r#"{{"type":"status","wan_address":"{oversized}"}}"#
            )),
            "message_too_large",
        ),
        (
            Message::text(floatilla_protocol::encode(&DeviceMessage::Hello(hello(
                &offender.credential,
                "BAD-1",
            )))),
            "unexpected_hello",
        ),
    ];
    for (frame, code) in cases {
        let mut socket = server.raw_socket().await;
        say_hello(&mut socket, &offender.credential, "BAD-1").await;
        socket.send(frame).await.unwrap();
        expect_refusal(&mut socket, code).await;
        server
            .wait_offline_with(&offender.device_id, "protocol_error")
            .await;
        assert!(server.counted_refusal(code).await, "{code} counted");
    }
    // The well-behaved router never noticed.
    let (status, _) = server
        .api(
            Method::POST,
            &format!("/api/v1/devices/{}/refresh-status", bystander.device_id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!router.is_finished());
}

async fn bad_credentials_are_refused(db: TestDb) {
    let mut config = test_config();
    config.credential_lifetime = Duration::days(10);
    config.credential_renew_before = Duration::days(1);
    let server = TestServer::start_with(db, config).await;
    let enrolled = server.enrolled("BC-1").await;
    let mut wrong: floatilla_protocol::DeviceCredential = enrolled.credential.parse().unwrap();
    wrong.secret[0] ^= 1;
    let mut future_version = hello(&enrolled.credential, "BC-1");
    future_version.protocol_version = 99;
    let cases = [
        (hello("not a credential", "BC-1"), "invalid_credential"),
        (hello(&wrong.to_string(), "BC-1"), "invalid_credential"),
        (
            hello(&enrolled.credential, "OTHER-SERIAL"),
            "serial_mismatch",
        ),
        (future_version, "unsupported_protocol_version"),
    ];
    for (hello, code) in cases {
        let mut socket = server.raw_socket().await;
        send_message(&mut socket, &DeviceMessage::Hello(hello))
            .await
            .unwrap();
        expect_refusal(&mut socket, code).await;
    }
    server.clock.advance(Duration::days(10));
    let mut socket = server.raw_socket().await;
    send_message(
        &mut socket,
        &DeviceMessage::Hello(hello(&enrolled.credential, "BC-1")),
    )
    .await
    .unwrap();
    expect_refusal(&mut socket, "credential_expired").await;
    let device = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert!(
        device["connection_history"].as_array().unwrap().is_empty(),
        "refused routers never connect"
    );
}

async fn hello_must_come_first_and_in_time(db: TestDb) {
    let server = TestServer::start(db).await;
    let mut socket = server.raw_socket().await;
    send_message(&mut socket, &DeviceMessage::Status(Status::default()))
        .await
        .unwrap();
    expect_refusal(&mut socket, "hello_required").await;

    let mut socket = server.raw_socket().await;
    // The server starts its HELLO deadline when the socket opens; keep moving the clock until it
    // has passed, however late the server task began waiting.
    let refusal = async {
        loop {
            server.clock.advance(Duration::seconds(11));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = expect_refusal(&mut socket, "hello_timeout") => {}
        () = refusal => unreachable!(),
    }
}

async fn status_reports_and_calls_reach_the_api(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("ST-1").await;
    let router = server.router(&enrolled.credential, "ST-1").await;
    router.send(DeviceMessage::Status(Status {
        firmware: Some("5.3.0".into()),
        cellular_signal_dbm: Some(-71),
        rx_bytes: Some(1000),
        tx_bytes: Some(2000),
        ..Status::default()
    }));
    let device = server
        .wait_for_device(&enrolled.device_id, "reported", |d| {
            d["status"]["cellular_signal_dbm"] == -71
        })
        .await;
    assert_eq!(device["firmware"], "5.3.0");
    assert_eq!(device["status"]["tx_bytes"], 2000);
    router.send(DeviceMessage::Status(Status {
        uptime_secs: Some(7),
        ..Status::default()
    }));
    let device = server
        .wait_for_device(&enrolled.device_id, "reported again", |d| {
            d["status"]["uptime_secs"] == 7
        })
        .await;
    assert_eq!(
        device["status"]["cellular_signal_dbm"], -71,
        "what a report leaves out is kept"
    );

    let (status, body) = server
        .api(
            Method::POST,
            &format!("/api/v1/devices/{}/refresh-status", enrolled.device_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uptime_secs"], 42);
    assert_eq!(body["wan_address"], "198.51.100.7");
    router.close().await;
    server
        .wait_offline_with(&enrolled.device_id, "clean_close")
        .await;
    let (status, body) = server
        .api(
            Method::POST,
            &format!("/api/v1/devices/{}/refresh-status", enrolled.device_id),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("device_offline"))
    );
}

async fn a_wrong_router_clock_is_reported(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("CLK-1").await;
    let mut socket = server.raw_socket().await;
    let mut behind = hello(&enrolled.credential, "CLK-1");
    behind.clock = server.clock.now() - Duration::hours(1);
    send_message(&mut socket, &DeviceMessage::Hello(behind))
        .await
        .unwrap();
    assert!(matches!(
        next_message(&mut socket).await,
        Some(ServerMessage::Welcome(_))
    ));
    let device = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert_eq!(device["status"]["clock_skew_secs"], -3600);

    // Once the clock is right again, the report clears.
    drop(socket);
    let router = server.router(&enrolled.credential, "CLK-1").await;
    let device = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert!(device["status"]["clock_skew_secs"].is_null(), "{device}");
    router.close().await;
}

async fn heartbeats_update_last_seen_in_batches(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("HB-1").await;
    let router = server.router(&enrolled.credential, "HB-1").await;
    let connected_at = server.clock.now();
    server.clock.advance(Duration::seconds(120));
    router.wait_for_pings(1).await;
    let expected = json!(connected_at + Duration::seconds(120));
    server
        .wait_for_device(&enrolled.device_id, "seen", |d| d["last_seen"] == expected)
        .await;
}

async fn the_device_certificate_is_rotated_before_it_expires(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("TLS-1").await;
    let presented_leaf = || async {
        let stream = server.connector.connect_tls(None).await.unwrap();
        let (_, connection) = stream.get_ref();
        connection.peer_certificates().unwrap()[0].clone()
    };
    let before = presented_leaf().await;
    server.clock.advance(Duration::days(336));
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let now = presented_leaf().await;
        if now != before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leaf was never rotated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Routers keep connecting through the rotation.
    server
        .open_channel(&enrolled.credential, "TLS-1")
        .await
        .unwrap();
}

async fn connection_history_is_pruned_after_the_retention_period(db: TestDb) {
    let mut config = test_config();
    config.retention = Duration::days(30);
    let server = TestServer::start_with(db, config).await;
    let enrolled = server.enrolled("RET-1").await;
    server
        .router(&enrolled.credential, "RET-1")
        .await
        .close()
        .await;
    server
        .wait_offline_with(&enrolled.device_id, "clean_close")
        .await;
    server.clock.advance(Duration::days(20));
    let router = server.router(&enrolled.credential, "RET-1").await;
    let path = format!("/api/v1/devices/{}", enrolled.device_id);
    // Day 31: the first connection ended 31 days ago and goes; the open one stays.
    server.clock.advance(Duration::days(11));
    let device = server
        .wait_for_device(&enrolled.device_id, "pruned", |d| {
            d["connection_history"].as_array().unwrap().len() == 1
        })
        .await;
    assert!(device["connection_history"][0]["disconnected_at"].is_null());
    router.close().await;
    server
        .wait_offline_with(&enrolled.device_id, "clean_close")
        .await;
    assert_eq!(
        server.get(&path).await["connection_history"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn a_full_server_tells_routers_when_to_retry(db: TestDb) {
    let mut config = test_config();
    config.max_router_connections = 2;
    let server = TestServer::start_with(db, config).await;
    let routers: Vec<_> = futures_util::future::join_all(
        ["CAP-1", "CAP-2", "CAP-3"].map(|serial| server.enrolled(serial)),
    )
    .await;
    let first = server.router(&routers[0].credential, "CAP-1").await;
    let _second = server.router(&routers[1].credential, "CAP-2").await;
    assert_busy(
        server.open_channel(&routers[2].credential, "CAP-3").await,
        "server_full",
        60,
    );
    assert!(server.counted_refusal("server_full").await);
    // The API and enrollment still work while the router channels are full.
    server.get("/api/v1/devices").await;
    server.enrolled("CAP-4").await;
    first.close().await;
    server
        .wait_offline_with(&routers[0].device_id, "clean_close")
        .await;
    server
        .open_channel(&routers[2].credential, "CAP-3")
        .await
        .unwrap();
}

async fn a_connect_flood_is_spread_out(db: TestDb) {
    let mut config = test_config();
    config.max_connects_per_sec = 1;
    let server = TestServer::start_with(db, config).await;
    let enrolled = server.enrolled("FLOOD-1").await;
    let _first = server.router(&enrolled.credential, "FLOOD-1").await;
    // Well within the second it takes the limiter to allow one more.
    assert_busy(
        server.open_channel(&enrolled.credential, "FLOOD-1").await,
        "too_many_connects",
        1,
    );
    assert!(server.counted_refusal("too_many_connects").await);
}
