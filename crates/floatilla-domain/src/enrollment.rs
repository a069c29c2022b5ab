//! Who may enroll: a tenant's enrollment policy, the enrollment state of each router, and the
//! decision taken when a router presents an enrollment token.

use crate::names::named_enum;

named_enum! {
    /// How a tenant admits new routers.
    pub enum EnrollmentPolicy {
        /// Any router with a valid enrollment token is accepted at once.
        Open = "open",
        /// Routers with a valid token wait, `pending`, until an admin accepts or rejects them.
        Approval = "approval",
        /// Only serials an admin imported beforehand may enroll.
        Preregistered = "preregistered",
    }
}

named_enum! {
    /// Where a router stands in being admitted.
    pub enum EnrollmentState {
        /// Imported by an admin; the router itself has not enrolled yet.
        Preregistered = "preregistered",
        /// Enrolled under the approval policy; its channel is refused until an admin decides.
        Pending = "pending",
        /// Admitted: its channel is served.
        Accepted = "accepted",
        /// Refused by an admin: it cannot enroll or connect until the admin accepts it or
        /// deletes it.
        Rejected = "rejected",
    }
}

/// An admin's decision on an enrolled router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentDecision {
    Accept,
    Reject,
}

impl EnrollmentDecision {
    /// The router's enrollment state after the decision.
    pub fn state(self) -> EnrollmentState {
        match self {
            EnrollmentDecision::Accept => EnrollmentState::Accepted,
            EnrollmentDecision::Reject => EnrollmentState::Rejected,
        }
    }
}

/// Why a router may not enroll (beyond the token's own refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentRefusal {
    /// The serial is enrolled, and the router neither proved it holds its credential nor had
    /// an admin's consent to enroll again.
    AlreadyEnrolled,
    /// The tenant admits only pre-registered serials, and this one is not.
    NotPreregistered,
    /// An admin rejected this serial.
    Rejected,
}

/// What the server knows of a serial that presents a valid enrollment token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownSerial {
    Unknown,
    Known {
        state: EnrollmentState,
        /// The router proved it holds a valid credential, or an admin allowed it to enroll
        /// again without one.
        reenrollment_authorised: bool,
    },
}

/// Decides a valid token's enrollment: the router's enrollment state afterwards, or why not.
pub fn decide_enrollment(
    policy: EnrollmentPolicy,
    serial: KnownSerial,
) -> Result<EnrollmentState, EnrollmentRefusal> {
    match serial {
        KnownSerial::Unknown => match policy {
            EnrollmentPolicy::Open => Ok(EnrollmentState::Accepted),
            EnrollmentPolicy::Approval => Ok(EnrollmentState::Pending),
            EnrollmentPolicy::Preregistered => Err(EnrollmentRefusal::NotPreregistered),
        },
        // Importing a serial is an admin's approval in advance, whatever the policy.
        KnownSerial::Known {
            state: EnrollmentState::Preregistered,
            ..
        } => Ok(EnrollmentState::Accepted),
        KnownSerial::Known {
            state: EnrollmentState::Rejected,
            ..
        } => Err(EnrollmentRefusal::Rejected),
        KnownSerial::Known {
            reenrollment_authorised: false,
            ..
        } => Err(EnrollmentRefusal::AlreadyEnrolled),
        KnownSerial::Known { state, .. } => Ok(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(state: EnrollmentState, authorised: bool) -> KnownSerial {
        KnownSerial::Known {
            state,
            reenrollment_authorised: authorised,
        }
    }

    #[test]
    fn a_new_serial_follows_the_policy() {
        use EnrollmentPolicy::*;
        assert_eq!(
            decide_enrollment(Open, KnownSerial::Unknown),
            Ok(EnrollmentState::Accepted)
        );
        assert_eq!(
            decide_enrollment(Approval, KnownSerial::Unknown),
            Ok(EnrollmentState::Pending)
        );
        assert_eq!(
            decide_enrollment(Preregistered, KnownSerial::Unknown),
            Err(EnrollmentRefusal::NotPreregistered)
        );
    }

    #[test]
    fn a_preregistered_serial_is_accepted_under_every_policy() {
        for policy in EnrollmentPolicy::ALL {
            for authorised in [false, true] {
                assert_eq!(
                    decide_enrollment(*policy, known(EnrollmentState::Preregistered, authorised)),
                    Ok(EnrollmentState::Accepted)
                );
            }
        }
    }

    #[test]
    fn a_rejected_serial_stays_rejected_even_with_consent() {
        for policy in EnrollmentPolicy::ALL {
            for authorised in [false, true] {
                assert_eq!(
                    decide_enrollment(*policy, known(EnrollmentState::Rejected, authorised)),
                    Err(EnrollmentRefusal::Rejected)
                );
            }
        }
    }

    #[test]
    fn re_enrolling_keeps_the_state_and_needs_proof_or_consent() {
        for policy in EnrollmentPolicy::ALL {
            for state in [EnrollmentState::Pending, EnrollmentState::Accepted] {
                assert_eq!(
                    decide_enrollment(*policy, known(state, true)),
                    Ok(state),
                    "{policy} {state}"
                );
                assert_eq!(
                    decide_enrollment(*policy, known(state, false)),
                    Err(EnrollmentRefusal::AlreadyEnrolled)
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in EnrollmentState::ALL {
            assert_eq!(state.as_str().parse::<EnrollmentState>(), Ok(*state));
        }
        assert!("closed".parse::<EnrollmentPolicy>().is_err());
    }
}
