//! The console's pages and forms over HTTP, as a browser uses them: a router's own page, groups
//! with their maintenance window and heartbeat, a job's live progress, artifact uploads, license
//! changes that would make routers excess, settings, and a cloud provider with its tenants (codes,
//! redemption, CSV import, approving invited people). Each test runs on SQLite and PostgreSQL.

mod common;

use common::console::*;
use common::*;
use floatilla_domain::{Mode, Role, TenantId};
use floatilla_server::ServerConfig;
use floatilla_server::installation::Trial;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

on_both_backends!(
    a_router_is_managed_from_its_page_and_its_job_watched,
    groups_are_edited_and_artifacts_uploaded_from_the_console,
    removing_a_license_names_the_routers_that_would_become_excess_first,
    the_settings_page_shows_the_server_and_sets_the_contact,
    admins_change_roles_disable_and_delete_accounts,
    a_cloud_provider_and_its_tenants_work_from_the_console,
);

/// A console redirect's notice or problem, decoded.
fn flash_of(location: &str) -> String {
    let query = location.split_once('?').map_or("", |(_, query)| query);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    pairs
        .into_iter()
        .map(|(key, value)| format!("{key}: {value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn a_router_is_managed_from_its_page_and_its_job_watched(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "two", "seats": 2})).await;
    add_user(&server, "ops@example.com", Role::Operator).await;
    server.create_group(json!({"name": "north"})).await;
    let mut fleet = connect_fleet(&server, "RP", 1).await;
    let id = fleet[0].0.clone();
    let client = browser(&server);
    let (cookie, csrf) = logged_in(&client, &server, "ops@example.com").await;
    let path = format!("/routers/{id}");
    let act = async |action: &str, value: &str| {
        let fields = [
            ("csrf", csrf.as_str()),
            ("action", action),
            ("value", value),
        ];
        let (status, location) = submit(&client, &server, &cookie, &path, &fields).await;
        assert_eq!(status, 303, "{location}");
        assert!(
            location.starts_with(&format!("{path}?notice=")),
            "{location}"
        );
        flash_of(&location)
    };

    let (status, html) = page(&client, &server, &cookie, &path).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("value=\"unmanage\"") && html.contains("value=\"pin\""));
    act("rename", "Pier 4").await;
    act("move", "north").await;
    act("tag", "pilot").await;
    act("pin", "").await;
    let router = &server.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(
        (
            &router["name"],
            &router["group"],
            &router["tags"],
            &router["pinned"]
        ),
        (
            &json!("Pier 4"),
            &json!("north"),
            &json!(["pilot"]),
            &json!(true)
        ),
        "{router}"
    );
    act("unmanage", "").await;
    let router = &server.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(router["license_state"], "unmanaged", "{router}");
    let (_, html) = page(&client, &server, &cookie, &path).await;
    assert!(html.contains("An operator marked it unmanaged"), "{html}");
    act("manage", "").await;

    // A reboot from the router's page; its job page follows it while it runs.
    let notice = act("reboot", "").await;
    assert!(notice.contains("Reboot job"), "{notice}");
    let job = server.get("/api/v1/jobs").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    next_job(&mut fleet[0].1).await;
    counts_become(&server, &job, json!({"sent": 1})).await;
    let (status, html) = page(&client, &server, &cookie, &format!("/jobs/{job}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(html.contains("RP-01") && html.contains("1 sent"), "{html}");
    let (_, jobs) = page(&client, &server, &cookie, "/manage/jobs").await;
    assert!(jobs.contains(&format!("href=\"/jobs/{job}\"")), "{jobs}");
    let (status, location) = submit(
        &client,
        &server,
        &cookie,
        &format!("/manage/jobs/{job}/cancel"),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(status, 303, "{location}");
    let (_, html) = page(&client, &server, &cookie, &format!("/jobs/{job}")).await;
    assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(html.contains("cancelled at"), "{html}");

    // An artifact installed on selected routers from the list, and the same artifact rolled
    // out to their group: the job's kind follows the artifact's.
    let (status, artifact) = upload_artifact(
        &server,
        "kind=config&name=site-config&version=3",
        b"hostname pier-4\n".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{artifact}");
    let artifact_id = artifact["id"].as_str().unwrap();
    let (_, routers) = page(&client, &server, &cookie, "/routers").await;
    assert!(routers.contains("site-config 3"), "{routers}");
    let fields = [
        ("csrf", csrf.as_str()),
        ("action", "update"),
        ("artifact_id", artifact_id),
        ("id", id.as_str()),
    ];
    let (_, location) = submit(&client, &server, &cookie, "/routers/bulk", &fields).await;
    let notice = flash_of(&location);
    assert!(
        notice.contains("installs site-config 3 on 1 routers"),
        "{notice}"
    );
    let jobs = server.get("/api/v1/jobs").await;
    let kinds: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"config_update"), "{jobs}");
    let fields = [
        ("csrf", csrf.as_str()),
        ("kind", "config_update"),
        ("artifact_id", artifact_id),
        ("group", "north"),
        ("phases", "100%"),
    ];
    let (_, location) = submit(&client, &server, &cookie, "/rollouts", &fields).await;
    assert!(location.starts_with("/rollouts/"), "{location}");
    assert!(
        flash_of(&location).contains("Rollout started"),
        "{location}"
    );

    // The router's events, from its page.
    let (_, html) = page(&client, &server, &cookie, &path).await;
    assert!(html.contains(&format!("/events?device={id}")), "{html}");
    let (status, events) = page(&client, &server, &cookie, &format!("/events?device={id}")).await;
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("license_granted"), "{events}");
    let (status, _) = page(&client, &server, &cookie, "/events?kind=no_such_kind").await;
    assert_eq!(status, 400);

    // Only an admin revokes a router's credentials: the operator is refused, nothing changes.
    let fields = [("csrf", csrf.as_str()), ("action", "revoke-credentials")];
    let (status, location) = submit(&client, &server, &cookie, &path, &fields).await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with(&format!("{path}?problem=")),
        "{location}"
    );
    let router = &server.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(router["connection_state"], "online", "{router}");

    // Another tenant's router is not there at all.
    let (status, _) = page(
        &client,
        &server,
        &cookie,
        "/routers/0193a0b0-0000-7000-8000-000000000000",
    )
    .await;
    assert_eq!(status, 404);
}

async fn groups_are_edited_and_artifacts_uploaded_from_the_console(db: TestDb) {
    let server = TestServer::start(db).await;
    add_user(&server, "ops@example.com", Role::Operator).await;
    add_user(&server, "viewer@example.com", Role::Viewer).await;
    let group = server.create_group(json!({"name": "south"})).await;
    let id = group["id"].as_str().unwrap().to_owned();
    let client = browser(&server);
    let (cookie, csrf) = logged_in(&client, &server, "ops@example.com").await;
    let path = format!("/groups/{id}");

    let (_, groups) = page(&client, &server, &cookie, "/manage/groups").await;
    assert!(groups.contains(&format!("href=\"{path}\"")), "{groups}");
    let edit = async |name: &str, window: &str, ping: &str, pong: &str| {
        let fields = [
            ("csrf", csrf.as_str()),
            ("name", name),
            ("maintenance_window", window),
            ("ping_interval_secs", ping),
            ("pong_timeout_secs", pong),
        ];
        submit(&client, &server, &cookie, &path, &fields).await
    };
    let (status, location) = edit("south", "02:00-04:00 Europe/Berlin", "60", "20").await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with(&format!("{path}?notice=")),
        "{location}"
    );
    let stored = |groups: Value| groups[0].clone();
    let south = stored(server.get("/api/v1/groups").await);
    assert_eq!(south["maintenance_window"], "02:00-04:00 Europe/Berlin");
    assert_eq!(
        south["timer_profile"],
        json!({"ping_interval_secs": 60, "pong_timeout_secs": 20})
    );
    let (_, html) = page(&client, &server, &cookie, &path).await;
    assert!(
        html.contains("value=\"02:00-04:00 Europe/Berlin\""),
        "{html}"
    );

    // Half a heartbeat, or a window that is none, is refused and changes nothing.
    for (window, ping, pong) in [("", "60", ""), ("at night", "", "")] {
        let (_, location) = edit("renamed", window, ping, pong).await;
        assert!(
            location.starts_with(&format!("{path}?problem=")),
            "{location}"
        );
    }
    assert_eq!(stored(server.get("/api/v1/groups").await), south);
    // Empty fields take the window and the group's own heartbeat away.
    edit("south", "", "", "").await;
    let cleared = stored(server.get("/api/v1/groups").await);
    assert_eq!(
        (&cleared["maintenance_window"], &cleared["timer_profile"]),
        (&Value::Null, &Value::Null)
    );

    // An artifact uploaded from the form is stored whole; without the token nothing is.
    let file: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
    let (status, location) = submit_file(
        &client,
        &server,
        &cookie,
        "/artifacts/upload",
        &artifact_fields("forged"),
        file.clone(),
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.contains("problem="), "{location}");
    assert_eq!(server.get("/api/v1/artifacts").await, json!([]));
    let (status, location) = submit_file(
        &client,
        &server,
        &cookie,
        "/artifacts/upload",
        &artifact_fields(&csrf),
        file.clone(),
    )
    .await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with("/manage/artifacts?notice="),
        "{location}"
    );
    let artifacts = server.get("/api/v1/artifacts").await;
    let artifact = &artifacts[0];
    assert_eq!(artifact["size"], 300_000);
    assert_eq!(artifact["models"], json!(["RUT955", "RUT956"]));
    assert_eq!(
        artifact["sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(&file))
    );
    assert_eq!(artifact["created_by"], "ops@example.com");
    let (_, listed) = page(&client, &server, &cookie, "/manage/artifacts").await;
    assert!(
        listed.contains("7.4.2") && listed.contains("delete"),
        "{listed}"
    );

    // A viewer sees the group but gets no form, and is refused if it posts one anyway.
    let (viewer, viewer_csrf) = logged_in(&client, &server, "viewer@example.com").await;
    let (status, html) = page(&client, &server, &viewer, &path).await;
    assert_eq!(status, 200);
    assert!(!html.contains("name=\"maintenance_window\""), "{html}");
    let (_, location) = submit(
        &client,
        &server,
        &viewer,
        &format!("{path}/delete"),
        &[("csrf", viewer_csrf.as_str())],
    )
    .await;
    assert!(
        location.starts_with(&format!("{path}?problem=")),
        "{location}"
    );

    // The operator deletes it.
    let (_, location) = submit(
        &client,
        &server,
        &cookie,
        &format!("{path}/delete"),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert!(location.starts_with("/manage/groups?notice="), "{location}");
    assert_eq!(server.get("/api/v1/groups").await, json!([]));
}

/// The artifact upload form's fields before its file.
fn artifact_fields(csrf: &str) -> [(&str, &str); 5] {
    [
        ("csrf", csrf),
        ("kind", "firmware"),
        ("name", "rut"),
        ("version", "7.4.2"),
        ("models", "RUT955, RUT956"),
    ]
}

async fn removing_a_license_names_the_routers_that_would_become_excess_first(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "base", "seats": 1})).await;
    let extra = add_license(&server, json!({"name": "extra", "seats": 2})).await;
    add_user(&server, "admin@example.com", Role::Admin).await;
    let _fleet = connect_fleet(&server, "LC", 3).await;
    let client = browser(&server);
    let (cookie, csrf) = logged_in(&client, &server, "admin@example.com").await;
    let (_, licenses) = page(&client, &server, &cookie, "/licenses").await;
    assert!(licenses.contains("id=\"installation-id\""), "{licenses}");
    assert!(!licenses.contains("Redeem an activation code"));

    let remove = format!("/licenses/{}/remove", extra["id"].as_str().unwrap());
    let (status, html) = submit(
        &client,
        &server,
        &cookie,
        &remove,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("from 3 to 1 seats"), "{html}");
    assert!(html.contains("LC-02") && html.contains("LC-03") && !html.contains("LC-01"));
    assert!(html.contains("name=\"acknowledge_downgrade\""), "{html}");
    assert_eq!(server.get("/api/v1/license-pool").await["in_use"], 3);

    let (status, location) = submit(
        &client,
        &server,
        &cookie,
        &remove,
        &[("csrf", csrf.as_str()), ("acknowledge_downgrade", "true")],
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/licenses?notice="), "{location}");
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!((&pool["in_use"], &pool["excess"]), (&json!(1), &json!(2)));

    // A license file from the form: an unsigned one as JSON, which this server accepts.
    let (status, location) = submit_file(
        &client,
        &server,
        &cookie,
        "/licenses",
        &[("csrf", csrf.as_str())],
        br#"{"name": "more", "seats": 5}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/licenses?notice="), "{location}");
    assert_eq!(server.get("/api/v1/license-pool").await["excess"], 0);
}

async fn the_settings_page_shows_the_server_and_sets_the_contact(db: TestDb) {
    let server = TestServer::start(db).await;
    add_user(&server, "admin@example.com", Role::Admin).await;
    add_user(&server, "viewer@example.com", Role::Viewer).await;
    let client = browser(&server);
    let (cookie, csrf) = logged_in(&client, &server, "admin@example.com").await;
    let (status, html) = page(&client, &server, &cookie, "/settings").await;
    assert_eq!(status, 200, "{html}");
    for shown in [
        "on premises",
        "--session-idle-minutes",
        "--audit-retention-days",
    ] {
        assert!(html.contains(shown), "{shown}: {html}");
    }
    let (status, location) = submit(
        &client,
        &server,
        &cookie,
        "/settings/contact",
        &[
            ("csrf", csrf.as_str()),
            ("contact_email", "noc@example.com"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/settings?notice="), "{location}");
    assert_eq!(
        server.get("/api/v1/tenant").await["contact_email"],
        "noc@example.com"
    );
    let (status, location) = submit(
        &client,
        &server,
        &cookie,
        "/settings/contact",
        &[("csrf", csrf.as_str()), ("contact_email", "not an address")],
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/settings?problem="), "{location}");
    assert_eq!(
        server.get("/api/v1/tenant").await["contact_email"],
        "noc@example.com"
    );

    // A viewer reads the settings; its form post is refused.
    let (viewer, viewer_csrf) = logged_in(&client, &server, "viewer@example.com").await;
    let (status, html) = page(&client, &server, &viewer, "/settings").await;
    assert_eq!(status, 200);
    assert!(html.contains("noc@example.com") && !html.contains("name=\"contact_email\""));
    let (_, location) = submit(
        &client,
        &server,
        &viewer,
        "/settings/contact",
        &[("csrf", viewer_csrf.as_str()), ("contact_email", "")],
    )
    .await;
    assert!(location.starts_with("/settings?problem="), "{location}");
}

async fn admins_change_roles_disable_and_delete_accounts(db: TestDb) {
    let server = TestServer::start(db).await;
    add_user(&server, "admin@example.com", Role::Admin).await;
    add_user(&server, "ops@example.com", Role::Operator).await;
    let client = browser(&server);
    let (admin, csrf) = logged_in(&client, &server, "admin@example.com").await;
    let (ops, _) = logged_in(&client, &server, "ops@example.com").await;
    let ops_id = server
        .store
        .user_by_email("ops@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let act = async |action: &str, role: &str| {
        let path = format!("/users/{ops_id}/{action}");
        let fields = [("csrf", csrf.as_str()), ("role", role)];
        let (status, location) = submit(&client, &server, &admin, &path, &fields).await;
        assert_eq!(status, 303, "{location}");
        location
    };
    let (_, users) = page(&client, &server, &admin, "/users").await;
    assert!(
        users.contains(&format!("/users/{ops_id}/disable")),
        "{users}"
    );
    // The admin's own row has no buttons.
    let own = server
        .store
        .user_by_email("admin@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert!(!users.contains(&format!("/users/{own}/")), "{users}");

    // A new role ends the person's sessions.
    assert!(act("role", "viewer").await.starts_with("/users?notice="));
    assert_eq!(page(&client, &server, &ops, "/").await.0, 303);
    let (viewer, _) = logged_in(&client, &server, "ops@example.com").await;
    let (_, html) = page(&client, &server, &viewer, "/").await;
    assert!(html.contains("ops@example.com (viewer)"), "{html}");
    assert!(act("role", "owner").await.starts_with("/users?problem="));

    // Disabled, it cannot log in; enabled again, it can; deleted, it is gone.
    assert!(act("disable", "").await.starts_with("/users?notice="));
    assert_eq!(
        log_in(&client, &server, "ops@example.com", PASSWORD)
            .await
            .0,
        401
    );
    act("enable", "").await;
    assert_eq!(
        log_in(&client, &server, "ops@example.com", PASSWORD)
            .await
            .0,
        303
    );
    assert!(act("delete", "").await.starts_with("/users?notice="));
    assert!(
        server
            .store
            .user_by_email("ops@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_cloud_provider_and_its_tenants_work_from_the_console(db: TestDb) {
    let config = ServerConfig {
        mode: Mode::Cloud,
        ..test_config()
    };
    let server = TestServer::start_with(db, config).await;
    add_user_in(&server, "provider@example.com", Role::Provider, None).await;
    let client = browser(&server);
    let (provider, provider_csrf) = logged_in(&client, &server, "provider@example.com").await;

    // The provider creates a tenant and a batch of codes, downloaded as CSV.
    let (_, location) = submit(
        &client,
        &server,
        &provider,
        "/manage/tenants",
        &[("csrf", provider_csrf.as_str()), ("name", "Harbour Works")],
    )
    .await;
    assert!(
        location.starts_with("/manage/tenants?notice="),
        "{location}"
    );
    let tenants = server.get("/api/v1/provider/tenants").await;
    let tenant_id = tenants[0]["id"].as_str().unwrap().to_owned();
    let response = client
        .post(format!("{}/manage/activation-codes", server.url))
        .header(reqwest::header::COOKIE, &provider)
        .form(&[
            ("csrf", provider_csrf.as_str()),
            ("count", "3"),
            ("seats", "10"),
            ("term_months", "12"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let disposition = response.headers()[reqwest::header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let csv = response.text().await.unwrap();
    let codes: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 3, "{csv}");
    let (_, listed) = page(&client, &server, &provider, "/manage/activation-codes").await;
    assert!(codes.iter().all(|code| listed.contains(code.as_str())));

    // The tenant's admin redeems one code, then imports a file of the rest (and a typo).
    let tenant: TenantId = tenant_id.parse().unwrap();
    add_user_in(&server, "admin@harbour.example", Role::Admin, Some(tenant)).await;
    let (admin, csrf) = logged_in(&client, &server, "admin@harbour.example").await;
    let (_, licenses) = page(&client, &server, &admin, "/licenses").await;
    assert!(licenses.contains("Redeem an activation code"), "{licenses}");
    assert!(!licenses.contains("id=\"installation-id\""));
    let (_, location) = submit(
        &client,
        &server,
        &admin,
        "/licenses/redeem",
        &[("csrf", csrf.as_str()), ("code", codes[0].as_str())],
    )
    .await;
    assert!(location.starts_with("/licenses?notice="), "{location}");
    let import = format!("code\n{}\n{}\nNOT-A-CODE\n", codes[1], codes[0]);
    let (status, report) = submit_file(
        &client,
        &server,
        &admin,
        "/licenses/import",
        &[("csrf", csrf.as_str())],
        import.into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert!(report.contains("1 codes redeemed, 2 failed."), "{report}");
    assert!(report.contains("id=\"imported\""), "{report}");
    let pool = server
        .api_as(
            &TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Viewer)
                .await,
            Method::GET,
            "/api/v1/license-pool",
            None,
        )
        .await
        .1;
    let trial = u64::from(Trial::default().seats);
    assert_eq!(pool["capacity"], 20 + trial, "{pool}");

    // An invited person sets a password, then waits for the tenant's admin to approve.
    let (status, invited) = submit(
        &client,
        &server,
        &admin,
        "/users",
        &[
            ("csrf", csrf.as_str()),
            ("email", "new@harbour.example"),
            ("role", "operator"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{invited}");
    let link_start = invited.find("/invitation/").expect("the invitation link");
    let link = invited[link_start..].split('<').next().unwrap().to_owned();
    let (status, _) = submit(&client, &server, "", &link, &[("password", PASSWORD)]).await;
    assert_eq!(status, 303);
    assert_eq!(
        log_in(&client, &server, "new@harbour.example", PASSWORD)
            .await
            .0,
        401
    );
    let (_, users) = page(&client, &server, &admin, "/users").await;
    assert!(users.contains("needs_approval"), "{users}");
    let user_id = server
        .store
        .user_by_email("new@harbour.example")
        .await
        .unwrap()
        .unwrap()
        .id;
    let (_, location) = submit(
        &client,
        &server,
        &admin,
        &format!("/users/{user_id}/approve"),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert!(location.starts_with("/users?notice="), "{location}");
    let (newcomer, _) = logged_in(&client, &server, "new@harbour.example").await;
    let (status, _) = page(&client, &server, &newcomer, "/routers").await;
    assert_eq!(status, 200);

    // The provider sees the tenant's usage; the tenant's people see none of the provider's pages.
    let (status, html) = page(
        &client,
        &server,
        &provider,
        &format!("/tenants/{tenant_id}"),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Harbour Works") && html.contains("<svg"),
        "{html}"
    );
    let (status, csv) = page(
        &client,
        &server,
        &provider,
        &format!("/tenants/{tenant_id}/usage.csv?granularity=day"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("start,granularity,"), "{csv}");
    for path in [
        format!("/tenants/{tenant_id}"),
        "/manage/activation-codes".to_owned(),
        "/manage/tenants".to_owned(),
    ] {
        let (status, _) = page(&client, &server, &admin, &path).await;
        assert_eq!(status, 403, "{path}");
    }
}
