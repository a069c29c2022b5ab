//! The pool against a reference model that recomputes every router's state from scratch after
//! each step: random sequences of sessions starting and ending, management, pins, deletions and
//! capacity changes must leave both in the same state, with the transitions and reasons the rule
//! prescribes.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::license::Capacity;
use super::pool::{LicenseReason, LicenseState, Pool, PoolError, Transition};
use crate::DeviceId;

#[derive(Debug, Clone)]
enum Step {
    Start(usize),
    End(usize),
    Manage(usize, bool),
    Pin(usize, bool),
    Remove(usize),
    Capacity(Capacity),
}

const ROUTERS: usize = 12;

fn step() -> impl Strategy<Value = Step> {
    let router = 0..ROUTERS;
    prop_oneof![
        4 => router.clone().prop_map(Step::Start),
        3 => router.clone().prop_map(Step::End),
        1 => (router.clone(), any::<bool>()).prop_map(|(r, m)| Step::Manage(r, m)),
        1 => (router.clone(), any::<bool>()).prop_map(|(r, p)| Step::Pin(r, p)),
        1 => router.prop_map(Step::Remove),
        1 => prop_oneof![
            6 => (0u64..10).prop_map(Capacity::Limited),
            1 => Just(Capacity::Unlimited),
        ]
        .prop_map(Step::Capacity),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelRouter {
    managed: bool,
    pinned: bool,
    session: Option<u64>,
}

/// The rule written as plainly as possible.
#[derive(Debug)]
struct Model {
    capacity: Capacity,
    routers: BTreeMap<DeviceId, ModelRouter>,
}

impl Model {
    fn states(&self) -> HashMap<DeviceId, LicenseState> {
        let mut line: Vec<(bool, u64, DeviceId)> = self
            .routers
            .iter()
            .filter(|(_, r)| r.managed)
            .filter_map(|(d, r)| r.session.map(|place| (!r.pinned, place, *d)))
            .collect();
        line.sort();
        let seats = self.capacity.seats_for(line.len());
        let mut states: HashMap<DeviceId, LicenseState> = self
            .routers
            .iter()
            .map(|(d, r)| {
                let state = if r.managed {
                    LicenseState::Inactive
                } else {
                    LicenseState::Unmanaged
                };
                (*d, state)
            })
            .collect();
        for (i, (_, _, device)) in line.into_iter().enumerate() {
            let state = if i < seats {
                LicenseState::Licensed
            } else {
                LicenseState::Excess
            };
            states.insert(device, state);
        }
        states
    }

    fn pinned(&self) -> u64 {
        self.routers
            .values()
            .filter(|r| r.managed && r.pinned)
            .count() as u64
    }
}

/// The reason the rule gives a router that moved from `from` to `to` in `step`.
fn expected_reason(step: &Step, own: bool, from: LicenseState, to: LicenseState) -> LicenseReason {
    use LicenseState::*;
    if own {
        return match (step, from, to) {
            (Step::Remove(_), _, _) => LicenseReason::ReleasedDeleted,
            (_, _, Unmanaged) => LicenseReason::ReleasedUnmanaged,
            (_, _, Inactive) => LicenseReason::ReleasedLingerExpired,
            (_, Inactive | Unmanaged, Licensed) => LicenseReason::Granted,
            (_, Inactive | Unmanaged, Excess) => LicenseReason::DeniedPoolFull,
            (_, Excess, Licensed) => LicenseReason::Restored,
            _ => LicenseReason::ShedPinnedPriority,
        };
    }
    match (step, to) {
        (_, Licensed) => LicenseReason::Restored,
        (Step::Capacity(_), _) => LicenseReason::ShedCapacityDropped,
        _ => LicenseReason::ShedPinnedPriority,
    }
}

fn run(steps: Vec<Step>) {
    let devices: Vec<DeviceId> = (0..ROUTERS).map(|_| DeviceId::new()).collect();
    let mut pool = Pool::new(Capacity::Limited(3));
    let mut model = Model {
        capacity: Capacity::Limited(3),
        routers: BTreeMap::new(),
    };
    let mut next_place = 0u64;
    for (n, step) in steps.iter().enumerate() {
        let before = model.states();
        let mut own_device = None;
        let changes = match *step {
            Step::Start(i) => {
                let device = devices[i];
                own_device = Some(device);
                next_place += 1;
                let router = model.routers.entry(device).or_insert(ModelRouter {
                    managed: true,
                    pinned: false,
                    session: None,
                });
                router.session.get_or_insert(next_place);
                pool.start_session(device, next_place)
            }
            Step::End(i) => {
                let device = devices[i];
                own_device = Some(device);
                if let Some(router) = model.routers.get_mut(&device) {
                    router.session = None;
                }
                pool.end_session(device)
            }
            Step::Manage(i, managed) => {
                let device = devices[i];
                own_device = Some(device);
                next_place += 1;
                if let Some(router) = model.routers.get_mut(&device) {
                    if managed && !router.managed && router.session.is_some() {
                        router.session = Some(next_place);
                    }
                    router.managed = managed;
                }
                pool.set_managed(device, managed, next_place)
            }
            Step::Pin(i, pinned) => {
                let device = devices[i];
                own_device = Some(device);
                let result = pool.set_pinned(device, pinned);
                match model.routers.get_mut(&device) {
                    None => {
                        assert_eq!(result, Err(PoolError::UnknownRouter));
                        continue;
                    }
                    Some(router) => {
                        let refused = pinned && !router.pinned && router.managed && {
                            let wanted = model
                                .routers
                                .values()
                                .filter(|r| r.managed && r.pinned)
                                .count() as u64
                                + 1;
                            !model.capacity.admits(wanted)
                        };
                        if refused {
                            assert!(
                                matches!(result, Err(PoolError::PinsExceedCapacity { .. })),
                                "step {n}: {result:?}"
                            );
                            continue;
                        }
                        let router = model.routers.get_mut(&device).unwrap();
                        router.pinned = pinned;
                        result.expect("pin accepted")
                    }
                }
            }
            Step::Remove(i) => {
                let device = devices[i];
                own_device = Some(device);
                model.routers.remove(&device);
                pool.remove_router(device)
            }
            Step::Capacity(capacity) => {
                model.capacity = capacity;
                pool.set_capacity(capacity)
            }
        };
        let after = model.states();
        for (device, state) in &after {
            assert_eq!(
                pool.state(*device),
                Some(*state),
                "step {n} {step:?}: {device} in {model:?}"
            );
        }
        for device in &devices {
            if !after.contains_key(device) {
                assert_eq!(pool.state(*device), None, "step {n}: a removed router");
            }
        }
        // A pool rebuilt from the stored routers is the same pool.
        let rebuilt = Pool::rebuild(pool.capacity(), pool.routers());
        for device in &devices {
            assert_eq!(
                rebuilt.state(*device),
                pool.state(*device),
                "step {n}: rebuilt"
            );
        }
        assert_eq!(rebuilt.counts(), pool.counts(), "step {n}: rebuilt");
        let counts = pool.counts();
        let count = |wanted| after.values().filter(|s| **s == wanted).count() as u64;
        assert_eq!(counts.licensed, count(LicenseState::Licensed), "step {n}");
        assert_eq!(counts.excess, count(LicenseState::Excess), "step {n}");
        assert_eq!(counts.pinned, model.pinned(), "step {n}");

        // Exactly the routers whose state differs, each once, with the rule's reason.
        let mut expected: Vec<Transition> = before
            .iter()
            .filter_map(|(device, from)| {
                // A deleted router that held a seat or stood in line gives it up; one without a
                // session had nothing to give up.
                let to = after.get(device).copied().unwrap_or(match from {
                    LicenseState::Licensed | LicenseState::Excess => LicenseState::Inactive,
                    other => *other,
                });
                (*from != to).then_some(Transition {
                    device: *device,
                    from: *from,
                    to,
                    reason: expected_reason(step, Some(*device) == own_device, *from, to),
                })
            })
            .collect();
        for (device, to) in &after {
            if !before.contains_key(device) && *to != LicenseState::Inactive {
                expected.push(Transition {
                    device: *device,
                    from: LicenseState::Inactive,
                    to: *to,
                    reason: expected_reason(step, true, LicenseState::Inactive, *to),
                });
            }
        }
        let mut actual = changes.transitions.clone();
        expected.sort_by_key(|t| t.device);
        actual.sort_by_key(|t| t.device);
        assert_eq!(actual, expected, "step {n} {step:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_pool_agrees_with_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(steps);
    }
}

#[test]
fn a_full_pool_sheds_the_last_in_line_when_capacity_drops_and_restores_oldest_first() {
    let routers: Vec<DeviceId> = (0..20).map(|_| DeviceId::new()).collect();
    let mut pool = Pool::new(Capacity::Limited(15));
    for (place, device) in routers.iter().enumerate() {
        pool.start_session(*device, place as u64);
    }
    assert_eq!(pool.licensed().collect::<Vec<_>>(), routers[..15]);
    let shed = pool.set_capacity(Capacity::Limited(5));
    let mut shed_devices: Vec<DeviceId> = shed.transitions.iter().map(|t| t.device).collect();
    shed_devices.sort();
    let mut expected = routers[5..15].to_vec();
    expected.sort();
    assert_eq!(shed_devices, expected);
    assert!(
        shed.transitions
            .iter()
            .all(|t| t.reason == LicenseReason::ShedCapacityDropped)
    );
    let restored = pool.set_capacity(Capacity::Limited(15));
    assert_eq!(
        restored
            .transitions
            .iter()
            .map(|t| t.device)
            .collect::<Vec<_>>(),
        routers[5..15],
        "oldest first"
    );
}

#[test]
fn a_pinned_router_takes_the_seat_of_the_last_unpinned_one() {
    let routers: Vec<DeviceId> = (0..4).map(|_| DeviceId::new()).collect();
    let mut pool = Pool::new(Capacity::Limited(3));
    pool.add_router(routers[3], true, false);
    pool.set_pinned(routers[3], true).unwrap();
    for (place, device) in routers[..3].iter().enumerate() {
        pool.start_session(*device, place as u64);
    }
    let changes = pool.start_session(routers[3], 10);
    assert_eq!(
        changes.transitions,
        vec![
            Transition {
                device: routers[3],
                from: LicenseState::Inactive,
                to: LicenseState::Licensed,
                reason: LicenseReason::Granted,
            },
            Transition {
                device: routers[2],
                from: LicenseState::Licensed,
                to: LicenseState::Excess,
                reason: LicenseReason::ShedPinnedPriority,
            },
        ]
    );
}

#[test]
fn pins_beyond_capacity_are_refused_and_a_drop_below_them_is_an_event() {
    let routers: Vec<DeviceId> = (0..3).map(|_| DeviceId::new()).collect();
    let mut pool = Pool::new(Capacity::Limited(2));
    for device in &routers {
        pool.add_router(*device, true, false);
    }
    pool.set_pinned(routers[0], true).unwrap();
    pool.set_pinned(routers[1], true).unwrap();
    assert_eq!(
        pool.set_pinned(routers[2], true),
        Err(PoolError::PinsExceedCapacity {
            pinned: 3,
            capacity: Capacity::Limited(2)
        })
    );
    let changes = pool.set_capacity(Capacity::Limited(1));
    assert!(
        changes
            .events
            .contains(&super::pool::PoolEvent::PinsExceedCapacity {
                pinned: 2,
                capacity: 1
            })
    );
}
