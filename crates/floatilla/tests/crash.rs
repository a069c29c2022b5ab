//! `kill -9` of the server in the middle of a rollout: after a restart every execution ends
//! exactly once, and no router applied any twice.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Running, serve};
use floatilla_agent::ServerTrust;
use serde_json::{Value, json};

const ROUTERS: u64 = 200;

/// Runs `floatilla admin`; answers its output, trimmed.
fn admin(data_dir: &Path, args: &[&str]) -> String {
    common::admin(data_dir, args).unwrap().trim().to_owned()
}

struct Api {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls `path` until `done` holds (a minute at most); answers the last body.
    async fn wait(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.call(reqwest::Method::GET, path, None).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "never {what}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A free loopback port: the restarted server must listen where the routers look for it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn every_execution_ends_exactly_once_across_a_kill_9_mid_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--data-dir",
        data_arg.as_str(),
        "--listen",
        listen.as_str(),
        "--allow-unsigned-licenses",
        "true",
        "--node-id",
        "crash-test",
    ];
    let served = serve(&args, &[]);
    let token = admin(&data, &["create-token", "--role", "admin"]);
    let trust = ServerTrust::from_ca_pem(&admin(&data, &["ca-certificate"])).unwrap();
    let tls = std::sync::Arc::unwrap_or_clone(trust.client_config(Default::default()).unwrap());
    let api = Api {
        client: reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap(),
        url: served.url.clone(),
        token,
    };
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/licenses",
            Some(json!({"name": "fleet", "seats": ROUTERS})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "fleet"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, enrollment) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/enrollment-tokens",
            Some(json!({"name": "fleet", "group": "fleet"})),
        )
        .await;
    assert_eq!(status, 201, "{enrollment}");
    let jobs_log = dir.path().join("applied.log");
    let routers = ROUTERS.to_string();
    let mut simulator = Running(
        Command::new(BIN)
            .args(["simulate", "--server", &served.url, "--devices", &routers])
            .args(["--rate", "500", "--serial-prefix", "K9-", "--enroll-token"])
            .arg(enrollment["token"].as_str().unwrap())
            .arg("--jobs-log")
            .arg(&jobs_log)
            .env("FLOATILLA_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start floatilla simulate"),
    );
    api.wait("/api/v1/license-pool", "every router licensed", |pool| {
        pool["in_use"] == ROUTERS
    })
    .await;

    let (status, rollout) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/rollouts",
            Some(
                json!({"job": {"kind": "reboot", "target": {"group": "fleet"},
                    "expected_downtime_secs": 0},
                "phases": [{"percent": 25}], "max_concurrent": 10}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{rollout}");
    let id = rollout["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/jobs/{id}");
    api.wait(&path, "a part of the rollout done", |job| {
        job["executions"]["succeeded"].as_u64().unwrap_or(0) >= 30
    })
    .await;

    // kill -9, mid-rollout; then the same node starts again on the same data.
    drop(served);
    let restarted = serve(&args, &[]);
    assert_eq!(restarted.url, api.url);
    let done = api
        .wait(&format!("/api/v1/rollouts/{id}"), "completed", |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(done["job"]["executions"], json!({"succeeded": ROUTERS}));
    let mut executions = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after
            .as_deref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let page = api
            .get(&format!("/api/v1/jobs/{id}/executions?limit=1000{cursor}"))
            .await;
        executions.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(executions.len() as u64, ROUTERS);
    assert!(
        executions.iter().all(|e| e["attempt"] == 1),
        "no execution needed a second attempt"
    );

    // Every router applied its execution exactly once, the crash notwithstanding.
    let status = Command::new("kill")
        .args(["-INT", &simulator.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = simulator.0.wait();
    let log = std::fs::read_to_string(&jobs_log).unwrap();
    let mut applied: HashMap<&str, u32> = HashMap::new();
    for line in log.lines() {
        let execution = line.split_whitespace().next().unwrap();
        *applied.entry(execution).or_default() += 1;
    }
    assert_eq!(applied.len() as u64, ROUTERS, "{log}");
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    for execution in &executions {
        assert!(applied.contains_key(execution["id"].as_str().unwrap()));
    }
}
