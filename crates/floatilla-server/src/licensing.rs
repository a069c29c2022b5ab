//! The floating license pools of this node: its copy of each tenant's pool, the batching of
//! changes into store transactions under the tenant's lock, and the timers for lingers and
//! capacity boundaries.
//!
//! Every change goes through [`Pools::submit`]. Requests that arrive while a batch is being
//! written wait and go together in the next one (group commit), so a reconnect storm costs one
//! transaction per batch, not per router. Inside the transaction the node first applies what
//! other nodes logged since its copy's position, then decides with the pure rule
//! ([`floatilla_domain::licensing::Ledger`]) and writes the operations, the routers' new
//! columns, the events and the usage. Routers connected here hear of their changes after the
//! commit, whichever node made them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::licensing::{
    Capacity, CapacityForecast, Changes, ClockChange, ClockDoubt, ClockGuard, Granularity, Ledger,
    LicenseReason, LicenseState, LicenseTerm, Lineage, NoticeWindows, PoolCounts, PoolError,
    PoolEvent, PoolOp, ServiceClock, Transition, UsageSample, accrue, capacity_at, effective_terms,
    next_boundary, next_capacity_drop,
};
use floatilla_domain::{Clock, DeviceId, SessionId, TenantId, Timestamp};
use floatilla_store::{
    ClosedSession, License, PoolHistory, PoolPosition, PoolRead, PoolWrite, RouterWrite, Store,
    StoreError,
};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::gateway::registry::{SessionCommand, SessionRegistry};
use crate::mail::Mailer;
use crate::metrics;

/// How often a node says it is alive (for outage accounting) and rechecks its timers.
const ALIVE_INTERVAL: chrono::Duration = chrono::Duration::seconds(10);

/// How long the timers wait before retrying changes that could not be stored.
const RETRY_AFTER_FAILURE: chrono::Duration = chrono::Duration::seconds(1);

/// Without any node saying it was alive for this long, the service counts as having been down.
const OUTAGE_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// A change one caller asks of a tenant's pool.
#[derive(Debug, Clone)]
pub enum Request {
    /// A router's control channel opened.
    Connected {
        device: DeviceId,
        session: SessionId,
    },
    /// A router's control channel closed at `at`: its session lingers from then, for the
    /// pool's linger or `at_least`, whichever is longer (a router restarting for a job
    /// declared how long it will be away).
    Dropped {
        device: DeviceId,
        session: SessionId,
        at: Timestamp,
        at_least: chrono::Duration,
    },
    /// Mark routers managed or unmanaged.
    Managed {
        devices: Vec<DeviceId>,
        managed: bool,
    },
    /// Pin or unpin routers; refused as a whole if the pins would exceed the capacity.
    Pinned {
        devices: Vec<DeviceId>,
        pinned: bool,
    },
    /// A router was deleted.
    Removed { device: DeviceId },
    /// Apply what is due: ended lingers and the capacity at this instant.
    Sweep,
}

impl Request {
    /// The one router the request is about, if it is about one.
    fn device(&self) -> Option<DeviceId> {
        match self {
            Request::Connected { device, .. }
            | Request::Dropped { device, .. }
            | Request::Removed { device } => Some(*device),
            Request::Managed { .. } | Request::Pinned { .. } | Request::Sweep => None,
        }
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolFailure {
    #[error(transparent)]
    Refused(#[from] PoolError),
    #[error("the license pool could not be stored: {0}")]
    Store(String),
}

impl From<StoreError> for PoolFailure {
    fn from(error: StoreError) -> Self {
        PoolFailure::Store(error.to_string())
    }
}

/// A pool's figures for the API.
#[derive(Debug, Clone, Copy)]
pub struct PoolSummary {
    pub capacity: Capacity,
    pub counts: PoolCounts,
}

/// Where a router stands after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: LicenseState,
    /// The reason of the transition the change caused, if it caused one.
    pub reason: Option<LicenseReason>,
}

type Reply = oneshot::Sender<Result<Option<Standing>, PoolFailure>>;

/// This node's copy of one tenant's pool.
#[derive(Default)]
struct Copy {
    ledger: Option<Ledger>,
    /// The tenant's license terms and their revision.
    licenses: Option<(u64, Vec<LicenseTerm>)>,
}

impl Copy {
    fn position(&self) -> PoolPosition {
        PoolPosition {
            version: self.ledger.as_ref().map(Ledger::version),
            licenses_revision: self.licenses.as_ref().map(|(revision, _)| *revision),
        }
    }

    fn terms(&self) -> &[LicenseTerm] {
        self.licenses.as_ref().map_or(&[], |(_, terms)| terms)
    }
}

struct TenantPool {
    tenant: TenantId,
    /// A refresh is queued and has not started reading yet.
    refresh_queued: AtomicBool,
    pending: Mutex<Vec<(Request, Reply)>>,
    /// Held by the node's one batch in progress for this tenant.
    copy: tokio::sync::Mutex<Copy>,
}

/// What a batch or a catch-up changed that routers connected here must hear.
#[derive(Default)]
struct Heard {
    transitions: Vec<Transition>,
    /// The copy was rebuilt from a snapshot: every router connected here learns its state.
    everyone: bool,
    /// The newest issue time of the signed licenses read: a wall clock far behind it is not
    /// trusted for license decisions.
    newest_signed: Option<Timestamp>,
}

/// How the pools behave.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// How long a session outlives its dropped connection.
    pub linger: chrono::Duration,
    /// When to warn ahead of a capacity drop.
    pub notice_windows: NoticeWindows,
    /// Mails each warning to the tenant's contact address, when e-mail is set up.
    pub mailer: Option<Arc<Mailer>>,
}

impl PoolSettings {
    /// The default warnings (30, 14, 7 and 1 days ahead) with this linger.
    pub fn with_linger(linger: chrono::Duration) -> Self {
        Self {
            linger,
            notice_windows: NoticeWindows::default(),
            mailer: None,
        }
    }
}

/// The license pools as this node sees them.
pub struct Pools {
    store: Arc<dyn Store>,
    /// This node's id, in what it tells the others.
    node_id: String,
    clock: Arc<dyn Clock>,
    sessions: Arc<SessionRegistry>,
    linger: chrono::Duration,
    notice_windows: NoticeWindows,
    mailer: Option<Arc<Mailer>>,
    service_clock: Mutex<ServiceClock>,
    tenants: Mutex<HashMap<TenantId, Arc<TenantPool>>>,
    /// Tenants deleted while this node ran.
    deleted: Mutex<HashSet<TenantId>>,
    /// Wakes the timer task: deadlines may have moved.
    deadlines_moved: Notify,
    /// Whether the wall clock can be trusted for license decisions.
    clock_guard: Mutex<ClockGuard>,
    /// Why the wall clock is in doubt, while it is.
    clock_doubt: Mutex<Option<ClockDoubt>>,
}

impl Pools {
    /// Starts the service clock (recording an outage if no node ran for a while) and loads
    /// every tenant's pool.
    pub async fn open(
        store: Arc<dyn Store>,
        node_id: String,
        clock: Arc<dyn Clock>,
        sessions: Arc<SessionRegistry>,
        settings: PoolSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let service_clock = store.start_service_clock(clock.now(), OUTAGE_AFTER).await?;
        let tenants = store.tenants().await?;
        let pools = Arc::new(Self {
            store: store.clone(),
            node_id,
            clock: clock.clone(),
            sessions,
            linger: settings.linger,
            notice_windows: settings.notice_windows,
            mailer: settings.mailer,
            service_clock: Mutex::new(service_clock),
            tenants: Mutex::default(),
            deleted: Mutex::default(),
            deadlines_moved: Notify::new(),
            clock_guard: Mutex::new(ClockGuard::new(clock.now(), clock.monotonic(), None)),
            clock_doubt: Mutex::default(),
        });
        let mut newest_signed = None;
        for tenant in tenants {
            newest_signed = newest_signed.max(pools.catch_up_from_store(tenant.id).await?);
        }
        // Judged from the start against the newest signed time of any installed license.
        let now = pools.clock.now();
        *lock(&pools.clock_guard) = ClockGuard::new(now, pools.clock.monotonic(), newest_signed);
        Ok(pools)
    }

    /// Applies one change and answers once it is stored: for a change to one router
    /// (connected, dropped), where it stands afterwards.
    pub async fn submit(
        &self,
        tenant: TenantId,
        request: Request,
    ) -> Result<Option<Standing>, PoolFailure> {
        if lock(&self.deleted).contains(&tenant) {
            return Ok(None);
        }
        let pool = self.tenant(tenant);
        let (reply, answer) = oneshot::channel();
        lock(&pool.pending).push((request, reply));
        {
            let mut copy = pool.copy.lock().await;
            let batch = std::mem::take(&mut *lock(&pool.pending));
            if !batch.is_empty() {
                self.run_batch(&pool, &mut copy, batch).await;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(PoolFailure::Store("the batch was dropped".into())))
    }

    /// Why the wall clock is in doubt, if it is; license capacity holds meanwhile.
    pub fn clock_doubt(&self) -> Option<ClockDoubt> {
        *lock(&self.clock_doubt)
    }

    /// An admin accepts the wall clock as it reads: capacity follows it again at once.
    pub async fn acknowledge_clock(&self, tenant: TenantId) -> Result<(), PoolFailure> {
        let verdict = lock(&self.clock_guard).acknowledge(self.clock.now(), self.clock.monotonic());
        self.clock_changed(verdict.change).await;
        self.submit(tenant, Request::Sweep).await?;
        Ok(())
    }

    /// Reads the wall clock against the trusted clocks: whether license decisions may follow it
    /// now. The first reading of a doubt episode, and the one that ends it, raise an event.
    async fn clock_trusted(&self) -> bool {
        let verdict = lock(&self.clock_guard).observe(self.clock.now(), self.clock.monotonic());
        self.clock_changed(verdict.change).await;
        verdict.trusted
    }

    async fn clock_changed(&self, change: Option<ClockChange>) {
        let Some(change) = change else { return };
        let (kind, message) = match change {
            ClockChange::Doubt(doubt) => {
                *lock(&self.clock_doubt) = Some(doubt);
                tracing::error!(?doubt, "the wall clock is in doubt; license capacity holds");
                (EventKind::LicenseClockInDoubt, describe_doubt(doubt))
            }
            ClockChange::Trusted => {
                *lock(&self.clock_doubt) = None;
                tracing::warn!("the wall clock is trusted again");
                (
                    EventKind::LicenseClockTrusted,
                    "the wall clock is trusted again: license capacity follows it".to_owned(),
                )
            }
        };
        let tenants: Vec<TenantId> = lock(&self.tenants).keys().copied().collect();
        let now = self.clock.now();
        for tenant in tenants {
            let event = Event::new(tenant, now, kind, None, message.clone());
            if let Err(error) = self.store.record_event(&event).await {
                tracing::error!(%error, "cannot record a clock event");
            }
        }
    }

    /// After the tenant's licenses changed here: apply the capacity now in force and tell the
    /// other nodes, whose timers need the new terms.
    pub async fn licenses_changed(&self, tenant: TenantId) -> Result<(), PoolFailure> {
        self.submit(tenant, Request::Sweep).await?;
        crate::cluster::pool_changed(&self.store, &self.node_id, tenant).await;
        Ok(())
    }

    /// Drops this node's copy of a deleted tenant's pool; changes that still arrive for it (its
    /// routers' sessions ending) change nothing.
    pub fn forget(&self, tenant: TenantId) {
        lock(&self.deleted).insert(tenant);
        lock(&self.tenants).remove(&tenant);
    }

    /// The licensed routers that a capacity of `capacity` would make excess, first to go first:
    /// the last in line.
    pub async fn would_shed(&self, tenant: TenantId, capacity: Capacity) -> Vec<DeviceId> {
        let pool = self.tenant(tenant);
        let copy = pool.copy.lock().await;
        let Some(ledger) = &copy.ledger else {
            return Vec::new();
        };
        let licensed: Vec<DeviceId> = ledger.pool().licensed().collect();
        let kept = capacity.seats_for(licensed.len());
        licensed[kept..].iter().rev().copied().collect()
    }

    /// The pool's capacity and counts, brought up to date first.
    pub async fn summary(&self, tenant: TenantId) -> Result<PoolSummary, PoolFailure> {
        self.submit(tenant, Request::Sweep).await?;
        let pool = self.tenant(tenant);
        let copy = pool.copy.lock().await;
        let ledger = copy.ledger.as_ref();
        Ok(PoolSummary {
            capacity: ledger.map_or(Capacity::Limited(0), Ledger::capacity),
            counts: ledger.map(Ledger::counts).unwrap_or_default(),
        })
    }

    /// Brings this node's copy of a tenant's pool up to date without taking the tenant's lock
    /// in the database: when another node says the pool changed.
    pub async fn refresh(&self, tenant: TenantId) -> Result<(), StoreError> {
        self.catch_up_from_store(tenant).await.map(|_| ())
    }

    /// Reads what changed in the tenant's pool and applies it; answers the newest signed issue
    /// time among the licenses read, if any were.
    async fn catch_up_from_store(&self, tenant: TenantId) -> Result<Option<Timestamp>, StoreError> {
        let pool = self.tenant(tenant);
        let mut copy = pool.copy.lock().await;
        pool.refresh_queued.store(false, Ordering::Release);
        let read = self.store.read_pool(tenant, copy.position()).await?;
        let heard = catch_up(&mut copy, read);
        self.heard(&copy, &heard);
        drop(copy);
        self.deadlines_moved.notify_one();
        Ok(heard.newest_signed)
    }

    /// Passes on what a catch-up learnt: license changes to the routers connected here, signed
    /// times to the clock guard.
    fn heard(&self, copy: &Copy, heard: &Heard) {
        if let Some(signed) = heard.newest_signed {
            lock(&self.clock_guard).saw_signed_time(signed);
        }
        self.tell_sessions(copy, heard);
    }

    /// Queues a refresh of the tenant's pool, unless one is queued already: notifications
    /// arrive in bursts, and one read covers them all.
    pub fn refresh_soon(self: &Arc<Self>, tenant: TenantId) {
        let pool = self.tenant(tenant);
        if pool.refresh_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let pools = self.clone();
        tokio::spawn(async move {
            if let Err(error) = pools.refresh(tenant).await {
                tracing::warn!(%error, %tenant, "cannot read the license pool's changes");
            }
        });
    }

    /// Queues a refresh of every pool this node holds.
    pub fn refresh_all_soon(self: &Arc<Self>) {
        let tenants: Vec<TenantId> = lock(&self.tenants).keys().copied().collect();
        for tenant in tenants {
            self.refresh_soon(tenant);
        }
    }

    /// Keeps lingers and capacity boundaries on time and says the node is alive, until
    /// `shutdown`.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_alive = self.clock.now();
        loop {
            let now = self.clock.now();
            if now >= next_alive {
                match self.store.service_alive(now).await {
                    Ok(clock) => *lock(&self.service_clock) = clock,
                    Err(error) => tracing::warn!(%error, "cannot record that this node is alive"),
                }
                next_alive = now + ALIVE_INTERVAL;
            }
            let mut failed = false;
            // While the clock is in doubt nothing is due: the next look is at the next sign of
            // life (waking for deadlines already passed would spin).
            let deadlines = if self.clock_trusted().await {
                let deadlines = self.deadlines().await;
                let mut swept = false;
                for (tenant, due) in &deadlines {
                    if *due > now {
                        continue;
                    }
                    swept = true;
                    if let Err(error) = self.submit(*tenant, Request::Sweep).await {
                        tracing::warn!(%error, %tenant, "cannot apply the pool's due changes");
                        failed = true;
                    }
                }
                self.send_notices().await;
                if swept {
                    self.deadlines().await
                } else {
                    deadlines
                }
            } else {
                Vec::new()
            };
            let earliest = deadlines
                .into_iter()
                .map(|(_, due)| due)
                .fold(next_alive, Timestamp::min);
            // After a failure, try again a little later rather than at once and forever.
            let wake = if failed {
                earliest.max(now + RETRY_AFTER_FAILURE)
            } else {
                earliest
            };
            tokio::select! {
                () = self.clock.sleep_until(wake) => {}
                () = self.deadlines_moved.notified() => {}
                () = shutdown.cancelled() => break,
            }
        }
        if let Err(error) = self.store.service_alive(self.clock.now()).await {
            tracing::warn!(%error, "cannot record when this node stopped");
        }
    }

    /// Each loaded tenant's next deadline: a linger ending or a license starting or ending.
    async fn deadlines(&self) -> Vec<(TenantId, Timestamp)> {
        let pools: Vec<Arc<TenantPool>> = lock(&self.tenants).values().cloned().collect();
        let service_clock = *lock(&self.service_clock);
        let now = self.clock.now();
        let mut deadlines = Vec::new();
        for pool in pools {
            let copy = pool.copy.lock().await;
            let linger_end = copy
                .ledger
                .as_ref()
                .and_then(Ledger::next_linger_end)
                .map(|end| service_clock.wall_time(end));
            let boundary = next_boundary(copy.terms(), now);
            let capacity_off = copy.ledger.as_ref().is_some_and(|ledger| {
                copy.licenses.is_some() && ledger.capacity() != capacity_at(copy.terms(), now)
            });
            let notice = self
                .next_drop(&copy, now)
                .and_then(|drop| self.notice_windows.next_opening(drop.at, now));
            let due = [linger_end, boundary, capacity_off.then_some(now), notice]
                .into_iter()
                .flatten()
                .min();
            if let Some(due) = due {
                deadlines.push((pool.tenant, due));
            }
        }
        deadlines
    }

    /// The next capacity drop within the widest notice window, for the fleet as it is now.
    fn next_drop(&self, copy: &Copy, now: Timestamp) -> Option<CapacityForecast> {
        let counts = copy.ledger.as_ref()?.counts();
        next_capacity_drop(
            copy.terms(),
            now,
            counts.licensed + counts.excess,
            self.notice_windows.horizon(),
        )
    }

    /// The warning ahead of the tenant's next capacity drop, if one of its windows is open:
    /// for the pool's figures.
    pub async fn drop_warning(&self, tenant: TenantId) -> Option<String> {
        let pool = self.tenant(tenant);
        let copy = pool.copy.lock().await;
        let now = self.clock.now();
        let drop = self.next_drop(&copy, now)?;
        self.notice_windows.current(drop.at, now)?;
        Some(drop.notice(now))
    }

    /// Records, once per window and drop (whichever node is first), a warning event for every
    /// tenant whose capacity drops within an open notice window.
    async fn send_notices(&self) {
        let pools: Vec<Arc<TenantPool>> = lock(&self.tenants).values().cloned().collect();
        let now = self.clock.now();
        for pool in pools {
            let due = {
                let copy = pool.copy.lock().await;
                self.next_drop(&copy, now).and_then(|drop| {
                    let window = self.notice_windows.current(drop.at, now)?;
                    Some((drop, window))
                })
            };
            let Some((drop, window)) = due else { continue };
            let event = Event::new(
                pool.tenant,
                now,
                EventKind::LicenseCapacityDropNotice,
                None,
                drop.notice(now),
            );
            match self
                .store
                .record_notice(pool.tenant, drop.at, window, &event)
                .await
            {
                Ok(true) => {
                    metrics::license_pool_event(EventKind::LicenseCapacityDropNotice);
                    if let Some(mailer) = &self.mailer {
                        let subject =
                            format!("Floatilla: license capacity drops {}", drop.time_left(now));
                        let body = format!(
                            "{}.\n\nRenew or add licenses before then, or mark routers unmanaged \
                             to fit the capacity that remains. Routers beyond it stay visible \
                             but receive no updates and accept no management task.\n\n\
                             You receive this as the contact address of your Floatilla tenant.\n",
                            drop.notice(now)
                        );
                        crate::mail::tell_tenant(mailer, &self.store, pool.tenant, subject, body);
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, tenant = %pool.tenant, "cannot record a capacity notice")
                }
            }
        }
    }

    fn tenant(&self, tenant: TenantId) -> Arc<TenantPool> {
        lock(&self.tenants)
            .entry(tenant)
            .or_insert_with(|| {
                Arc::new(TenantPool {
                    tenant,
                    refresh_queued: AtomicBool::new(false),
                    pending: Mutex::default(),
                    copy: tokio::sync::Mutex::default(),
                })
            })
            .clone()
    }

    async fn run_batch(&self, pool: &TenantPool, copy: &mut Copy, batch: Vec<(Request, Reply)>) {
        let clock_trusted = self.clock_trusted().await;
        let now = self.clock.now();
        let service_clock = *lock(&self.service_clock);
        let mut outcomes: Vec<Result<(), PoolFailure>> = Vec::new();
        let mut heard = Heard::default();
        let mut wrote_ops = false;
        let mut decided: Vec<Transition> = Vec::new();
        let mut pool_events: Vec<EventKind> = Vec::new();
        let requests: Vec<&Request> = batch.iter().map(|(request, _)| request).collect();
        let result = self
            .store
            .update_pool(pool.tenant, copy.position(), &mut |read| {
                let last_usage = read.head.usage;
                heard = catch_up(copy, read);
                let mut decision = Decision::new(pool.tenant, now, last_usage);
                let ledger = copy.ledger.get_or_insert_with(Ledger::new);
                let capacity = capacity_at(
                    copy.licenses.as_ref().map_or(&[][..], |(_, terms)| terms),
                    now,
                );
                // While the wall clock is in doubt nothing is due: no license starts or ends,
                // no linger ends, whatever the clock says.
                if clock_trusted && capacity != ledger.capacity() {
                    decision.apply_due(ledger, PoolOp::Capacity { capacity });
                }
                if clock_trusted {
                    for device in ledger.lingers_over(service_clock.service_time(now)) {
                        decision.apply_due(ledger, PoolOp::Expired { device });
                    }
                }
                outcomes = requests
                    .iter()
                    .map(|request| {
                        decision.request(ledger, request, |at, at_least| {
                            service_clock
                                .linger_deadline(at, self.linger.max(at_least))
                                .millis()
                        })
                    })
                    .collect();
                wrote_ops = !decision.ops.is_empty();
                decided = decision.transitions.clone();
                pool_events = decision
                    .events
                    .iter()
                    .filter(|e| e.device_id.is_none())
                    .map(|e| e.kind)
                    .collect();
                decision.into_write(ledger)
            })
            .await;
        match result {
            Ok(_) => {
                for transition in &decided {
                    metrics::license_transition(transition.reason);
                }
                for kind in pool_events {
                    metrics::license_pool_event(kind);
                }
                let reasons: HashMap<DeviceId, LicenseReason> =
                    decided.iter().map(|t| (t.device, t.reason)).collect();
                heard.transitions.extend(decided);
                self.heard(copy, &heard);
                if wrote_ops {
                    crate::cluster::pool_changed(&self.store, &self.node_id, pool.tenant).await;
                }
                self.deadlines_moved.notify_one();
                let mut outcomes = outcomes.into_iter();
                for (request, reply) in batch {
                    let outcome = outcomes.next().unwrap_or(Ok(())).map(|()| {
                        let device = request.device()?;
                        let state = copy
                            .ledger
                            .as_ref()
                            .and_then(|ledger| ledger.router(device))
                            .map_or(LicenseState::Inactive, |router| router.state);
                        Some(Standing {
                            state,
                            reason: reasons.get(&device).copied(),
                        })
                    });
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, tenant = %pool.tenant, "cannot store a change of the license pool");
                // The copy may be ahead of what was stored: read it afresh next time.
                copy.ledger = None;
                let failure = PoolFailure::from(error);
                for (_, reply) in batch {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Tells routers connected here about their new license state.
    fn tell_sessions(&self, copy: &Copy, heard: &Heard) {
        let Some(ledger) = &copy.ledger else { return };
        let devices: Vec<DeviceId> = if heard.everyone {
            self.sessions
                .sessions()
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        } else {
            let mut seen = HashSet::new();
            heard
                .transitions
                .iter()
                .map(|t| t.device)
                .filter(|d| seen.insert(*d))
                .collect()
        };
        let reasons: HashMap<DeviceId, LicenseReason> = heard
            .transitions
            .iter()
            .map(|t| (t.device, t.reason))
            .collect();
        for device in devices {
            let Some(handle) = self.sessions.get(device) else {
                continue;
            };
            let state = ledger
                .router(device)
                .map_or(LicenseState::Inactive, |router| router.state);
            let command = SessionCommand::License {
                state,
                reason: reasons.get(&device).copied(),
            };
            if handle.inbox.send(command).is_err() {
                tracing::debug!(%device, "could not tell a session of its license state");
            }
        }
    }
}

/// Starts the lingers of sessions closed for a node that stopped without closing them, `at`
/// the moment they count as dropped.
pub async fn sessions_closed(pools: &Pools, closed: &[ClosedSession], at: Timestamp) {
    // All at once, so that they share batches: a node that held thousands of routers.
    let drops = closed.iter().map(|session| async move {
        let request = Request::Dropped {
            device: session.device,
            session: session.session,
            at,
            at_least: chrono::Duration::zero(),
        };
        if let Err(error) = pools.submit(session.tenant, request).await {
            tracing::warn!(%error, device = %session.device, "cannot start the linger of a closed session");
        }
    });
    futures_util::future::join_all(drops).await;
}

/// Applies what was read to the copy; answers the transitions that routers must hear.
fn catch_up(copy: &mut Copy, read: PoolRead) -> Heard {
    let mut heard = Heard::default();
    if let Some(licenses) = read.licenses {
        heard.newest_signed = licenses
            .iter()
            .filter_map(|l| l.signed.as_ref())
            .map(|s| s.issued_at)
            .max();
        let lineages: Vec<Lineage<'_>> = licenses.iter().map(License::lineage).collect();
        copy.licenses = Some((read.head.licenses_revision, effective_terms(&lineages)));
    }
    match read.history {
        PoolHistory::Log(ops) => {
            let ledger = copy.ledger.get_or_insert_with(Ledger::new);
            for op in ops {
                match ledger.apply(&op) {
                    Ok(changes) => heard.transitions.extend(changes.transitions),
                    Err(error) => {
                        tracing::error!(%error, ?op, "a logged pool operation does not apply")
                    }
                }
            }
        }
        PoolHistory::Snapshot(routers) => {
            let head = read.head;
            copy.ledger = Some(Ledger::rebuild(
                head.version,
                head.next_place,
                head.capacity,
                routers,
            ));
            heard.everyone = true;
        }
    }
    heard
}

/// The operations one batch decides, and what they change.
struct Decision {
    tenant: TenantId,
    now: Timestamp,
    last_usage: Option<UsageSample>,
    ops: Vec<PoolOp>,
    /// Routers whose columns change, with the reason of their last transition in the batch.
    touched: Vec<DeviceId>,
    reasons: HashMap<DeviceId, LicenseReason>,
    transitions: Vec<Transition>,
    events: Vec<Event>,
}

impl Decision {
    fn new(tenant: TenantId, now: Timestamp, last_usage: Option<UsageSample>) -> Self {
        Self {
            tenant,
            now,
            last_usage,
            ops: Vec::new(),
            touched: Vec::new(),
            reasons: HashMap::new(),
            transitions: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Applies a request's operations; a refusal leaves the pool as it was.
    fn request(
        &mut self,
        ledger: &mut Ledger,
        request: &Request,
        linger_until: impl Fn(Timestamp, chrono::Duration) -> i64,
    ) -> Result<(), PoolFailure> {
        match request {
            Request::Connected { device, session } => self.apply(
                ledger,
                PoolOp::Connected {
                    device: *device,
                    session: *session,
                },
            ),
            Request::Dropped {
                device,
                session,
                at,
                at_least,
            } => self.apply(
                ledger,
                PoolOp::Dropped {
                    device: *device,
                    session: *session,
                    linger_until: linger_until(*at, *at_least),
                },
            ),
            Request::Managed { devices, managed } => {
                for device in devices {
                    self.apply(
                        ledger,
                        PoolOp::Managed {
                            device: *device,
                            managed: *managed,
                        },
                    )?;
                }
                Ok(())
            }
            Request::Pinned { devices, pinned } => {
                if *pinned {
                    let newly = devices
                        .iter()
                        .filter(|device| {
                            ledger
                                .router(**device)
                                .is_none_or(|r| r.managed && !r.pinned)
                        })
                        .count() as u64;
                    let wanted = ledger.counts().pinned + newly;
                    if newly > 0 && !ledger.capacity().admits(wanted) {
                        return Err(PoolError::PinsExceedCapacity {
                            pinned: wanted,
                            capacity: ledger.capacity(),
                        }
                        .into());
                    }
                }
                for device in devices {
                    self.apply(
                        ledger,
                        PoolOp::Pinned {
                            device: *device,
                            pinned: *pinned,
                        },
                    )?;
                }
                Ok(())
            }
            Request::Removed { device } => self.apply(ledger, PoolOp::Removed { device: *device }),
            Request::Sweep => Ok(()),
        }
    }

    /// Applies an operation the pool's own timing calls for (an ended linger, a new
    /// capacity), which no state refuses.
    fn apply_due(&mut self, ledger: &mut Ledger, op: PoolOp) {
        if let Err(error) = self.apply(ledger, op) {
            tracing::error!(%error, ?op, "a due pool operation was refused");
        }
    }

    fn apply(&mut self, ledger: &mut Ledger, op: PoolOp) -> Result<(), PoolFailure> {
        let changes = ledger.apply(&op)?;
        if let Some(device) = op.device() {
            self.touched.push(device);
        }
        self.ops.push(op);
        self.record(ledger, changes);
        Ok(())
    }

    fn record(&mut self, ledger: &Ledger, changes: Changes) {
        for transition in changes.transitions {
            self.transitions.push(transition);
            self.touched.push(transition.device);
            self.reasons.insert(transition.device, transition.reason);
            self.events.push(Event::new(
                self.tenant,
                self.now,
                EventKind::from(transition.reason),
                Some(transition.device),
                describe_transition(&transition),
            ));
        }
        for event in changes.events {
            let (kind, message) = describe_pool_event(event, ledger);
            self.events
                .push(Event::new(self.tenant, self.now, kind, None, message));
        }
    }

    /// What to write: `None` when nothing changed and usage need not be brought forward.
    fn into_write(self, ledger: &Ledger) -> Option<PoolWrite> {
        let counts = ledger.counts();
        let usage = UsageSample {
            at: self.now,
            managed_live: counts.licensed + counts.excess,
            licensed: counts.licensed,
            excess: counts.excess,
        };
        let same_counts = self.last_usage.is_some_and(|last| {
            (last.managed_live, last.licensed, last.excess)
                == (usage.managed_live, usage.licensed, usage.excess)
                && Granularity::Hour.bucket_start(last.at)
                    == Granularity::Hour.bucket_start(self.now)
        });
        if self.ops.is_empty() && same_counts {
            return None;
        }
        let last = self.last_usage.unwrap_or(usage);
        let usage_shares = [Granularity::Hour, Granularity::Day]
            .into_iter()
            .flat_map(|granularity| {
                accrue(&last, &usage, granularity)
                    .into_iter()
                    .map(move |share| (granularity, share))
            })
            .collect();
        let mut seen = HashSet::new();
        let routers = self
            .touched
            .iter()
            .filter(|device| seen.insert(**device))
            .filter_map(|device| {
                ledger.router(*device).map(|router| RouterWrite {
                    router,
                    reason: self.reasons.get(device).copied(),
                })
            })
            .collect();
        Some(PoolWrite {
            ops: self.ops,
            next_place: ledger.next_place(),
            capacity: ledger.capacity(),
            routers,
            events: self.events,
            usage,
            usage_shares,
        })
    }
}

fn describe_doubt(doubt: ClockDoubt) -> String {
    match doubt {
        ClockDoubt::Behind { by } => format!(
            "the wall clock is {} minutes behind the newest signed license time: license capacity holds where it was until the clock is set right or an admin acknowledges it",
            by.num_minutes()
        ),
        ClockDoubt::Jumped { by } => format!(
            "the wall clock jumped {} by {} minutes against the server's monotonic clock: license capacity holds where it was until the clock is set right or an admin acknowledges it",
            if by > chrono::Duration::zero() {
                "forward"
            } else {
                "back"
            },
            by.num_minutes().abs()
        ),
    }
}

fn describe_transition(transition: &Transition) -> String {
    let why = match transition.reason {
        LicenseReason::Granted => "its session started and a seat was free",
        LicenseReason::ReleasedLingerExpired => {
            "its connection dropped and did not come back within the linger"
        }
        LicenseReason::ReleasedUnmanaged => "an operator marked it unmanaged",
        LicenseReason::ReleasedDeleted => "it was deleted",
        LicenseReason::ShedCapacityDropped => {
            "the capacity dropped and it was among the last in line"
        }
        LicenseReason::ShedPinnedPriority => "a pinned router took its seat",
        LicenseReason::Restored => "a seat became free for it",
        LicenseReason::DeniedPoolFull => "its session started while every seat was taken",
    };
    format!(
        "license {} → {} ({}): {why}",
        transition.from, transition.to, transition.reason
    )
}

fn describe_pool_event(event: PoolEvent, ledger: &Ledger) -> (EventKind, String) {
    match event {
        PoolEvent::LimitReached { capacity } => (
            EventKind::LicenseLimitReached,
            format!("all {capacity} seats are taken: routers that connect now are excess"),
        ),
        PoolEvent::CapacityChanged { from, to } => {
            let counts = ledger.counts();
            (
                EventKind::LicenseCapacityChanged,
                format!(
                    "capacity changed from {from} to {to} seats: {} licensed, {} excess",
                    counts.licensed, counts.excess
                ),
            )
        }
        PoolEvent::PinsExceedCapacity { pinned, capacity } => (
            EventKind::LicensePinsExceedCapacity,
            format!(
                "{pinned} routers are pinned but only {capacity} seats remain: the pinned routers last in line are excess"
            ),
        ),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
