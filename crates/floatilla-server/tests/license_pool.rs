//! The floating license pool end to end: real routers on real channels, licenses through the
//! API, and a clock the test controls, so expiry happens at an exact instant without sleeping.
//! Each test runs on SQLite and PostgreSQL.

mod common;

use chrono::Duration;
use common::*;
use floatilla_domain::Clock;
use floatilla_protocol::ServerMessage;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    seats_expire_at_the_instant_and_come_back_oldest_first,
    without_a_license_every_router_is_excess_and_the_pool_says_why,
    operators_unmanage_and_pin_routers,
    a_reconnect_within_the_linger_keeps_the_seat_and_a_late_one_loses_it,
    usage_is_kept_per_hour_and_day_as_json_and_csv,
    an_outage_longer_than_the_linger_reshuffles_nothing,
    a_capacity_drop_is_announced_at_each_window,
);

/// Waits for the router's next LICENSE message and answers its state and reason.
async fn next_license(router: &mut TestRouter) -> (String, Option<String>) {
    loop {
        match router.next_message().await {
            Some(ServerMessage::License(license)) => return (license.state, license.reason),
            Some(_) => {}
            None => panic!("the channel closed before a LICENSE message"),
        }
    }
}

async fn seats_expire_at_the_instant_and_come_back_oldest_first(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let ends = server.clock.now() + Duration::seconds(60);
    add_license(
        &server,
        json!({"name": "ten for a minute", "seats": 10, "not_after": ends}),
    )
    .await;
    add_license(&server, json!({"name": "five forever", "seats": 5})).await;

    let mut routers = Vec::new();
    for n in 1..=20 {
        let serial = format!("LP-{n:02}");
        let enrolled = server.enrolled(&serial).await;
        let router = server.router(&enrolled.credential, &serial).await;
        routers.push((enrolled.device_id, router));
    }
    for (n, (_, router)) in routers.iter().enumerate() {
        let expected = if n < 15 { "licensed" } else { "excess" };
        assert_eq!(router.welcome.license.state, expected, "router {}", n + 1);
        let reason = if n < 15 {
            "granted"
        } else {
            "denied_pool_full"
        };
        assert_eq!(router.welcome.license.reason.as_deref(), Some(reason));
    }
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (
            &pool["capacity"],
            &pool["in_use"],
            &pool["free"],
            &pool["excess"]
        ),
        (&json!(15), &json!(15), &json!(0), &json!(5))
    );
    assert_eq!(
        pool["next_change"]["description"],
        format!(
            "{} 10 seats expire: 10 routers would become excess",
            ends.format("on %Y-%m-%d at %H:%M UTC")
        )
    );

    // A millisecond before the end nothing changes; at the end the ten last in line go.
    server
        .clock
        .advance(Duration::seconds(60) - Duration::milliseconds(1));
    assert_eq!(server.get("/api/v1/license-pool").await["in_use"], 15);
    server.clock.advance(Duration::milliseconds(1));
    for (_, router) in &mut routers[5..15] {
        assert_eq!(
            next_license(router).await,
            (
                "excess".to_owned(),
                Some("shed_capacity_dropped".to_owned())
            )
        );
    }
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["capacity"], &pool["excess"]),
        (&json!(5), &json!(15))
    );
    let excess = server.get("/api/v1/devices?license_state=excess").await;
    assert_eq!(excess["total"], 15);
    assert_eq!(
        server.events("license_shed_capacity_dropped").await.len(),
        10
    );
    assert_eq!(server.events("license_capacity_changed").await.len(), 3);

    // Ten new seats: the routers that lost theirs get them back, oldest first.
    add_license(&server, json!({"name": "ten more", "seats": 10})).await;
    for (_, router) in &mut routers[5..15] {
        assert_eq!(
            next_license(router).await,
            ("licensed".to_owned(), Some("restored".to_owned()))
        );
    }
    let restored: Vec<String> = server
        .events("license_restored")
        .await
        .iter()
        .rev()
        .map(|event| event["device_id"].as_str().unwrap().to_owned())
        .collect();
    let oldest_first: Vec<String> = routers[5..15].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(restored, oldest_first);
    for (n, (id, _)) in routers.iter().enumerate() {
        let device = server.get(&format!("/api/v1/devices/{id}")).await;
        let expected = if n < 15 { "licensed" } else { "excess" };
        assert_eq!(device["license_state"], expected, "router {}", n + 1);
    }
}

async fn without_a_license_every_router_is_excess_and_the_pool_says_why(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let enrolled = server.enrolled("NL-1").await;
    let router = server.router(&enrolled.credential, "NL-1").await;
    assert_eq!(router.welcome.license.state, "excess");
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!((&pool["capacity"], &pool["excess"]), (&json!(0), &json!(1)));
    assert_eq!(
        pool["explanation"],
        "no license is installed: the capacity is 0 and every router is excess"
    );
    // Unsigned licenses need the server's consent.
    let strict = TestServer::start(TestDb::sqlite()).await;
    let (status, body) = strict
        .api(
            Method::POST,
            "/api/v1/licenses",
            Some(json!({"name": "raw", "seats": 5})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("unsigned_licenses_not_allowed"))
    );
}

/// Connects routers in order; answers their ids and channels.
async fn operators_unmanage_and_pin_routers(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "two", "seats": 2})).await;
    let mut routers = connect_fleet(&server, "OP", 3).await;
    let ids: Vec<String> = routers.iter().map(|(id, _)| id.clone()).collect();

    // Unmanaging the first frees its seat for the third.
    let (status, device) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", ids[0]),
            Some(json!({"managed": false})),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(
        (
            &device["license_state"],
            &device["license_reason"],
            &device["managed"]
        ),
        (
            &json!("unmanaged"),
            &json!("released_unmanaged"),
            &json!(false)
        )
    );
    assert_eq!(
        next_license(&mut routers[0].1).await,
        (
            "unmanaged".to_owned(),
            Some("released_unmanaged".to_owned())
        )
    );
    assert_eq!(
        next_license(&mut routers[2].1).await,
        ("licensed".to_owned(), Some("restored".to_owned()))
    );

    // Managed again, it goes to the end of the line: excess.
    let (status, _) = server
        .api(
            Method::POST,
            "/api/v1/devices/bulk",
            Some(json!({"ids": [ids[0]], "managed": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(next_license(&mut routers[0].1).await.0, "excess");

    // Pinned, it jumps the line and the last licensed router gives up its seat.
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", ids[0]),
            Some(json!({"pinned": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        next_license(&mut routers[0].1).await,
        ("licensed".to_owned(), Some("restored".to_owned()))
    );
    assert_eq!(
        next_license(&mut routers[2].1).await,
        ("excess".to_owned(), Some("shed_pinned_priority".to_owned()))
    );
    assert_eq!(server.get("/api/v1/license-pool").await["pinned"], 1);

    // Three pins for two seats are refused as a whole.
    server.create_group(json!({"name": "core"})).await;
    for id in &ids {
        let (status, _) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/devices/{id}"),
                Some(json!({"group": "core"})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, body) = server
        .api(
            Method::POST,
            "/api/v1/devices/bulk",
            Some(json!({"group": "core", "pinned": true})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("pins_exceed_capacity")),
        "{body}"
    );
    assert_eq!(server.get("/api/v1/license-pool").await["pinned"], 1);

    // With a third seat the group's pins fit; losing it raises the alarm.
    let third = add_license(&server, json!({"name": "third", "seats": 1})).await;
    let (status, body) = server
        .api(
            Method::POST,
            "/api/v1/devices/bulk",
            Some(json!({"group": "core", "pinned": true})),
        )
        .await;
    assert_eq!((status, &body["changed"]), (200, &json!(3)), "{body}");
    // Removing a seat in use needs an acknowledgement, which names who would lose theirs.
    let third_path = format!("/api/v1/licenses/{}", third["id"].as_str().unwrap());
    let (status, body) = server.api(Method::DELETE, &third_path, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("downgrade_requires_acknowledgement")),
        "{body}"
    );
    // The first router took a new place at the end of the line when it was managed again.
    let last_pinned = ids[0].as_str();
    assert_eq!(body["routers"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["routers"][0]["id"], last_pinned);
    assert_eq!(
        server.get("/api/v1/licenses").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let acknowledged = format!("{third_path}?acknowledge_downgrade=true");
    let (status, _) = server.api(Method::DELETE, &acknowledged, None).await;
    assert_eq!(status, 204);
    let alarms = server.events("license_pins_exceed_capacity").await;
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0]["severity"], "alarm");
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["pinned"], &pool["in_use"], &pool["excess"]),
        (&json!(3), &json!(2), &json!(1))
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("floatilla_license_transitions_total{reason=\"shed_pinned_priority\"}"),
        "{metrics}"
    );
}

async fn a_reconnect_within_the_linger_keeps_the_seat_and_a_late_one_loses_it(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "one", "seats": 1})).await;
    let first = server.enrolled("LG-1").await;
    let second = server.enrolled("LG-2").await;
    server.router(&first.credential, "LG-1").await.close().await;
    server
        .wait_offline_with(&first.device_id, "clean_close")
        .await;
    let mut waiting = server.router(&second.credential, "LG-2").await;
    assert_eq!(waiting.welcome.license.state, "excess");

    // Back within the linger: the seat and the place are still the first router's.
    server.clock.advance(Duration::minutes(9));
    let back = server.router(&first.credential, "LG-1").await;
    assert_eq!(back.welcome.license.state, "licensed");
    back.close().await;
    server
        .wait_offline_with(&first.device_id, "clean_close")
        .await;

    // Ten minutes after the drop the session ends, and the waiting router takes the seat.
    server.clock.advance(Duration::minutes(10));
    assert_eq!(
        next_license(&mut waiting).await,
        ("licensed".to_owned(), Some("restored".to_owned()))
    );
    let device = server
        .get(&format!("/api/v1/devices/{}", first.device_id))
        .await;
    assert_eq!(
        (&device["license_state"], &device["license_reason"]),
        (&json!("inactive"), &json!("released_linger_expired"))
    );
    let late = server.router(&first.credential, "LG-1").await;
    assert_eq!(late.welcome.license.state, "excess");
    assert_eq!(
        late.welcome.license.reason.as_deref(),
        Some("denied_pool_full")
    );
}

async fn usage_is_kept_per_hour_and_day_as_json_and_csv(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "one", "seats": 1})).await;
    let _routers = connect_fleet(&server, "US", 3).await;
    server.clock.advance(Duration::minutes(30));
    let usage = server.get("/api/v1/license-usage?granularity=hour").await;
    let items = usage["items"].as_array().unwrap();
    let total_excess: f64 = items
        .iter()
        .map(|i| i["excess_router_minutes"].as_f64().unwrap())
        .sum();
    // Two routers in excess for the 30 minutes (the connects took no time on this clock).
    assert_eq!(total_excess, 60.0, "{usage}");
    assert!(
        items
            .iter()
            .any(|i| i["peak_managed"] == 3 && i["peak_licensed"] == 1)
    );
    let days = server.get("/api/v1/license-usage?granularity=day").await;
    assert_eq!(days["granularity"], "day");
    assert!(!days["items"].as_array().unwrap().is_empty());

    let csv = server
        .http
        .get(format!(
            "{}/api/v1/license-usage?granularity=hour&format=csv",
            server.url
        ))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("start,granularity,peak_managed,peak_licensed,excess_router_minutes")
    );
    assert!(lines.any(|line| line.contains(",hour,3,1,")), "{text}");
    let (status, body) = server
        .api(Method::GET, "/api/v1/license-usage?granularity=week", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_granularity"))
    );
}

async fn an_outage_longer_than_the_linger_reshuffles_nothing(db: TestDb) {
    let mut server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "one", "seats": 1})).await;
    let first = server.enrolled("OU-1").await;
    let second = server.enrolled("OU-2").await;
    let holder = server.router(&first.credential, "OU-1").await;
    let waiting = server.router(&second.credential, "OU-2").await;
    assert_eq!(waiting.welcome.license.state, "excess");

    // The server stops (both channels end) and stays down for an hour.
    server.restart_after(Duration::hours(1)).await;
    drop((holder, waiting));
    // The waiting router comes back first, but the seat is still the first router's.
    let waiting = server.router(&second.credential, "OU-2").await;
    assert_eq!(waiting.welcome.license.state, "excess");
    let holder = server.router(&first.credential, "OU-1").await;
    assert_eq!(holder.welcome.license.state, "licensed");
    assert_eq!(server.events("license_granted").await.len(), 1);
    assert!(
        server
            .events("license_released_linger_expired")
            .await
            .is_empty()
    );
}

/// The tenant's events of `kind` once there are `count`: timers record them as the clock moves.
async fn events_eventually(server: &TestServer, kind: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let events = server.events(kind).await;
        if events.len() >= count || tokio::time::Instant::now() > deadline {
            assert_eq!(events.len(), count, "{kind}: {events:?}");
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_capacity_drop_is_announced_at_each_window(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let ends = server.clock.now() + Duration::days(40);
    add_license(
        &server,
        json!({"name": "until spring", "seats": 10, "not_after": ends}),
    )
    .await;
    add_license(&server, json!({"name": "forever", "seats": 2})).await;
    let _routers = connect_fleet(&server, "NT", 5).await;
    assert_eq!(
        server.get("/api/v1/license-pool").await["warning"],
        Value::Null
    );

    let mut given = 0;
    for days in [30, 14, 7, 1] {
        // A minute before the window opens: nothing yet.
        let opens = ends - Duration::days(days);
        server
            .clock
            .advance(opens - server.clock.now() - Duration::minutes(1));
        assert_eq!(
            server.events("license_capacity_drop_notice").await.len(),
            given
        );
        server.clock.advance(Duration::minutes(1));
        given += 1;
        let notices = events_eventually(&server, "license_capacity_drop_notice", given).await;
        let expected_when = if days == 1 {
            "in 1 day".to_owned()
        } else {
            format!("in {days} days")
        };
        assert_eq!(
            notices[0]["message"],
            format!(
                "{expected_when}, {} 10 seats expire: 3 routers would become excess",
                ends.format("on %Y-%m-%d at %H:%M UTC")
            )
        );
        assert_eq!(notices[0]["severity"], "warning");
        assert_eq!(
            server.get("/api/v1/license-pool").await["warning"],
            notices[0]["message"]
        );
    }
    // The drop itself ends the warnings; nothing more is announced.
    server.clock.advance(Duration::days(1));
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["capacity"], &pool["warning"]),
        (&json!(2), &Value::Null)
    );
    server.clock.advance(Duration::days(30));
    assert_eq!(server.events("license_capacity_drop_notice").await.len(), 4);
}
