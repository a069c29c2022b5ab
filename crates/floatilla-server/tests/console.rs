//! Console accounts over HTTP, as a browser speaks to the server: login and its cookie, login
//! throttling, CSRF, session expiry, invitations, and the audit log naming who did what. Each
//! test runs on SQLite and PostgreSQL.

mod common;

use common::console::*;
use common::*;
use floatilla_domain::Role;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};

on_both_backends!(
    logins_are_throttled_sessions_expire_and_forms_need_their_token,
    an_invitation_sets_a_password_once,
    the_audit_log_names_the_token_or_the_person,
    admins_create_tokens_and_approve_routers_from_the_console,
);

async fn logins_are_throttled_sessions_expire_and_forms_need_their_token(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_user(&server, "ops@example.com", Role::Operator).await;
    let client = browser(&server);

    let (status, to) = page(&client, &server, "", "/").await;
    assert_eq!((status, to.as_str()), (303, "/login"));

    // A login form posted from elsewhere (without the login page's cookie and token) is
    // refused before the password is looked at.
    let forged = client
        .post(format!("{}/login", server.url))
        .form(&[("email", "ops@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(forged.headers().get(LOCATION).is_none());
    let (token, login_cookie) = login_form(&client, &server).await;
    let mismatched = client
        .post(format!("{}/login", server.url))
        .header(COOKIE, login_cookie)
        .form(&[
            ("email", "ops@example.com"),
            ("password", PASSWORD),
            ("csrf", &format!("{token}x")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(mismatched.status().as_u16(), 403);

    // Five wrong passwords, then even the right one is refused for a while.
    for _ in 0..5 {
        assert_eq!(
            log_in(&client, &server, "ops@example.com", "wrong password!")
                .await
                .0,
            401
        );
    }
    assert_eq!(
        log_in(&client, &server, "ops@example.com", PASSWORD)
            .await
            .0,
        429
    );
    server.clock.advance(chrono::Duration::minutes(15));

    let (status, set_cookie) = log_in(&client, &server, "OPS@example.com", PASSWORD).await;
    assert_eq!(status, 303);
    let set_cookie = set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(set_cookie.starts_with("__Host-"), "{set_cookie}");
    let cookie = cookie_pair(&set_cookie);
    let (status, dashboard) = page(&client, &server, &cookie, "/").await;
    assert_eq!(status, 200, "{dashboard}");
    assert!(dashboard.contains("ops@example.com (operator)"));

    // A form without this session's token changes nothing.
    let enrolled = server.enrolled("CSRF-1").await;
    let response = client
        .post(format!("{}/routers/bulk", server.url))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", "forged"),
            ("action", "unmanage"),
            ("id", enrolled.device_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/routers?problem="), "{location}");
    let router = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert_eq!(router["managed"], true);
    // With it, the change is made.
    let csrf = csrf_of(&dashboard);
    let response = client
        .post(format!("{}/routers/bulk", server.url))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "unmanage"),
            ("id", enrolled.device_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/routers?notice="), "{location}");
    let router = server
        .get(&format!("/api/v1/devices/{}", enrolled.device_id))
        .await;
    assert_eq!(router["managed"], false);

    // An operator may not see the users page; an idle session ends.
    assert_eq!(page(&client, &server, &cookie, "/users").await.0, 403);
    server.clock.advance(chrono::Duration::hours(2));
    let (status, to) = page(&client, &server, &cookie, "/").await;
    assert_eq!((status, to.as_str()), (303, "/login"));
}

async fn an_invitation_sets_a_password_once(db: TestDb) {
    let server = TestServer::start(db).await;
    let client = browser(&server);
    let (status, invited) = server
        .api(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "New@Example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{invited}");
    assert_eq!(invited["status"], "invited");
    let link = invited["invitation_path"].as_str().unwrap().to_owned();
    assert!(
        log_in(&client, &server, "new@example.com", PASSWORD)
            .await
            .0
            == 401
    );

    let (status, form) = page(&client, &server, "", &link).await;
    assert_eq!(status, 200);
    assert!(form.contains("new@example.com"));
    let short = client
        .post(format!("{}{link}", server.url))
        .form(&[("password", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(short.status().as_u16(), 400);
    let set = client
        .post(format!("{}{link}", server.url))
        .form(&[("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 303);
    // On premises the account is active at once; the link works only once.
    let (_, users) = server.api(Method::GET, "/api/v1/users", None).await;
    assert_eq!(users[0]["status"], "active", "{users}");
    assert_eq!(
        log_in(&client, &server, "new@example.com", PASSWORD)
            .await
            .0,
        303
    );
    let (status, to) = page(&client, &server, "", &link).await;
    assert_eq!(status, 303);
    assert!(to.starts_with("/login?problem="), "{to}");
}

async fn the_audit_log_names_the_token_or_the_person(db: TestDb) {
    let server = TestServer::start(db).await;
    let tenant = server.running().installation().on_prem_tenant.unwrap();
    let viewer =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Viewer).await;
    let (status, _) = server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "north"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .api_as(
            &viewer,
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "south"})),
        )
        .await;
    assert_eq!(status, 403);
    // Reads are not audited.
    server.get("/api/v1/groups").await;

    let (_, list) = server.api(Method::GET, "/api/v1/audit", None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["actor"], "test viewer");
    assert_eq!(items[0]["outcome"], "failed");
    assert_eq!(items[0]["error"], "forbidden");
    assert_eq!(items[1]["actor_kind"], "token");
    assert_eq!(items[1]["actor"], "test admin");
    assert_eq!(items[1]["action"], "POST /api/v1/groups");
    assert_eq!(items[1]["status"], 201);
    assert_eq!(items[1]["address"], "127.0.0.1");

    let (_, failed) = server
        .api(Method::GET, "/api/v1/audit?outcome=failed", None)
        .await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    let csv = server
        .http
        .get(format!("{}/api/v1/audit?format=csv", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("at,actor_kind,actor,action"));
    assert!(
        lines[2].contains("token,test admin,POST /api/v1/groups"),
        "{csv}"
    );
    // Only admins read it.
    let (status, body): (u16, Value) = server
        .api_as(&viewer, Method::GET, "/api/v1/audit", None)
        .await;
    assert_eq!(status, 403, "{body}");
}

async fn admins_create_tokens_and_approve_routers_from_the_console(db: TestDb) {
    let server = TestServer::start(db).await;
    add_user(&server, "admin@example.com", Role::Admin).await;
    add_user(&server, "viewer@example.com", Role::Viewer).await;
    let client = browser(&server);
    let (cookie, csrf) = logged_in(&client, &server, "admin@example.com").await;

    // An API token made in the console is shown once and works on the API.
    let created = client
        .post(format!("{}/manage/api-tokens", server.url))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "deploy"),
            ("role", "viewer"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 200);
    let html = created.text().await.unwrap();
    let marker = "id=\"secret\">";
    let start = html.find(marker).expect("the token shown") + marker.len();
    let token = html[start..].split('<').next().unwrap().to_owned();
    assert_eq!(
        server
            .api_as(&token, Method::GET, "/api/v1/devices", None)
            .await
            .0,
        200
    );
    let (_, listed) = page(&client, &server, &cookie, "/manage/api-tokens").await;
    assert!(listed.contains("deploy") && !listed.contains(&token));

    // A router waiting for approval is accepted from the enrollment page.
    server
        .api(
            Method::PUT,
            "/api/v1/enrollment-policy",
            Some(json!({"policy": "approval"})),
        )
        .await;
    let token_text = server.enrollment_token(json!({"name": "line"})).await;
    // Enrolling succeeds; the router then waits for an admin before its channel opens.
    server
        .try_enroll(&token_text, "WAIT-1", None)
        .await
        .unwrap();
    let (_, routers) = server
        .api(Method::GET, "/api/v1/devices?enrollment=pending", None)
        .await;
    let id = routers["items"][0]["id"]
        .as_str()
        .expect("a pending router")
        .to_owned();
    let (_, approvals) = page(&client, &server, &cookie, "/manage/enrollment").await;
    assert!(approvals.contains("WAIT-1"), "{approvals}");
    let accepted = client
        .post(format!("{}/manage/approvals/{id}/accept", server.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let location = accepted.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/manage/enrollment?notice="),
        "{location}"
    );
    let router = server.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(router["enrollment"], "accepted");

    // A viewer sees the lists but is refused the forms: nothing is created.
    let (viewer_cookie, viewer_csrf) = logged_in(&client, &server, "viewer@example.com").await;
    assert_eq!(
        page(&client, &server, &viewer_cookie, "/manage/groups")
            .await
            .0,
        200
    );
    let refused = client
        .post(format!("{}/manage/groups", server.url))
        .header(COOKIE, &viewer_cookie)
        .form(&[("csrf", viewer_csrf.as_str()), ("name", "sneaky")])
        .send()
        .await
        .unwrap();
    let location = refused.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/manage/groups?problem="),
        "{location}"
    );
    assert_eq!(server.get("/api/v1/groups").await, json!([]));
    assert_eq!(
        page(&client, &server, &viewer_cookie, "/manage/api-tokens")
            .await
            .0,
        403
    );
}
