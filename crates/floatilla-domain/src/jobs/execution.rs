//! One router's execution of a job, and the only ways it may move.
//!
//! ```text
//!   queued ⇄ waiting_for_license        (the router lost or regained its seat)
//!   queued ⇄ waiting_for_window         (its maintenance window closed or opened)
//!   queued → sent → downloading → installing → succeeded | failed
//!                 ↘──────────────↘ installing, succeeded, failed (a job without an artifact)
//!   sent, downloading, installing → timed_out        (the timeout runs from sent)
//!   queued, waiting_for_* → cancelled | expired      (nothing was sent yet)
//!   failed, timed_out → queued                       (a retry, while retries remain)
//!   sent → queued                                    (never handed to the router)
//! ```
//!
//! Once sent, an execution runs to its end: a router that loses its seat, or a rollout that is
//! cancelled, never cuts off an install halfway; only what was not sent yet stops.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// What a job does on a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    FirmwareUpdate,
    SoftwareInstall,
    SoftwareRemove,
    ConfigUpdate,
    /// Certificates the router uses for its own services (VPN, web interface, CA bundles); the
    /// control channel renews its own credential by itself.
    CertificateUpdate,
    Reboot,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::FirmwareUpdate,
        JobKind::SoftwareInstall,
        JobKind::SoftwareRemove,
        JobKind::ConfigUpdate,
        JobKind::CertificateUpdate,
        JobKind::Reboot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::FirmwareUpdate => "firmware_update",
            JobKind::SoftwareInstall => "software_install",
            JobKind::SoftwareRemove => "software_remove",
            JobKind::ConfigUpdate => "config_update",
            JobKind::CertificateUpdate => "certificate_update",
            JobKind::Reboot => "reboot",
        }
    }

    /// Whether the job carries an artifact the router downloads.
    pub fn needs_artifact(self) -> bool {
        matches!(
            self,
            JobKind::FirmwareUpdate
                | JobKind::SoftwareInstall
                | JobKind::ConfigUpdate
                | JobKind::CertificateUpdate
        )
    }

    /// Whether the router restarts to apply it, so its session must linger through the downtime.
    pub fn restarts_router(self) -> bool {
        matches!(self, JobKind::FirmwareUpdate | JobKind::Reboot)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job kind `{s}` (expected firmware_update, software_install, \
                     software_remove, config_update, certificate_update or reboot)"
                )
            })
    }
}

/// Where one router's execution of a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    Queued,
    WaitingForLicense,
    WaitingForWindow,
    Sent,
    Downloading,
    Installing,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Expired,
}

impl ExecutionState {
    pub const ALL: [ExecutionState; 11] = [
        ExecutionState::Queued,
        ExecutionState::WaitingForLicense,
        ExecutionState::WaitingForWindow,
        ExecutionState::Sent,
        ExecutionState::Downloading,
        ExecutionState::Installing,
        ExecutionState::Succeeded,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
        ExecutionState::TimedOut,
        ExecutionState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Queued => "queued",
            ExecutionState::WaitingForLicense => "waiting_for_license",
            ExecutionState::WaitingForWindow => "waiting_for_window",
            ExecutionState::Sent => "sent",
            ExecutionState::Downloading => "downloading",
            ExecutionState::Installing => "installing",
            ExecutionState::Succeeded => "succeeded",
            ExecutionState::Failed => "failed",
            ExecutionState::Cancelled => "cancelled",
            ExecutionState::TimedOut => "timed_out",
            ExecutionState::Expired => "expired",
        }
    }

    /// Nothing more happens to it (unless a retry queues a failed one again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Succeeded
                | ExecutionState::Failed
                | ExecutionState::Cancelled
                | ExecutionState::TimedOut
                | ExecutionState::Expired
        )
    }

    /// The router has it: it runs to its end whatever happens to the seat or the rollout.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            ExecutionState::Sent | ExecutionState::Downloading | ExecutionState::Installing
        )
    }

    /// Not sent yet.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            ExecutionState::Queued
                | ExecutionState::WaitingForLicense
                | ExecutionState::WaitingForWindow
        )
    }

    /// Ended badly in a way a retry may cure.
    pub fn is_failure(self) -> bool {
        matches!(self, ExecutionState::Failed | ExecutionState::TimedOut)
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExecutionState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown execution state `{s}`"))
    }
}

/// What happens to an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// The router became excess, inactive or unmanaged.
    LicenseLost,
    /// The router holds a seat again.
    LicenseRegained,
    WindowClosed,
    WindowOpened,
    /// The server sent the job to the router.
    Sent,
    /// The router reports it is downloading the artifact.
    Downloading,
    /// The router reports it is applying the change.
    Installing,
    /// The router reports success.
    Succeeded,
    /// The router reports failure.
    Failed,
    /// An operator cancelled the job or its rollout.
    Cancel,
    /// The per-execution timeout passed since it was sent.
    TimedOut,
    /// The job's expiry passed before it was sent.
    Expired,
    /// Queue a failed or timed-out execution again.
    Retry,
    /// The server marked it sent but could not hand it to the router (the session ended or
    /// the router lost its seat first): it waits to be sent again.
    Undelivered,
}

/// A move the state machine does not allow: the caller keeps the state it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an execution that is {from} cannot take {event:?}")]
pub struct InvalidTransition {
    pub from: ExecutionState,
    pub event: ExecutionEvent,
}

impl InvalidTransition {
    pub fn code(&self) -> &'static str {
        "invalid_transition"
    }
}

/// The state `event` moves an execution in `from` to.
pub fn next_state(
    from: ExecutionState,
    event: ExecutionEvent,
) -> Result<ExecutionState, InvalidTransition> {
    use ExecutionEvent as E;
    use ExecutionState as S;
    let to = match (from, event) {
        (S::Queued | S::WaitingForWindow, E::LicenseLost) => S::WaitingForLicense,
        (S::WaitingForLicense, E::LicenseRegained) => S::Queued,
        (S::Queued, E::WindowClosed) => S::WaitingForWindow,
        (S::WaitingForWindow, E::WindowOpened) => S::Queued,
        (S::Queued, E::Sent) => S::Sent,
        (S::Sent, E::Downloading) => S::Downloading,
        (S::Sent | S::Downloading, E::Installing) => S::Installing,
        (S::Sent | S::Downloading | S::Installing, E::Succeeded) => S::Succeeded,
        (S::Sent | S::Downloading | S::Installing, E::Failed) => S::Failed,
        (S::Sent | S::Downloading | S::Installing, E::TimedOut) => S::TimedOut,
        (S::Queued | S::WaitingForLicense | S::WaitingForWindow, E::Cancel) => S::Cancelled,
        (S::Queued | S::WaitingForLicense | S::WaitingForWindow, E::Expired) => S::Expired,
        (S::Failed | S::TimedOut, E::Retry) => S::Queued,
        (S::Sent, E::Undelivered) => S::Queued,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

/// The states `event` moves an execution out of, and the state it moves each to, for events
/// that lead to one state whatever the start (every event a router reports).
pub fn moves(event: ExecutionEvent) -> Vec<(ExecutionState, ExecutionState)> {
    ExecutionState::ALL
        .into_iter()
        .filter_map(|from| next_state(from, event).ok().map(|to| (from, to)))
        .collect()
}

/// Where a pending execution belongs given its router's seat and window: license first (a
/// router without a seat waits for one, whatever the window says).
pub fn pending_state(licensed: bool, window_open: bool) -> ExecutionState {
    match (licensed, window_open) {
        (false, _) => ExecutionState::WaitingForLicense,
        (true, false) => ExecutionState::WaitingForWindow,
        (true, true) => ExecutionState::Queued,
    }
}

/// The deadline an execution in `state` is held to, if any: the job's expiry while pending, the
/// timeout from when it was sent while in flight.
pub fn deadline(
    state: ExecutionState,
    job_expires_at: Option<Timestamp>,
    sent_at: Option<Timestamp>,
    timeout: chrono::Duration,
) -> Option<(Timestamp, ExecutionEvent)> {
    if state.is_pending() {
        job_expires_at.map(|at| (at, ExecutionEvent::Expired))
    } else if state.is_in_flight() {
        sent_at.map(|at| (at + timeout, ExecutionEvent::TimedOut))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExecutionEvent as E;
    use ExecutionState as S;

    const EVENTS: [ExecutionEvent; 14] = [
        E::LicenseLost,
        E::LicenseRegained,
        E::WindowClosed,
        E::WindowOpened,
        E::Sent,
        E::Downloading,
        E::Installing,
        E::Succeeded,
        E::Failed,
        E::Cancel,
        E::TimedOut,
        E::Expired,
        E::Retry,
        E::Undelivered,
    ];

    #[test]
    fn names_round_trip() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>(), Ok(kind));
        }
        for state in ExecutionState::ALL {
            assert_eq!(state.as_str().parse::<ExecutionState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        assert!("upgrade".parse::<JobKind>().is_err());
    }

    #[test]
    fn every_state_is_exactly_one_of_pending_in_flight_or_terminal() {
        for state in ExecutionState::ALL {
            let classes = [
                state.is_pending(),
                state.is_in_flight(),
                state.is_terminal(),
            ];
            assert_eq!(classes.iter().filter(|c| **c).count(), 1, "{state}");
        }
    }

    #[test]
    fn nothing_sent_is_ever_cancelled_expired_or_held_for_a_license() {
        for state in ExecutionState::ALL.into_iter().filter(|s| s.is_in_flight()) {
            for event in [E::Cancel, E::Expired, E::LicenseLost, E::WindowClosed] {
                assert!(next_state(state, event).is_err(), "{state} {event:?}");
            }
        }
    }

    #[test]
    fn terminal_states_are_left_only_by_a_retry_of_a_failure() {
        for state in ExecutionState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in EVENTS {
                let moved = next_state(state, event);
                if state.is_failure() && event == E::Retry {
                    assert_eq!(moved, Ok(S::Queued));
                } else {
                    assert!(moved.is_err(), "{state} {event:?}");
                }
            }
        }
    }

    #[test]
    fn only_a_queued_execution_is_sent() {
        for state in ExecutionState::ALL {
            assert_eq!(
                next_state(state, E::Sent).is_ok(),
                state == S::Queued,
                "{state}"
            );
        }
    }

    #[test]
    fn every_pending_state_is_reachable_and_leads_to_an_end() {
        // From every state some sequence of events reaches a terminal state.
        for state in ExecutionState::ALL {
            let mut frontier = vec![state];
            let mut seen = vec![state];
            let mut ends = false;
            while let Some(current) = frontier.pop() {
                ends |= current.is_terminal();
                for event in EVENTS {
                    if let Ok(next) = next_state(current, event)
                        && !seen.contains(&next)
                    {
                        seen.push(next);
                        frontier.push(next);
                    }
                }
            }
            assert!(ends, "{state} never ends");
        }
    }

    #[test]
    fn a_happy_firmware_update_walks_the_whole_path() {
        let path = [
            (E::Sent, S::Sent),
            (E::Downloading, S::Downloading),
            (E::Installing, S::Installing),
            (E::Succeeded, S::Succeeded),
        ];
        let mut state = S::Queued;
        for (event, expected) in path {
            state = next_state(state, event).unwrap();
            assert_eq!(state, expected);
        }
    }

    #[test]
    fn a_routers_report_leads_to_one_state_from_wherever_it_may_come() {
        for event in [E::Downloading, E::Installing, E::Succeeded, E::Failed] {
            let moves = moves(event);
            assert!(!moves.is_empty());
            assert!(moves.iter().all(|(_, to)| *to == moves[0].1), "{event:?}");
            assert!(
                moves.iter().all(|(from, _)| from.is_in_flight()),
                "{event:?}"
            );
        }
    }

    #[test]
    fn the_seat_decides_before_the_window() {
        assert_eq!(pending_state(false, true), S::WaitingForLicense);
        assert_eq!(pending_state(false, false), S::WaitingForLicense);
        assert_eq!(pending_state(true, false), S::WaitingForWindow);
        assert_eq!(pending_state(true, true), S::Queued);
    }

    #[test]
    fn deadlines_are_the_expiry_before_sending_and_the_timeout_after() {
        let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let timeout = chrono::Duration::seconds(600);
        assert_eq!(
            deadline(S::WaitingForLicense, Some(at(100)), None, timeout),
            Some((at(100), E::Expired))
        );
        assert_eq!(deadline(S::Queued, None, None, timeout), None);
        assert_eq!(
            deadline(S::Installing, Some(at(100)), Some(at(50)), timeout),
            Some((at(650), E::TimedOut))
        );
        assert_eq!(
            deadline(S::Succeeded, Some(at(100)), Some(at(50)), timeout),
            None
        );
    }
}
