//! Rolling a job out in phases: how many executions may start now, when a phase is done and the
//! next may begin, and when failures abort the rest. Pure: the server tallies executions and
//! asks; the answer depends on nothing else.
//!
//! - **Phases** are cumulative: each names how many of the rollout's routers it reaches, as a
//!   count or a percentage of all of them, and the last one always reaches every router (routers
//!   that join the target group later join the last phase).
//! - **Concurrency**: at most `max_concurrent` executions in flight (sent, downloading,
//!   installing) at once.
//! - **Advancing**: a phase is done when none of its executions waits to be sent or is in flight
//!   (routers waiting for a license are counted apart: they neither hold a phase back nor count
//!   as failures, but the rollout completes only once none is left waiting). The next phase starts if the share of successes among the phase's finished
//!   executions reaches the success threshold; otherwise the rollout pauses for an operator.
//! - **Aborting**: once at least [`MIN_FINISHED_FOR_ABORT`] executions finished, a share of
//!   failures (failed or timed out, retries spent) at or above the failure threshold aborts the
//!   rollout: nothing more starts, what is in flight runs to its end.

use serde::{Deserialize, Serialize};

use super::ExecutionState;

/// Finished executions needed before the failure share can abort a rollout: the first failure
/// of a rollout is not 100 % of anything worth stopping for.
pub const MIN_FINISHED_FOR_ABORT: u32 = 10;

/// How far a phase reaches: a number of routers, or a percentage of all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseSize {
    Count(u32),
    Percent(u8),
}

impl PhaseSize {
    /// How many of `total` routers the phase reaches (a percentage rounds up, so 1 % of 50
    /// routers is one router, not none).
    pub fn of(self, total: u32) -> u32 {
        match self {
            PhaseSize::Count(count) => count.min(total),
            PhaseSize::Percent(percent) => {
                let percent = u64::from(percent.min(100));
                u32::try_from((u64::from(total) * percent).div_ceil(100)).unwrap_or(total)
            }
        }
    }
}

/// How a rollout proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// Cumulative reach of each phase; empty: one phase of everyone.
    pub phases: Vec<PhaseSize>,
    /// At most this many executions in flight at once; `None`: no limit.
    pub max_concurrent: Option<u32>,
    /// Percentage of a phase's finished executions that must succeed for the next phase to start.
    pub success_threshold_percent: u8,
    /// Percentage of finished executions that, once failed, aborts the rollout.
    pub failure_threshold_percent: u8,
}

impl RolloutPolicy {
    /// Where each phase ends in the rollout's order of routers, for `total` routers: strictly
    /// increasing, the last equal to `total`. A phase that reaches no further than the one
    /// before is left out; the first that reaches everyone is the last.
    pub fn phase_ends(&self, total: u32) -> Vec<u32> {
        let mut ends = Vec::with_capacity(self.phases.len() + 1);
        for phase in &self.phases {
            let end = phase.of(total);
            if end >= total {
                break;
            }
            if end > ends.last().copied().unwrap_or(0) {
                ends.push(end);
            }
        }
        ends.push(total);
        ends
    }

    /// The phase (from 0) of the router at `position` (from 0) in the rollout's order; routers
    /// beyond the planned total (late joiners) belong to the last phase.
    pub fn phase_of(&self, position: u32, total: u32) -> usize {
        let ends = self.phase_ends(total);
        ends.iter()
            .position(|end| position < *end)
            .unwrap_or(ends.len() - 1)
    }
}

/// The executions of one phase, by where they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTally {
    /// Queued or waiting for a maintenance window: may be sent.
    pub ready: u32,
    /// Waiting for their router to get a seat: counted apart.
    pub waiting_for_license: u32,
    pub in_flight: u32,
    pub succeeded: u32,
    /// Failed or timed out with no retry left.
    pub failed: u32,
    /// Cancelled or expired.
    pub dropped: u32,
}

impl PhaseTally {
    /// Counts `count` executions in `state`; `released`: the rollout already let them start
    /// (they count against the concurrency until they end, even before they are sent).
    pub fn add(&mut self, state: ExecutionState, released: bool, count: u32) {
        use ExecutionState as S;
        let bucket = match state {
            S::Queued | S::WaitingForWindow if released => &mut self.in_flight,
            S::Queued | S::WaitingForWindow => &mut self.ready,
            S::WaitingForLicense => &mut self.waiting_for_license,
            S::Sent | S::Downloading | S::Installing => &mut self.in_flight,
            S::Succeeded => &mut self.succeeded,
            S::Failed | S::TimedOut => &mut self.failed,
            S::Cancelled | S::Expired => &mut self.dropped,
        };
        *bucket += count;
    }

    fn finished(&self) -> u32 {
        self.succeeded + self.failed
    }

    /// Nothing of it waits to start or runs.
    pub fn is_done(&self) -> bool {
        self.ready == 0 && self.in_flight == 0
    }
}

/// Where a rollout stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Running,
    /// An operator paused it, or a phase missed the success threshold.
    Paused,
    Completed,
    /// The failure threshold was reached.
    Aborted,
    Cancelled,
}

impl RolloutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Running => "running",
            RolloutStatus::Paused => "paused",
            RolloutStatus::Completed => "completed",
            RolloutStatus::Aborted => "aborted",
            RolloutStatus::Cancelled => "cancelled",
        }
    }

    /// Nothing more starts, ever.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutStatus::Completed | RolloutStatus::Aborted | RolloutStatus::Cancelled
        )
    }
}

/// Why the plan changed the rollout's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// The phase finished with enough successes: the next begins.
    Advanced { to_phase: usize },
    /// The phase finished below the success threshold (successes, finished).
    HeldBelowSuccessThreshold { succeeded: u32, finished: u32 },
    /// Failures reached the threshold (failed, finished).
    Aborted { failed: u32, finished: u32 },
    /// Every phase finished.
    Completed,
}

/// What the server should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub status: RolloutStatus,
    pub phase: usize,
    /// How many ready executions of phases up to `phase` to send now, oldest first.
    pub start: u32,
    pub change: Option<StatusChange>,
}

/// Decides, for a rollout in `status` at `phase` whose executions stand as `tallies` (one per
/// phase, as [`RolloutPolicy::phase_ends`] cuts them), what happens now. `open_ended`: the
/// rollout targets a group or tag, so routers joining later keep the last phase open.
pub fn plan(
    policy: &RolloutPolicy,
    status: RolloutStatus,
    phase: usize,
    tallies: &[PhaseTally],
    open_ended: bool,
) -> Plan {
    let hold = |status, change| Plan {
        status,
        phase,
        start: 0,
        change,
    };
    if status != RolloutStatus::Running || tallies.is_empty() {
        return hold(status, None);
    }
    let last = tallies.len() - 1;
    let phase = phase.min(last);
    let failed: u32 = tallies.iter().map(|t| t.failed).sum();
    let finished: u32 = tallies.iter().map(PhaseTally::finished).sum();
    if finished >= MIN_FINISHED_FOR_ABORT
        && u64::from(failed) * 100
            >= u64::from(policy.failure_threshold_percent) * u64::from(finished)
    {
        return hold(
            RolloutStatus::Aborted,
            Some(StatusChange::Aborted { failed, finished }),
        );
    }
    let mut phase = phase;
    let mut change = None;
    loop {
        let current = tallies[phase];
        if !current.is_done() {
            break;
        }
        let phase_finished = current.finished();
        if u64::from(current.succeeded) * 100
            < u64::from(policy.success_threshold_percent) * u64::from(phase_finished)
        {
            return Plan {
                status: RolloutStatus::Paused,
                phase,
                start: 0,
                change: Some(StatusChange::HeldBelowSuccessThreshold {
                    succeeded: current.succeeded,
                    finished: phase_finished,
                }),
            };
        }
        if phase == last {
            // Routers waiting for a seat are still to be rolled out to once they get one.
            if open_ended || tallies.iter().any(|t| t.waiting_for_license > 0) {
                break;
            }
            return Plan {
                status: RolloutStatus::Completed,
                phase,
                start: 0,
                change: Some(StatusChange::Completed),
            };
        }
        phase += 1;
        change = Some(StatusChange::Advanced { to_phase: phase });
    }
    let in_flight: u32 = tallies.iter().map(|t| t.in_flight).sum();
    let ready: u32 = tallies[..=phase].iter().map(|t| t.ready).sum();
    let room = policy
        .max_concurrent
        .map_or(u32::MAX, |max| max.saturating_sub(in_flight));
    Plan {
        status: RolloutStatus::Running,
        phase,
        start: ready.min(room),
        change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(phases: Vec<PhaseSize>) -> RolloutPolicy {
        RolloutPolicy {
            phases,
            max_concurrent: Some(50),
            success_threshold_percent: 90,
            failure_threshold_percent: 20,
        }
    }

    fn ready(count: u32) -> PhaseTally {
        PhaseTally {
            ready: count,
            ..PhaseTally::default()
        }
    }

    fn done(succeeded: u32, failed: u32) -> PhaseTally {
        PhaseTally {
            succeeded,
            failed,
            ..PhaseTally::default()
        }
    }

    #[test]
    fn phases_are_cumulative_and_the_last_reaches_everyone() {
        let p = policy(vec![
            PhaseSize::Count(10),
            PhaseSize::Percent(10),
            PhaseSize::Percent(50),
        ]);
        assert_eq!(p.phase_ends(1000), vec![10, 100, 500, 1000]);
        // 10 % of 50 reaches no further than the 10 before it.
        assert_eq!(p.phase_ends(50), vec![10, 25, 50]);
        assert_eq!(p.phase_ends(8), vec![8], "10 routers already reach all 8");
        assert_eq!(policy(vec![]).phase_ends(7), vec![7]);
        assert_eq!(p.phase_of(0, 1000), 0);
        assert_eq!(p.phase_of(10, 1000), 1);
        assert_eq!(p.phase_of(999, 1000), 3);
        assert_eq!(
            p.phase_of(1500, 1000),
            3,
            "late joiners join the last phase"
        );
    }

    #[test]
    fn a_phase_starts_no_more_than_the_concurrency_allows() {
        let p = policy(vec![PhaseSize::Count(100)]);
        let plan = plan(
            &p,
            RolloutStatus::Running,
            0,
            &[ready(100), ready(900)],
            false,
        );
        assert_eq!((plan.start, plan.phase), (50, 0));
        let busy = PhaseTally {
            ready: 60,
            in_flight: 40,
            ..PhaseTally::default()
        };
        let plan = super::plan(&p, RolloutStatus::Running, 0, &[busy, ready(900)], false);
        assert_eq!(
            plan.start, 10,
            "only phase 0's routers, within 50 in flight"
        );
    }

    #[test]
    fn a_successful_phase_opens_the_next() {
        let p = policy(vec![PhaseSize::Count(100)]);
        let plan = plan(
            &p,
            RolloutStatus::Running,
            0,
            &[done(95, 5), ready(900)],
            false,
        );
        assert_eq!(plan.phase, 1);
        assert_eq!(plan.start, 50);
        assert_eq!(plan.change, Some(StatusChange::Advanced { to_phase: 1 }));
    }

    #[test]
    fn a_phase_below_the_success_threshold_pauses_the_rollout() {
        let p = RolloutPolicy {
            failure_threshold_percent: 100,
            ..policy(vec![PhaseSize::Count(100)])
        };
        let plan = plan(
            &p,
            RolloutStatus::Running,
            0,
            &[done(85, 15), ready(900)],
            false,
        );
        assert_eq!(plan.status, RolloutStatus::Paused);
        assert_eq!(
            plan.change,
            Some(StatusChange::HeldBelowSuccessThreshold {
                succeeded: 85,
                finished: 100
            })
        );
    }

    #[test]
    fn routers_waiting_for_a_license_hold_nothing_back_and_are_no_failures() {
        let p = policy(vec![PhaseSize::Count(100)]);
        let phase_zero = PhaseTally {
            waiting_for_license: 30,
            ..done(70, 0)
        };
        let plan = plan(
            &p,
            RolloutStatus::Running,
            0,
            &[phase_zero, ready(900)],
            false,
        );
        assert_eq!((plan.phase, plan.start), (1, 50));
        let last = plan_last_with_waiting(&p);
        assert_eq!(
            (last.status, last.start),
            (RolloutStatus::Running, 0),
            "not complete while routers wait for a seat"
        );
    }

    fn plan_last_with_waiting(p: &RolloutPolicy) -> Plan {
        let waiting = PhaseTally {
            waiting_for_license: 3,
            ..done(97, 0)
        };
        plan(
            p,
            RolloutStatus::Running,
            1,
            &[done(100, 0), waiting],
            false,
        )
    }

    #[test]
    fn failures_at_the_threshold_abort_once_enough_finished() {
        let p = policy(vec![PhaseSize::Count(100)]);
        let early = PhaseTally {
            ready: 91,
            ..done(7, 2)
        };
        let plan = plan(&p, RolloutStatus::Running, 0, &[early, ready(900)], false);
        assert_eq!(
            plan.status,
            RolloutStatus::Running,
            "9 finished: too few to judge"
        );
        let late = PhaseTally {
            ready: 80,
            ..done(16, 4)
        };
        let plan = super::plan(&p, RolloutStatus::Running, 0, &[late, ready(900)], false);
        assert_eq!(plan.status, RolloutStatus::Aborted);
        assert_eq!(plan.start, 0);
        assert_eq!(
            plan.change,
            Some(StatusChange::Aborted {
                failed: 4,
                finished: 20
            })
        );
    }

    #[test]
    fn the_last_phase_completes_a_fixed_rollout_and_stays_open_for_a_group() {
        let p = policy(vec![PhaseSize::Count(10)]);
        let all_done = [done(10, 0), done(90, 0)];
        let fixed = plan(&p, RolloutStatus::Running, 1, &all_done, false);
        assert_eq!(fixed.status, RolloutStatus::Completed);
        let open = plan(&p, RolloutStatus::Running, 1, &all_done, true);
        assert_eq!((open.status, open.start), (RolloutStatus::Running, 0));
        let joined = [
            done(10, 0),
            PhaseTally {
                ready: 2,
                ..done(90, 0)
            },
        ];
        let open = plan(&p, RolloutStatus::Running, 1, &joined, true);
        assert_eq!(
            open.start, 2,
            "a router that joined the group is rolled out to"
        );
    }

    #[test]
    fn executions_count_where_the_rollout_needs_them() {
        use ExecutionState as S;
        let mut tally = PhaseTally::default();
        tally.add(S::Queued, false, 5);
        tally.add(S::WaitingForWindow, false, 1);
        tally.add(S::Queued, true, 2);
        tally.add(S::Sent, true, 3);
        tally.add(S::WaitingForLicense, true, 4);
        tally.add(S::TimedOut, true, 1);
        tally.add(S::Failed, true, 1);
        tally.add(S::Expired, false, 2);
        tally.add(S::Succeeded, true, 7);
        assert_eq!(
            tally,
            PhaseTally {
                ready: 6,
                waiting_for_license: 4,
                in_flight: 5,
                succeeded: 7,
                failed: 2,
                dropped: 2,
            }
        );
    }

    #[test]
    fn a_paused_or_final_rollout_starts_nothing() {
        let p = policy(vec![]);
        for status in [
            RolloutStatus::Paused,
            RolloutStatus::Aborted,
            RolloutStatus::Cancelled,
            RolloutStatus::Completed,
        ] {
            let plan = plan(&p, status, 0, &[ready(10)], false);
            assert_eq!((plan.status, plan.start), (status, 0));
        }
    }

    proptest! {
        #[test]
        fn a_plan_never_exceeds_the_concurrency_or_starts_beyond_its_phase(
            phases in prop::collection::vec((0u32..6, 0u32..6, 0u32..6, 0u32..4), 1..5),
            phase in 0usize..5,
            max_concurrent in 1u32..20,
        ) {
            let tallies: Vec<PhaseTally> = phases
                .iter()
                .map(|(ready, in_flight, succeeded, failed)| PhaseTally {
                    ready: *ready,
                    in_flight: *in_flight,
                    succeeded: *succeeded,
                    failed: *failed,
                    ..PhaseTally::default()
                })
                .collect();
            let p = RolloutPolicy {
                max_concurrent: Some(max_concurrent),
                ..policy(vec![])
            };
            let plan = plan(&p, RolloutStatus::Running, phase, &tallies, false);
            let in_flight: u32 = tallies.iter().map(|t| t.in_flight).sum();
            prop_assert!(plan.start + in_flight <= max_concurrent.max(in_flight));
            let reachable: u32 = tallies[..=plan.phase.min(tallies.len() - 1)]
                .iter()
                .map(|t| t.ready)
                .sum();
            prop_assert!(plan.start <= reachable);
            prop_assert!(plan.phase >= phase.min(tallies.len() - 1));
            if plan.status != RolloutStatus::Running {
                prop_assert_eq!(plan.start, 0);
            }
        }
    }
}
