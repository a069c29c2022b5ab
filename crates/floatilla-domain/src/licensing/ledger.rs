//! A tenant's pool as a replicated state machine. Every change is an operation, [`PoolOp`],
//! appended to the tenant's log under the tenant's lock; a node that applies the same operations
//! in the same order to the same snapshot holds the same pool. The ledger adds to the pure
//! [`Pool`] what it needs to decide alone: which connection each router's session belongs to,
//! when a dropped router's linger ends, and the next place in line.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::licensing::license::Capacity;
use crate::licensing::pool::{Changes, LicenseState, Pool, PoolCounts, PoolError, StoredRouter};
use crate::licensing::service_clock::ServiceInstant;
use crate::{DeviceId, SessionId};

/// One change to a tenant's pool, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PoolOp {
    /// A control channel opened: a new session (with a new place in line) unless the router's
    /// session is still live, in which case the connection continues it. Session ids are
    /// time-ordered: a connection older than the router's current one changes nothing.
    Connected {
        device: DeviceId,
        session: SessionId,
    },
    /// A control channel closed: the session lingers until `linger_until` (service time, in
    /// milliseconds). Ignored unless `session` is the router's current connection, so a
    /// superseded connection never starts a linger for its successor.
    Dropped {
        device: DeviceId,
        session: SessionId,
        linger_until: i64,
    },
    /// A dropped router's linger is over: its session ends.
    Expired {
        device: DeviceId,
    },
    Managed {
        device: DeviceId,
        managed: bool,
    },
    Pinned {
        device: DeviceId,
        pinned: bool,
    },
    /// The router was deleted.
    Removed {
        device: DeviceId,
    },
    /// The licenses counting now grant this capacity.
    Capacity {
        capacity: Capacity,
    },
}

impl PoolOp {
    /// The router the operation is about, if any.
    pub fn device(&self) -> Option<DeviceId> {
        match *self {
            PoolOp::Connected { device, .. }
            | PoolOp::Dropped { device, .. }
            | PoolOp::Expired { device }
            | PoolOp::Managed { device, .. }
            | PoolOp::Pinned { device, .. }
            | PoolOp::Removed { device } => Some(device),
            PoolOp::Capacity { .. } => None,
        }
    }
}

/// A router's connection as far as the pool cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    /// The connection that opened or continued its session last.
    session: SessionId,
    /// Set once that connection dropped: the session lingers until then.
    linger_until: Option<ServiceInstant>,
}

/// Everything stored about one router's license: enough to rebuild the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRouter {
    pub device: DeviceId,
    pub managed: bool,
    pub pinned: bool,
    /// The place of its live session, if it has one.
    pub place: Option<u64>,
    /// Its current (or last, while lingering) connection, while its session is live.
    pub session: Option<SessionId>,
    pub linger_until: Option<ServiceInstant>,
    pub state: LicenseState,
}

/// A tenant's pool with its log position.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: Pool,
    /// How many operations have been applied: the log position of the last one.
    version: u64,
    /// The place the next session gets.
    next_place: u64,
    links: HashMap<DeviceId, Link>,
    /// Lingering routers by the end of their linger.
    lingering: BTreeSet<(ServiceInstant, DeviceId)>,
}

impl Ledger {
    /// An empty pool that has applied no operation.
    pub fn new() -> Self {
        Self::rebuild(0, 1, Capacity::Limited(0), [])
    }

    /// The ledger at log position `version`, from what was stored then.
    pub fn rebuild(
        version: u64,
        next_place: u64,
        capacity: Capacity,
        routers: impl IntoIterator<Item = LedgerRouter>,
    ) -> Self {
        let mut links = HashMap::new();
        let mut lingering = BTreeSet::new();
        let mut stored = Vec::new();
        for router in routers {
            if let (Some(session), Some(_)) = (router.session, router.place) {
                links.insert(
                    router.device,
                    Link {
                        session,
                        linger_until: router.linger_until,
                    },
                );
                if let Some(until) = router.linger_until {
                    lingering.insert((until, router.device));
                }
            }
            stored.push(StoredRouter {
                device: router.device,
                managed: router.managed,
                pinned: router.pinned,
                session: router.place,
            });
        }
        Self {
            pool: Pool::rebuild(capacity, stored),
            version,
            next_place,
            links,
            lingering,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn next_place(&self) -> u64 {
        self.next_place
    }

    pub fn capacity(&self) -> Capacity {
        self.pool.capacity()
    }

    pub fn counts(&self) -> PoolCounts {
        self.pool.counts()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What would be stored for this router now; `None` for a router the pool does not know.
    pub fn router(&self, device: DeviceId) -> Option<LedgerRouter> {
        let stored = self.pool.router(device)?;
        let link = self.links.get(&device);
        Some(LedgerRouter {
            device,
            managed: stored.managed,
            pinned: stored.pinned,
            place: stored.session,
            session: link.map(|l| l.session),
            linger_until: link.and_then(|l| l.linger_until),
            state: self.pool.state(device).unwrap_or(LicenseState::Inactive),
        })
    }

    /// Every router the pool knows.
    pub fn routers(&self) -> impl Iterator<Item = LedgerRouter> + '_ {
        self.pool
            .routers()
            .filter_map(|stored| self.router(stored.device))
    }

    /// Whether the router's session is live and its connection open.
    pub fn is_connected(&self, device: DeviceId) -> bool {
        self.links
            .get(&device)
            .is_some_and(|link| link.linger_until.is_none())
    }

    /// The routers whose linger is over at `now`, first ended first.
    pub fn lingers_over(&self, now: ServiceInstant) -> Vec<DeviceId> {
        self.lingering
            .iter()
            .take_while(|(until, _)| *until <= now)
            .map(|(_, device)| *device)
            .collect()
    }

    /// When the next linger ends.
    pub fn next_linger_end(&self) -> Option<ServiceInstant> {
        self.lingering.first().map(|(until, _)| *until)
    }

    /// Applies one operation and advances the log position. A refused operation (too many
    /// pins) changes nothing, so it is never logged.
    pub fn apply(&mut self, op: &PoolOp) -> Result<Changes, PoolError> {
        let changes = match *op {
            PoolOp::Connected { device, session }
                if self.links.get(&device).is_some_and(|l| l.session > session) =>
            {
                // A connection older than the router's current one, logged late by a busy
                // node: it was superseded already and continues nothing.
                Changes::default()
            }
            PoolOp::Connected { device, session } => {
                if let Some(until) = self.links.get(&device).and_then(|l| l.linger_until) {
                    self.lingering.remove(&(until, device));
                }
                self.links.insert(
                    device,
                    Link {
                        session,
                        linger_until: None,
                    },
                );
                let live = self
                    .pool
                    .router(device)
                    .is_some_and(|r| r.session.is_some());
                if live {
                    Changes::default()
                } else {
                    let place = self.take_place();
                    self.pool.start_session(device, place)
                }
            }
            PoolOp::Dropped {
                device,
                session,
                linger_until,
            } => {
                if let Some(link) = self.links.get_mut(&device)
                    && link.session == session
                    && link.linger_until.is_none()
                {
                    let until = ServiceInstant::from_millis(linger_until);
                    link.linger_until = Some(until);
                    self.lingering.insert((until, device));
                }
                Changes::default()
            }
            PoolOp::Expired { device } => {
                match self.links.get(&device).and_then(|l| l.linger_until) {
                    Some(until) => {
                        self.lingering.remove(&(until, device));
                        self.links.remove(&device);
                        self.pool.end_session(device)
                    }
                    None => Changes::default(),
                }
            }
            PoolOp::Managed { device, managed } => {
                self.pool.add_router(device, true, false);
                let place = self.next_place;
                let changes = self.pool.set_managed(device, managed, place);
                if self.pool.router(device).and_then(|r| r.session) == Some(place) {
                    self.next_place += 1;
                }
                changes
            }
            PoolOp::Pinned { device, pinned } => {
                self.pool.add_router(device, true, false);
                self.pool.set_pinned(device, pinned)?
            }
            PoolOp::Removed { device } => {
                if let Some(until) = self.links.remove(&device).and_then(|l| l.linger_until) {
                    self.lingering.remove(&(until, device));
                }
                self.pool.remove_router(device)
            }
            PoolOp::Capacity { capacity } => self.pool.set_capacity(capacity),
        };
        self.version += 1;
        Ok(changes)
    }

    fn take_place(&mut self) -> u64 {
        let place = self.next_place;
        self.next_place += 1;
        place
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::licensing::pool::LicenseReason;

    fn connect(ledger: &mut Ledger, device: DeviceId) -> (SessionId, Changes) {
        let session = SessionId::new();
        let changes = ledger
            .apply(&PoolOp::Connected { device, session })
            .unwrap();
        (session, changes)
    }

    fn drop_at(ledger: &mut Ledger, device: DeviceId, session: SessionId, until: i64) {
        ledger
            .apply(&PoolOp::Dropped {
                device,
                session,
                linger_until: until,
            })
            .unwrap();
    }

    #[test]
    fn a_reconnect_within_the_linger_keeps_the_seat_and_the_place() {
        let mut ledger = Ledger::new();
        ledger
            .apply(&PoolOp::Capacity {
                capacity: Capacity::Limited(1),
            })
            .unwrap();
        let first = DeviceId::new();
        let second = DeviceId::new();
        let (session, changes) = connect(&mut ledger, first);
        assert_eq!(changes.transitions[0].reason, LicenseReason::Granted);
        connect(&mut ledger, second);
        drop_at(&mut ledger, first, session, 1_000);
        assert_eq!(ledger.lingers_over(ServiceInstant::from_millis(999)), []);
        assert_eq!(
            ledger.lingers_over(ServiceInstant::from_millis(1_000)),
            [first]
        );
        let (_, changes) = connect(&mut ledger, first);
        assert!(changes.transitions.is_empty());
        assert_eq!(ledger.next_linger_end(), None);
        assert_eq!(ledger.router(first).unwrap().state, LicenseState::Licensed);
        assert_eq!(ledger.router(second).unwrap().state, LicenseState::Excess);
    }

    #[test]
    fn a_superseded_connection_does_not_start_a_linger() {
        let mut ledger = Ledger::new();
        let device = DeviceId::new();
        let (old, _) = connect(&mut ledger, device);
        let (new, _) = connect(&mut ledger, device);
        drop_at(&mut ledger, device, old, 5);
        assert!(ledger.is_connected(device));
        drop_at(&mut ledger, device, new, 5);
        assert!(!ledger.is_connected(device));
        assert_eq!(ledger.router(device).unwrap().session, Some(new));
    }

    #[test]
    fn a_connection_logged_after_its_successor_changes_nothing() {
        let mut ledger = Ledger::new();
        let device = DeviceId::new();
        let older = SessionId::new();
        let newer = SessionId::new();
        ledger
            .apply(&PoolOp::Connected {
                device,
                session: newer,
            })
            .unwrap();
        ledger
            .apply(&PoolOp::Connected {
                device,
                session: older,
            })
            .unwrap();
        drop_at(&mut ledger, device, older, 5);
        assert!(ledger.is_connected(device));
        assert_eq!(ledger.router(device).unwrap().session, Some(newer));
    }

    #[test]
    fn expiry_ends_the_session_and_promotes_the_oldest_excess() {
        let mut ledger = Ledger::new();
        ledger
            .apply(&PoolOp::Capacity {
                capacity: Capacity::Limited(1),
            })
            .unwrap();
        let routers: Vec<DeviceId> = (0..3).map(|_| DeviceId::new()).collect();
        let sessions: Vec<SessionId> = routers
            .iter()
            .map(|device| connect(&mut ledger, *device).0)
            .collect();
        drop_at(&mut ledger, routers[0], sessions[0], 10);
        let changes = ledger
            .apply(&PoolOp::Expired { device: routers[0] })
            .unwrap();
        let moved: Vec<(DeviceId, LicenseReason)> = changes
            .transitions
            .iter()
            .map(|t| (t.device, t.reason))
            .collect();
        assert_eq!(
            moved,
            [
                (routers[0], LicenseReason::ReleasedLingerExpired),
                (routers[1], LicenseReason::Restored)
            ]
        );
        // Expiring a router that reconnected, or twice, does nothing.
        assert!(
            ledger
                .apply(&PoolOp::Expired { device: routers[0] })
                .unwrap()
                .transitions
                .is_empty()
        );
        assert_eq!(ledger.version(), 7);
    }

    #[test]
    fn a_rebuilt_ledger_equals_the_one_that_applied_the_log() {
        let mut ledger = Ledger::new();
        ledger
            .apply(&PoolOp::Capacity {
                capacity: Capacity::Limited(2),
            })
            .unwrap();
        let routers: Vec<DeviceId> = (0..4).map(|_| DeviceId::new()).collect();
        let sessions: Vec<SessionId> = routers
            .iter()
            .map(|device| connect(&mut ledger, *device).0)
            .collect();
        drop_at(&mut ledger, routers[1], sessions[1], 50);
        ledger
            .apply(&PoolOp::Pinned {
                device: routers[3],
                pinned: true,
            })
            .unwrap();
        ledger
            .apply(&PoolOp::Managed {
                device: routers[0],
                managed: false,
            })
            .unwrap();
        let rebuilt = Ledger::rebuild(
            ledger.version(),
            ledger.next_place(),
            ledger.capacity(),
            ledger.routers(),
        );
        let mut expected: Vec<LedgerRouter> = ledger.routers().collect();
        let mut actual: Vec<LedgerRouter> = rebuilt.routers().collect();
        expected.sort_by_key(|r| r.device);
        actual.sort_by_key(|r| r.device);
        assert_eq!(actual, expected);
        assert_eq!(rebuilt.next_linger_end(), ledger.next_linger_end());
    }

    #[test]
    fn operations_are_logged_as_tagged_json() {
        let op = PoolOp::Capacity {
            capacity: Capacity::Unlimited,
        };
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(json, r#"{"op":"capacity","capacity":"unlimited"}"#);
        assert_eq!(serde_json::from_str::<PoolOp>(&json).unwrap(), op);
    }
}
