//! The console's routers page with a large fleet in the database: each filter's page, fetched
//! over HTTPS with a logged-in session as a browser does (TLS connection kept alive), timed
//! request by request; p50, p95 and the slowest of each. Goal: p95 under 200 ms at 100,000
//! routers.
//!
//! Side by side, in the same run: the plain SQL a page needs for the unfiltered list and for
//! one filter (the count and the first 51 rows, straight through sqlx on the same database),
//! so the ratio shows what the server, the page's other reads and the HTML cost on top.
//!
//! The fleet: `FLOATILLA_BENCH_ROUTERS` (100,000) pre-registered routers in 10 groups, then
//! varied with SQL: 4 models, 5 firmware versions, half online, license states in turn
//! (licensed, excess, inactive, unmanaged), every tenth tagged `pilot`.
//!
//! Run: `cargo bench -p floatilla-server --bench console_routers` (SQLite, and PostgreSQL when
//! reachable; `FLOATILLA_BENCH_BACKENDS=sqlite` or `postgres` for one). A small run: `FLOATILLA_BENCH_ROUTERS=2000 FLOATILLA_BENCH_ROUNDS=20 cargo bench
//! -p floatilla-server --bench console_routers`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floatilla_agent::ServerTrust;
use floatilla_domain::model::Group;
use floatilla_domain::{GroupId, Role, SystemClock};
use floatilla_server::ServerConfig;
use floatilla_store::testing::TestDb;
use floatilla_store::{Location, Preregistration, Store};

/// Routers in the database (`FLOATILLA_BENCH_ROUTERS`).
const ROUTERS: usize = 100_000;
/// Timed requests per page (`FLOATILLA_BENCH_ROUNDS`).
const ROUNDS: usize = 200;
const GROUPS: usize = 10;
const WARM_UP: usize = 5;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pages timed: a label and the query of `/routers`.
const PAGES: &[(&str, &str)] = &[
    ("all routers", ""),
    ("search by serial", "q=00042"),
    ("search, two characters", "q=42"),
    ("online", "connection_state=online"),
    ("excess", "license_state=excess"),
    ("group", "group=g3"),
    ("tag", "tag=pilot"),
    ("model", "model=MRX-2"),
    ("firmware", "firmware=5.1.3"),
    (
        "online, licensed, one firmware",
        "connection_state=online&license_state=licensed&firmware=5.1.0",
    ),
];

struct Timings {
    p50: Duration,
    p95: Duration,
    max: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Timings {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Timings {
        p50: at(0.5),
        p95: at(0.95),
        max: *samples.last().unwrap(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn fill(
    store: &dyn Store,
    location: &Location,
    tenant: floatilla_domain::TenantId,
    routers: usize,
) {
    let now = chrono::Utc::now();
    let mut groups = Vec::new();
    for n in 0..GROUPS {
        let group = Group {
            id: GroupId::new(),
            tenant_id: tenant,
            name: format!("g{n}"),
            timer_profile: None,
            maintenance_window: None,
            created_at: now,
        };
        store.create_group(&group).await.unwrap();
        groups.push(group.id);
    }
    let entries: Vec<Preregistration> = (0..routers)
        .map(|n| Preregistration {
            serial: format!("R-{n:06}"),
            name: format!("router {n}"),
            group_id: Some(groups[n % GROUPS]),
        })
        .collect();
    for chunk in entries.chunks(5_000) {
        store.preregister(tenant, chunk, now).await.unwrap();
    }
    let number = "CAST(substr(serial, 3) AS INTEGER)";
    let statements = [
        format!(
            "UPDATE devices SET enrollment = 'accepted', \
             model = 'MRX-' || CAST({number} % 4 AS TEXT), \
             firmware = '5.1.' || CAST({number} % 5 AS TEXT), \
             connection_state = CASE WHEN {number} % 2 = 0 THEN 'online' ELSE 'offline' END, \
             license_state = CASE {number} % 4 WHEN 0 THEN 'licensed' WHEN 1 THEN 'excess' \
               WHEN 2 THEN 'inactive' ELSE 'unmanaged' END, \
             managed = ({number} % 4 <> 3)"
        ),
        format!(
            "INSERT INTO device_tags (device_id, tenant_id, tag) \
             SELECT id, tenant_id, 'pilot' FROM devices WHERE {number} % 10 = 0"
        ),
    ];
    match location {
        Location::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            for statement in &statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            sqlx::query("ANALYZE").execute(&pool).await.unwrap();
        }
        Location::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            for statement in &statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            sqlx::query("ANALYZE").execute(&pool).await.unwrap();
        }
    }
}

/// The plain SQL of one page: the count and the first 51 rows, `rounds` times.
async fn baseline(location: &Location, tenant: &str, condition: &str, rounds: usize) -> Timings {
    let count = format!("SELECT COUNT(*) FROM devices WHERE tenant_id = $1 {condition}");
    let page =
        format!("SELECT * FROM devices WHERE tenant_id = $1 {condition} ORDER BY serial LIMIT 51");
    let mut samples = Vec::with_capacity(rounds);
    macro_rules! time_on {
        ($pool:expr) => {{
            let pool = $pool;
            for round in 0..rounds + WARM_UP {
                let began = Instant::now();
                let _: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
                    .bind(tenant)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let rows = sqlx::query(sqlx::AssertSqlSafe(page.clone()))
                    .bind(tenant)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                assert!(!rows.is_empty());
                if round >= WARM_UP {
                    samples.push(began.elapsed());
                }
            }
        }};
    }
    match location {
        Location::Sqlite(path) => time_on!(
            sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap()
        ),
        Location::Postgres(url) => time_on!(sqlx::PgPool::connect(url).await.unwrap()),
    }
    summarize(samples)
}

async fn run(db: TestDb, backend: &str, routers: usize, rounds: usize) {
    let store = db.open().await.unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = floatilla_server::start(config, store.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let tenant = server.installation().on_prem_tenant.unwrap();
    let began = Instant::now();
    fill(store.as_ref(), db.location(), tenant, routers).await;
    eprintln!(
        "{backend}: {routers} routers stored in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let now = chrono::Utc::now();
    let user = floatilla_server::accounts::create_user(
        store.as_ref(),
        now,
        "bench@example.com",
        Role::Viewer,
        Some(tenant),
        "a benchmark password".to_owned(),
    )
    .await
    .unwrap();
    let (secret, _) = floatilla_server::accounts::start_session(store.as_ref(), &user, now)
        .await
        .unwrap();
    let cookie = format!(
        "{}={secret}",
        floatilla_server::console::session::SESSION_COOKIE
    );
    let trust = ServerTrust::from_ca_pem(server.ca_certificate_pem()).unwrap();
    let tls = Arc::unwrap_or_clone(trust.client_config(Arc::default()).unwrap());
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    println!("\n{backend}, {routers} routers, {rounds} requests a page (ms)\n");
    println!("| page | matches | p50 | p95 | slowest |");
    println!("|---|---|---|---|---|");
    let mut second_page = None;
    for (label, query) in PAGES {
        let url = format!("{}/routers?{query}", server.url());
        let mut samples = Vec::with_capacity(rounds);
        let mut body = String::new();
        for round in 0..rounds + WARM_UP {
            let started = Instant::now();
            let response = http
                .get(&url)
                .header(reqwest::header::COOKIE, &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{url}");
            body = response.text().await.unwrap();
            if round >= WARM_UP {
                samples.push(started.elapsed());
            }
        }
        let matches = body
            .split("<span class=\"muted\">(")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or("?")
            .to_owned();
        if query.is_empty() {
            second_page = body
                .split("<a href=\"")
                .filter_map(|part| part.split('"').next())
                .find(|href| href.contains("cursor="))
                .map(|href| href.replace("&amp;", "&"));
        }
        let t = summarize(samples);
        println!(
            "| {label} | {matches} | {} | {} | {} |",
            ms(t.p50),
            ms(t.p95),
            ms(t.max)
        );
    }
    if let Some(next) = second_page {
        let url = format!("{}{next}", server.url());
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            let response = http
                .get(&url)
                .header(reqwest::header::COOKIE, &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap();
            samples.push(started.elapsed());
        }
        let t = summarize(samples);
        println!(
            "| all routers, second page | | {} | {} | {} |",
            ms(t.p50),
            ms(t.p95),
            ms(t.max)
        );
    }
    let tenant = tenant.to_string();
    let plain = baseline(db.location(), &tenant, "", rounds).await;
    let online = baseline(
        db.location(),
        &tenant,
        "AND connection_state = 'online'",
        rounds,
    )
    .await;
    println!(
        "| baseline: plain SQL, all routers | | {} | {} | {} |",
        ms(plain.p50),
        ms(plain.p95),
        ms(plain.max)
    );
    println!(
        "| baseline: plain SQL, online | | {} | {} | {} |",
        ms(online.p50),
        ms(online.p95),
        ms(online.max)
    );
    server.shutdown().await;
}

#[tokio::main]
async fn main() {
    let routers = setting("FLOATILLA_BENCH_ROUTERS", ROUTERS);
    let rounds = setting("FLOATILLA_BENCH_ROUNDS", ROUNDS);
    // `FLOATILLA_BENCH_BACKENDS=sqlite` (or `postgres`) runs one of them only.
    let only = std::env::var("FLOATILLA_BENCH_BACKENDS").unwrap_or_default();
    if only.is_empty() || only == "sqlite" {
        run(TestDb::sqlite(), "SQLite", routers, rounds).await;
    }
    if (only.is_empty() || only == "postgres")
        && let Some(db) = TestDb::postgres().await
    {
        run(db, "PostgreSQL", routers, rounds).await;
    }
}
