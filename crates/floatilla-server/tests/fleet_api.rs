//! Operators against a real server: authentication and roles, the fleet listing's pagination and
//! filters, editing routers and groups, tokens, and the error format. SQLite and PostgreSQL.

mod common;

use common::*;
use floatilla_domain::Role;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    routes_need_a_valid_token_except_openapi_metrics_and_health,
    roles_limit_what_a_token_may_do,
    the_device_list_pages_through_the_fleet_in_serial_order,
    the_device_list_filters_by_state_text_and_group,
    bad_list_parameters_get_clear_errors,
    routers_are_renamed_moved_and_deleted,
    groups_are_created_renamed_and_deleted,
    api_tokens_are_managed_through_the_api,
);

async fn routes_need_a_valid_token_except_openapi_metrics_and_health(db: TestDb) {
    let server = TestServer::start(db).await;
    let anonymous = server
        .http
        .get(format!("{}/api/v1/devices", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    for token in [
        "fat1.nonsense",
        "fat1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "",
    ] {
        let (status, body) = server
            .api_as(token, Method::GET, "/api/v1/groups", None)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthenticated"))
        );
    }

    let openapi: Value = server
        .http
        .get(format!("{}/api/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/api/v1/devices"]["get"].is_object());
    assert!(openapi["paths"]["/api/v1/enrollment-tokens"]["post"].is_object());
    for (path, method) in [
        ("/api/v1/artifacts", "post"),
        ("/api/v1/artifacts", "get"),
        ("/api/v1/rollouts", "post"),
        ("/api/v1/rollouts/{id}/resume", "post"),
        ("/api/v1/jobs/status", "post"),
    ] {
        assert!(
            openapi["paths"][path][method].is_object(),
            "{method} {path}"
        );
    }
    assert!(openapi["components"]["schemas"]["CreateRolloutRequest"].is_object());
    let metrics = server.metrics().await;
    assert!(metrics.contains("floatilla_routers_connected"), "{metrics}");
    let health = server
        .http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

async fn roles_limit_what_a_token_may_do(db: TestDb) {
    let server = TestServer::start(db).await;
    let tenant = server.running().installation().on_prem_tenant.unwrap();
    let viewer =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Viewer).await;
    let operator =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Operator).await;

    let (status, _) = server
        .api_as(&viewer, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .api_as(
            &viewer,
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "g"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = server
        .api_as(
            &operator,
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "g"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .api_as(
            &operator,
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(json!({"name": "t"})),
        )
        .await;
    assert_eq!(status, 403, "enrollment is an admin's business");
}

/// Enrolls routers `prefix-001` … in a shuffled order.
async fn enroll_fleet(
    server: &TestServer,
    prefix: &str,
    count: usize,
) -> Vec<floatilla_protocol::EnrollResponse> {
    let token = server.enrollment_token(json!({"name": prefix})).await;
    let mut enrolled = Vec::new();
    for i in (1..=count).rev() {
        enrolled.push(server.enroll(&token, &format!("{prefix}-{i:03}")).await);
    }
    enrolled.reverse();
    enrolled
}

async fn the_device_list_pages_through_the_fleet_in_serial_order(db: TestDb) {
    let server = TestServer::start(db).await;
    enroll_fleet(&server, "SN", 25).await;
    let mut serials = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/v1/devices?limit=10".to_owned(),
            Some(cursor) => format!("/api/v1/devices?limit=10&cursor={cursor}"),
        };
        let page = server.get(&path).await;
        pages += 1;
        assert_eq!(page["total"], 25);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 10);
        for item in items {
            for field in [
                "id",
                "serial",
                "name",
                "group",
                "connection_state",
                "connected_since",
                "last_seen",
            ] {
                assert!(item.get(field).is_some(), "{field} missing in {item}");
            }
            serials.push(item["serial"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=25).map(|i| format!("SN-{i:03}")).collect();
    assert_eq!(serials, expected);

    let all = server.get("/api/v1/devices?limit=1000").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 25);
    assert!(all["next"].is_null());
}

async fn the_device_list_filters_by_state_text_and_group(db: TestDb) {
    let server = TestServer::start(db).await;
    let fleet = enroll_fleet(&server, "FL", 6).await;
    let mut routers = Vec::new();
    for (i, router) in fleet.iter().enumerate().take(2) {
        let serial = format!("FL-{:03}", i + 1);
        routers.push(server.router(&router.credential, &serial).await);
    }
    let (status, _) = server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "pumps"})),
        )
        .await;
    assert_eq!(status, 201);
    for router in &fleet[3..5] {
        let (status, body) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/devices/{}", router.device_id),
                Some(json!({"group": "pumps"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", fleet[5].device_id),
            Some(json!({"name": "Pump Station West"})),
        )
        .await;
    assert_eq!(status, 200);

    let serials = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["serial"].as_str().unwrap().to_owned())
            .collect()
    };
    let online = server.get("/api/v1/devices?connection_state=online").await;
    assert_eq!(
        (online["total"].as_u64(), serials(&online)),
        (Some(2), vec!["FL-001".to_owned(), "FL-002".to_owned()])
    );
    let offline = server.get("/api/v1/devices?connection_state=offline").await;
    assert_eq!(offline["total"], 4);
    let grouped = server.get("/api/v1/devices?group=pumps").await;
    assert_eq!(serials(&grouped), vec!["FL-004", "FL-005"]);
    let by_name = server.get("/api/v1/devices?q=station").await;
    assert_eq!(
        serials(&by_name),
        vec!["FL-006"],
        "name matches case-insensitively"
    );
    let by_serial = server.get("/api/v1/devices?q=fl-00").await;
    assert_eq!(by_serial["total"], 6);
    let combined = server
        .get("/api/v1/devices?q=FL-005&group=pumps&connection_state=offline")
        .await;
    assert_eq!(serials(&combined), vec!["FL-005"]);
    let literal = server.get("/api/v1/devices?q=%25").await;
    assert_eq!(literal["total"], 0, "% is matched literally");
}

async fn bad_list_parameters_get_clear_errors(db: TestDb) {
    let server = TestServer::start(db).await;
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=ten", "invalid_query"),
        ("cursor=%21%21", "invalid_cursor"),
        ("connection_state=sleeping", "invalid_connection_state"),
        ("group=nowhere", "unknown_group"),
        ("colour=red", "invalid_query"),
    ] {
        let (status, body) = server
            .api(Method::GET, &format!("/api/v1/devices?{query}"), None)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = server
        .api(Method::GET, "/api/v1/devices/not-an-id", None)
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = server.api(Method::GET, "/api/v1/nothing-here", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let response = server
        .http
        .post(format!("{}/api/v1/groups", server.url))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json");
}

async fn routers_are_renamed_moved_and_deleted(db: TestDb) {
    let server = TestServer::start(db).await;
    let enrolled = server.enrolled("ED-1").await;
    let path = format!("/api/v1/devices/{}", enrolled.device_id);
    server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "east"})),
        )
        .await;

    let (status, device) = server
        .api(
            Method::PATCH,
            &path,
            Some(json!({"name": "  Gate 4 ", "group": "east"})),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(
        (device["name"].as_str(), device["group"].as_str()),
        (Some("Gate 4"), Some("east"))
    );
    let (_, device) = server
        .api(Method::PATCH, &path, Some(json!({"name": "Gate 5"})))
        .await;
    assert_eq!(device["group"], "east", "an absent field is left alone");
    let (_, device) = server
        .api(Method::PATCH, &path, Some(json!({"group": null})))
        .await;
    assert!(device["group"].is_null(), "null takes it out of its group");
    let (status, body) = server
        .api(Method::PATCH, &path, Some(json!({"group": "west"})))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unknown_group"))
    );
    let (status, body) = server
        .api(Method::PATCH, &path, Some(json!({"name": ""})))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_name")));

    // Deleting a connected router ends its connection.
    let mut router = server.router(&enrolled.credential, "ED-1").await;
    let (status, _) = server.api(Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    match router.next_message().await {
        Some(floatilla_protocol::ServerMessage::Disconnect { reason, .. }) => {
            assert_eq!(reason, "credential_revoked")
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let (status, _) = server.api(Method::GET, &path, None).await;
    assert_eq!(status, 404);
    let (status, _) = server.api(Method::DELETE, &path, None).await;
    assert_eq!(status, 404);
    assert!(
        server
            .open_channel(&enrolled.credential, "ED-1")
            .await
            .is_err()
    );
}

async fn groups_are_created_renamed_and_deleted(db: TestDb) {
    let server = TestServer::start(db).await;
    let (status, group) = server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "north"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .api(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "north"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    let group_path = format!("/api/v1/groups/{}", group["id"].as_str().unwrap());
    let (status, renamed) = server
        .api(Method::PATCH, &group_path, Some(json!({"name": "north-2"})))
        .await;
    assert_eq!((status, renamed["name"].as_str()), (200, Some("north-2")));

    let enrolled = server.enrolled("GR-1").await;
    let device_path = format!("/api/v1/devices/{}", enrolled.device_id);
    server
        .api(
            Method::PATCH,
            &device_path,
            Some(json!({"group": "north-2"})),
        )
        .await;
    let (status, _) = server.api(Method::DELETE, &group_path, None).await;
    assert_eq!(status, 204);
    let device = server.get(&device_path).await;
    assert!(
        device["group"].is_null(),
        "its routers stay, without a group"
    );
    let groups = server.get("/api/v1/groups").await;
    assert_eq!(groups, json!([]));
    let (status, _) = server.api(Method::DELETE, &group_path, None).await;
    assert_eq!(status, 404);
}

async fn api_tokens_are_managed_through_the_api(db: TestDb) {
    let server = TestServer::start(db).await;
    let (status, created) = server
        .api(
            Method::POST,
            "/api/v1/api-tokens",
            Some(json!({"name": "ci pipeline", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .api_as(&token, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(status, 200);
    let (_, listed) = server.api(Method::GET, "/api/v1/api-tokens", None).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none())
    );
    let (status, _) = server
        .api(
            Method::DELETE,
            &format!("/api/v1/api-tokens/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .api_as(&token, Method::GET, "/api/v1/devices", None)
        .await;
    assert_eq!(status, 401, "a revoked token stops working at once");
    let (status, body) = server
        .api(
            Method::POST,
            "/api/v1/api-tokens",
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_role")));
}
