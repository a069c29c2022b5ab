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
);

fn licensing_config() -> floatilla_server::ServerConfig {
    floatilla_server::ServerConfig {
        allow_unsigned_licenses: true,
        ..test_config()
    }
}

async fn add_license(server: &TestServer, body: Value) -> Value {
    let (status, license) = server
        .api(Method::POST, "/api/v1/licenses", Some(body))
        .await;
    assert_eq!(status, 201, "{license}");
    license
}

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
