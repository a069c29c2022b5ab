//! Two `floatilla serve` processes on one fresh PostgreSQL database, as an installation behind
//! a load balancer runs them, with an admin token and a client that trusts the installation.

use floatilla_agent::{Connector, ControlChannel, ServerAddress, ServerTrust};
use floatilla_protocol::{
    EnrollRequest, EnrollResponse, EnrollmentTokenString, Hello, PROTOCOL_VERSION,
};
use floatilla_store::Location;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

use super::{BIN, Running, Served, spawn_serve, wait_listening};
use std::process::Command;

/// The two nodes, by index.
pub const A: usize = 0;
pub const B: usize = 1;
pub const NODE_IDS: [&str; 2] = ["node-a", "node-b"];

/// Two nodes on one fresh database, an admin token (the provider's in the cloud) and a client
/// that trusts the installation.
pub struct Cluster {
    // Declared before the database: the nodes stop before it is dropped.
    pub nodes: Vec<Served>,
    pub http: reqwest::Client,
    pub ca_pem: String,
    pub admin_token: String,
    pub database_url: String,
    _db: TestDb,
}

/// Starts `floatilla serve` on the database as node `node_id`; [`wait_listening`] finishes it.
fn spawn_node(database_url: &str, node_id: &str, extra_args: &[&str]) -> Running {
    let mut args = vec![
        "--database-url",
        database_url,
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        node_id,
    ];
    args.extend_from_slice(extra_args);
    spawn_serve(&args, &[])
}

pub fn admin(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(["admin", "--database-url", database_url])
        .args(args)
        .env("FLOATILLA_LOG", "warn")
        .output()
        .expect("run floatilla admin");
    assert!(
        output.status.success(),
        "floatilla admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn hello(credential: &str, serial: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        credential: credential.to_owned(),
        serial: serial.to_owned(),
        model: "MRX5".into(),
        firmware: "5.2.1".into(),
        clock: chrono::Utc::now(),
    }
}

impl Cluster {
    /// Both nodes started at once on a fresh database, each with `extra_args` for `serve`;
    /// `None` without PostgreSQL.
    pub async fn start(extra_args: &[&str]) -> Option<Cluster> {
        let db = TestDb::postgres().await?;
        let Location::Postgres(url) = db.location().clone() else {
            panic!("a PostgreSQL test database");
        };
        // Both start together: migrations and the installation's first set-up must cope.
        let starting: Vec<Running> = NODE_IDS
            .iter()
            .map(|id| spawn_node(&url, id, extra_args))
            .collect();
        let nodes: Vec<Served> = starting.into_iter().map(wait_listening).collect();
        // On premises the tenant's admin; in the cloud the provider.
        let role = if extra_args.windows(2).any(|w| w == ["--mode", "cloud"]) {
            "provider"
        } else {
            "admin"
        };
        let admin_token = admin(&url, &["create-token", "--role", role])
            .trim()
            .to_owned();
        let ca_pem = admin(&url, &["ca-certificate"]);
        let trust = ServerTrust::from_ca_pem(&ca_pem).unwrap();
        let tls = std::sync::Arc::unwrap_or_clone(trust.client_config(Default::default()).unwrap());
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        Some(Cluster {
            nodes,
            http,
            ca_pem,
            admin_token,
            database_url: url,
            _db: db,
        })
    }

    pub fn address(&self, node: usize) -> ServerAddress {
        ServerAddress::parse(&self.nodes[node].url).unwrap()
    }

    /// An API request to `node` with `token`; answers status and JSON body (Null when empty).
    pub async fn api_as(
        &self,
        node: usize,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.nodes[node].url))
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

    pub async fn api(
        &self,
        node: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_as(node, &self.admin_token, method, path, body)
            .await
    }

    /// A new enrollment token made through `node`'s API.
    pub async fn enrollment_token(&self, node: usize, name: &str) -> String {
        let (status, body) = self
            .api(
                node,
                Method::POST,
                "/api/v1/enrollment-tokens",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Enrolls through `node` as a new router does: trusting only the token's CA fingerprint.
    pub async fn enroll(&self, node: usize, token: &str, serial: &str) -> EnrollResponse {
        let fingerprint = token
            .parse::<EnrollmentTokenString>()
            .unwrap()
            .ca_fingerprint;
        let connector = Connector::new(
            self.address(node),
            &ServerTrust::CaFingerprint(fingerprint),
            Default::default(),
        )
        .unwrap();
        let enrolled = connector
            .enroll(&EnrollRequest {
                token: token.to_owned(),
                serial: serial.to_owned(),
                model: "MRX5".into(),
                firmware: "5.2.1".into(),
                agent_version: "test".into(),
                credential: None,
            })
            .await
            .unwrap_or_else(|e| panic!("enroll {serial} on {}: {e}", NODE_IDS[node]));
        assert_eq!(enrolled.ca_certificate, self.ca_pem, "one CA for all nodes");
        enrolled
    }

    /// Opens the router's control channel to `node`, trusting the CA certificate enrollment gave.
    pub async fn connect(
        &self,
        node: usize,
        enrolled: &EnrollResponse,
        serial: &str,
    ) -> ControlChannel {
        let trust = ServerTrust::from_ca_pem(&enrolled.ca_certificate).unwrap();
        Connector::new(self.address(node), &trust, Default::default())
            .unwrap()
            .open_channel(hello(&enrolled.credential, serial), None)
            .await
            .unwrap_or_else(|e| panic!("{serial} connects to {}: {e}", NODE_IDS[node]))
    }
}
