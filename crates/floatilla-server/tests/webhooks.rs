//! Webhooks end to end: a receiver on loopback checks each delivery's signature and records
//! it, and the test's clock decides when retries are due. Each test runs on SQLite and
//! PostgreSQL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use common::*;
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::{Clock, Role};
use floatilla_store::testing::TestDb;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

on_both_backends!(
    a_signed_delivery_arrives_for_the_chosen_kinds_only,
    a_failed_delivery_is_retried_after_the_backoff,
    webhooks_are_checked_and_kept_to_their_tenant,
    an_event_that_commits_late_is_still_delivered,
);

const SECRET: &str = "a-secret-of-some-length";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Call {
    headers: HeaderMap,
    body: String,
}

#[derive(Default)]
struct Inbox {
    calls: Mutex<Vec<Call>>,
    /// Requests still to answer with 500.
    failures_left: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1 that fails its first `failures` requests.
struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let inbox = Arc::new(Inbox {
            failures_left: AtomicUsize::new(failures),
            ..Inbox::default()
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inbox }
    }

    fn calls(&self) -> Vec<Call> {
        self.inbox.calls.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived and answers them.
    async fn wait_for_calls(&self, count: usize) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let calls = self.calls();
            if calls.len() >= count {
                return calls;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} deliveries, got {calls:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: String) -> StatusCode {
    inbox.calls.lock().unwrap().push(Call { headers, body });
    let failing = inbox
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

fn header<'a>(call: &'a Call, name: &str) -> &'a str {
    call.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Checks the signature as a receiver would, and answers the body as JSON.
fn verified(call: &Call) -> Value {
    let timestamp = header(call, "x-floatilla-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", call.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header(call, "x-floatilla-signature"), expected);
    assert_eq!(header(call, "content-type"), "application/json");
    serde_json::from_str(&call.body).unwrap()
}

async fn create_webhook(server: &TestServer, url: &str, events: Value) -> Value {
    let (status, webhook) = server
        .api(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": url, "secret": SECRET, "events": events})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    webhook
}

/// Waits until the webhook's deliveries satisfy `done`, and answers them.
async fn deliveries_when(
    server: &TestServer,
    webhook: &Value,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!(
        "/api/v1/webhooks/{}/deliveries",
        webhook["id"].as_str().unwrap()
    );
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let deliveries = server.get(&path).await.as_array().unwrap().clone();
        if done(&deliveries) {
            return deliveries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never got there: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn record_event(server: &TestServer, kind: EventKind) {
    let tenant = server.running().installation().on_prem_tenant.unwrap();
    server
        .store
        .record_event(&Event::new(
            tenant,
            server.clock.now(),
            kind,
            None,
            "test event",
        ))
        .await
        .unwrap();
}

async fn a_signed_delivery_arrives_for_the_chosen_kinds_only(db: TestDb) {
    let server = TestServer::start(db).await;
    let receiver = Receiver::start(0).await;
    let webhook = create_webhook(&server, &receiver.url, json!(["router_enrolled"])).await;
    assert_eq!(webhook["events"], json!(["router_enrolled"]));
    assert!(webhook.get("secret").is_none(), "{webhook}");

    // Recorded first, so it has been considered once the later enrollment is delivered.
    record_event(&server, EventKind::LicenseLimitReached).await;
    let enrolled = server.enrolled("WEBHOOK-1").await;

    let calls = receiver.wait_for_calls(1).await;
    let call = &calls[0];
    let body = verified(call);
    assert_eq!(header(call, "x-floatilla-event"), "router_enrolled");
    assert_eq!(
        header(call, "x-floatilla-timestamp"),
        server.clock.now().timestamp().to_string()
    );
    assert_eq!(body["kind"], "router_enrolled");
    assert_eq!(body["severity"], "info");
    assert_eq!(body["device_id"], enrolled.device_id.to_string());
    assert!(
        body["message"].as_str().unwrap().contains("WEBHOOK-1"),
        "{body}"
    );
    let event = &server.events("router_enrolled").await[0];
    assert_eq!(body["id"], event["id"]);
    assert_eq!(body["at"], event["at"]);

    let deliveries = deliveries_when(&server, &webhook, |d| {
        d.first().is_some_and(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(deliveries.len(), 1, "only the kind chosen: {deliveries:?}");
    let delivery = &deliveries[0];
    assert_eq!(header(call, "x-floatilla-delivery"), delivery["id"]);
    assert_eq!(delivery["event_id"], event["id"]);
    assert_eq!(delivery["kind"], "router_enrolled");
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivery["attempts"][0]["attempt"], 1);
    assert_eq!(delivery["attempts"][0]["http_status"], 204);
    assert_eq!(delivery["attempts"][0]["error"], Value::Null);
    assert_eq!(receiver.calls().len(), 1);
}

async fn a_failed_delivery_is_retried_after_the_backoff(db: TestDb) {
    let server = TestServer::start(db).await;
    let receiver = Receiver::start(1).await;
    let webhook = create_webhook(&server, &receiver.url, json!([])).await;
    record_event(&server, EventKind::LicenseLimitReached).await;

    let first = receiver.wait_for_calls(1).await[0].clone();
    verified(&first);
    assert_eq!(header(&first, "x-floatilla-event"), "license_limit_reached");
    let deliveries = deliveries_when(&server, &webhook, |d| {
        d.first()
            .is_some_and(|d| d["attempts"].as_array().unwrap().len() == 1)
    })
    .await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["state"], "pending");
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["http_status"], 500);
    assert!(
        attempt["error"].as_str().unwrap().contains("500"),
        "{attempt}"
    );
    let retry_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(delivery["next_attempt_at"].clone()).unwrap();
    let failed_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(attempt["at"].clone()).unwrap();
    assert_eq!(retry_at - failed_at, chrono::Duration::seconds(10));

    // Not before the backoff: a poll or two go by without a retry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.calls().len(), 1);

    server.clock.advance(chrono::Duration::seconds(10));
    let second = receiver.wait_for_calls(2).await[1].clone();
    verified(&second);
    assert_eq!(
        header(&second, "x-floatilla-delivery"),
        header(&first, "x-floatilla-delivery")
    );
    assert_eq!(
        second.body, first.body,
        "every attempt sends the same event"
    );
    let deliveries = deliveries_when(&server, &webhook, |d| {
        d.first().is_some_and(|d| d["state"] == "delivered")
    })
    .await;
    let attempts = deliveries[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["http_status"], 204);
    assert_eq!(deliveries[0]["next_attempt_at"], Value::Null);
}

async fn webhooks_are_checked_and_kept_to_their_tenant(db: TestDb) {
    let server = TestServer::start(db).await;
    for (body, code) in [
        (
            json!({"url": "ftp://example.com/", "secret": SECRET}),
            "invalid_url",
        ),
        (json!({"url": "not a url", "secret": SECRET}), "invalid_url"),
        (
            json!({"url": "https://example.com/", "secret": "short"}),
            "invalid_secret",
        ),
        (
            json!({"url": "https://example.com/", "secret": SECRET, "events": ["no_such_kind"]}),
            "invalid_event_kind",
        ),
    ] {
        let (status, error) = server
            .api(Method::POST, "/api/v1/webhooks", Some(body))
            .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some(code)),
            "{error}"
        );
    }
    let webhook = create_webhook(&server, "https://example.com/hook", json!([])).await;
    let id = webhook["id"].as_str().unwrap();
    assert_eq!(server.get("/api/v1/webhooks").await, json!([webhook]));

    let operator = TestServer::token_for(
        server.store.as_ref(),
        &server.clock,
        server.running().installation().on_prem_tenant.unwrap(),
        Role::Operator,
    )
    .await;
    let (status, _) = server
        .api_as(&operator, Method::GET, "/api/v1/webhooks", None)
        .await;
    assert_eq!(status, 403);

    let other_admin = other_tenant_admin(&server).await;
    let (status, listed) = server
        .api_as(&other_admin, Method::GET, "/api/v1/webhooks", None)
        .await;
    assert_eq!((status, listed), (200, json!([])));
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let (status, _) = server
        .api_as(&other_admin, Method::GET, &deliveries, None)
        .await;
    assert_eq!(status, 404);
    let one = format!("/api/v1/webhooks/{id}");
    let (status, _) = server
        .api_as(&other_admin, Method::DELETE, &one, None)
        .await;
    assert_eq!(status, 404);

    let (status, _) = server.api(Method::DELETE, &one, None).await;
    assert_eq!(status, 204);
    assert_eq!(server.get("/api/v1/webhooks").await, json!([]));
    let (status, _) = server.api(Method::GET, &deliveries, None).await;
    assert_eq!(status, 404);
}

async fn an_event_that_commits_late_is_still_delivered(db: TestDb) {
    let server = TestServer::start(db).await;
    let receiver = Receiver::start(0).await;
    let webhook = create_webhook(&server, &receiver.url, json!([])).await;
    let tenant = server.running().installation().on_prem_tenant.unwrap();
    let stamped = |seconds: i64, message: &str| {
        Event::new(
            tenant,
            server.clock.now() + chrono::Duration::seconds(seconds),
            EventKind::LicenseGranted,
            None,
            message,
        )
    };
    server
        .store
        .record_event(&stamped(20, "stamped later, committed first"))
        .await
        .unwrap();
    deliveries_when(&server, &webhook, |d| d.len() == 1).await;
    // Stamped before the one already queued (a slower writer), it commits afterwards.
    server
        .store
        .record_event(&stamped(10, "stamped earlier, committed later"))
        .await
        .unwrap();
    deliveries_when(&server, &webhook, |d| d.len() == 2).await;
    let calls = receiver.wait_for_calls(2).await;
    let mut messages: Vec<String> = calls
        .iter()
        .map(|call| verified(call)["message"].as_str().unwrap().to_owned())
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            "stamped earlier, committed later",
            "stamped later, committed first"
        ]
    );
}
