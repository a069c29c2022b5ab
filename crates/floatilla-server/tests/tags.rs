//! Tags on routers through the API: set on one router, added and removed in bulk by ids, group
//! or tag, listed with counts, and used to filter the fleet and to select routers for bulk
//! license settings; kept to the tenant and to the roles that may change them.

mod common;

use common::*;
use floatilla_domain::Role;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    routers_are_tagged_one_by_one_and_in_bulk,
    tags_filter_the_fleet_and_select_routers,
    tags_are_checked_and_kept_to_their_tenant_and_role,
);

async fn tag(server: &TestServer, body: Value) -> (u16, Value) {
    server
        .api(Method::POST, "/api/v1/devices/tags", Some(body))
        .await
}

fn serials(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].as_str().unwrap())
        .collect()
}

async fn routers_are_tagged_one_by_one_and_in_bulk(db: TestDb) {
    let server = TestServer::start(db).await;
    server.create_group(json!({"name": "harbour"})).await;
    let a = server.enrolled("TG-A").await;
    let b = server.enrolled("TG-B").await;
    let c = server.enrolled("TG-C").await;
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", b.device_id),
            Some(json!({"group": "harbour"})),
        )
        .await;
    assert_eq!(status, 200);

    let (status, router) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", a.device_id),
            Some(json!({"tags": ["Pilot", "site:hamburg", "pilot"]})),
        )
        .await;
    assert_eq!(status, 200, "{router}");
    assert_eq!(router["tags"], json!(["pilot", "site:hamburg"]));

    let (status, result) = tag(
        &server,
        json!({"ids": [b.device_id, c.device_id], "add": ["site:hamburg"]}),
    )
    .await;
    assert_eq!((status, &result["changed"]), (200, &json!(2)));
    let (status, result) = tag(&server, json!({"group": "harbour", "add": ["pier-4"]})).await;
    assert_eq!((status, &result["changed"]), (200, &json!(1)));
    let (status, result) = tag(
        &server,
        json!({"tag": "pilot", "add": ["fw-beta"], "remove": ["site:hamburg"]}),
    )
    .await;
    assert_eq!((status, &result["changed"]), (200, &json!(1)));

    let detail = server
        .get(&format!("/api/v1/devices/{}", a.device_id))
        .await;
    assert_eq!(detail["tags"], json!(["fw-beta", "pilot"]));
    assert_eq!(
        server.get("/api/v1/tags").await,
        json!([
            {"tag": "fw-beta", "routers": 1},
            {"tag": "pier-4", "routers": 1},
            {"tag": "pilot", "routers": 1},
            {"tag": "site:hamburg", "routers": 2},
        ])
    );
    // Replacing with an empty list removes them all.
    let (status, router) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{}", a.device_id),
            Some(json!({"tags": []})),
        )
        .await;
    assert_eq!((status, &router["tags"]), (200, &json!([])));
}

async fn tags_filter_the_fleet_and_select_routers(db: TestDb) {
    let server = TestServer::start_with(
        db,
        floatilla_server::ServerConfig {
            allow_unsigned_licenses: true,
            ..test_config()
        },
    )
    .await;
    let mut ids = Vec::new();
    for serial in ["TF-1", "TF-2", "TF-3", "TF-4"] {
        ids.push(server.enrolled(serial).await.device_id);
    }
    tag(&server, json!({"ids": &ids[..3], "add": ["site:kiel"]})).await;
    tag(&server, json!({"ids": &ids[1..], "add": ["pilot"]})).await;

    assert_eq!(
        serials(&server.get("/api/v1/devices?tag=site:kiel").await),
        ["TF-1", "TF-2", "TF-3"]
    );
    let both = server.get("/api/v1/devices?tag=SITE:KIEL,pilot").await;
    assert_eq!(serials(&both), ["TF-2", "TF-3"]);
    assert_eq!(both["total"], 2);
    assert_eq!(
        serials(&server.get("/api/v1/devices?tag=nowhere").await),
        Vec::<&str>::new()
    );

    // A tag selects routers for bulk license settings too.
    let (status, result) = server
        .api(
            Method::POST,
            "/api/v1/devices/bulk",
            Some(json!({"tag": "pilot", "managed": false})),
        )
        .await;
    assert_eq!((status, &result["changed"]), (200, &json!(3)));
    let unmanaged = server.get("/api/v1/devices?license_state=unmanaged").await;
    assert_eq!(serials(&unmanaged), ["TF-2", "TF-3", "TF-4"]);
}

async fn tags_are_checked_and_kept_to_their_tenant_and_role(db: TestDb) {
    let server = TestServer::start(db).await;
    let router = server.enrolled("TC-1").await;
    let (status, refused) = tag(
        &server,
        json!({"ids": [router.device_id], "add": ["two words"]}),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_tag"))
    );
    let (status, refused) = tag(&server, json!({"ids": [router.device_id]})).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("nothing_to_change"))
    );
    let (status, refused) = tag(
        &server,
        json!({"ids": [router.device_id], "group": "x", "add": ["a"]}),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_target"))
    );
    let (status, _) = server
        .api(Method::GET, "/api/v1/devices?tag=a,b%20c", None)
        .await;
    assert_eq!(status, 400);

    let tenant = server.running().installation().on_prem_tenant.unwrap();
    let viewer =
        TestServer::token_for(server.store.as_ref(), &server.clock, tenant, Role::Viewer).await;
    let body = json!({"ids": [router.device_id], "add": ["a"]});
    let (status, _) = server
        .api_as(
            &viewer,
            Method::POST,
            "/api/v1/devices/tags",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .api_as(&viewer, Method::GET, "/api/v1/tags", None)
        .await;
    assert_eq!(status, 200);

    let stranger = other_tenant_admin(&server).await;
    let (status, _) = server
        .api_as(&stranger, Method::POST, "/api/v1/devices/tags", Some(body))
        .await;
    assert_eq!(
        status, 404,
        "another tenant's router is answered as missing"
    );
    let (status, listed) = server
        .api_as(&stranger, Method::GET, "/api/v1/tags", None)
        .await;
    assert_eq!((status, listed), (200, json!([])));
}
