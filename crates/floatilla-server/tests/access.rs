//! The access matrix: every route of the API, as the OpenAPI document lists it, is classified
//! here by the access its handler requires, and each is called without a token, with tokens that
//! are not valid, with each tenant role and as the provider, to check that exactly those it
//! admits get past authorization (and that a caller refused is refused as well when its request
//! does not parse). Then another tenant's admin asks for a tenant's own objects by
//! their real ids, in paths, queries and bodies, and must be answered exactly as for ids that do
//! not exist.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use floatilla_domain::{Mode, Role, TenantId};
use floatilla_server::ServerConfig;
use floatilla_server::api::auth::new_api_token_secret;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

/// What a route requires of its caller, as its handler checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No credentials at all.
    Public,
    Viewer,
    Operator,
    Admin,
    /// The provider of the cloud service, and no tenant.
    Provider,
    /// A tenant's admin or the provider, each for what is its own (console accounts, audit).
    AdminOrProvider,
}

use Access::{Admin, AdminOrProvider, Operator, Provider, Public, Viewer};

impl Access {
    /// The rank of the lowest tenant role admitted (each role includes those below it); `None`
    /// when no tenant role is. For a role itself, its own rank.
    fn tenant_floor(self) -> Option<u8> {
        match self {
            Viewer => Some(0),
            Operator => Some(1),
            Admin | AdminOrProvider => Some(2),
            Public | Provider => None,
        }
    }

    fn admits_provider(self) -> bool {
        matches!(self, Provider | AdminOrProvider)
    }
}

/// What a request carries. Each route gets a request that parses, so that authorization is the
/// only thing that decides between `403` and any other answer.
#[derive(Debug, Clone, Copy)]
enum Payload {
    Empty,
    Json(&'static str),
    Csv(&'static str),
    /// An empty upload with this query.
    Upload(&'static str),
}

use Payload::{Csv, Empty, Json, Upload};

/// Every route the OpenAPI document lists, with the access its handler requires (`require` or
/// `require_provider`). A route added to the document fails the test until it is classified.
const ROUTES: &[(&str, &str, Access, Payload)] = &[
    // Devices.
    ("GET", "/api/v1/devices", Viewer, Empty),
    ("GET", "/api/v1/devices/{id}", Viewer, Empty),
    ("PATCH", "/api/v1/devices/{id}", Operator, Json("{}")),
    ("DELETE", "/api/v1/devices/{id}", Operator, Empty),
    (
        "POST",
        "/api/v1/devices/{id}/revoke-credentials",
        Admin,
        Empty,
    ),
    (
        "POST",
        "/api/v1/devices/{id}/allow-reenrollment",
        Admin,
        Json("{}"),
    ),
    (
        "POST",
        "/api/v1/devices/{id}/refresh-status",
        Operator,
        Empty,
    ),
    // Groups.
    ("GET", "/api/v1/groups", Viewer, Empty),
    (
        "POST",
        "/api/v1/groups",
        Operator,
        Json(r#"{"name": "access-matrix"}"#),
    ),
    ("PATCH", "/api/v1/groups/{id}", Operator, Json("{}")),
    ("DELETE", "/api/v1/groups/{id}", Operator, Empty),
    // Enrollment and API tokens.
    ("GET", "/api/v1/enrollment-tokens", Admin, Empty),
    (
        "POST",
        "/api/v1/enrollment-tokens",
        Admin,
        Json(r#"{"name": "access-matrix"}"#),
    ),
    ("DELETE", "/api/v1/enrollment-tokens/{id}", Admin, Empty),
    ("GET", "/api/v1/api-tokens", Admin, Empty),
    (
        "POST",
        "/api/v1/api-tokens",
        Admin,
        Json(r#"{"name": "access-matrix", "role": "viewer"}"#),
    ),
    ("DELETE", "/api/v1/api-tokens/{id}", Admin, Empty),
    // Enrollment.
    ("GET", "/api/v1/enrollment-policy", Viewer, Empty),
    (
        "PUT",
        "/api/v1/enrollment-policy",
        Admin,
        Json(r#"{"policy": "open"}"#),
    ),
    ("POST", "/api/v1/devices/{id}/accept", Admin, Empty),
    ("POST", "/api/v1/devices/{id}/reject", Admin, Empty),
    ("POST", "/api/v1/devices/import", Admin, Csv("serial\n")),
    ("GET", "/api/v1/events", Viewer, Empty),
    // Licensing.
    ("GET", "/api/v1/license-pool", Viewer, Empty),
    ("GET", "/api/v1/licenses", Viewer, Empty),
    ("POST", "/api/v1/licenses", Admin, Json("{}")),
    ("DELETE", "/api/v1/licenses/{id}", Admin, Empty),
    ("POST", "/api/v1/devices/bulk", Operator, Json("{}")),
    ("GET", "/api/v1/license-usage", Viewer, Empty),
    (
        "POST",
        "/api/v1/license-pool/clock/acknowledge",
        Admin,
        Empty,
    ),
    ("GET", "/api/v1/installation", Viewer, Empty),
    // Webhooks.
    ("GET", "/api/v1/webhooks", Admin, Empty),
    (
        "POST",
        "/api/v1/webhooks",
        Admin,
        Json(r#"{"url": "not a url", "secret": "short"}"#),
    ),
    ("DELETE", "/api/v1/webhooks/{id}", Admin, Empty),
    ("GET", "/api/v1/webhooks/{id}/deliveries", Admin, Empty),
    // The tenant's own activation codes and record.
    (
        "POST",
        "/api/v1/activation-codes/redeem",
        Admin,
        Json(r#"{"code": "x"}"#),
    ),
    (
        "POST",
        "/api/v1/activation-codes/import",
        Admin,
        Csv("code\n"),
    ),
    ("GET", "/api/v1/tenant", Viewer, Empty),
    ("PATCH", "/api/v1/tenant", Admin, Json("{}")),
    // The provider's.
    ("GET", "/api/v1/provider/tenants", Provider, Empty),
    (
        "POST",
        "/api/v1/provider/tenants",
        Provider,
        Json(r#"{"name": "access-matrix"}"#),
    ),
    ("GET", "/api/v1/provider/tenants/{id}", Provider, Empty),
    (
        "PATCH",
        "/api/v1/provider/tenants/{id}",
        Provider,
        Json("{}"),
    ),
    ("DELETE", "/api/v1/provider/tenants/{id}", Provider, Empty),
    (
        "GET",
        "/api/v1/provider/tenants/{id}/license-usage",
        Provider,
        Empty,
    ),
    (
        "POST",
        "/api/v1/provider/tenants/{id}/suspend",
        Provider,
        Empty,
    ),
    (
        "POST",
        "/api/v1/provider/tenants/{id}/resume",
        Provider,
        Empty,
    ),
    ("GET", "/api/v1/provider/activation-codes", Provider, Empty),
    (
        "POST",
        "/api/v1/provider/activation-codes",
        Provider,
        Json(r#"{"count": 0, "seats": 1, "term_months": 1}"#),
    ),
    // Console accounts and the audit log: a tenant's admin manages the tenant's, the provider
    // its own.
    ("GET", "/api/v1/users", AdminOrProvider, Empty),
    (
        "POST",
        "/api/v1/users",
        AdminOrProvider,
        Json(r#"{"email": "access-matrix@example.com", "role": "viewer"}"#),
    ),
    ("PATCH", "/api/v1/users/{id}", AdminOrProvider, Json("{}")),
    ("DELETE", "/api/v1/users/{id}", AdminOrProvider, Empty),
    ("POST", "/api/v1/users/{id}/approve", AdminOrProvider, Empty),
    ("GET", "/api/v1/audit", AdminOrProvider, Empty),
    // Tags.
    ("GET", "/api/v1/tags", Viewer, Empty),
    ("POST", "/api/v1/devices/tags", Operator, Json("{}")),
    // Jobs.
    (
        "POST",
        "/api/v1/jobs",
        Operator,
        Json(r#"{"kind": "reboot", "target": {}}"#),
    ),
    ("GET", "/api/v1/jobs", Viewer, Empty),
    ("GET", "/api/v1/jobs/{id}", Viewer, Empty),
    ("GET", "/api/v1/jobs/{id}/executions", Viewer, Empty),
    ("POST", "/api/v1/jobs/{id}/cancel", Operator, Empty),
    ("GET", "/api/v1/devices/{id}/executions", Viewer, Empty),
    (
        "POST",
        "/api/v1/jobs/status",
        Viewer,
        Json(r#"{"ids": []}"#),
    ),
    // Artifacts.
    (
        "POST",
        "/api/v1/artifacts",
        Operator,
        Upload("kind=firmware&name=access-matrix&version=1"),
    ),
    ("GET", "/api/v1/artifacts", Viewer, Empty),
    ("GET", "/api/v1/artifacts/{id}", Viewer, Empty),
    ("DELETE", "/api/v1/artifacts/{id}", Operator, Empty),
    // Rollouts.
    (
        "POST",
        "/api/v1/rollouts",
        Operator,
        Json(r#"{"job": {"kind": "reboot", "target": {}}}"#),
    ),
    ("GET", "/api/v1/rollouts", Viewer, Empty),
    ("GET", "/api/v1/rollouts/{id}", Viewer, Empty),
    ("POST", "/api/v1/rollouts/{id}/pause", Operator, Empty),
    ("POST", "/api/v1/rollouts/{id}/resume", Operator, Empty),
    ("POST", "/api/v1/rollouts/{id}/cancel", Operator, Empty),
];

/// Routes the API router serves that the OpenAPI document does not list: for machines that
/// hold no token (load balancers, scrapers, client generators).
const UNLISTED: &[(&str, &str, Access, Payload)] = &[
    ("GET", "/api/v1/openapi.json", Public, Empty),
    ("GET", "/healthz", Public, Empty),
    ("GET", "/metrics", Public, Empty),
];

/// The router's source, to find routes it serves that neither list above names.
const API_ROUTER_SOURCE: &str = include_str!("../src/api/mod.rs");

/// Which of tenant A's objects a route's `{id}` names, by the route's prefix.
const OBJECT_ROUTES: &[(&str, &str)] = &[
    ("/api/v1/devices/{id}", "device"),
    ("/api/v1/groups/{id}", "group"),
    ("/api/v1/enrollment-tokens/{id}", "enrollment token"),
    ("/api/v1/api-tokens/{id}", "API token"),
    ("/api/v1/licenses/{id}", "license"),
    ("/api/v1/webhooks/{id}", "webhook"),
    ("/api/v1/jobs/{id}", "job"),
    ("/api/v1/artifacts/{id}", "artifact"),
    ("/api/v1/rollouts/{id}", "rollout"),
    ("/api/v1/provider/tenants/{id}", "tenant"),
    ("/api/v1/users/{id}", "user"),
];

/// Requests that name one of tenant A's objects in their query or body (`{id}`), and the kind
/// of object: another tenant must be answered as if it did not exist there too.
const REFERENCES: &[(&str, &str, Option<&str>, &str)] = &[
    ("GET", "/api/v1/events?device={id}", None, "device"),
    (
        "POST",
        "/api/v1/jobs/status",
        Some(r#"{"ids": ["{id}"]}"#),
        "job",
    ),
    (
        "POST",
        "/api/v1/devices/bulk",
        Some(r#"{"ids": ["{id}"], "managed": false}"#),
        "device",
    ),
    (
        "POST",
        "/api/v1/devices/tags",
        Some(r#"{"ids": ["{id}"], "add": ["taken"]}"#),
        "device",
    ),
    (
        "POST",
        "/api/v1/jobs",
        Some(r#"{"kind": "reboot", "target": {"ids": ["{id}"]}}"#),
        "device",
    ),
    (
        "POST",
        "/api/v1/jobs",
        Some(r#"{"kind": "firmware_update", "target": {"tag": "any"}, "artifact_id": "{id}"}"#),
        "artifact",
    ),
    (
        "POST",
        "/api/v1/rollouts",
        Some(r#"{"job": {"kind": "reboot", "target": {"ids": ["{id}"]}}}"#),
        "device",
    ),
];

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Who {
    NoToken,
    InvalidToken,
    /// An admin of a tenant the provider suspended.
    Suspended,
    Tenant(Access),
    TheProvider,
}

/// What a caller must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly this status with this error code.
    Refused(u16, &'static str),
    /// Anything but a refusal of the caller: the authorization let it through.
    Admitted,
}

fn expected(access: Access, who: Who) -> Expect {
    let admitted = match who {
        _ if access == Public => true,
        Who::NoToken | Who::InvalidToken => return Expect::Refused(401, "unauthenticated"),
        Who::Suspended => return Expect::Refused(403, "tenant_suspended"),
        Who::TheProvider => access.admits_provider(),
        Who::Tenant(role) => access
            .tenant_floor()
            .is_some_and(|floor| role.tenant_floor() >= Some(floor)),
    };
    if admitted {
        Expect::Admitted
    } else {
        Expect::Refused(403, "forbidden")
    }
}

struct Caller {
    label: &'static str,
    token: Option<String>,
    who: Who,
}

/// A cloud server, so that the provider's routes and the tenants' are served together.
fn cloud() -> ServerConfig {
    ServerConfig {
        mode: Mode::Cloud,
        allow_unsigned_licenses: true,
        ..test_config()
    }
}

async fn call(
    server: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    payload: Payload,
) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut url = format!("{}{path}", server.url);
    if let Upload(query) = payload {
        url = format!("{url}?{query}");
    }
    let mut request = server.http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match payload {
        Empty => request,
        Json(text) => request.header(CONTENT_TYPE, "application/json").body(text),
        Csv(text) => request.header(CONTENT_TYPE, "text/csv").body(text),
        Upload(_) => request
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Vec::new()),
    };
    let response = request.send().await.expect("API request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// `template` with each `{...}` parameter replaced by `id`.
fn fill(template: &str, id: &str) -> String {
    let mut filled = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = start + rest[start..].find('}').expect("a closed parameter");
        filled.push_str(&rest[..start]);
        filled.push_str(id);
        rest = &rest[end + 1..];
    }
    filled.push_str(rest);
    filled
}

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks one answer against what was expected; answers the failure, if any.
fn judge(expect: Expect, status: u16, body: &Value) -> Option<String> {
    let code = body["code"].as_str().unwrap_or_default();
    match expect {
        Expect::Refused(want_status, want_code) => (status != want_status || code != want_code)
            .then(|| format!("expected {want_status} {want_code}")),
        Expect::Admitted => {
            if matches!(status, 401 | 403) {
                Some("expected to be let through".into())
            } else if status == 405 || body["message"] == "no such route" {
                Some("expected a route that the server serves".into())
            } else if status >= 500 {
                Some("expected an answer, not a server failure".into())
            } else {
                None
            }
        }
    }
}

/// The (method, path template) pairs the OpenAPI document lists.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// The paths the API router registers (`.route("...", ...)`).
fn routed_paths(source: &str) -> BTreeSet<String> {
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// Part 1: the document, the router and the table agree, so every route is classified.
fn check_classification(doc: &Value, failures: &mut Vec<String>) {
    let listed = documented(doc);
    let mut table = BTreeSet::new();
    for (method, path, _, _) in ROUTES {
        if !table.insert(((*method).to_owned(), (*path).to_owned())) {
            failures.push(format!("{method} {path}: classified twice in ROUTES"));
        }
    }
    for (method, path) in listed.difference(&table) {
        failures.push(format!(
            "{method} {path}: listed in the OpenAPI document but not classified in ROUTES; \
             add it with the access its handler requires"
        ));
    }
    for (method, path) in table.difference(&listed) {
        failures.push(format!(
            "{method} {path}: classified in ROUTES but not listed in the OpenAPI document"
        ));
    }
    let documented_paths: BTreeSet<&str> = listed.iter().map(|(_, path)| path.as_str()).collect();
    let unlisted_paths: BTreeSet<&str> = UNLISTED.iter().map(|route| route.1).collect();
    let routed = routed_paths(API_ROUTER_SOURCE);
    for path in &routed {
        if !documented_paths.contains(path.as_str()) && !unlisted_paths.contains(path.as_str()) {
            failures.push(format!(
                "{path}: served by the API router but neither documented nor in UNLISTED"
            ));
        }
    }
    for path in unlisted_paths {
        if !routed.contains(path) {
            failures.push(format!(
                "{path}: in UNLISTED but not served by the API router"
            ));
        }
    }
}

/// Part 2: each route, with a random id for its parameters, as each caller.
async fn check_matrix(server: &TestServer, callers: &[Caller], failures: &mut Vec<String>) {
    for (method, template, access, payload) in ROUTES.iter().chain(UNLISTED) {
        let path = fill(template, &random_id());
        for caller in callers {
            let expect = expected(*access, caller.who);
            let (status, body) =
                call(server, caller.token.as_deref(), method, &path, *payload).await;
            if let Some(failure) = judge(expect, status, &body) {
                failures.push(format!(
                    "{method} {template} as {}: {failure}, got {status} {body}",
                    caller.label
                ));
            }
            // A caller whose role may not is refused whatever it sends: a request that does
            // not parse is answered 403 too, not 400.
            if expect == Expect::Refused(403, "forbidden") {
                let (path, payload) = unreadable(&path, *payload);
                let (status, body) =
                    call(server, caller.token.as_deref(), method, &path, payload).await;
                if let Some(failure) = judge(expect, status, &body) {
                    failures.push(format!(
                        "{method} {template} as {}, unreadable: {failure}, got {status} {body}",
                        caller.label
                    ));
                }
            }
        }
    }
}

/// The same request made unreadable: a query parameter no route knows and, for a JSON body,
/// JSON that does not parse.
fn unreadable(path: &str, payload: Payload) -> (String, Payload) {
    match payload {
        Upload(_) => (path.to_owned(), Upload("no_such_parameter=1")),
        Json(_) => (format!("{path}?no_such_parameter=1"), Json("{")),
        other => (format!("{path}?no_such_parameter=1"), other),
    }
}

/// Creates something through the API as `token`; answers its id.
async fn created(server: &TestServer, token: &str, path: &str, body: Value) -> String {
    let (status, answer) = server.api_as(token, Method::POST, path, Some(body)).await;
    assert_eq!(status, 201, "POST {path}: {answer}");
    answer["id"].as_str().expect("an id").to_owned()
}

/// Tenant A's objects of each kind in [`OBJECT_ROUTES`], by kind.
async fn objects_of_tenant(
    server: &TestServer,
    tenant: TenantId,
    admin: &str,
) -> BTreeMap<&'static str, String> {
    let mut objects = BTreeMap::new();
    let (status, token) = server
        .api_as(
            admin,
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(json!({"name": "tenant A"})),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    let enrolled = server
        .enroll(token["token"].as_str().unwrap(), "TENANT-A-1")
        .await;
    objects.insert("enrollment token", token["id"].as_str().unwrap().to_owned());
    objects.insert("device", enrolled.device_id.clone());
    objects.insert(
        "group",
        created(server, admin, "/api/v1/groups", json!({"name": "tenant-a"})).await,
    );
    objects.insert(
        "API token",
        created(
            server,
            admin,
            "/api/v1/api-tokens",
            json!({"name": "tenant A", "role": "viewer"}),
        )
        .await,
    );
    objects.insert(
        "license",
        created(
            server,
            admin,
            "/api/v1/licenses",
            json!({"name": "tenant A", "seats": 5}),
        )
        .await,
    );
    objects.insert(
        "webhook",
        created(
            server,
            admin,
            "/api/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef",
                "events": ["tenant_suspended"]}),
        )
        .await,
    );
    let upload = server
        .http
        .post(format!(
            "{}/api/v1/artifacts?kind=firmware&name=tenant-a&version=1",
            server.url
        ))
        .bearer_auth(admin)
        .body(b"firmware of tenant A".to_vec())
        .send()
        .await
        .expect("upload");
    assert_eq!(upload.status(), 201);
    let artifact: Value = upload.json().await.unwrap();
    objects.insert("artifact", artifact["id"].as_str().unwrap().to_owned());
    let target = json!({"ids": [enrolled.device_id]});
    objects.insert(
        "job",
        created(
            server,
            admin,
            "/api/v1/jobs",
            json!({"kind": "reboot", "target": target}),
        )
        .await,
    );
    objects.insert(
        "rollout",
        created(
            server,
            admin,
            "/api/v1/rollouts",
            json!({"job": {"kind": "reboot", "target": target}}),
        )
        .await,
    );
    objects.insert(
        "user",
        created(
            server,
            admin,
            "/api/v1/users",
            json!({"email": "someone@tenant-a.example", "role": "viewer"}),
        )
        .await,
    );
    objects.insert("tenant", tenant.to_string());
    objects
}

/// Where tenant A (or the provider, for the tenant) sees each object: answered `200` with its
/// id, which proves the ids are real and, afterwards, that nothing happened to them.
const SIGHTINGS: &[(&str, &str, bool)] = &[
    ("device", "/api/v1/devices/{id}", false),
    ("group", "/api/v1/groups", false),
    ("enrollment token", "/api/v1/enrollment-tokens", false),
    ("API token", "/api/v1/api-tokens", false),
    ("license", "/api/v1/licenses", false),
    ("webhook", "/api/v1/webhooks", false),
    ("job", "/api/v1/jobs/{id}", false),
    ("artifact", "/api/v1/artifacts/{id}", false),
    ("rollout", "/api/v1/rollouts/{id}", false),
    ("tenant", "/api/v1/provider/tenants/{id}", true),
    ("user", "/api/v1/users", false),
];

async fn check_sightings(
    server: &TestServer,
    objects: &BTreeMap<&'static str, String>,
    admin: &str,
    when: &str,
    failures: &mut Vec<String>,
) {
    for (kind, template, as_provider) in SIGHTINGS {
        let id = &objects[kind];
        let token = if *as_provider {
            &server.admin_token
        } else {
            admin
        };
        let path = fill(template, id);
        let (status, body) = server.api_as(token, Method::GET, &path, None).await;
        if status != 200 || !body.to_string().contains(id.as_str()) {
            failures.push(format!(
                "tenant A's {kind} {id} {when}: GET {path} answered {status} {body}"
            ));
        }
    }
}

/// An answer with the requested id replaced, so that answers about two ids compare.
fn without_id(body: &Value, id: &str) -> String {
    body.to_string().replace(id, "{id}")
}

/// The answer to a request naming `id` where `{id}` stands, with `id` taken out again.
async fn answer_naming(
    server: &TestServer,
    token: &str,
    method: &str,
    template: &str,
    body: Option<&str>,
    id: &str,
) -> (u16, String) {
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let body =
        body.map(|text| serde_json::from_str(&text.replace("{id}", id)).expect("a JSON body"));
    let (status, answer) = server
        .api_as(token, method, &template.replace("{id}", id), body)
        .await;
    (status, without_id(&answer, id))
}

/// Part 3: those outside tenant A, naming tenant A's objects, learn nothing and change nothing:
/// tenant B's admin everywhere, and the provider where it is admitted for its own objects.
async fn check_other_tenant(
    server: &TestServer,
    tenant: TenantId,
    admin_a: &str,
    admin_b: &str,
    failures: &mut Vec<String>,
) {
    let objects = objects_of_tenant(server, tenant, admin_a).await;
    check_sightings(server, &objects, admin_a, "before", failures).await;
    for (method, template, access, payload) in ROUTES {
        if !template.contains('{') {
            continue;
        }
        let Some((_, kind)) = OBJECT_ROUTES.iter().find(|(prefix, _)| {
            template
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }) else {
            failures.push(format!(
                "{method} {template}: no object of tenant A to ask for; add one to OBJECT_ROUTES"
            ));
            continue;
        };
        let Some(real) = objects.get(kind) else {
            failures.push(format!(
                "{method} {template}: tenant A has no {kind}; create one in objects_of_tenant"
            ));
            continue;
        };
        let mut outsiders = vec![("tenant B's admin", admin_b)];
        if *access == AdminOrProvider {
            outsiders.push(("the provider", server.admin_token.as_str()));
        }
        for (label, token) in outsiders {
            let absent = random_id();
            let (real_status, real_body) =
                call(server, Some(token), method, &fill(template, real), *payload).await;
            let (absent_status, absent_body) = call(
                server,
                Some(token),
                method,
                &fill(template, &absent),
                *payload,
            )
            .await;
            let real_answer = (real_status, without_id(&real_body, real));
            let absent_answer = (absent_status, without_id(&absent_body, &absent));
            if real_answer != absent_answer {
                failures.push(format!(
                    "{method} {template} as {label} with tenant A's {kind}: expected the answer \
                     for an id that does not exist, {absent_status} {absent_body}, got \
                     {real_status} {real_body}"
                ));
            } else if *access != Provider && real_status != 404 {
                failures.push(format!(
                    "{method} {template} as {label}: expected 404 for tenant A's {kind} and for \
                     an id that does not exist, got {real_status} {real_body}"
                ));
            }
        }
    }
    for (method, template, body, kind) in REFERENCES {
        let Some(real) = objects.get(kind) else {
            failures.push(format!("{method} {template}: tenant A has no {kind}"));
            continue;
        };
        let absent = random_id();
        let real_answer = answer_naming(server, admin_b, method, template, *body, real).await;
        let absent_answer = answer_naming(server, admin_b, method, template, *body, &absent).await;
        if real_answer != absent_answer {
            let (absent_status, absent_body) = absent_answer;
            let (real_status, real_body) = real_answer;
            let sent = body.map(|body| format!(" {body}")).unwrap_or_default();
            failures.push(format!(
                "{method} {template}{sent} as tenant B's admin naming tenant A's {kind}: \
                 expected the answer for an id that does not exist, {absent_status} \
                 {absent_body}, got {real_status} {real_body}"
            ));
        }
    }
    check_sightings(
        server,
        &objects,
        admin_a,
        "after the others asked",
        failures,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_admits_exactly_its_callers() {
    let server = TestServer::start_with(TestDb::sqlite(), cloud()).await;
    let mut failures = Vec::new();

    let response = server
        .http
        .get(format!("{}/api/v1/openapi.json", server.url))
        .send()
        .await
        .expect("fetch the OpenAPI document");
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("the OpenAPI document");
    check_classification(&doc, &mut failures);

    let provider = server.admin_token.clone();
    let (status, tenant) = server
        .api(
            Method::POST,
            "/api/v1/provider/tenants",
            Some(json!({"name": "tenant A"})),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant: TenantId = tenant["id"].as_str().unwrap().parse().unwrap();
    let token = |role| TestServer::token_for(server.store.as_ref(), &server.clock, tenant, role);
    let viewer = token(Role::Viewer).await;
    let operator = token(Role::Operator).await;
    let admin = token(Role::Admin).await;

    let (status, revoked) = server
        .api_as(
            &admin,
            Method::POST,
            "/api/v1/api-tokens",
            Some(json!({"name": "revoked", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 201, "{revoked}");
    let (status, _) = server
        .api_as(
            &admin,
            Method::DELETE,
            &format!("/api/v1/api-tokens/{}", revoked["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);

    let (status, suspended) = server
        .api(
            Method::POST,
            "/api/v1/provider/tenants",
            Some(json!({"name": "suspended tenant"})),
        )
        .await;
    assert_eq!(status, 201, "{suspended}");
    let suspended: TenantId = suspended["id"].as_str().unwrap().parse().unwrap();
    let suspended_admin =
        TestServer::token_for(server.store.as_ref(), &server.clock, suspended, Role::Admin).await;
    let (status, _) = server
        .api(
            Method::POST,
            &format!("/api/v1/provider/tenants/{suspended}/suspend"),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let callers = [
        Caller {
            label: "no Authorization header",
            token: None,
            who: Who::NoToken,
        },
        Caller {
            label: "a malformed token",
            token: Some("fat1.nonsense".into()),
            who: Who::InvalidToken,
        },
        Caller {
            label: "a token never issued",
            token: Some(new_api_token_secret().0),
            who: Who::InvalidToken,
        },
        Caller {
            label: "a revoked admin token",
            token: Some(revoked["token"].as_str().unwrap().to_owned()),
            who: Who::InvalidToken,
        },
        Caller {
            label: "a suspended tenant's admin",
            token: Some(suspended_admin),
            who: Who::Suspended,
        },
        Caller {
            label: "viewer",
            token: Some(viewer),
            who: Who::Tenant(Viewer),
        },
        Caller {
            label: "operator",
            token: Some(operator),
            who: Who::Tenant(Operator),
        },
        Caller {
            label: "admin",
            token: Some(admin.clone()),
            who: Who::Tenant(Admin),
        },
        Caller {
            label: "provider",
            token: Some(provider),
            who: Who::TheProvider,
        },
    ];
    check_matrix(&server, &callers, &mut failures).await;

    let other_admin = other_tenant_admin(&server).await;
    check_other_tenant(&server, tenant, &admin, &other_admin, &mut failures).await;

    assert!(
        failures.is_empty(),
        "{} access failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
