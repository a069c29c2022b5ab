//! The console in a real browser: headless Chromium, driven through ChromeDriver, logs in,
//! installs a license file, finds the excess routers and why, unmanages two, starts a rollout
//! and watches it progress, against a real server and a simulated fleet that runs the jobs.
//! Needs `chromedriver` and `chromium` (Debian's `chromium-driver`, `chromium`): mandatory in CI
//! (`CI=true`), skipped with a notice elsewhere. With `FLOATILLA_SCREENSHOTS=DIR` (an absolute
//! path: tests run in the crate's folder) the main pages are saved there as PNG files
//! (docs/console/ holds the ones from such a run).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use floatilla_agent::simulate::{Simulator, SimulatorConfig};
use floatilla_domain::Role;
use floatilla_store::testing::TestDb;
use serde_json::json;

const FLEET: u32 = 6;
const SEATS: u64 = 4;
const EMAIL: &str = "operator@example.com";
const PASSWORD: &str = "a browser test password";

/// ChromeDriver on a free port, stopped when dropped.
struct Driver {
    process: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn chromedriver() -> Option<Driver> {
    let binary = std::env::var("FLOATILLA_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    match Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(process) => Some(Driver { process, port }),
        Err(error) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{binary} cannot start ({error}); the browser tests are mandatory in CI")
        }
        Err(error) => {
            eprintln!(
                "NOTICE: {binary} cannot start ({error}); skipping the browser tests (install Debian's chromium and chromium-driver to run them)"
            );
            None
        }
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--ignore-certificate-errors", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    // ChromeDriver is spoken to over plain HTTP, but the client's TLS needs a provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .expect("a TLS connector")
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => return client,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no browser session: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Saves a picture of the page when screenshots are asked for.
async fn picture(client: &Client, name: &str) {
    if let Ok(dir) = std::env::var("FLOATILLA_SCREENSHOTS") {
        let png = client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

/// Clicks a form's button and waits until the browser is on the page that answers it (a
/// click returns before the navigation it starts).
async fn submit(client: &Client, button: &str) {
    let before = client.current_url().await.unwrap();
    client
        .find(Locator::Css(button))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while client.current_url().await.unwrap() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{button} led nowhere from {before}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(PROMPTLY)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits until the page at `path`, reloaded every half second, satisfies `done`.
async fn page_becomes(client: &Client, url: &str, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        client.goto(url).await.unwrap();
        let source = client.source().await.unwrap();
        if done(&source) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed at {url}:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_licenses_unmanages_and_rolls_out_from_the_browser() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let server = TestServer::start_with(TestDb::sqlite(), licensing_config()).await;
    let tenant = server.running().installation().on_prem_tenant.unwrap();
    floatilla_server::accounts::create_user(
        server.store.as_ref(),
        floatilla_domain::Clock::now(&server.clock),
        EMAIL,
        Role::Admin,
        Some(tenant),
        PASSWORD.to_owned(),
    )
    .await
    .unwrap();
    server.create_group(json!({"name": "site"})).await;
    let token = server
        .enrollment_token(json!({"name": "fleet", "group": "site"}))
        .await;
    let _fleet = Simulator::start(SimulatorConfig {
        server: server.address.clone(),
        enroll_token: Some(token),
        devices: FLEET,
        rate: 100,
        serial_prefix: "BR".into(),
        state_dir: None,
        job_failure_percent: 0,
        jobs_log: None,
    })
    .unwrap();
    // No license yet: every router is online and excess.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while server.get("/api/v1/license-pool").await["excess"] != u64::from(FLEET) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rollout driver ticks on the server's clock: keep it moving a second at a time.
    let clock = server.clock.clone();
    let ticking = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.advance(chrono::Duration::seconds(1));
        }
    });

    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;
    let base = server.url.clone();

    // Anyone not logged in gets the login page.
    client.goto(&format!("{base}/")).await.unwrap();
    assert!(client.current_url().await.unwrap().path() == "/login");
    picture(&client, "login").await;
    client
        .find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(EMAIL)
        .await
        .unwrap();
    client
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    submit(&client, "form[action='/login'] button").await;
    assert_eq!(text_of(&client, "h1").await, "Dashboard");
    assert!(client.source().await.unwrap().contains(EMAIL));

    // Install a license file of four seats.
    client.goto(&format!("{base}/licenses")).await.unwrap();
    assert_eq!(
        text_of(&client, "#installation-id").await,
        server.running().installation().id
    );
    let license = profile.path().join("license.json");
    std::fs::write(
        &license,
        json!({"name": "browser", "seats": SEATS}).to_string(),
    )
    .unwrap();
    client
        .find(Locator::Css("input[type=file]"))
        .await
        .unwrap()
        .send_keys(license.to_str().unwrap())
        .await
        .unwrap();
    submit(&client, "form[action='/licenses'] button").await;
    assert_eq!(
        text_of(&client, ".notice").await,
        "License browser installed."
    );
    picture(&client, "licenses").await;

    // Which routers are excess, and why.
    let excess_page = format!("{base}/routers?license_state=excess");
    page_becomes(&client, &excess_page, "two excess routers", |page| {
        page.matches("data-license=\"excess\"").count() == (u64::from(FLEET) - SEATS) as usize
    })
    .await;
    let why = text_of(&client, "tbody tr td:nth-child(6)").await;
    assert!(why.contains("Every seat was taken"), "{why}");
    picture(&client, "routers-excess").await;

    // Unmanage them.
    for checkbox in client
        .find_all(Locator::Css("tbody input[type=checkbox]"))
        .await
        .unwrap()
    {
        checkbox.click().await.unwrap();
    }
    client
        .find(Locator::Css("select[name=action]"))
        .await
        .unwrap()
        .select_by_value("unmanage")
        .await
        .unwrap();
    submit(&client, "form[action='/routers/bulk'] .actions button").await;
    assert_eq!(
        text_of(&client, ".notice").await,
        "2 routers marked unmanaged."
    );
    let pool = server.get("/api/v1/license-pool").await;
    assert_eq!(pool["excess"], 0, "{pool}");
    assert_eq!(pool["in_use"], SEATS, "{pool}");

    // Start a reboot rollout for the group in two phases and watch it.
    client.goto(&format!("{base}/rollouts")).await.unwrap();
    client
        .find(Locator::Css("select[name=group]"))
        .await
        .unwrap()
        .select_by_value("site")
        .await
        .unwrap();
    let phases = client
        .find(Locator::Css("input[name=phases]"))
        .await
        .unwrap();
    phases.clear().await.unwrap();
    phases.send_keys("2, 100%").await.unwrap();
    submit(&client, "form[action='/rollouts'] button").await;
    assert_eq!(text_of(&client, ".notice").await, "Rollout started.");
    let rollout_page = client.current_url().await.unwrap().to_string();
    assert!(rollout_page.contains("/rollouts/"), "{rollout_page}");
    // The licensed routers reboot; the unmanaged ones wait for a seat, shown apart.
    page_becomes(
        &client,
        &rollout_page,
        "every licensed router done",
        |page| page.contains(&format!("<span id=\"rollout-succeeded\">{SEATS}</span>")),
    )
    .await;
    assert!(
        client
            .source()
            .await
            .unwrap()
            .contains("2 waiting for a seat")
    );
    picture(&client, "rollout").await;

    // The rollout's job lists each router's execution; a router's page manages it.
    let job_link = client
        .find(Locator::Css("#rollout-job"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .expect("the job's link");
    client.goto(&format!("{base}{job_link}")).await.unwrap();
    let executions = client.source().await.unwrap();
    assert!(executions.contains(">BR0"), "{executions}");
    picture(&client, "job").await;
    submit(&client, "tbody tr td a").await;
    assert!(text_of(&client, "h1").await.starts_with("Router BR0"));
    picture(&client, "router").await;
    client.goto(&format!("{base}/events")).await.unwrap();
    let events = client.source().await.unwrap();
    assert!(events.contains("license_capacity_changed"), "{events}");
    picture(&client, "events").await;
    client.goto(&format!("{base}/settings")).await.unwrap();
    assert_eq!(text_of(&client, "h1").await, "Settings");
    picture(&client, "settings").await;

    client.goto(&format!("{base}/")).await.unwrap();
    picture(&client, "dashboard").await;
    client.goto(&format!("{base}/audit")).await.unwrap();
    let audit = client.source().await.unwrap();
    for action in [
        "POST /licenses",
        "POST /routers/bulk",
        "POST /rollouts",
        "POST /login",
    ] {
        assert!(audit.contains(action), "{action} not in the audit log");
    }
    picture(&client, "audit").await;

    client.close().await.unwrap();
    ticking.abort();
}
