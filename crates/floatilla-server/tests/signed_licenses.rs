//! Signed license files on a running server: installing through the API, every rejection code,
//! status, renewals that supersede, downgrades that need an acknowledgement, and the clock
//! defence. Each test runs on SQLite and PostgreSQL.

mod common;

use chrono::Duration;
use common::console::*;
use common::*;
use floatilla_domain::licensing::Seats;
use floatilla_domain::licensing::signed::{
    IssuerKey, LicenseClaims, RootKey, SignedIssuerCertificate, issue,
};
use floatilla_domain::{Clock, Role, Timestamp};
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    every_rejection_has_its_code_and_disturbs_nothing,
    status_follows_each_license_and_a_renewal_takes_over_without_gap,
    downgrades_need_an_acknowledgement,
    the_console_names_the_routers_a_downgrade_sheds_before_installing_it,
    a_clock_that_jumps_or_falls_behind_holds_capacity,
);

/// A vendor: a root and one certified issuing key.
struct Vendor {
    root: RootKey,
    issuer: IssuerKey,
    certificate: SignedIssuerCertificate,
}

impl Vendor {
    fn new(seed: u8, now: Timestamp) -> Self {
        let root = RootKey::from_seed([seed; 32]);
        let issuer = IssuerKey::from_seed([seed.wrapping_add(100); 32]);
        let certificate = root.certify(
            &issuer.public_key(),
            now - Duration::days(30),
            now + Duration::days(365),
            now - Duration::days(30),
        );
        Self {
            root,
            issuer,
            certificate,
        }
    }

    fn license(&self, claims: &LicenseClaims) -> String {
        issue(&self.issuer, &self.certificate, claims)
    }
}

fn claims(installation_id: &str, serial: &str, seats: u32, now: Timestamp) -> LicenseClaims {
    LicenseClaims {
        serial: serial.to_owned(),
        installation_id: installation_id.to_owned(),
        customer: "Harbour Works".to_owned(),
        seats: Seats::Count(seats),
        not_before: now - Duration::days(1),
        not_after: Some(now + Duration::days(365)),
        grace_until: None,
        issued_at: now - Duration::hours(1),
        supersedes: Vec::new(),
        entitlements: vec!["routers".to_owned()],
    }
}

async fn server_trusting(db: TestDb, vendor: &Vendor) -> TestServer {
    let config = floatilla_server::ServerConfig {
        trusted_license_roots: vec![vendor.root.public_key()],
        ..test_config()
    };
    TestServer::start_with(db, config).await
}

async fn installation_id(server: &TestServer) -> String {
    let installation = server.get("/api/v1/installation").await;
    installation["installation_id"].as_str().unwrap().to_owned()
}

/// Posts a license file; answers the status and the body.
async fn install(server: &TestServer, text: &str, query: &str) -> (u16, Value) {
    let response = server
        .http
        .post(format!("{}/api/v1/licenses{query}", server.url))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/x-pem-file")
        .body(text.to_owned())
        .send()
        .await
        .expect("install request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn installed(server: &TestServer, text: &str) -> Value {
    let (status, license) = install(server, text, "").await;
    assert_eq!(status, 201, "{license}");
    license
}

async fn rejected(server: &TestServer, text: &str) -> String {
    let (status, body) = install(server, text, "").await;
    assert_eq!(status, 400, "{body}");
    body["code"].as_str().unwrap().to_owned()
}

async fn every_rejection_has_its_code_and_disturbs_nothing(db: TestDb) {
    let now = chrono::Utc::now();
    let vendor = Vendor::new(1, now);
    let server = server_trusting(db, &vendor).await;
    let now = server.clock.now();
    let id = installation_id(&server).await;
    let good = claims(&id, "L-GOOD", 10, now);
    installed(&server, &vendor.license(&good)).await;

    let text = vendor.license(&claims(&id, "L-2", 5, now));
    assert_eq!(rejected(&server, "not a license").await, "malformed");
    let tampered = text.replacen('A', "B", 1);
    assert_eq!(rejected(&server, &tampered).await, "malformed");

    let stranger = Vendor::new(2, now);
    let unknown = stranger.license(&claims(&id, "L-3", 5, now));
    assert_eq!(rejected(&server, &unknown).await, "unknown_issuer");

    let mut outside = claims(&id, "L-4", 5, now);
    outside.issued_at = now - Duration::days(60);
    assert_eq!(
        rejected(&server, &vendor.license(&outside)).await,
        "issuer_not_valid_at_issue"
    );

    // Signed by a key that is not the one its certificate is for.
    let impostor = IssuerKey::from_seed([77; 32]);
    let forged = issue(&impostor, &vendor.certificate, &claims(&id, "L-5", 5, now));
    assert_eq!(rejected(&server, &forged).await, "invalid_signature");

    let elsewhere = vendor.license(&claims("another-installation", "L-6", 5, now));
    assert_eq!(rejected(&server, &elsewhere).await, "wrong_installation");

    let mut future = claims(&id, "L-7", 5, now);
    future.issued_at = now + Duration::minutes(6);
    assert_eq!(
        rejected(&server, &vendor.license(&future)).await,
        "issued_in_future"
    );
    let mut soon = claims(&id, "L-7b", 5, now);
    soon.issued_at = now + Duration::minutes(4);
    installed(&server, &vendor.license(&soon)).await;

    let mut renewal = claims(&id, "L-8", 10, now);
    renewal.supersedes = vec!["L-OLD".to_owned()];
    installed(&server, &vendor.license(&renewal)).await;
    let old = vendor.license(&claims(&id, "L-OLD", 10, now));
    assert_eq!(rejected(&server, &old).await, "superseded");

    let mut expired = claims(&id, "L-9", 5, now);
    expired.not_before = now - Duration::days(40);
    expired.not_after = Some(now - Duration::days(10));
    assert_eq!(
        rejected(&server, &vendor.license(&expired)).await,
        "expired"
    );

    // The same file twice is a conflict; nothing of the above disturbed what was installed.
    let (status, body) = install(&server, &vendor.license(&good), "").await;
    assert_eq!(status, 409, "{body}");
    let licenses = server.get("/api/v1/licenses").await;
    let serials: Vec<&str> = licenses["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["serial"].as_str().unwrap())
        .collect();
    assert_eq!(serials.len(), 3, "{licenses}");
    for serial in ["L-GOOD", "L-7b", "L-8"] {
        assert!(serials.contains(&serial), "{licenses}");
    }
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 25);

    // A server that trusts no root starts, and refuses every file as from an unknown issuer.
    let untrusting = TestServer::start(TestDb::sqlite()).await;
    let id = installation_id(&untrusting).await;
    let text = vendor.license(&claims(&id, "L-10", 5, untrusting.clock.now()));
    assert_eq!(rejected(&untrusting, &text).await, "unknown_issuer");
}

/// The events of `kind` once there are `count` of them: the node that notices a clock change
/// records its events while it goes on.
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

fn status_of<'a>(licenses: &'a Value, serial: &str) -> &'a Value {
    licenses["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["serial"] == serial)
        .unwrap_or_else(|| panic!("no license {serial} in {licenses}"))
}

async fn status_follows_each_license_and_a_renewal_takes_over_without_gap(db: TestDb) {
    let now = chrono::Utc::now();
    let vendor = Vendor::new(3, now);
    let server = server_trusting(db, &vendor).await;
    let now = server.clock.now();
    let id = installation_id(&server).await;

    let mut current = claims(&id, "C-1", 10, now);
    current.not_after = Some(now + Duration::days(20));
    current.grace_until = Some(now + Duration::days(27));
    installed(&server, &vendor.license(&current)).await;
    // An early renewal: installed now, it starts the day the current one ends.
    let mut renewal = claims(&id, "C-2", 12, now);
    renewal.not_before = now + Duration::days(20);
    renewal.not_after = Some(now + Duration::days(385));
    renewal.supersedes = vec!["C-1".to_owned()];
    installed(&server, &vendor.license(&renewal)).await;

    let licenses = server.get("/api/v1/licenses").await;
    let c1 = status_of(&licenses, "C-1");
    assert_eq!(
        (&c1["status"], &c1["days_left"]),
        (&json!("expiring"), &json!(20))
    );
    assert_eq!(status_of(&licenses, "C-2")["status"], "not_yet_valid");
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 10);

    // A millisecond before the renewal starts: the old one still counts, alone.
    let start = now + Duration::days(20);
    server
        .clock
        .advance(start - server.clock.now() - Duration::milliseconds(1));
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 10);
    server.clock.advance(Duration::milliseconds(1));
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(pool["capacity"], 12, "{pool}");
    let licenses = server.get("/api/v1/licenses").await;
    assert_eq!(status_of(&licenses, "C-1")["status"], "superseded");
    assert_eq!(status_of(&licenses, "C-2")["status"], "valid");

    // Grace, then expiry, of a license nobody renewed.
    let mut graced = claims(&id, "G-1", 3, server.clock.now());
    graced.not_after = Some(server.clock.now() + Duration::days(1));
    graced.grace_until = Some(server.clock.now() + Duration::days(3));
    installed(&server, &vendor.license(&graced)).await;
    server.clock.advance(Duration::days(2));
    let licenses = server.get("/api/v1/licenses").await;
    let g1 = status_of(&licenses, "G-1");
    assert_eq!(
        (&g1["status"], &g1["days_left"]),
        (&json!("in_grace"), &json!(1))
    );
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 15);
    server.clock.advance(Duration::days(1));
    assert_eq!(
        status_of(&server.get("/api/v1/licenses").await, "G-1")["status"],
        "expired"
    );
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 12);
}

async fn downgrades_need_an_acknowledgement(db: TestDb) {
    let now = chrono::Utc::now();
    let vendor = Vendor::new(4, now);
    let server = server_trusting(db, &vendor).await;
    let now = server.clock.now();
    let id = installation_id(&server).await;
    installed(&server, &vendor.license(&claims(&id, "D-1", 3, now))).await;
    let mut routers = Vec::new();
    for n in 1..=3 {
        let serial = format!("DG-{n}");
        let enrolled = server.enrolled(&serial).await;
        routers.push(server.router(&enrolled.credential, &serial).await);
    }
    // A renewal with fewer seats, starting now, would shed the last router in line.
    let mut smaller = claims(&id, "D-2", 2, now);
    smaller.supersedes = vec!["D-1".to_owned()];
    let text = vendor.license(&smaller);
    let (status, body) = install(&server, &text, "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("downgrade_requires_acknowledgement")),
        "{body}"
    );
    assert_eq!(body["routers"][0]["serial"], "DG-3");
    assert_eq!(server.get("/api/v1/license-pool").await["in_use"], 3);
    let (status, body) = install(&server, &text, "?acknowledge_downgrade=true").await;
    assert_eq!(status, 201, "{body}");
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!((&pool["in_use"], &pool["excess"]), (&json!(2), &json!(1)));
    // An upgrade needs nothing.
    installed(&server, &vendor.license(&claims(&id, "D-3", 5, now))).await;
    assert_eq!(server.get("/api/v1/license-pool").await["excess"], 0);
}

/// The text of the page's `<textarea name="content">`, as the browser would post it.
fn carried_content(html: &str) -> String {
    let start = html
        .find("name=\"content\" hidden>")
        .expect("the license carried")
        + 22;
    let escaped = html[start..].split("</textarea>").next().unwrap();
    escaped
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

async fn the_console_names_the_routers_a_downgrade_sheds_before_installing_it(db: TestDb) {
    let now = chrono::Utc::now();
    let vendor = Vendor::new(6, now);
    let server = server_trusting(db, &vendor).await;
    let now = server.clock.now();
    let id = installation_id(&server).await;
    installed(&server, &vendor.license(&claims(&id, "C-1", 2, now))).await;
    let _fleet = connect_fleet(&server, "CD", 2).await;
    add_user(&server, "admin@example.com", Role::Admin).await;
    let client = browser(&server);
    let (cookie, csrf) = logged_in(&client, &server, "admin@example.com").await;
    let mut smaller = claims(&id, "C-2", 1, now);
    smaller.supersedes = vec!["C-1".to_owned()];
    let text = vendor.license(&smaller);

    let (status, html) = submit_file(
        &client,
        &server,
        &cookie,
        "/licenses",
        &[("csrf", csrf.as_str())],
        text.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("from 2 to 1 seats") && html.contains("CD-02"),
        "{html}"
    );
    assert!(!html.contains(">CD-01<"), "{html}");
    assert_eq!(
        server.get("/api/v1/licenses").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let content = carried_content(&html);
    assert_eq!(content.trim(), text.trim());

    let confirmation = multipart_form(&[
        ("csrf", csrf.as_str()),
        ("acknowledge_downgrade", "true"),
        ("content", content.as_str()),
    ]);
    let (status, location) =
        submit_multipart(&client, &server, &cookie, "/licenses", confirmation).await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/licenses?notice="), "{location}");
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["in_use"], &pool["excess"]),
        (&json!(1), &json!(1)),
        "{pool}"
    );
}

async fn a_clock_that_jumps_or_falls_behind_holds_capacity(db: TestDb) {
    let now = chrono::Utc::now();
    let vendor = Vendor::new(5, now);
    let server = server_trusting(db, &vendor).await;
    let now = server.clock.now();
    let id = installation_id(&server).await;
    let mut short = claims(&id, "K-1", 4, now);
    short.not_after = Some(now + Duration::minutes(30));
    installed(&server, &vendor.license(&short)).await;
    let mut recent = claims(&id, "K-2", 2, now);
    recent.not_before = now - Duration::minutes(30);
    installed(&server, &vendor.license(&recent)).await;
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 6);

    // The wall clock jumps two hours ahead: the 30-minute license does not expire.
    server.clock.jump(Duration::hours(2));
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(pool["capacity"], 6, "{pool}");
    assert_eq!(
        (&pool["clock"]["trusted"], &pool["clock"]["doubt"]),
        (&json!(false), &json!("jumped"))
    );
    let alarms = events_eventually(&server, "license_clock_in_doubt", 1).await;
    assert_eq!(alarms[0]["severity"], "alarm");

    // Set right again: trusted without anyone acknowledging.
    server.clock.jump(-Duration::hours(2));
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["clock"]["trusted"], &pool["capacity"]),
        (&json!(true), &json!(6))
    );
    events_eventually(&server, "license_clock_trusted", 1).await;

    // Two hours back: by that clock the recent license has not started, but nothing changes
    // until an admin accepts the clock as it is.
    server.clock.jump(-Duration::hours(2));
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["clock"]["trusted"], &pool["capacity"]),
        (&json!(false), &json!(6))
    );
    events_eventually(&server, "license_clock_in_doubt", 2).await;
    let (status, clock) = server
        .api(Method::POST, "/api/v1/license-pool/clock/acknowledge", None)
        .await;
    assert_eq!((status, &clock["trusted"]), (200, &json!(true)), "{clock}");
    assert_eq!(server.get("/api/v1/license-pool").await["capacity"], 4);

    // Behind the newest signed time: a license issued three minutes ahead of this clock, then
    // the clock set back ten minutes.
    let wall = server.clock.now();
    let mut fresh = claims(&id, "K-3", 1, wall);
    fresh.issued_at = wall + Duration::minutes(3);
    installed(&server, &vendor.license(&fresh)).await;
    server.clock.jump(-Duration::minutes(10));
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(
        (&pool["clock"]["doubt"], &pool["capacity"]),
        (&json!("behind_signed_time"), &json!(5)),
        "{pool}"
    );
    let (status, _) = server
        .api(Method::POST, "/api/v1/license-pool/clock/acknowledge", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.get("/api/v1/license-pool").await["clock"]["trusted"],
        true
    );
}
