//! The license pool's grant rate through the store: N routers open their sessions at once
//! (`Pools::submit(Request::Connected)` from N spawned tasks, which the pool group-commits),
//! on SQLite and (when reachable) PostgreSQL. The pool has N/2 seats, so half the sessions are
//! granted a seat and half are denied one: both paths are in the figure.
//!
//! Side by side, in the same run:
//! - `baseline_json_update`: the plainest write of the same result, one transaction with one
//!   bulk UPDATE (a JSON array, like the pool's own) setting the same N routers' license
//!   columns; the ratio to it is what the pool's bookkeeping costs (the tenant's lock, the
//!   operation log, the events, the usage, the decisions and the tasks);
//! - `baseline_row_updates`: the same N rows as N single-row UPDATEs in one transaction;
//! - `grants_sequential`: M routers submitted one at a time, each waiting for its answer, so
//!   each is a transaction of its own (what group commit saves).
//!
//! Every iteration starts from routers without a session: between iterations, outside the
//! timed part, every session drops, the (manual) clock moves past the linger and a sweep ends
//! the lingers.
//!
//! Run: `cargo bench -p floatilla-server --bench pool_store`
//! A small smoke run: `FLOATILLA_BENCH_ROUTERS=500 FLOATILLA_BENCH_SEQUENTIAL_ROUTERS=100
//! cargo bench -p floatilla-server --bench pool_store -- --quick`

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use floatilla_domain::enrollment::EnrollmentPolicy;
use floatilla_domain::licensing::{LicenseState, LicenseTerm, Seats};
use floatilla_domain::model::Tenant;
use floatilla_domain::{Clock, DeviceId, LicenseId, ManualClock, SessionId, TenantId, Timestamp};
use floatilla_server::gateway::registry::SessionRegistry;
use floatilla_server::licensing::{PoolSettings, Pools, Request};
use floatilla_store::testing::TestDb;
use floatilla_store::{License, Location, Preregistered, Preregistration, Store};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Routers connecting at once (`FLOATILLA_BENCH_ROUTERS`).
const ROUTERS: usize = 10_000;
/// Routers submitted one at a time (`FLOATILLA_BENCH_SEQUENTIAL_ROUTERS`): a transaction each.
const SEQUENTIAL_ROUTERS: usize = 1_000;
const LINGER: chrono::Duration = chrono::Duration::seconds(1);

fn from_env(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(value) => value
            .parse()
            .ok()
            .filter(|n| *n >= 2)
            .unwrap_or_else(|| panic!("{var}={value} is not a number of routers (2 or more)")),
        Err(_) => default,
    }
}

fn start() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// A tenant with `routers` pre-registered routers and a license of half as many seats.
struct Fleet {
    tenant: TenantId,
    devices: Vec<DeviceId>,
    seats: usize,
}

async fn fleet(store: &dyn Store, name: &str, routers: usize) -> Fleet {
    let now = start();
    let tenant = Tenant {
        id: TenantId::new(),
        name: name.into(),
        enrollment_policy: EnrollmentPolicy::Open,
        created_at: now,
        suspended_at: None,
        contact_email: None,
    };
    store.create_tenant(&tenant).await.unwrap();
    let entries: Vec<Preregistration> = (0..routers)
        .map(|n| Preregistration {
            serial: format!("{name}-{n:06}"),
            name: format!("router {n}"),
            group_id: None,
        })
        .collect();
    let devices = store
        .preregister(tenant.id, &entries, now)
        .await
        .unwrap()
        .into_iter()
        .map(|outcome| match outcome {
            Preregistered::Created(id) => id,
            Preregistered::Updated(id) => panic!("router {id} existed already"),
        })
        .collect();
    let seats = routers / 2;
    store
        .add_license(&License {
            id: LicenseId::new(),
            tenant_id: tenant.id,
            name: format!("{seats} seats"),
            term: LicenseTerm {
                seats: Seats::Count(u32::try_from(seats).unwrap()),
                not_before: now - chrono::Duration::days(1),
                not_after: None,
                grace_until: None,
            },
            signed: None,
            created_at: now,
        })
        .await
        .unwrap();
    Fleet {
        tenant: tenant.id,
        devices,
        seats,
    }
}

/// Every router of the fleet opens a new session at once; answers the time until all were
/// answered, and the sessions.
async fn connect_concurrently(pools: &Arc<Pools>, fleet: &Fleet) -> (Duration, Vec<SessionId>) {
    let sessions: Vec<SessionId> = fleet.devices.iter().map(|_| SessionId::new()).collect();
    let started = Instant::now();
    let answers: Vec<_> = fleet
        .devices
        .iter()
        .zip(&sessions)
        .map(|(&device, &session)| {
            let pools = pools.clone();
            let tenant = fleet.tenant;
            tokio::spawn(async move {
                pools
                    .submit(tenant, Request::Connected { device, session })
                    .await
            })
        })
        .collect();
    let mut licensed = 0;
    for answer in answers {
        let standing = answer.await.unwrap().unwrap().unwrap();
        licensed += usize::from(standing.state == LicenseState::Licensed);
    }
    let elapsed = started.elapsed();
    assert_eq!(licensed, fleet.seats, "routers granted a seat");
    (elapsed, sessions)
}

/// Every router of the fleet opens a new session, one after the other.
async fn connect_sequentially(pools: &Pools, fleet: &Fleet) -> (Duration, Vec<SessionId>) {
    let sessions: Vec<SessionId> = fleet.devices.iter().map(|_| SessionId::new()).collect();
    let started = Instant::now();
    let mut licensed = 0;
    for (&device, &session) in fleet.devices.iter().zip(&sessions) {
        let standing = pools
            .submit(fleet.tenant, Request::Connected { device, session })
            .await
            .unwrap()
            .unwrap();
        licensed += usize::from(standing.state == LicenseState::Licensed);
    }
    let elapsed = started.elapsed();
    assert_eq!(licensed, fleet.seats, "routers granted a seat");
    (elapsed, sessions)
}

/// Ends every session (outside the timed part): they drop, the linger passes, a sweep ends it.
async fn end_sessions(
    pools: &Arc<Pools>,
    clock: &ManualClock,
    fleet: &Fleet,
    sessions: &[SessionId],
) {
    let at = clock.now();
    let dropped: Vec<_> = fleet
        .devices
        .iter()
        .zip(sessions)
        .map(|(&device, &session)| {
            let pools = pools.clone();
            let tenant = fleet.tenant;
            tokio::spawn(async move {
                pools
                    .submit(
                        tenant,
                        Request::Dropped {
                            device,
                            session,
                            at,
                            at_least: chrono::Duration::zero(),
                        },
                    )
                    .await
            })
        })
        .collect();
    for answer in dropped {
        answer.await.unwrap().unwrap();
    }
    clock.advance(LINGER + chrono::Duration::seconds(1));
    let summary = pools.summary(fleet.tenant).await.unwrap();
    assert_eq!(
        (summary.counts.licensed, summary.counts.excess),
        (0, 0),
        "every session ended"
    );
}

/// A connection of its own to the same database, for the baselines.
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The license columns the pool writes, for the routers in a JSON array.
const SQLITE_JSON_UPDATE: &str = "UPDATE devices SET \
    license_place = r.value ->> 'place', license_session = r.value ->> 'session', \
    license_state = r.value ->> 'state', license_reason = r.value ->> 'reason' \
    FROM json_each($1) AS r WHERE devices.id = r.value ->> 'id' AND +devices.tenant_id = $2";
const POSTGRES_JSON_UPDATE: &str = "UPDATE devices d SET \
    license_place = r.place, license_session = r.session, license_state = r.state, \
    license_reason = r.reason \
    FROM jsonb_to_recordset($1::jsonb) AS r(id TEXT, place BIGINT, session TEXT, state TEXT, \
    reason TEXT) WHERE d.id = r.id AND d.tenant_id = $2";
const ROW_UPDATE: &str = "UPDATE devices SET license_place = $3, license_session = $4, \
    license_state = $5, license_reason = $6 WHERE tenant_id = $1 AND id = $2";

/// What one router's row gets: its place, session, state and reason.
struct RowWrite {
    device: String,
    place: i64,
    session: String,
    state: &'static str,
    reason: &'static str,
}

/// The fleet's rows as the pool leaves them after everyone connected: the first half in line
/// licensed, the rest excess.
fn rows(fleet: &Fleet, first_place: &mut i64) -> Vec<RowWrite> {
    fleet
        .devices
        .iter()
        .enumerate()
        .map(|(n, device)| {
            let licensed = n < fleet.seats;
            *first_place += 1;
            RowWrite {
                device: device.to_string(),
                place: *first_place,
                session: SessionId::new().to_string(),
                state: if licensed { "licensed" } else { "excess" },
                reason: if licensed {
                    "granted"
                } else {
                    "denied_pool_full"
                },
            }
        })
        .collect()
}

fn rows_json(rows: &[RowWrite]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "id": row.device,
                "place": row.place,
                "session": row.session,
                "state": row.state,
                "reason": row.reason,
            })
        })
        .collect();
    serde_json::to_string(&rows).unwrap()
}

impl Raw {
    async fn open(location: &Location) -> Raw {
        match location {
            // As the store opens it: WAL (set on the file already), NORMAL synchronous.
            Location::Sqlite(path) => Raw::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        SqliteConnectOptions::new()
                            .filename(path)
                            .synchronous(SqliteSynchronous::Normal)
                            .foreign_keys(true)
                            .busy_timeout(Duration::from_secs(5)),
                    )
                    .await
                    .unwrap(),
            ),
            Location::Postgres(url) => Raw::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(sqlx::postgres::PgConnectOptions::from_str(url).unwrap())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// One transaction, one statement for all the rows; answers the time it took.
    async fn json_update(&self, tenant: TenantId, rows: &[RowWrite]) -> Duration {
        let started = Instant::now();
        let json = rows_json(rows);
        let updated = match self {
            Raw::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let done = sqlx::query(SQLITE_JSON_UPDATE)
                    .bind(json)
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                done.rows_affected()
            }
            Raw::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let done = sqlx::query(POSTGRES_JSON_UPDATE)
                    .bind(json)
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                done.rows_affected()
            }
        };
        let elapsed = started.elapsed();
        assert_eq!(updated, rows.len() as u64, "rows updated");
        elapsed
    }

    /// One transaction, one statement per row; answers the time it took.
    async fn row_updates(&self, tenant: TenantId, rows: &[RowWrite]) -> Duration {
        let tenant = tenant.to_string();
        let started = Instant::now();
        let mut updated = 0;
        match self {
            Raw::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                for row in rows {
                    updated += sqlx::query(ROW_UPDATE)
                        .bind(&tenant)
                        .bind(&row.device)
                        .bind(row.place)
                        .bind(&row.session)
                        .bind(row.state)
                        .bind(row.reason)
                        .execute(&mut *tx)
                        .await
                        .unwrap()
                        .rows_affected();
                }
                tx.commit().await.unwrap();
            }
            Raw::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                for row in rows {
                    updated += sqlx::query(ROW_UPDATE)
                        .bind(&tenant)
                        .bind(&row.device)
                        .bind(row.place)
                        .bind(&row.session)
                        .bind(row.state)
                        .bind(row.reason)
                        .execute(&mut *tx)
                        .await
                        .unwrap()
                        .rows_affected();
                }
                tx.commit().await.unwrap();
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(updated, rows.len() as u64, "rows updated");
        elapsed
    }
}

fn bench_backend(c: &mut Criterion, runtime: &tokio::runtime::Runtime, backend: &str, db: TestDb) {
    let routers = from_env("FLOATILLA_BENCH_ROUTERS", ROUTERS);
    let sequential_routers = from_env("FLOATILLA_BENCH_SEQUENTIAL_ROUTERS", SEQUENTIAL_ROUTERS);
    let store: Arc<dyn Store> = runtime.block_on(db.open()).unwrap();
    let (concurrent, sequential, baseline) = runtime.block_on(async {
        (
            fleet(store.as_ref(), "concurrent", routers).await,
            fleet(store.as_ref(), "sequential", sequential_routers).await,
            fleet(store.as_ref(), "baseline", routers).await,
        )
    });
    let clock = ManualClock::new(start());
    let pools = runtime.block_on(async {
        let pools = Pools::open(
            store.clone(),
            "bench-node".into(),
            Arc::new(clock.clone()),
            Arc::new(SessionRegistry::default()),
            PoolSettings::with_linger(LINGER),
        )
        .await
        .unwrap();
        // The capacity applies now, not in the first timed batch.
        for fleet in [&concurrent, &sequential] {
            pools.licenses_changed(fleet.tenant).await.unwrap();
        }
        pools
    });
    let raw = runtime.block_on(Raw::open(db.location()));
    let mut place = 0;

    let mut group = c.benchmark_group(format!("pool_store/{backend}"));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);

    group.throughput(Throughput::Elements(routers as u64));
    group.bench_function(BenchmarkId::new("grants_concurrent", routers), |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let (elapsed, sessions) = connect_concurrently(&pools, &concurrent).await;
                    timed += elapsed;
                    end_sessions(&pools, &clock, &concurrent, &sessions).await;
                }
                timed
            })
        })
    });
    group.bench_function(BenchmarkId::new("baseline_json_update", routers), |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let rows = rows(&baseline, &mut place);
                    timed += raw.json_update(baseline.tenant, &rows).await;
                }
                timed
            })
        })
    });
    group.bench_function(BenchmarkId::new("baseline_row_updates", routers), |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let rows = rows(&baseline, &mut place);
                    timed += raw.row_updates(baseline.tenant, &rows).await;
                }
                timed
            })
        })
    });

    group.throughput(Throughput::Elements(sequential_routers as u64));
    group.bench_function(
        BenchmarkId::new("grants_sequential", sequential_routers),
        |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iterations {
                        let (elapsed, sessions) = connect_sequentially(&pools, &sequential).await;
                        timed += elapsed;
                        end_sessions(&pools, &clock, &sequential, &sessions).await;
                    }
                    timed
                })
            })
        },
    );
    group.finish();

    runtime.block_on(async {
        match raw {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
    });
    drop(pools);
    drop(store);
    drop(db);
}

fn pool_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_backend(c, &runtime, "sqlite", TestDb::sqlite());
    if let Some(db) = runtime.block_on(TestDb::postgres()) {
        bench_backend(c, &runtime, "postgres", db);
    }
}

criterion_group!(benches, pool_store);
criterion_main!(benches);
