//! The provider of a cloud service and its tenants, through the API: tenants created with a
//! trial, listed with their usage, suspended, resumed and deleted; activation codes sold in
//! batches and redeemed once, one at a time or imported, with failed attempts rate-limited per
//! tenant; and every route this adds kept to whoever may use it.

mod common;

use chrono::Months;
use common::*;
use floatilla_domain::licensing::activation::ActivationCode;
use floatilla_domain::{Clock, Mode, Role, TenantId};
use floatilla_protocol::ServerMessage;
use floatilla_server::{ServerConfig, Trial};
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    the_provider_runs_tenants_and_sees_their_usage,
    a_suspended_tenant_is_refused_until_resumed,
    trials_follow_the_server_settings,
    codes_are_sold_in_batches_and_redeemed_once,
    an_import_reports_each_row,
    failed_attempts_are_rate_limited_per_tenant,
    every_new_route_is_kept_to_its_role_and_tenant,
);

fn cloud(trial: Trial) -> ServerConfig {
    ServerConfig {
        mode: Mode::Cloud,
        trial,
        ..test_config()
    }
}

/// A cloud server whose `admin_token` is the provider's.
async fn cloud_server(db: TestDb) -> TestServer {
    TestServer::start_with(db, cloud(Trial::default())).await
}

async fn create_tenant(server: &TestServer, body: Value) -> Value {
    let (status, tenant) = server
        .api(Method::POST, "/api/v1/provider/tenants", Some(body))
        .await;
    assert_eq!(status, 201, "{tenant}");
    tenant
}

/// A tenant and a token of its admin.
async fn tenant_with_admin(server: &TestServer, name: &str) -> (TenantId, String) {
    let tenant = create_tenant(server, json!({"name": name})).await;
    let id: TenantId = tenant["id"].as_str().unwrap().parse().unwrap();
    let token = TestServer::token_for(server.store.as_ref(), &server.clock, id, Role::Admin).await;
    (id, token)
}

/// A new enrollment token of the tenant whose admin `admin` is.
async fn enrollment_token_in_tenant(server: &TestServer, admin: &str, name: &str) -> String {
    let (status, token) = server
        .api_as(
            admin,
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

/// Enrolls a router into the tenant whose admin `admin` is.
async fn enroll_in_tenant(
    server: &TestServer,
    admin: &str,
    serial: &str,
) -> floatilla_protocol::EnrollResponse {
    let token = enrollment_token_in_tenant(server, admin, serial).await;
    server.enroll(&token, serial).await
}

/// Creates a batch and answers its codes as printed, checking the CSV's shape.
async fn create_codes(
    server: &TestServer,
    count: u32,
    seats: u32,
    term_months: u32,
) -> Vec<String> {
    let response = server
        .http
        .post(format!("{}/api/v1/provider/activation-codes", server.url))
        .bearer_auth(&server.admin_token)
        .json(&json!({"count": count, "seats": seats, "term_months": term_months}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("code,seats,term_months,batch_id,created_at")
    );
    let codes: Vec<String> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[1], seats.to_string());
            assert_eq!(fields[2], term_months.to_string());
            fields[0].to_owned()
        })
        .collect();
    assert_eq!(codes.len(), count as usize);
    codes
}

async fn redeem(server: &TestServer, token: &str, code: &str) -> (u16, Value) {
    server
        .api_as(
            token,
            Method::POST,
            "/api/v1/activation-codes/redeem",
            Some(json!({"code": code})),
        )
        .await
}

async fn import(server: &TestServer, token: &str, csv: &str) -> (u16, Value) {
    let response = server
        .http
        .post(format!("{}/api/v1/activation-codes/import", server.url))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn capacity(server: &TestServer, token: &str) -> Value {
    let (status, pool) = server
        .api_as(token, Method::GET, "/api/v1/license-pool", None)
        .await;
    assert_eq!(status, 200, "{pool}");
    pool["capacity"].clone()
}

/// A code with valid check characters that was never issued.
fn never_issued() -> String {
    ActivationCode::generate(rand::random()).to_string()
}

/// `code` with one symbol changed: the check characters catch it.
fn with_typo(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    chars[1] = if chars[1] == '7' { '8' } else { '7' };
    chars.into_iter().collect()
}

async fn the_provider_runs_tenants_and_sees_their_usage(db: TestDb) {
    let server = cloud_server(db).await;
    let harbour = create_tenant(
        &server,
        json!({"name": "Harbour Works", "contact_email": "ops@harbour.example"}),
    )
    .await;
    assert_eq!(harbour["name"], "Harbour Works");
    assert_eq!(harbour["contact_email"], "ops@harbour.example");
    assert_eq!(harbour["suspended_at"], Value::Null);
    assert_eq!(
        harbour["usage"],
        json!({"capacity": 25, "in_use": 0, "excess": 0})
    );
    let (id, admin) = tenant_with_admin(&server, "Mill Road").await;

    // A router of Mill Road takes a seat of its trial.
    let enrolled = enroll_in_tenant(&server, &admin, "MR-1").await;
    let _router = server.router(&enrolled.credential, "MR-1").await;
    let one = format!("/api/v1/provider/tenants/{id}");
    let mut usage = Value::Null;
    for _ in 0..100 {
        usage = server.get(&one).await["usage"].clone();
        if usage["in_use"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(usage, json!({"capacity": 25, "in_use": 1, "excess": 0}));
    // Usage history per tenant, to bill from.
    server.clock.advance(chrono::Duration::hours(2));
    let history = server
        .get(&format!("{one}/license-usage?granularity=hour"))
        .await;
    let peaks: Vec<&Value> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bucket| &bucket["peak_licensed"])
        .collect();
    assert!(peaks.contains(&&json!(1)), "{history}");
    let (status, _) = server
        .api(
            Method::GET,
            &format!("/api/v1/provider/tenants/{}/license-usage", TenantId::new()),
            None,
        )
        .await;
    assert_eq!(status, 404);

    let listed = server.get("/api/v1/provider/tenants").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Harbour Works", "Mill Road"]);

    let (status, renamed) = server
        .api(
            Method::PATCH,
            &one,
            Some(json!({"name": "Mill Road Ltd", "contact_email": "noc@mill.example"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Mill Road Ltd");
    let (status, own) = server
        .api_as(&admin, Method::GET, "/api/v1/tenant", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(own["contact_email"], "noc@mill.example");
    let (status, bad) = server
        .api(
            Method::PATCH,
            &one,
            Some(json!({"contact_email": "not an address"})),
        )
        .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_email")));

    let harbour_one = format!(
        "/api/v1/provider/tenants/{}",
        harbour["id"].as_str().unwrap()
    );
    let (status, _) = server.api(Method::DELETE, &harbour_one, None).await;
    assert_eq!(status, 204);
    let (status, _) = server.api(Method::GET, &harbour_one, None).await;
    assert_eq!(status, 404);
    let (status, _) = server.api(Method::DELETE, &harbour_one, None).await;
    assert_eq!(status, 404);
    assert_eq!(
        server
            .get("/api/v1/provider/tenants")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Deleting a tenant ends its routers' channels; its tokens stop working.
    let (status, _) = server.api(Method::DELETE, &one, None).await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_as(&admin, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(status, 401);
    let mut router = _router;
    match router.next_message().await {
        Some(ServerMessage::Disconnect { reason, .. }) => {
            assert_eq!(reason, "credential_revoked");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

async fn a_suspended_tenant_is_refused_until_resumed(db: TestDb) {
    let server = cloud_server(db).await;
    let (id, admin) = tenant_with_admin(&server, "Quarry").await;
    let (_, other_admin) = tenant_with_admin(&server, "Dockside").await;
    let enrolled = enroll_in_tenant(&server, &admin, "Q-1").await;
    let enrollment_token = enrollment_token_in_tenant(&server, &admin, "more").await;
    let mut router = server.router(&enrolled.credential, "Q-1").await;

    let (status, suspended) = server
        .api(
            Method::POST,
            &format!("/api/v1/provider/tenants/{id}/suspend"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{suspended}");
    assert!(suspended["suspended_at"].is_string());
    match router.next_message().await {
        Some(ServerMessage::Disconnect { reason, .. }) => assert_eq!(reason, "tenant_suspended"),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let mut channel = server.raw_socket().await;
    floatilla_agent::connection::send_message(
        &mut channel,
        &floatilla_protocol::DeviceMessage::Hello(hello(&enrolled.credential, "Q-1")),
    )
    .await
    .unwrap();
    expect_refusal(&mut channel, "tenant_suspended").await;

    let (status, refused) = server
        .api_as(&admin, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("tenant_suspended"))
    );
    match server.try_enroll(&enrollment_token, "Q-2", None).await {
        Err(floatilla_agent::ChannelError::Refused(body)) => {
            assert_eq!(body.code, "tenant_suspended");
        }
        other => panic!("expected a refused enrollment, got {other:?}"),
    }
    let (status, _) = server
        .api_as(&other_admin, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(status, 200, "other tenants carry on");

    let (status, resumed) = server
        .api(
            Method::POST,
            &format!("/api/v1/provider/tenants/{id}/resume"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(resumed["suspended_at"], Value::Null);
    let (status, events) = server
        .api_as(
            &admin,
            Method::GET,
            "/api/v1/events?kind=tenant_suspended",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    let _router = server.router(&enrolled.credential, "Q-1").await;
}

async fn trials_follow_the_server_settings(db: TestDb) {
    let server = TestServer::start_with(db, cloud(Trial { days: 10, seats: 5 })).await;
    let (_, admin) = tenant_with_admin(&server, "Trial").await;
    let (status, licenses) = server
        .api_as(&admin, Method::GET, "/api/v1/licenses", None)
        .await;
    assert_eq!(status, 200);
    let trial = &licenses["items"][0];
    assert_eq!(trial["seats"], 5);
    let ends: chrono::DateTime<chrono::Utc> = trial["not_after"].as_str().unwrap().parse().unwrap();
    assert_eq!(ends, server.clock.now() + chrono::Duration::days(10));
    assert_eq!(capacity(&server, &admin).await, 5);
    // The trial ends on its day.
    server.clock.advance(chrono::Duration::days(10));
    let mut now_capacity = Value::Null;
    for _ in 0..100 {
        now_capacity = capacity(&server, &admin).await;
        if now_capacity == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(now_capacity, 0);
    let mut server = server;
    server.shutdown().await;

    let without =
        TestServer::start_with(TestDb::sqlite(), cloud(Trial { days: 45, seats: 0 })).await;
    let (_, admin) = tenant_with_admin(&without, "No trial").await;
    let (_, licenses) = without
        .api_as(&admin, Method::GET, "/api/v1/licenses", None)
        .await;
    assert_eq!(licenses["items"], json!([]));
    assert_eq!(capacity(&without, &admin).await, 0);

    let on_prem = TestServer::start(TestDb::sqlite()).await;
    assert_eq!(on_prem.get("/api/v1/licenses").await["items"], json!([]));
}

async fn codes_are_sold_in_batches_and_redeemed_once(db: TestDb) {
    let server = cloud_server(db).await;
    let (tenant, admin) = tenant_with_admin(&server, "Harbour").await;
    let (_, other_admin) = tenant_with_admin(&server, "Mill").await;
    let big = create_codes(&server, 3, 25, 12).await;
    let small = create_codes(&server, 2, 1, 1).await;
    for code in big.iter().chain(&small) {
        let parsed: ActivationCode = code.parse().expect("a printed code reads back");
        assert_eq!(&parsed.to_string(), code);
    }

    let redeemed_at = server.clock.now();
    let (status, first) = redeem(&server, &admin, &big[0].to_lowercase()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["code"], big[0]);
    assert_eq!(first["license"]["seats"], 25);
    let ends: chrono::DateTime<chrono::Utc> = first["license"]["not_after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ends,
        redeemed_at.checked_add_months(Months::new(12)).unwrap()
    );
    let (status, _) = redeem(&server, &admin, &small[0]).await;
    assert_eq!(status, 201);
    // Trial 25 + 25 + 1: codes of any size combine.
    assert_eq!(capacity(&server, &admin).await, 51);

    let (status, again) = redeem(&server, &admin, &big[0]).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("code_already_redeemed"))
    );
    let (status, elsewhere) = redeem(&server, &other_admin, &big[0]).await;
    assert_eq!(
        (status, elsewhere["code"].as_str()),
        (404, Some("not_found")),
        "another tenant's code is answered as if it did not exist"
    );
    let (status, typo) = redeem(&server, &admin, &with_typo(&big[1])).await;
    assert_eq!((status, typo["code"].as_str()), (400, Some("code_typo")));
    let (status, short) = redeem(&server, &admin, "ABCDE-12345").await;
    assert_eq!(
        (status, short["code"].as_str()),
        (400, Some("invalid_code_length"))
    );
    assert_eq!(capacity(&server, &other_admin).await, 25);

    let redeemed = server
        .get("/api/v1/provider/activation-codes?state=redeemed")
        .await;
    let redeemed = redeemed.as_array().unwrap();
    assert_eq!(redeemed.len(), 2);
    for code in redeemed {
        assert_eq!(code["state"], "redeemed");
        assert_eq!(code["tenant_id"], tenant.to_string());
        assert!(code["license_id"].is_string());
    }
    let available = server
        .get("/api/v1/provider/activation-codes?state=available")
        .await;
    assert_eq!(available.as_array().unwrap().len(), 3);
    let (status, bad) = server
        .api(
            Method::GET,
            "/api/v1/provider/activation-codes?state=spent",
            None,
        )
        .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("invalid_filter"))
    );
    let (status, bad) = server
        .api(
            Method::POST,
            "/api/v1/provider/activation-codes",
            Some(json!({"count": 0, "seats": 1, "term_months": 1})),
        )
        .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_field")));
    let events = server
        .api_as(
            &admin,
            Method::GET,
            "/api/v1/events?kind=license_code_redeemed",
            None,
        )
        .await
        .1;
    assert_eq!(events["items"].as_array().unwrap().len(), 2);
}

async fn an_import_reports_each_row(db: TestDb) {
    let server = cloud_server(db).await;
    let (_, admin) = tenant_with_admin(&server, "Harbour").await;
    let codes = create_codes(&server, 3, 10, 6).await;
    let (status, _) = redeem(&server, &admin, &codes[2]).await;
    assert_eq!(status, 201);
    let unknown = never_issued();
    let csv = format!(
        "code,note\n{},first\n{}\n\n{unknown}\n{}\n\"{}\",quoted\n",
        codes[0],
        with_typo(&codes[1]),
        codes[2],
        codes[1]
    );
    let (status, report) = import(&server, &admin, &csv).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["redeemed"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(3))
    );
    assert_import_rows(
        &report,
        &[
            (2, "redeemed", None),
            (3, "failed", Some("code_typo")),
            (5, "failed", Some("not_found")),
            (6, "failed", Some("code_already_redeemed")),
            (7, "redeemed", None),
        ],
    );
    assert_eq!(capacity(&server, &admin).await, 25 + 30);
    let (status, empty) = import(&server, &admin, "code\n\n").await;
    assert_eq!(
        (status, empty["code"].as_str()),
        (400, Some("empty_import"))
    );
}

async fn failed_attempts_are_rate_limited_per_tenant(db: TestDb) {
    let server = cloud_server(db).await;
    let (_, admin) = tenant_with_admin(&server, "Guesser").await;
    let (_, other_admin) = tenant_with_admin(&server, "Bystander").await;
    let good = create_codes(&server, 2, 1, 1).await;
    // Typos are caught before any lookup and cost nothing.
    for _ in 0..20 {
        let (status, _) = redeem(&server, &admin, &with_typo(&good[0])).await;
        assert_eq!(status, 400);
    }
    for _ in 0..10 {
        let (status, _) = redeem(&server, &admin, &never_issued()).await;
        assert_eq!(status, 404);
    }
    let response = server
        .http
        .post(format!("{}/api/v1/activation-codes/redeem", server.url))
        .bearer_auth(&admin)
        .json(&json!({"code": good[0]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "6");
    let limited: Value = response.json().await.unwrap();
    assert_eq!(limited["code"], "rate_limited");
    assert_eq!(limited["retry_after_secs"], 6);
    let (status, _) = import(&server, &admin, &good[0]).await;
    assert_eq!(status, 429);

    let (status, _) = redeem(&server, &other_admin, &never_issued()).await;
    assert_eq!(status, 404, "the limit is the guessing tenant's own");
    let (status, _) = redeem(&server, &other_admin, &good[1]).await;
    assert_eq!(status, 201);

    server.clock.advance(chrono::Duration::seconds(5));
    let (status, _) = redeem(&server, &admin, &good[0]).await;
    assert_eq!(status, 429);
    server.clock.advance(chrono::Duration::seconds(1));
    let (status, redeemed) = redeem(&server, &admin, &good[0]).await;
    assert_eq!(status, 201, "{redeemed}");
}

async fn every_new_route_is_kept_to_its_role_and_tenant(db: TestDb) {
    let server = cloud_server(db).await;
    let provider = server.admin_token.clone();
    let (tenant, admin) = tenant_with_admin(&server, "Harbour").await;
    let viewer =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Viewer).await;
    let operator =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Operator).await;
    let code = create_codes(&server, 1, 1, 1).await.remove(0);
    let one = format!("/api/v1/provider/tenants/{tenant}");
    let suspend = format!("{one}/suspend");
    let resume = format!("{one}/resume");
    let usage = format!("{one}/license-usage");
    let codes_body = json!({"count": 1, "seats": 1, "term_months": 1});
    let provider_routes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/v1/provider/tenants", None),
        (
            Method::POST,
            "/api/v1/provider/tenants",
            Some(json!({"name": "x"})),
        ),
        (Method::GET, &one, None),
        (Method::PATCH, &one, Some(json!({"name": "y"}))),
        (Method::POST, &suspend, None),
        (Method::POST, &resume, None),
        (Method::GET, &usage, None),
        (Method::DELETE, &one, None),
        (Method::GET, "/api/v1/provider/activation-codes", None),
        (
            Method::POST,
            "/api/v1/provider/activation-codes",
            Some(codes_body),
        ),
    ];
    for (method, path, body) in &provider_routes {
        let (status, _) = server
            .api_as("fat1.nonsense", method.clone(), path, body.clone())
            .await;
        assert_eq!(status, 401, "{method} {path} without a valid token");
        for token in [&admin, &operator, &viewer] {
            let (status, answer) = server
                .api_as(token, method.clone(), path, body.clone())
                .await;
            assert_eq!(status, 403, "{method} {path} as a tenant's token: {answer}");
        }
    }
    let tenant_routes: Vec<(Method, &str, Option<Value>, Role)> = vec![
        (
            Method::POST,
            "/api/v1/activation-codes/redeem",
            Some(json!({"code": code})),
            Role::Admin,
        ),
        (Method::GET, "/api/v1/tenant", None, Role::Viewer),
        (
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({"contact_email": null})),
            Role::Admin,
        ),
    ];
    for (method, path, body, needs) in &tenant_routes {
        let (status, _) = server
            .api_as("fat1.nonsense", method.clone(), path, body.clone())
            .await;
        assert_eq!(status, 401, "{method} {path} without a valid token");
        let (status, _) = server
            .api_as(&provider, method.clone(), path, body.clone())
            .await;
        assert_eq!(status, 403, "{method} {path} as the provider");
        for (token, role) in [(&viewer, Role::Viewer), (&operator, Role::Operator)] {
            let (status, _) = server
                .api_as(token, method.clone(), path, body.clone())
                .await;
            let expected = if role.allows(*needs) { 200 } else { 403 };
            assert_eq!(status, expected, "{method} {path} as {role}");
        }
    }
    let (status, _) = import(&server, &provider, &code).await;
    assert_eq!(status, 403);
    let (status, _) = import(&server, &viewer, &code).await;
    assert_eq!(status, 403);
    let (status, _) = import(&server, &admin, &code).await;
    assert_eq!(status, 200);
    // Tenant routes of old refuse the provider too: it sees usage, not routers.
    let (status, _) = server
        .api_as(&provider, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(status, 403);
    // A tenant admin cannot make itself a provider.
    let (status, refused) = server
        .api_as(
            &admin,
            Method::POST,
            "/api/v1/api-tokens",
            Some(json!({"name": "escalate", "role": "provider"})),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_role"))
    );
}
