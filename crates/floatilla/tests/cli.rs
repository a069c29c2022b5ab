//! The `floatilla` binary as an operator runs it: `serve` on an ephemeral port, `admin` commands
//! against the same data while it runs, options from flags, environment and a config file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{BIN, Running, admin, serve};

use floatilla_agent::{Connector, ServerAddress, ServerTrust};
use floatilla_protocol::{EnrollRequest, Hello, PROTOCOL_VERSION};
use serde_json::{Value, json};

async fn client(data_dir: &Path) -> (reqwest::Client, ServerTrust) {
    let pem = admin(data_dir, &["ca-certificate"]).unwrap();
    let trust = ServerTrust::from_ca_pem(&pem).unwrap();
    let tls = std::sync::Arc::unwrap_or_clone(trust.client_config(Default::default()).unwrap());
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    (client, trust)
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn serve_prints_its_address_and_honours_admin_tokens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = serve(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(
        served.url.starts_with("https://127.0.0.1:"),
        "{}",
        served.url
    );
    assert!(!served.url.ends_with(":0"));
    let (client, _) = client(&data).await;

    let token = admin(&data, &["create-token", "--role", "admin"]).unwrap();
    let token = token.trim();
    assert!(
        token.starts_with("fat1.") && !token.contains('\n'),
        "only the token: {token}"
    );
    let (status, body) = get(&client, &format!("{}/api/v1/devices", served.url), token).await;
    assert_eq!((status, body["total"].as_u64()), (200, Some(0)));

    let named = admin(
        &data,
        &["create-token", "--role", "viewer", "--name", "dashboard"],
    )
    .unwrap();
    let (status, _) = get(
        &client,
        &format!("{}/api/v1/groups", served.url),
        named.trim(),
    )
    .await;
    assert_eq!(status, 200);
    let error = admin(&data, &["create-tenant", "acme"]).unwrap_err();
    assert!(error.contains("exactly one tenant"), "{error}");
    let error = admin(&data, &["create-token", "--role", "provider"]).unwrap_err();
    assert!(error.contains("only a cloud installation"), "{error}");
}

#[tokio::test]
async fn cloud_mode_has_tenants_created_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = serve(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "cloud",
            "--trial-seats",
            "3",
        ],
        &[],
    );
    let tenant = admin(&data, &["create-tenant", "Acme Water"]).unwrap();
    let tenant = tenant.trim();
    assert_eq!(tenant.len(), 36, "only the id: {tenant}");
    let error = admin(&data, &["create-token", "--role", "admin"]).unwrap_err();
    assert!(error.contains("--tenant"), "{error}");
    let token = admin(
        &data,
        &["create-token", "--role", "admin", "--tenant", tenant],
    )
    .unwrap();
    let (client, _) = client(&data).await;
    let (status, _) = get(
        &client,
        &format!("{}/api/v1/devices", served.url),
        token.trim(),
    )
    .await;
    assert_eq!(status, 200);
    // A new cloud tenant starts with a trial: 25 seats for 45 days.
    let (_, licenses) = get(
        &client,
        &format!("{}/api/v1/licenses", served.url),
        token.trim(),
    )
    .await;
    let trial = &licenses["items"][0];
    assert_eq!(
        (&trial["seats"], &trial["status"]),
        (&json!(25), &json!("valid"))
    );
    let days = chrono::DateTime::parse_from_rfc3339(trial["not_after"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(trial["not_before"].as_str().unwrap()).unwrap();
    assert_eq!(days.num_days(), 45);
    let (_, pool) = get(
        &client,
        &format!("{}/api/v1/license-pool", served.url),
        token.trim(),
    )
    .await;
    assert_eq!(pool["capacity"], 25);

    let other = admin(&data, &["create-tenant", "Other", "--trial-seats", "0"]).unwrap();
    let other_token = admin(
        &data,
        &["create-token", "--role", "admin", "--tenant", other.trim()],
    )
    .unwrap();
    let created = client
        .post(format!("{}/api/v1/groups", served.url))
        .bearer_auth(token.trim())
        .json(&json!({"name": "acme-only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (_, groups) = get(
        &client,
        &format!("{}/api/v1/groups", served.url),
        other_token.trim(),
    )
    .await;
    assert_eq!(groups, json!([]), "tenants never see each other's groups");
    let (_, licenses) = get(
        &client,
        &format!("{}/api/v1/licenses", served.url),
        other_token.trim(),
    )
    .await;
    assert_eq!(
        licenses["items"],
        json!([]),
        "no trial with --trial-seats 0"
    );

    // The provider's token belongs to no tenant; tenants it creates get the server's trial.
    let error = admin(
        &data,
        &["create-token", "--role", "provider", "--tenant", tenant],
    )
    .unwrap_err();
    assert!(error.contains("no tenant"), "{error}");
    let provider = admin(&data, &["create-token", "--role", "provider"]).unwrap();
    let (status, tenants) = get(
        &client,
        &format!("{}/api/v1/provider/tenants", served.url),
        provider.trim(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(tenants.as_array().unwrap().len(), 2);
    let created = client
        .post(format!("{}/api/v1/provider/tenants", served.url))
        .bearer_auth(provider.trim())
        .json(&json!({"name": "Via API"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["usage"]["capacity"], 3, "serve --trial-seats 3");
    let (status, _) = get(
        &client,
        &format!("{}/api/v1/devices", served.url),
        provider.trim(),
    )
    .await;
    assert_eq!(status, 403, "the provider does not see inside tenants");
}

#[tokio::test]
async fn options_come_from_flags_then_environment_then_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("floatilla.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nping_interval_secs = 50\npong_timeout_secs = 20\nreconnect_backoff_cap_secs = 40\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let served = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--reconnect-backoff-cap-secs",
            "33",
        ],
        &[
            ("FLOATILLA_PING_INTERVAL_SECS", "77"),
            ("FLOATILLA_RECONNECT_BACKOFF_CAP_SECS", "99"),
        ],
    );
    let (client, trust) = client(&data).await;
    let token = admin(&data, &["create-token", "--role", "admin"]).unwrap();
    let created: Value = client
        .post(format!("{}/api/v1/enrollment-tokens", served.url))
        .bearer_auth(token.trim())
        .json(&json!({"name": "cli"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connector = Connector::new(
        ServerAddress::parse(&served.url).unwrap(),
        &trust,
        Default::default(),
    )
    .unwrap();
    let enrolled = connector
        .enroll(&EnrollRequest {
            token: created["token"].as_str().unwrap().to_owned(),
            serial: "CFG-1".into(),
            model: "m".into(),
            firmware: "f".into(),
            agent_version: "a".into(),
            credential: None,
        })
        .await
        .unwrap();
    let channel = connector
        .open_channel(
            Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "a".into(),
                credential: enrolled.credential,
                serial: "CFG-1".into(),
                model: "m".into(),
                firmware: "f".into(),
                clock: chrono::Utc::now(),
            },
            None,
        )
        .await
        .unwrap();
    let timers = channel.welcome.timers;
    assert_eq!(
        timers.ping_interval_secs, 77,
        "environment beats the config file"
    );
    assert_eq!(
        timers.pong_timeout_secs, 20,
        "the config file beats the default"
    );
    assert_eq!(
        timers.reconnect_backoff_cap_secs, 33,
        "a flag beats the environment"
    );
}

#[test]
fn invalid_options_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pong-timeout-secs",
            "500",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pong timeout"), "{stderr}");
}

/// Reads lines from a child's stdout until `prefix`, answering the rest of that line.
fn line_after(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> String {
    for line in lines.by_ref() {
        let line = line.expect("readable");
        if let Some(rest) = line.trim_start().strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
    panic!("no line starting with {prefix:?}");
}

fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

#[tokio::test]
async fn the_demo_runs_a_server_with_a_simulated_fleet_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut passwords = Vec::new();
    for run in 1..=2 {
        let mut demo = Running(
            Command::new(BIN)
                .args([
                    "demo",
                    "--listen",
                    "127.0.0.1:0",
                    "--devices",
                    "5",
                    "--data-dir",
                ])
                .arg(&data)
                .env("FLOATILLA_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
        let url = line_after(&mut lines, "listening on ");
        let console = line_after(&mut lines, "Console:");
        let token = line_after(&mut lines, "API token:");
        let (client, _) = client(&data).await;
        // The console account logs in with this run's password (a wrong one is answered 401).
        let password = console
            .rsplit("password ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .to_owned();
        assert_eq!(
            console_login(&client, &url, "demo@floatilla.local", &password).await,
            200,
            "run {run}: {console}"
        );
        passwords.push(password);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, page) = get(
                &client,
                &format!("{url}/api/v1/devices?connection_state=online"),
                &token,
            )
            .await;
            assert_eq!(status, 200);
            if page["total"] == 5 {
                assert_eq!(page["items"][0]["serial"], "DEMO-000001");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "run {run}: {page}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let (_, all) = get(&client, &format!("{url}/api/v1/devices"), &token).await;
        assert_eq!(all["total"], 5, "run {run} reuses the same routers");
        assert!(interrupt(&mut demo.0).success());
    }
    assert_ne!(passwords[0], passwords[1], "each run gives a new password");
}

/// Opens the console's login page and posts its form (with the page's token and cookie);
/// answers the status after following the redirect (200: the login succeeded; 401: it did not).
async fn console_login(client: &reqwest::Client, url: &str, email: &str, password: &str) -> u16 {
    let form = client.get(format!("{url}/login")).send().await.unwrap();
    let cookie = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = form.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the login form's token") + marker.len();
    let csrf = html[start..].split('"').next().unwrap().to_owned();
    client
        .post(format!("{url}/login"))
        .header("cookie", cookie)
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn create_user_prints_a_one_time_password_or_reads_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let served = serve(&["--data-dir", data, "--listen", "127.0.0.1:0"], &[]);
    let output = admin(
        dir.path(),
        &[
            "create-user",
            "--email",
            "Admin@Example.com",
            "--role",
            "admin",
        ],
    )
    .unwrap();
    let password = output.lines().last().unwrap().to_owned();
    assert_eq!(password.len(), 24, "{output}");
    let again = admin(
        dir.path(),
        &[
            "create-user",
            "--email",
            "admin@example.com",
            "--role",
            "viewer",
        ],
    )
    .unwrap_err();
    assert!(again.contains("has an account already"), "{again}");
    let mut reading = Command::new(BIN)
        .args([
            "admin",
            "--data-dir",
            data,
            "create-user",
            "--email",
            "ops@example.com",
        ])
        .args(["--role", "operator", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(reading.stdin.take().unwrap(), "chosen by the operator").unwrap();
    let read = reading.wait_with_output().unwrap();
    assert!(read.status.success());
    let printed = String::from_utf8(read.stdout).unwrap();
    assert!(!printed.contains("chosen by"), "{printed}");

    let (client, _) = client(dir.path()).await;
    let url = &served.url;
    assert_eq!(
        console_login(&client, url, "admin@example.com", &password).await,
        200
    );
    assert_eq!(
        console_login(&client, url, "ops@example.com", "chosen by the operator").await,
        200
    );
    assert_eq!(
        console_login(&client, url, "ops@example.com", "not the password").await,
        401
    );
}
