//! A real server on an ephemeral port with a controllable clock, and clients that talk to it as
//! routers and operators do.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use floatilla_agent::connection::{ChannelStream, recv_message, send_message};
use floatilla_agent::{Connector, ControlChannel, ServerAddress, ServerTrust};
use floatilla_domain::model::ApiToken;
use floatilla_domain::{ApiTokenId, Clock, ManualClock, Role};
use floatilla_protocol::{
    CallResult, DeviceMessage, EnrollRequest, EnrollResponse, Hello, PROTOCOL_VERSION,
    ServerMessage, Status,
};
use floatilla_server::api::auth::new_api_token_secret;
use floatilla_server::{RunningServer, ServerConfig};
use floatilla_store::Store;
use floatilla_store::testing::TestDb;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

pub mod console;

/// Generates one test per backend from `async fn name(db: TestDb)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(floatilla_store::testing::TestDb::sqlite()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = floatilla_store::testing::TestDb::postgres().await {
                        super::$name(db).await;
                    }
                }
            )+
        }
    };
}

/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Option<RunningServer>,
    config: ServerConfig,
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub address: ServerAddress,
    /// Connections that trust this server's CA certificate.
    pub connector: Connector,
    pub url: String,
    pub ca_pem: String,
    _db: TestDb,
}

pub fn test_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        last_seen_flush_interval: Duration::from_millis(50),
        shutdown_reconnect_after_secs: 5,
        call_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub async fn start(db: TestDb) -> Self {
        Self::start_with(db, test_config()).await
    }

    pub async fn start_with(db: TestDb, config: ServerConfig) -> Self {
        let store = db.open().await.expect("open test database");
        let clock = ManualClock::new(Utc::now().trunc_subsecs(0));
        let server =
            floatilla_server::start(config.clone(), store.clone(), Arc::new(clock.clone()))
                .await
                .expect("start server");
        // On premises the tenant's admin; in the cloud the provider.
        let admin_token = match server.installation().on_prem_tenant {
            Some(tenant) => Self::token_for(store.as_ref(), &clock, tenant, Role::Admin).await,
            None => Self::provider_token(store.as_ref(), &clock).await,
        };
        let trust = ServerTrust::from_ca_pem(server.ca_certificate_pem()).unwrap();
        let tls = Arc::unwrap_or_clone(trust.client_config(Arc::default()).unwrap());
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        let url = server.url();
        let address = ServerAddress::parse(&url).unwrap();
        Self {
            connector: Connector::new(address.clone(), &trust, Arc::default()).unwrap(),
            address,
            url,
            ca_pem: server.ca_certificate_pem().to_owned(),
            server: Some(server),
            config,
            clock,
            store,
            http,
            admin_token,
            _db: db,
        }
    }

    pub async fn token_for(
        store: &dyn Store,
        clock: &ManualClock,
        tenant: floatilla_domain::TenantId,
        role: Role,
    ) -> String {
        Self::stored_token(store, clock, Some(tenant), role).await
    }

    /// A token of the provider of a cloud installation.
    pub async fn provider_token(store: &dyn Store, clock: &ManualClock) -> String {
        Self::stored_token(store, clock, None, Role::Provider).await
    }

    async fn stored_token(
        store: &dyn Store,
        clock: &ManualClock,
        tenant_id: Option<floatilla_domain::TenantId>,
        role: Role,
    ) -> String {
        let (text, secret_hash) = new_api_token_secret();
        store
            .create_api_token(&ApiToken {
                id: ApiTokenId::new(),
                tenant_id,
                name: format!("test {role}"),
                role,
                secret_hash,
                created_at: clock.now(),
                revoked_at: None,
            })
            .await
            .unwrap();
        text
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn trust(&self) -> ServerTrust {
        ServerTrust::from_ca_pem(&self.ca_pem).unwrap()
    }

    /// Connections to this server that trust `trust`.
    pub fn connector_for(&self, trust: &ServerTrust) -> Connector {
        Connector::new(self.address.clone(), trust, Arc::default()).unwrap()
    }

    /// An API request with the admin token; answers status and JSON body (Null when empty).
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.admin_token, method, path, body).await
    }

    pub async fn api_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Creates a group (`body` as for `POST /api/v1/groups`) and answers it.
    pub async fn create_group(&self, body: Value) -> Value {
        let (status, group) = self.api(Method::POST, "/api/v1/groups", Some(body)).await;
        assert_eq!(status, 201, "{group}");
        group
    }

    /// A new enrollment token's text.
    pub async fn enrollment_token(&self, body: Value) -> String {
        let (status, body) = self
            .api(Method::POST, "/api/v1/enrollment-tokens", Some(body))
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn enroll(&self, token: &str, serial: &str) -> EnrollResponse {
        self.try_enroll(token, serial, None)
            .await
            .unwrap_or_else(|e| panic!("enroll {serial}: {e}"))
    }

    pub async fn try_enroll(
        &self,
        token: &str,
        serial: &str,
        credential: Option<String>,
    ) -> Result<EnrollResponse, floatilla_agent::ChannelError> {
        let trust = ServerTrust::CaFingerprint(
            token
                .parse::<floatilla_protocol::EnrollmentTokenString>()
                .unwrap()
                .ca_fingerprint,
        );
        self.connector_for(&trust)
            .enroll(&EnrollRequest {
                token: token.to_owned(),
                serial: serial.to_owned(),
                model: "MRX5".into(),
                firmware: "5.2.1".into(),
                agent_version: "test".into(),
                credential,
            })
            .await
    }

    /// Enrolls a router with a fresh unlimited token.
    pub async fn enrolled(&self, serial: &str) -> EnrollResponse {
        let token = self.enrollment_token(json!({"name": serial})).await;
        self.enroll(&token, serial).await
    }

    pub async fn open_channel(
        &self,
        credential: &str,
        serial: &str,
    ) -> Result<ControlChannel, floatilla_agent::ChannelError> {
        self.connector
            .open_channel(hello(credential, serial), None)
            .await
    }

    /// A control channel from a given loopback address, as a router elsewhere would open it.
    pub async fn open_channel_from(
        &self,
        credential: &str,
        serial: &str,
        source: std::net::IpAddr,
    ) -> Result<ControlChannel, floatilla_agent::ChannelError> {
        self.connector
            .open_channel(
                hello(credential, serial),
                Some(std::net::SocketAddr::new(source, 0)),
            )
            .await
    }

    /// Posts a CSV import as an admin.
    pub async fn import_csv(&self, csv: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/devices/import", self.url))
            .bearer_auth(&self.admin_token)
            .header("content-type", "text/csv")
            .body(csv.to_owned())
            .send()
            .await
            .expect("import request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    /// The tenant's events of `kind`, newest first.
    pub async fn events(&self, kind: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/events?kind={kind}")).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A well-behaved router on its own task, connected with `credential`.
    pub async fn router(&self, credential: &str, serial: &str) -> TestRouter {
        TestRouter::spawn(
            self.open_channel(credential, serial)
                .await
                .expect("router connects"),
        )
    }

    pub async fn raw_socket(&self) -> ChannelStream {
        self.connector
            .open_websocket(None)
            .await
            .expect("open WebSocket")
    }

    /// Polls the device until `check` holds.
    pub async fn wait_for_device(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let device = self.get(&format!("/api/v1/devices/{id}")).await;
            if check(&device) {
                return device;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "device never became {what}: {device}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_offline_with(&self, id: &str, reason: &str) -> Value {
        self.wait_for_device(id, reason, |d| {
            d["connection_state"] == "offline" && d["last_disconnect_reason"] == reason
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the server and starts it again on the same address and database.
    pub async fn restart(&mut self) {
        self.restart_after(chrono::Duration::zero()).await;
    }

    /// Stops the server, lets `down_for` pass on its clock, and starts it again.
    pub async fn restart_after(&mut self, down_for: chrono::Duration) {
        let address = self.running().local_addr;
        self.shutdown().await;
        self.clock.advance(down_for);
        let config = ServerConfig {
            listen: address,
            ..self.config.clone()
        };
        self.server = Some(
            floatilla_server::start(config, self.store.clone(), Arc::new(self.clock.clone()))
                .await
                .expect("restart server"),
        );
    }

    /// Whether `/metrics` has counted a refusal of routers with `code`.
    pub async fn counted_refusal(&self, code: &str) -> bool {
        self.metrics().await.contains(&format!(
            r#"floatilla_device_refusals_total{{code="{code}"}}"#
        ))
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

pub fn hello(credential: &str, serial: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        credential: credential.to_owned(),
        serial: serial.to_owned(),
        model: "MRX5".into(),
        firmware: "5.2.1".into(),
        clock: Utc::now(),
    }
}

/// Expects a `503` at the upgrade with this code and retry hint.
pub fn assert_busy<T: std::fmt::Debug>(
    result: Result<T, floatilla_agent::ChannelError>,
    code: &str,
    retry_after_secs: u32,
) {
    match result {
        Err(floatilla_agent::ChannelError::Busy {
            code: got,
            retry_after_secs: after,
        }) => assert_eq!((got.as_str(), after), (code, retry_after_secs)),
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// Reads the next server message, failing the test if none comes promptly.
pub async fn next_message(stream: &mut ChannelStream) -> Option<ServerMessage> {
    tokio::time::timeout(PROMPTLY, recv_message(stream))
        .await
        .expect("server answered in time")
        .expect("readable message")
}

/// Sends HELLO and expects WELCOME.
pub async fn say_hello(stream: &mut ChannelStream, credential: &str, serial: &str) {
    send_message(stream, &DeviceMessage::Hello(hello(credential, serial)))
        .await
        .unwrap();
    match next_message(stream).await {
        Some(ServerMessage::Welcome(_)) => {}
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// Expects an error frame with `code`, then the end of the connection.
pub async fn expect_refusal(stream: &mut ChannelStream, code: &str) {
    match next_message(stream).await {
        Some(ServerMessage::Error(error)) => assert_eq!(error.code, code, "{error}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
    expect_closed(stream).await;
}

pub async fn expect_closed(stream: &mut ChannelStream) {
    let end = tokio::time::timeout(PROMPTLY, async {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "connection was not closed");
}

/// A well-behaved router on its own task: answers pings and `report_status` calls, and hands
/// every other server message to the test.
pub struct TestRouter {
    pub welcome: floatilla_protocol::Welcome,
    pub pings: Arc<AtomicUsize>,
    ping_seen: Arc<Notify>,
    pub messages: mpsc::UnboundedReceiver<ServerMessage>,
    control: mpsc::UnboundedSender<RouterControl>,
    task: tokio::task::JoinHandle<()>,
}

enum RouterControl {
    Send(DeviceMessage),
    Close,
}

impl TestRouter {
    pub fn spawn(channel: ControlChannel) -> Self {
        let ControlChannel {
            mut stream,
            welcome,
        } = channel;
        let pings = Arc::new(AtomicUsize::new(0));
        let ping_seen = Arc::new(Notify::new());
        let (forward, messages) = mpsc::unbounded_channel();
        let (control, mut commands) = mpsc::unbounded_channel();
        let (task_pings, task_ping_seen) = (pings.clone(), ping_seen.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = commands.recv() => match command {
                        Some(RouterControl::Send(message)) => {
                            if send_message(&mut stream, &message).await.is_err() { return; }
                        }
                        Some(RouterControl::Close) | None => {
                            let _ = stream.close(None).await;
                            while let Some(Ok(_)) = stream.next().await {}
                            return;
                        }
                    },
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Ping(_))) => {
                            // Sends the queued pong now.
                            let _ = stream.flush().await;
                            task_pings.fetch_add(1, Ordering::SeqCst);
                            task_ping_seen.notify_waiters();
                        }
                        Some(Ok(Message::Text(text))) => {
                            let message = ServerMessage::decode(&text).expect("server message");
                            if let ServerMessage::Call { call_id, method, .. } = &message
                                && method == "report_status"
                            {
                                let status = Status { uptime_secs: Some(42), wan_address: Some("198.51.100.7".into()), ..Status::default() };
                                let answer = DeviceMessage::Result(CallResult {
                                    call_id: call_id.clone(),
                                    ok: true,
                                    result: Some(serde_json::to_value(status).unwrap()),
                                    error: None,
                                });
                                if send_message(&mut stream, &answer).await.is_err() { return; }
                                continue;
                            }
                            let _ = forward.send(message);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    },
                }
            }
        });
        Self {
            welcome,
            pings,
            ping_seen,
            messages,
            control,
            task,
        }
    }

    pub fn send(&self, message: DeviceMessage) {
        let _ = self.control.send(RouterControl::Send(message));
    }

    /// Waits until the router has answered `count` pings in all.
    pub async fn wait_for_pings(&self, count: usize) {
        tokio::time::timeout(PROMPTLY, async {
            loop {
                let notified = self.ping_seen.notified();
                if self.pings.load(Ordering::SeqCst) >= count {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("router never saw ping {count}"));
    }

    pub async fn next_message(&mut self) -> Option<ServerMessage> {
        tokio::time::timeout(PROMPTLY, self.messages.recv())
            .await
            .expect("server message in time")
    }

    /// Closes properly (WebSocket close handshake).
    pub async fn close(self) {
        let _ = self.control.send(RouterControl::Close);
        let _ = tokio::time::timeout(PROMPTLY, self.task).await;
    }

    /// Vanishes: the TCP connection is dropped without a close handshake.
    pub fn vanish(self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Checks each row of an import's report: (line, result, error code).
pub fn assert_import_rows(report: &Value, expected: &[(u64, &str, Option<&str>)]) {
    let rows: Vec<(u64, &str, Option<&str>)> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row["line"].as_u64().unwrap(),
                row["result"].as_str().unwrap(),
                row["error"]["code"].as_str(),
            )
        })
        .collect();
    assert_eq!(rows, expected, "{report}");
}

/// A test server that accepts unsigned licenses, for tests about the license pool.
pub fn licensing_config() -> ServerConfig {
    ServerConfig {
        allow_unsigned_licenses: true,
        ..test_config()
    }
}

/// Adds an unsigned license (`body` as for `POST /api/v1/licenses`) and answers it.
pub async fn add_license(server: &TestServer, body: Value) -> Value {
    let (status, license) = server
        .api(Method::POST, "/api/v1/licenses", Some(body))
        .await;
    assert_eq!(status, 201, "{license}");
    license
}

/// Enrolls and connects `count` routers with serials `PREFIX-01`, …; answers their ids and
/// their connections, in that order (which is their order in line for a seat).
pub async fn connect_fleet(
    server: &TestServer,
    prefix: &str,
    count: usize,
) -> Vec<(String, TestRouter)> {
    let mut routers = Vec::new();
    for n in 1..=count {
        let serial = format!("{prefix}-{n:02}");
        let enrolled = server.enrolled(&serial).await;
        let router = server.router(&enrolled.credential, &serial).await;
        routers.push((enrolled.device_id, router));
    }
    routers
}

/// A second tenant in the server's database and a token of its admin: what another customer
/// of the installation would hold.
pub async fn other_tenant_admin(server: &TestServer) -> String {
    let other = floatilla_domain::model::Tenant {
        id: floatilla_domain::TenantId::new(),
        name: "another tenant".into(),
        enrollment_policy: floatilla_domain::enrollment::EnrollmentPolicy::Open,
        created_at: server.clock.now(),
        suspended_at: None,
        contact_email: None,
    };
    server.store.create_tenant(&other).await.unwrap();
    TestServer::token_for(server.store.as_ref(), &server.clock, other.id, Role::Admin).await
}

/// Waits until the job's executions stand as `expected` (counted by state); answers the job.
pub async fn counts_become(server: &TestServer, job: &str, expected: Value) -> Value {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let view = server.get(&format!("/api/v1/jobs/{job}")).await;
        if view["executions"] == expected {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {expected}, got {}",
            view["executions"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Uploads `bytes` as an artifact (`query` as for `POST /api/v1/artifacts`); answers status
/// and body.
pub async fn upload_artifact(server: &TestServer, query: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = server
        .http
        .post(format!("{}/api/v1/artifacts?{query}", server.url))
        .bearer_auth(&server.admin_token)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the rollout's status is `status`, stepping the server's clock a second at a
/// time so that its driver ticks; answers the rollout.
pub async fn rollout_becomes(server: &TestServer, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rollout = server.get(&format!("/api/v1/rollouts/{id}")).await;
        if rollout["status"] == status {
            return rollout;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not become {status}: {rollout}"
        );
        server.clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits for the router's next JOB message.
pub async fn next_job(router: &mut TestRouter) -> floatilla_protocol::WireJob {
    loop {
        match router.next_message().await {
            Some(ServerMessage::Job(job)) => return job,
            Some(_) => {}
            None => panic!("the channel closed before a JOB message"),
        }
    }
}
