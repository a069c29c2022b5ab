//! The floating license rule for one tenant, as pure state: which routers hold a seat.
//!
//! Managed routers with a live session stand in one line, pinned routers first, then by their
//! place (a per-tenant sequence number given when the session started). The first `capacity` of
//! the line are licensed, the rest excess. The line is kept as two ordered sets, licensed and
//! excess, with every licensed router ahead of every excess one; each change moves only the
//! routers at the boundary, so a change costs O(moved × log n), not a pass over the fleet.

use std::collections::{BTreeSet, HashMap};

use crate::DeviceId;
use crate::licensing::license::Capacity;
use crate::names::named_enum;

named_enum! {
    /// A router's standing in the pool.
    pub enum LicenseState {
        /// Holds a seat: managed, live, and within capacity.
        Licensed = "licensed",
        /// Live and managed, but beyond capacity: visible, receives nothing.
        Excess = "excess",
        /// Managed, without a live session: holds no seat.
        Inactive = "inactive",
        /// An operator took it out of management: it never holds a seat.
        Unmanaged = "unmanaged",
    }
}

named_enum! {
    /// Why a router's license state changed.
    pub enum LicenseReason {
        /// Its session started and a seat was free (or it was ahead in line).
        Granted = "granted",
        /// Its session ended: the linger after its connection dropped is over.
        ReleasedLingerExpired = "released_linger_expired",
        /// An operator marked it unmanaged.
        ReleasedUnmanaged = "released_unmanaged",
        /// It was deleted.
        ReleasedDeleted = "released_deleted",
        /// The capacity dropped and it was among the last in line.
        ShedCapacityDropped = "shed_capacity_dropped",
        /// A pinned router took its seat.
        ShedPinnedPriority = "shed_pinned_priority",
        /// A seat became free for it.
        Restored = "restored",
        /// Its session started while every seat was taken by routers ahead of it.
        DeniedPoolFull = "denied_pool_full",
    }
}

/// One router's change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub device: DeviceId,
    pub from: LicenseState,
    pub to: LicenseState,
    pub reason: LicenseReason,
}

/// Something about the pool as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEvent {
    /// Every seat is now taken.
    LimitReached {
        capacity: u64,
    },
    CapacityChanged {
        from: Capacity,
        to: Capacity,
    },
    /// Fewer seats than pinned routers: the pinned routers last in line do not all hold one.
    PinsExceedCapacity {
        pinned: u64,
        capacity: u64,
    },
}

/// What one change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub transitions: Vec<Transition>,
    pub events: Vec<PoolEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{pinned} pinned routers would exceed the capacity of {capacity} seats")]
    PinsExceedCapacity { pinned: u64, capacity: Capacity },
    #[error("the router is not known to the pool")]
    UnknownRouter,
}

/// A router's place in line: pinned routers first, then by place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct LineKey {
    unpinned: bool,
    place: u64,
    device: DeviceId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Router {
    managed: bool,
    pinned: bool,
    /// The place of its live session, if it has one.
    session: Option<u64>,
}

impl Router {
    fn key(&self, device: DeviceId) -> Option<LineKey> {
        match (self.managed, self.session) {
            (true, Some(place)) => Some(LineKey {
                unpinned: !self.pinned,
                place,
                device,
            }),
            _ => None,
        }
    }
}

/// The seats of one tenant.
#[derive(Debug, Clone)]
pub struct Pool {
    capacity: Capacity,
    routers: HashMap<DeviceId, Router>,
    licensed: BTreeSet<LineKey>,
    excess: BTreeSet<LineKey>,
    /// Managed routers that are pinned, live or not.
    pinned: u64,
}

/// How many routers are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounts {
    pub licensed: u64,
    pub excess: u64,
    pub pinned: u64,
}

/// A router as stored, for rebuilding a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRouter {
    pub device: DeviceId,
    pub managed: bool,
    pub pinned: bool,
    /// The place of its live session, if it has one.
    pub session: Option<u64>,
}

impl Pool {
    pub fn new(capacity: Capacity) -> Self {
        Self {
            capacity,
            routers: HashMap::new(),
            licensed: BTreeSet::new(),
            excess: BTreeSet::new(),
            pinned: 0,
        }
    }

    /// The pool these routers make at `capacity`, built in one pass (O(n log n)) without
    /// transitions: what a node does when it loads a tenant's pool from the database.
    pub fn rebuild(capacity: Capacity, routers: impl IntoIterator<Item = StoredRouter>) -> Self {
        let mut pool = Pool::new(capacity);
        let mut line = Vec::new();
        for stored in routers {
            let router = Router {
                managed: stored.managed,
                pinned: stored.pinned,
                session: stored.session,
            };
            if router.managed && router.pinned {
                pool.pinned += 1;
            }
            line.extend(router.key(stored.device));
            pool.routers.insert(stored.device, router);
        }
        line.sort_unstable();
        let seats = capacity.seats_for(line.len());
        let excess = line.split_off(seats);
        pool.licensed = line.into_iter().collect();
        pool.excess = excess.into_iter().collect();
        pool
    }

    /// Every router the pool knows, as it would be stored.
    pub fn routers(&self) -> impl Iterator<Item = StoredRouter> + '_ {
        self.routers
            .keys()
            .filter_map(|device| self.router(*device))
    }

    /// One router as it would be stored.
    pub fn router(&self, device: DeviceId) -> Option<StoredRouter> {
        self.routers.get(&device).map(|router| StoredRouter {
            device,
            managed: router.managed,
            pinned: router.pinned,
            session: router.session,
        })
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            licensed: self.licensed.len() as u64,
            excess: self.excess.len() as u64,
            pinned: self.pinned,
        }
    }

    /// `None` for a router the pool does not know.
    pub fn state(&self, device: DeviceId) -> Option<LicenseState> {
        let router = self.routers.get(&device)?;
        Some(self.state_of(device, *router))
    }

    /// The routers holding a seat, in line order.
    pub fn licensed(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.licensed.iter().map(|key| key.device)
    }

    /// The excess routers, next to be restored first.
    pub fn excess(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.excess.iter().map(|key| key.device)
    }

    /// Makes a router known: it holds no seat until its session starts. Known routers keep their
    /// settings.
    pub fn add_router(&mut self, device: DeviceId, managed: bool, pinned: bool) {
        if self.routers.contains_key(&device) {
            return;
        }
        if managed && pinned {
            self.pinned += 1;
        }
        self.routers.insert(
            device,
            Router {
                managed,
                pinned,
                session: None,
            },
        );
    }

    /// A session started with this place in line (an unknown router is added, managed and
    /// unpinned). A router whose session is already live keeps it.
    pub fn start_session(&mut self, device: DeviceId, place: u64) -> Changes {
        self.add_router(device, true, false);
        self.change(device, |router| {
            if router.session.is_none() {
                router.session = Some(place);
            }
        })
    }

    /// The session is over (its linger expired).
    pub fn end_session(&mut self, device: DeviceId) -> Changes {
        self.change(device, |router| router.session = None)
    }

    /// Unmanaged routers never hold a seat. A router managed again takes `place`, the end of the
    /// line, if its session is live.
    pub fn set_managed(&mut self, device: DeviceId, managed: bool, place: u64) -> Changes {
        self.change(device, |router| {
            if managed && !router.managed && router.session.is_some() {
                router.session = Some(place);
            }
            router.managed = managed;
        })
    }

    /// Pinned routers stand ahead of all others. Refused if more managed routers would be pinned
    /// than there are seats.
    pub fn set_pinned(&mut self, device: DeviceId, pinned: bool) -> Result<Changes, PoolError> {
        let router = self.routers.get(&device).ok_or(PoolError::UnknownRouter)?;
        let wanted = self.pinned + 1;
        if pinned && !router.pinned && router.managed && !self.capacity.admits(wanted) {
            return Err(PoolError::PinsExceedCapacity {
                pinned: wanted,
                capacity: self.capacity,
            });
        }
        Ok(self.change(device, |router| router.pinned = pinned))
    }

    /// Forgets a deleted router.
    pub fn remove_router(&mut self, device: DeviceId) -> Changes {
        let mut changes = self.change(device, |router| router.session = None);
        if let Some(router) = self.routers.remove(&device) {
            if router.managed && router.pinned {
                self.pinned -= 1;
            }
            for transition in &mut changes.transitions {
                if transition.device == device {
                    transition.reason = LicenseReason::ReleasedDeleted;
                }
            }
        }
        changes
    }

    pub fn set_capacity(&mut self, capacity: Capacity) -> Changes {
        let before = self.capacity;
        if before == capacity {
            return Changes::default();
        }
        self.capacity = capacity;
        let licensed_before = self.licensed.len();
        let mut moves = Moves::default();
        self.rebalance(LicenseReason::ShedCapacityDropped, &mut moves);
        let mut changes = self.finish(moves, None, licensed_before, true);
        changes.events.insert(
            0,
            PoolEvent::CapacityChanged {
                from: before,
                to: capacity,
            },
        );
        if let Capacity::Limited(seats) = capacity
            && self.pinned > seats
        {
            changes.events.push(PoolEvent::PinsExceedCapacity {
                pinned: self.pinned,
                capacity: seats,
            });
        }
        changes
    }

    /// Applies `edit` to one router and rebalances the line around the result.
    fn change(&mut self, device: DeviceId, edit: impl FnOnce(&mut Router)) -> Changes {
        let Some(router) = self.routers.get_mut(&device) else {
            return Changes::default();
        };
        let before_router = *router;
        edit(router);
        let after_router = *router;
        if before_router == after_router {
            return Changes::default();
        }
        let was_pinned = before_router.managed && before_router.pinned;
        let is_pinned = after_router.managed && after_router.pinned;
        match (was_pinned, is_pinned) {
            (false, true) => self.pinned += 1,
            (true, false) => self.pinned -= 1,
            _ => {}
        }
        let from = self.state_of(device, before_router);
        let licensed_before = self.licensed.len();
        let mut moves = Moves::default();
        let old_key = before_router.key(device);
        let new_key = after_router.key(device);
        // Out of the line, and back in at its new place on the excess side (where a newcomer
        // belongs until the rebalance says otherwise) or on the side it was on.
        let was_licensed = old_key.is_some_and(|key| self.licensed.remove(&key));
        if let Some(key) = old_key {
            self.excess.remove(&key);
        }
        if let Some(key) = new_key {
            if was_licensed {
                self.licensed.insert(key);
            } else {
                self.excess.insert(key);
            }
        }
        self.rebalance(LicenseReason::ShedPinnedPriority, &mut moves);
        let to = self.state_of(device, after_router);
        let own = (from != to).then(|| Transition {
            device,
            from,
            to,
            reason: own_reason(from, to),
        });
        self.finish(moves, own, licensed_before, false)
    }

    fn state_of(&self, device: DeviceId, router: Router) -> LicenseState {
        match router.key(device) {
            None if !router.managed => LicenseState::Unmanaged,
            None => LicenseState::Inactive,
            Some(key) if self.licensed.contains(&key) => LicenseState::Licensed,
            Some(_) => LicenseState::Excess,
        }
    }

    /// Moves routers across the boundary until the licensed side holds exactly the first
    /// `capacity` of the line.
    fn rebalance(&mut self, shed_reason: LicenseReason, moves: &mut Moves) {
        let seats = self
            .capacity
            .seats_for(self.licensed.len() + self.excess.len());
        while self.licensed.len() > seats {
            let last = self.licensed.pop_last().expect("more licensed than seats");
            self.excess.insert(last);
            moves.record(
                last.device,
                LicenseState::Licensed,
                LicenseState::Excess,
                shed_reason,
            );
        }
        while self.licensed.len() < seats {
            let first = self.excess.pop_first().expect("fewer licensed than seats");
            self.licensed.insert(first);
            moves.record(
                first.device,
                LicenseState::Excess,
                LicenseState::Licensed,
                LicenseReason::Restored,
            );
        }
        while let (Some(&last), Some(&first)) = (self.licensed.last(), self.excess.first()) {
            if first > last {
                break;
            }
            self.licensed.remove(&last);
            self.excess.remove(&first);
            self.licensed.insert(first);
            self.excess.insert(last);
            moves.record(
                first.device,
                LicenseState::Excess,
                LicenseState::Licensed,
                LicenseReason::Restored,
            );
            moves.record(
                last.device,
                LicenseState::Licensed,
                LicenseState::Excess,
                shed_reason,
            );
        }
    }

    /// The net transitions of a change (the changed router's own first), and the pool events it
    /// caused: the limit is reached when the last seat is taken, or when a new capacity is full.
    fn finish(
        &self,
        moves: Moves,
        own: Option<Transition>,
        licensed_before: usize,
        capacity_changed: bool,
    ) -> Changes {
        let own_device = own.map(|t| t.device);
        let mut transitions: Vec<Transition> = own.into_iter().collect();
        transitions.extend(
            moves
                .net()
                .into_iter()
                .filter(|t| Some(t.device) != own_device),
        );
        let mut events = Vec::new();
        if let Capacity::Limited(seats) = self.capacity
            && seats > 0
            && self.licensed.len() as u64 == seats
            && (licensed_before < self.licensed.len() || capacity_changed)
        {
            events.push(PoolEvent::LimitReached { capacity: seats });
        }
        Changes {
            transitions,
            events,
        }
    }
}

/// Why the changed router itself moved (never called for a router that stayed put).
fn own_reason(from: LicenseState, to: LicenseState) -> LicenseReason {
    use LicenseState::*;
    match (from, to) {
        (_, Unmanaged) => LicenseReason::ReleasedUnmanaged,
        (_, Inactive) => LicenseReason::ReleasedLingerExpired,
        (Inactive | Unmanaged, Licensed) => LicenseReason::Granted,
        (Inactive | Unmanaged, Excess) => LicenseReason::DeniedPoolFull,
        (Excess, Licensed) => LicenseReason::Restored,
        // A router that gave up its pin falls behind the pinned ones.
        (Licensed | Excess, _) => LicenseReason::ShedPinnedPriority,
    }
}

/// Every move made while rebalancing, reduced to each router's net change.
#[derive(Default)]
struct Moves(Vec<Transition>);

impl Moves {
    fn record(
        &mut self,
        device: DeviceId,
        from: LicenseState,
        to: LicenseState,
        reason: LicenseReason,
    ) {
        self.0.push(Transition {
            device,
            from,
            to,
            reason,
        });
    }

    fn net(self) -> Vec<Transition> {
        let mut first_from: HashMap<DeviceId, LicenseState> = HashMap::new();
        let mut last: HashMap<DeviceId, Transition> = HashMap::new();
        let mut order = Vec::new();
        for transition in self.0 {
            first_from.entry(transition.device).or_insert_with(|| {
                order.push(transition.device);
                transition.from
            });
            last.insert(transition.device, transition);
        }
        order
            .into_iter()
            .filter_map(|device| {
                let last = last[&device];
                let from = first_from[&device];
                (from != last.to).then_some(Transition { from, ..last })
            })
            .collect()
    }
}
