//! The license pools of two nodes (`Pools`) on one real store, against a reference model written
//! as plainly as possible. Random sequences of routers connecting, dropping and reconnecting,
//! time passing, the nodes restarting after an outage, licenses coming and going, management,
//! pins and deletions run through `Pools::submit` on either node (the other catches up from the
//! log); after every step each router's state as stored, and
//! the pool's counts, must be what the model recomputes from scratch: the managed routers with a
//! live session, pinned first and then by place in line; the first `capacity` licensed, the rest
//! excess. Runs on SQLite and on PostgreSQL (mandatory in CI, as `TestDb` sees to). A failure
//! reports the shortest sequence found that still fails.

use std::cell::RefCell;
use std::fmt::Display;
use std::sync::Arc;

use chrono::{DateTime, Duration};
use floatilla_domain::enrollment::EnrollmentPolicy;
use floatilla_domain::licensing::{Capacity, LicenseState, LicenseTerm, PoolError, Seats};
use floatilla_domain::model::Tenant;
use floatilla_domain::{Clock, DeviceId, LicenseId, ManualClock, SessionId, TenantId, Timestamp};
use floatilla_server::gateway::registry::SessionRegistry;
use floatilla_server::licensing::{
    PoolFailure, PoolSettings, Pools, Request, Standing, sessions_closed,
};
use floatilla_store::testing::TestDb;
use floatilla_store::{ClosedSession, License, Preregistered, Preregistration, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

const ROUTERS: usize = 8;

/// How long a dropped router's session lives on, in service time.
const LINGER_MS: i64 = 5 * 60_000;

/// A node that starts after no node said it was alive for longer than this counts the gap as an
/// outage, which lingers do not count; a shorter gap counts like any other time.
const OUTAGE_AFTER_MS: i64 = 30_000;

/// Random sequences per backend, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 200;

/// Cases that share one database (each with its own tenant) before the next gets a fresh one:
/// a node loads every tenant's pool when it starts, so a database should not fill up.
const CASES_PER_DATABASE: u32 = 10;

/// One thing that happens to the pool.
#[derive(Debug, Clone)]
enum Step {
    /// Nothing happens (but the pool is checked, as after every step). Shrinking turns steps a
    /// failure does not need into this, since sequences keep their length.
    Idle,
    /// The router opens a control channel: a new session, or the continuation of its live one.
    Connect(usize),
    /// The router's latest connection closes: its session lingers.
    Drop(usize),
    /// A connection the router has since replaced closes late: nothing changes.
    DropSuperseded(usize),
    /// A connection the router has since replaced is logged late, while the router's session
    /// is live: nothing changes.
    ConnectSuperseded(usize),
    /// Time passes while the service runs.
    Advance {
        ms: i64,
    },
    /// Licenses are added, counting from `starts_in_ms` from now for `lasts_ms` (or forever).
    AddLicense {
        seats: Seats,
        starts_in_ms: i64,
        lasts_ms: Option<i64>,
    },
    /// One of the installed licenses (its index modulo their number) is removed.
    RemoveLicense(usize),
    Manage {
        routers: Vec<usize>,
        managed: bool,
    },
    /// Refused as a whole if the pins would exceed the capacity.
    Pin {
        routers: Vec<usize>,
        pinned: bool,
    },
    /// The router is deleted.
    Delete(usize),
    /// What follows goes to the other node.
    Switch,
    /// The nodes stop and start again `outage_ms` later; the connections they held count as
    /// dropped when they are back.
    Restart {
        outage_ms: i64,
    },
}

fn routers() -> impl Strategy<Value = Vec<usize>> {
    proptest::sample::subsequence((0..ROUTERS).collect::<Vec<_>>(), 1..=3)
}

fn license() -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            1 => Just(Seats::Count(0)),
            12 => (1u32..=3).prop_map(Seats::Count),
            1 => Just(Seats::Unlimited),
        ],
        prop_oneof![3 => Just(0i64), 1 => 1..2 * LINGER_MS],
        prop_oneof![Just(None), (1..3 * LINGER_MS).prop_map(Some)],
    )
        .prop_map(|(seats, starts_in_ms, lasts_ms)| Step::AddLicense {
            seats,
            starts_in_ms,
            lasts_ms,
        })
}

fn step() -> impl Strategy<Value = Step> {
    let router = || 0..ROUTERS;
    prop_oneof![
        1 => Just(Step::Idle),
        8 => router().prop_map(Step::Connect),
        5 => router().prop_map(Step::Drop),
        1 => router().prop_map(Step::DropSuperseded),
        1 => router().prop_map(Step::ConnectSuperseded),
        5 => prop_oneof![
            Just(1_000),
            Just(LINGER_MS / 2),
            Just(LINGER_MS - 1),
            Just(LINGER_MS),
            Just(3 * LINGER_MS),
            1..2 * LINGER_MS,
        ]
        .prop_map(|ms| Step::Advance { ms }),
        4 => license(),
        1 => (0..4usize).prop_map(Step::RemoveLicense),
        3 => (routers(), any::<bool>())
            .prop_map(|(routers, managed)| Step::Manage { routers, managed }),
        3 => (routers(), any::<bool>()).prop_map(|(routers, pinned)| Step::Pin { routers, pinned }),
        1 => router().prop_map(Step::Delete),
        2 => Just(Step::Switch),
        2 => prop_oneof![
            Just(0),
            Just(10_000),
            Just(OUTAGE_AFTER_MS),
            Just(OUTAGE_AFTER_MS + 1),
            Just(3 * LINGER_MS),
        ]
        .prop_map(|outage_ms| Step::Restart { outage_ms }),
    ]
}

/// A license first, so that most of a sequence runs with some seats, then the rest.
fn steps() -> impl Strategy<Value = Vec<Step>> {
    (license(), proptest::collection::vec(step(), 30..=40)).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        rest
    })
}

#[derive(Debug, Clone)]
struct ModelRouter {
    deleted: bool,
    managed: bool,
    pinned: bool,
    /// The place in line of its live session.
    place: Option<u64>,
    /// Its latest connection.
    connection: Option<SessionId>,
    /// Once its latest connection closed, while its session is live: when the session ends, in
    /// service time.
    linger_until: Option<i64>,
    /// Connections it has replaced with a newer one.
    superseded: Vec<SessionId>,
}

#[derive(Debug, Clone)]
struct ModelLicense {
    id: LicenseId,
    seats: Seats,
    not_before: Timestamp,
    not_after: Option<Timestamp>,
}

/// The rule, recomputed from scratch whenever it is asked.
#[derive(Debug)]
struct Model {
    routers: Vec<ModelRouter>,
    licenses: Vec<ModelLicense>,
    now: Timestamp,
    /// Time that counted against lingers so far: all but the outages.
    service_ms: i64,
    next_place: u64,
}

impl Model {
    fn new(now: Timestamp) -> Self {
        let router = ModelRouter {
            deleted: false,
            managed: true,
            pinned: false,
            place: None,
            connection: None,
            linger_until: None,
            superseded: Vec::new(),
        };
        Self {
            routers: vec![router; ROUTERS],
            licenses: Vec::new(),
            now,
            service_ms: 0,
            next_place: 0,
        }
    }

    /// The sum of the seats of the licenses counting now, unless one of them is unlimited.
    fn capacity(&self) -> Capacity {
        let mut seats = 0u64;
        for license in &self.licenses {
            let counts = self.now >= license.not_before
                && license.not_after.is_none_or(|end| self.now < end);
            if !counts {
                continue;
            }
            match license.seats {
                Seats::Count(n) => seats += u64::from(n),
                Seats::Unlimited => return Capacity::Unlimited,
            }
        }
        Capacity::Limited(seats)
    }

    /// Every router's state; `None` for a deleted one.
    fn states(&self) -> Vec<Option<LicenseState>> {
        let mut line: Vec<(bool, u64, usize)> = self
            .routers
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.deleted && r.managed)
            .filter_map(|(i, r)| r.place.map(|place| (!r.pinned, place, i)))
            .collect();
        line.sort();
        let seats = match self.capacity() {
            Capacity::Limited(seats) => line.len().min(seats as usize),
            Capacity::Unlimited => line.len(),
        };
        let mut states: Vec<Option<LicenseState>> = self
            .routers
            .iter()
            .map(|r| match (r.deleted, r.managed) {
                (true, _) => None,
                (false, false) => Some(LicenseState::Unmanaged),
                (false, true) => Some(LicenseState::Inactive),
            })
            .collect();
        for (rank, (_, _, i)) in line.into_iter().enumerate() {
            states[i] = Some(if rank < seats {
                LicenseState::Licensed
            } else {
                LicenseState::Excess
            });
        }
        states
    }

    /// Managed routers that are pinned, live or not.
    fn pinned(&self) -> u64 {
        self.routers
            .iter()
            .filter(|r| !r.deleted && r.managed && r.pinned)
            .count() as u64
    }

    fn take_place(&mut self) -> u64 {
        self.next_place += 1;
        self.next_place
    }

    /// Sessions whose linger is over end.
    fn due(&mut self) {
        let now = self.service_ms;
        for router in &mut self.routers {
            if router.linger_until.is_some_and(|until| until <= now) {
                router.place = None;
                router.linger_until = None;
            }
        }
    }

    fn connect(&mut self, i: usize, session: SessionId) {
        let place = match self.routers[i].place {
            Some(_) => None,
            None => Some(self.take_place()),
        };
        let router = &mut self.routers[i];
        if let Some(old) = router.connection.replace(session) {
            router.superseded.push(old);
        }
        router.linger_until = None;
        if place.is_some() {
            router.place = place;
        }
    }

    /// The router's latest connection closed.
    fn drop_connection(&mut self, i: usize) {
        let until = self.service_ms + LINGER_MS;
        let router = &mut self.routers[i];
        if router.place.is_some() && router.linger_until.is_none() {
            router.linger_until = Some(until);
        }
    }

    /// A router managed again with a live session goes to the end of the line.
    fn set_managed(&mut self, routers: &[usize], managed: bool) {
        for &i in routers {
            let router = &self.routers[i];
            if managed && !router.managed && router.place.is_some() {
                let place = self.take_place();
                self.routers[i].place = Some(place);
            }
            self.routers[i].managed = managed;
        }
    }

    /// Whether the pins were accepted: refused, changing nothing, if more managed routers would
    /// be pinned than there are seats.
    fn set_pinned(&mut self, routers: &[usize], pinned: bool) -> bool {
        if pinned {
            let newly = routers
                .iter()
                .filter(|&&i| self.routers[i].managed && !self.routers[i].pinned)
                .count() as u64;
            let fits = match self.capacity() {
                Capacity::Limited(seats) => self.pinned() + newly <= seats,
                Capacity::Unlimited => true,
            };
            if newly > 0 && !fits {
                return false;
            }
        }
        for &i in routers {
            self.routers[i].pinned = pinned;
        }
        true
    }
}

fn fail(what: impl Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// A tenant with its routers, two nodes' pools on the store, and the model of them.
struct Harness {
    store: Arc<dyn Store>,
    clock: ManualClock,
    /// Each node's pools; empty only while the nodes are down.
    nodes: Vec<Arc<Pools>>,
    /// The node that requests go to.
    active: usize,
    tenant: TenantId,
    devices: Vec<DeviceId>,
    model: Model,
    /// Steps of a scripted sequence run so far.
    steps_run: usize,
}

impl Harness {
    async fn start(store: Arc<dyn Store>, start: Timestamp) -> Self {
        let tenant = Tenant {
            id: TenantId::new(),
            name: format!("model-{}", uuid::Uuid::new_v4().simple()),
            enrollment_policy: EnrollmentPolicy::Open,
            created_at: start,
            suspended_at: None,
            contact_email: None,
        };
        store.create_tenant(&tenant).await.expect("create a tenant");
        let entries: Vec<Preregistration> = (0..ROUTERS)
            .map(|n| Preregistration {
                serial: format!("MODEL-{n}"),
                name: format!("router {n}"),
                group_id: None,
            })
            .collect();
        let devices = store
            .preregister(tenant.id, &entries, start)
            .await
            .expect("pre-register the routers")
            .into_iter()
            .map(|outcome| match outcome {
                Preregistered::Created(id) => id,
                Preregistered::Updated(id) => panic!("router {id} existed already"),
            })
            .collect();
        let clock = ManualClock::new(start);
        let nodes = Self::open_nodes(&store, &clock).await;
        Self {
            store,
            clock,
            nodes,
            active: 0,
            tenant: tenant.id,
            devices,
            model: Model::new(start),
            steps_run: 0,
        }
    }

    async fn open_nodes(store: &Arc<dyn Store>, clock: &ManualClock) -> Vec<Arc<Pools>> {
        let mut nodes = Vec::new();
        for node in ["node-a", "node-b"] {
            let pools = Pools::open(
                store.clone(),
                node.into(),
                Arc::new(clock.clone()),
                Arc::new(SessionRegistry::default()),
                PoolSettings::with_linger(Duration::milliseconds(LINGER_MS)),
            )
            .await
            .expect("open the license pools");
            nodes.push(pools);
        }
        nodes
    }

    fn pools(&self) -> &Pools {
        &self.nodes[self.active]
    }

    fn advance(&mut self, ms: i64) {
        self.clock.advance(Duration::milliseconds(ms));
        self.model.now += Duration::milliseconds(ms);
    }

    async fn submit(&self, request: Request) -> Result<Option<Standing>, PoolFailure> {
        self.pools().submit(self.tenant, request).await
    }

    /// The routers named that still exist.
    fn existing(&self, routers: &[usize]) -> Vec<usize> {
        routers
            .iter()
            .copied()
            .filter(|&i| !self.model.routers[i].deleted)
            .collect()
    }

    /// Runs one step on the pools and on the model. Every request first applies what is due,
    /// as every batch does.
    async fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Idle => {}
            &Step::Connect(i) => {
                if self.model.routers[i].deleted {
                    return Ok(());
                }
                let session = SessionId::new();
                self.model.due();
                self.model.connect(i, session);
                let request = Request::Connected {
                    device: self.devices[i],
                    session,
                };
                let standing = self.submit(request).await.map_err(fail)?;
                prop_assert_eq!(
                    standing.map(|s| s.state),
                    self.model.states()[i],
                    "the standing answered to router {}'s connection",
                    i
                );
            }
            &Step::Drop(i) => {
                let router = &self.model.routers[i];
                let Some(session) = router.connection.filter(|_| !router.deleted) else {
                    return Ok(());
                };
                self.model.due();
                self.model.drop_connection(i);
                let request = Request::Dropped {
                    device: self.devices[i],
                    session,
                    at: self.clock.now(),
                    at_least: chrono::Duration::zero(),
                };
                self.submit(request).await.map_err(fail)?;
            }
            &Step::DropSuperseded(i) => {
                let router = &self.model.routers[i];
                let Some(&session) = router.superseded.last().filter(|_| !router.deleted) else {
                    return Ok(());
                };
                self.model.due();
                let request = Request::Dropped {
                    device: self.devices[i],
                    session,
                    at: self.clock.now(),
                    at_least: chrono::Duration::zero(),
                };
                self.submit(request).await.map_err(fail)?;
            }
            &Step::ConnectSuperseded(i) => {
                let router = &self.model.routers[i];
                let Some(&session) = router.superseded.last().filter(|_| !router.deleted) else {
                    return Ok(());
                };
                self.model.due();
                if self.model.routers[i].place.is_none() {
                    return Ok(());
                }
                let request = Request::Connected {
                    device: self.devices[i],
                    session,
                };
                let standing = self.submit(request).await.map_err(fail)?;
                prop_assert_eq!(
                    standing.map(|s| s.state),
                    self.model.states()[i],
                    "the standing answered to router {}'s superseded connection",
                    i
                );
            }
            &Step::Advance { ms } => {
                self.advance(ms);
                self.model.service_ms += ms;
                // The running node's timer says it is alive.
                self.store
                    .service_alive(self.clock.now())
                    .await
                    .map_err(fail)?;
            }
            &Step::AddLicense {
                seats,
                starts_in_ms,
                lasts_ms,
            } => {
                let not_before = self.clock.now() + Duration::milliseconds(starts_in_ms);
                let not_after = lasts_ms.map(|ms| not_before + Duration::milliseconds(ms));
                let license = License {
                    id: LicenseId::new(),
                    tenant_id: self.tenant,
                    name: format!("{seats} seats"),
                    term: LicenseTerm {
                        seats,
                        not_before,
                        not_after,
                        grace_until: None,
                    },
                    signed: None,
                    created_at: self.clock.now(),
                };
                self.store.add_license(&license).await.map_err(fail)?;
                self.model.due();
                self.model.licenses.push(ModelLicense {
                    id: license.id,
                    seats,
                    not_before,
                    not_after,
                });
                self.pools()
                    .licenses_changed(self.tenant)
                    .await
                    .map_err(fail)?;
            }
            &Step::RemoveLicense(k) => {
                if self.model.licenses.is_empty() {
                    return Ok(());
                }
                let license = self.model.licenses.remove(k % self.model.licenses.len());
                self.store
                    .delete_license(self.tenant, license.id)
                    .await
                    .map_err(fail)?;
                self.model.due();
                self.pools()
                    .licenses_changed(self.tenant)
                    .await
                    .map_err(fail)?;
            }
            Step::Manage { routers, managed } => {
                let routers = self.existing(routers);
                if routers.is_empty() {
                    return Ok(());
                }
                self.model.due();
                self.model.set_managed(&routers, *managed);
                let request = Request::Managed {
                    devices: routers.iter().map(|&i| self.devices[i]).collect(),
                    managed: *managed,
                };
                self.submit(request).await.map_err(fail)?;
            }
            Step::Pin { routers, pinned } => {
                let routers = self.existing(routers);
                if routers.is_empty() {
                    return Ok(());
                }
                self.model.due();
                let accepted = self.model.set_pinned(&routers, *pinned);
                let request = Request::Pinned {
                    devices: routers.iter().map(|&i| self.devices[i]).collect(),
                    pinned: *pinned,
                };
                match (accepted, self.submit(request).await) {
                    (true, Ok(_)) => {}
                    (false, Err(PoolFailure::Refused(PoolError::PinsExceedCapacity { .. }))) => {}
                    (accepted, outcome) => {
                        return Err(fail(format!(
                            "pinning routers {routers:?}: the model {} them, the pools answered \
                             {outcome:?}",
                            if accepted { "accepts" } else { "refuses" }
                        )));
                    }
                }
            }
            &Step::Delete(i) => {
                if self.model.routers[i].deleted {
                    return Ok(());
                }
                let device = self.devices[i];
                self.store
                    .delete_device(self.tenant, device)
                    .await
                    .map_err(fail)?;
                self.model.due();
                self.model.routers[i].deleted = true;
                self.submit(Request::Removed { device })
                    .await
                    .map_err(fail)?;
            }
            Step::Switch => self.active = 1 - self.active,
            &Step::Restart { outage_ms } => {
                self.nodes.clear();
                self.advance(outage_ms);
                if outage_ms <= OUTAGE_AFTER_MS {
                    self.model.service_ms += outage_ms;
                }
                self.nodes = Self::open_nodes(&self.store, &self.clock).await;
                // As a server does when it starts: the sessions it left open are closed, and
                // their routers' lingers start now.
                self.model.due();
                let mut closed = Vec::new();
                for i in 0..ROUTERS {
                    let router = &self.model.routers[i];
                    if router.deleted || router.place.is_none() || router.linger_until.is_some() {
                        continue;
                    }
                    if let Some(session) = router.connection {
                        closed.push(ClosedSession {
                            tenant: self.tenant,
                            device: self.devices[i],
                            session,
                        });
                        self.model.drop_connection(i);
                    }
                }
                sessions_closed(self.pools(), &closed, self.clock.now()).await;
            }
        }
        Ok(())
    }

    /// Brings the pool up to date (as reading its summary does) and compares it with the model.
    async fn check(&mut self, context: &str) -> Result<(), TestCaseError> {
        let summary = self.pools().summary(self.tenant).await.map_err(fail)?;
        self.model.due();
        let states = self.model.states();
        let count = |wanted: LicenseState| states.iter().filter(|s| **s == Some(wanted)).count();
        prop_assert_eq!(
            summary.capacity,
            self.model.capacity(),
            "capacity {}",
            context
        );
        prop_assert_eq!(
            (
                summary.counts.licensed,
                summary.counts.excess,
                summary.counts.pinned
            ),
            (
                count(LicenseState::Licensed) as u64,
                count(LicenseState::Excess) as u64,
                self.model.pinned()
            ),
            "(licensed, excess, pinned) {}",
            context
        );
        let stored = futures_util::future::join_all(
            self.devices
                .iter()
                .map(|device| self.store.device(self.tenant, *device)),
        )
        .await;
        for (i, (stored, expected)) in stored.into_iter().zip(&states).enumerate() {
            let stored = stored
                .map_err(fail)?
                .map(|d| (d.license.state, d.license.managed, d.license.pinned));
            let router = &self.model.routers[i];
            let expected = expected.map(|state| (state, router.managed, router.pinned));
            prop_assert_eq!(
                stored,
                expected,
                "router {}'s (state, managed, pinned) {}",
                i,
                context
            );
        }
        Ok(())
    }

    /// Runs a step, then checks.
    async fn step(&mut self, n: usize, step: &Step) -> Result<(), TestCaseError> {
        self.apply(step)
            .await
            .map_err(|e| fail(format!("step {n} {step:?}: {e}")))?;
        self.check(&format!("after step {n} {step:?}")).await
    }

    /// Runs the next step of a scripted sequence, then checks.
    async fn run(&mut self, step: Step) {
        self.steps_run += 1;
        if let Err(error) = self.step(self.steps_run, &step).await {
            panic!("{error}");
        }
    }

    /// A router's state as stored.
    async fn stored_state(&self, i: usize) -> Option<LicenseState> {
        self.store
            .device(self.tenant, self.devices[i])
            .await
            .expect("read a router")
            .map(|d| d.license.state)
    }
}

async fn run_case(
    store: Arc<dyn Store>,
    start: Timestamp,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut harness = Harness::start(store, start).await;
    harness.check("at the start").await?;
    for (n, step) in steps.iter().enumerate() {
        harness.step(n, step).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database, or `None` (after a notice) when PostgreSQL is not reachable outside CI.
async fn new_db(backend: Backend) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(TestDb::sqlite()),
        Backend::Postgres => TestDb::postgres().await,
    }
}

struct Database {
    store: Arc<dyn Store>,
    cases: u32,
    _db: TestDb,
}

impl Database {
    async fn open(backend: Backend) -> Option<Self> {
        let db = new_db(backend).await?;
        let store = db.open().await.expect("open the test database");
        Some(Self {
            store,
            cases: 0,
            _db: db,
        })
    }
}

/// The start of the `n`th case on a database: later than everything before it, since the
/// service clock (when a node was last alive) is shared by the database's tenants.
fn case_start(n: u32) -> Timestamp {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap() + Duration::days(i64::from(n))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES)
}

fn pools_agree_with_the_model(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start a runtime");
    let Some(database) = runtime.block_on(Database::open(backend)) else {
        return;
    };
    let database = RefCell::new(database);
    let run = |steps: &[Step]| {
        let (store, start) = {
            let mut database = database.borrow_mut();
            if database.cases == CASES_PER_DATABASE {
                let fresh = runtime
                    .block_on(Database::open(backend))
                    .expect("the database server went away");
                let _runtime = runtime.enter();
                drop(std::mem::replace(&mut *database, fresh));
            }
            database.cases += 1;
            (database.store.clone(), case_start(database.cases))
        };
        runtime.block_on(run_case(store, start, steps))
    };
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&steps(), |steps| run(&steps)) {
        Ok(()) => {}
        Err(TestError::Fail(reason, steps)) => {
            let (steps, reason) = minimize(steps, reason, run);
            let steps: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(n, step)| format!("    {n}: {step:?}"))
                .collect();
            panic!(
                "{backend:?}: the pools disagree with the model: {reason}\nminimal sequence:\n{}",
                steps.join("\n")
            );
        }
        Err(error) => panic!("{backend:?}: {error}"),
    }
}

/// Removes every step the failure does not need, one at a time, on top of proptest's shrinking
/// (which can leave steps that do nothing here, such as dropping a router that never
/// connected).
fn minimize(
    steps: Vec<Step>,
    reason: impl Display,
    run: impl Fn(&[Step]) -> Result<(), TestCaseError>,
) -> (Vec<Step>, String) {
    let fails = |steps: &[Step]| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || run(steps),
    )) {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("a step panicked".to_owned()),
    };
    let mut steps: Vec<Step> = steps
        .into_iter()
        .filter(|step| !matches!(step, Step::Idle))
        .collect();
    let mut reason = fails(&steps).unwrap_or_else(|| reason.to_string());
    let mut n = 0;
    while n < steps.len() {
        let mut fewer = steps.clone();
        fewer.remove(n);
        match fails(&fewer) {
            Some(still) => {
                steps = fewer;
                reason = still;
            }
            None => n += 1,
        }
    }
    (steps, reason)
}

#[test]
fn sqlite_pools_agree_with_the_model() {
    pools_agree_with_the_model(Backend::Sqlite);
}

#[test]
fn postgres_pools_agree_with_the_model() {
    pools_agree_with_the_model(Backend::Postgres);
}

/// A router whose connection dropped just before the node went down keeps its seat through an
/// outage longer than the linger, and loses it once the linger has run in service time; a
/// short gap counts like any other time.
async fn an_outage_does_not_count_against_the_linger(store: Arc<dyn Store>) {
    let mut harness = Harness::start(store, case_start(1)).await;
    let licensed = Some(LicenseState::Licensed);
    let excess = Some(LicenseState::Excess);
    let inactive = Some(LicenseState::Inactive);
    let one_seat = Step::AddLicense {
        seats: Seats::Count(1),
        starts_in_ms: 0,
        lasts_ms: None,
    };
    for step in [one_seat, Step::Connect(0), Step::Connect(1), Step::Drop(0)] {
        harness.run(step).await;
    }
    harness
        .run(Step::Restart {
            outage_ms: 3 * LINGER_MS,
        })
        .await;
    assert_eq!(
        (harness.stored_state(0).await, harness.stored_state(1).await),
        (licensed, excess)
    );
    harness.run(Step::Connect(1)).await;
    harness.run(Step::Advance { ms: LINGER_MS - 1 }).await;
    assert_eq!(harness.stored_state(0).await, licensed);
    harness.run(Step::Advance { ms: 1 }).await;
    assert_eq!(
        (harness.stored_state(0).await, harness.stored_state(1).await),
        (inactive, licensed)
    );

    harness.run(Step::Drop(1)).await;
    harness.run(Step::Restart { outage_ms: 20_000 }).await;
    harness
        .run(Step::Advance {
            ms: LINGER_MS - 20_000 - 1,
        })
        .await;
    assert_eq!(harness.stored_state(1).await, licensed);
    harness.run(Step::Advance { ms: 1 }).await;
    assert_eq!(harness.stored_state(1).await, inactive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_outage_does_not_count_against_the_linger() {
    let db = TestDb::sqlite();
    an_outage_does_not_count_against_the_linger(db.open().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_outage_does_not_count_against_the_linger() {
    if let Some(db) = TestDb::postgres().await {
        an_outage_does_not_count_against_the_linger(db.open().await.unwrap()).await;
    }
}
