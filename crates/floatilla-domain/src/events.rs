//! What happened in a tenant that someone may need to know: the event log behind the API's
//! `/events`, alarms and (later) notifications.

use crate::licensing::LicenseReason;
use crate::names::named_enum;
use crate::{DeviceId, EventId, TenantId, Timestamp};

named_enum! {
    /// How urgently an event wants attention.
    pub enum Severity {
        Info = "info",
        Warning = "warning",
        /// Something is wrong and needs a person: a cloned credential, for example.
        Alarm = "alarm",
    }
}

named_enum! {
    /// Every kind of event, with a stable name.
    pub enum EventKind {
        /// A router enrolled (or enrolled again) and was admitted.
        RouterEnrolled = "router_enrolled",
        /// A router enrolled under the approval policy and waits for an admin.
        EnrollmentRequested = "enrollment_requested",
        /// An admin accepted a pending or rejected router.
        EnrollmentAccepted = "enrollment_accepted",
        /// An admin rejected a router; its credentials are revoked.
        EnrollmentRejected = "enrollment_rejected",
        /// A router without a pre-registered serial tried to enroll into a tenant that admits
        /// only pre-registered ones.
        EnrollmentRefused = "enrollment_refused",
        /// One credential is used by more than one router at once: a cloned image.
        CredentialCloned = "credential_cloned",
        /// A router's session took a free seat.
        LicenseGranted = "license_granted",
        /// A router gave its seat back: its linger after a dropped connection ended.
        LicenseReleasedLingerExpired = "license_released_linger_expired",
        /// A router was marked unmanaged.
        LicenseReleasedUnmanaged = "license_released_unmanaged",
        /// A router was deleted.
        LicenseReleasedDeleted = "license_released_deleted",
        /// The capacity dropped and a router last in line lost its seat.
        LicenseShedCapacityDropped = "license_shed_capacity_dropped",
        /// A pinned router took a router's seat.
        LicenseShedPinnedPriority = "license_shed_pinned_priority",
        /// An excess router got a seat.
        LicenseRestored = "license_restored",
        /// A router connected while every seat was taken.
        LicenseDeniedPoolFull = "license_denied_pool_full",
        /// Every seat of the pool is taken.
        LicenseLimitReached = "license_limit_reached",
        /// The licenses counting now grant a different capacity.
        LicenseCapacityChanged = "license_capacity_changed",
        /// More routers are pinned than there are seats.
        LicensePinsExceedCapacity = "license_pins_exceed_capacity",
        /// The capacity drops within a warning window (30, 14, 7, 1 days by default).
        LicenseCapacityDropNotice = "license_capacity_drop_notice",
        /// The wall clock is behind the newest signed time, or jumped: license capacity holds.
        LicenseClockInDoubt = "license_clock_in_doubt",
        /// The wall clock agrees with the trusted clocks again, or an admin acknowledged it.
        LicenseClockTrusted = "license_clock_trusted",
        /// An activation code was redeemed: its license is in the pool.
        LicenseCodeRedeemed = "license_code_redeemed",
        /// The provider suspended the tenant: its routers and API tokens are refused.
        TenantSuspended = "tenant_suspended",
        /// The provider lifted the tenant's suspension.
        TenantResumed = "tenant_resumed",
        /// An operator created a job for some routers.
        JobCreated = "job_created",
        /// An operator cancelled a job: what was not sent yet ends.
        JobCancelled = "job_cancelled",
        /// An operator uploaded an artifact.
        ArtifactUploaded = "artifact_uploaded",
        /// An operator deleted an artifact.
        ArtifactDeleted = "artifact_deleted",
        /// An operator started a rollout.
        RolloutCreated = "rollout_created",
        /// A rollout's phase succeeded and the next began.
        RolloutAdvanced = "rollout_advanced",
        /// A rollout paused: an operator asked, or a phase missed the success threshold.
        RolloutPaused = "rollout_paused",
        /// An operator resumed a paused rollout.
        RolloutResumed = "rollout_resumed",
        /// Every phase of a rollout finished.
        RolloutCompleted = "rollout_completed",
        /// Failures reached a rollout's threshold: nothing more starts.
        RolloutAborted = "rollout_aborted",
        /// An operator cancelled a rollout.
        RolloutCancelled = "rollout_cancelled",
    }
}

impl From<LicenseReason> for EventKind {
    fn from(reason: LicenseReason) -> Self {
        match reason {
            LicenseReason::Granted => EventKind::LicenseGranted,
            LicenseReason::ReleasedLingerExpired => EventKind::LicenseReleasedLingerExpired,
            LicenseReason::ReleasedUnmanaged => EventKind::LicenseReleasedUnmanaged,
            LicenseReason::ReleasedDeleted => EventKind::LicenseReleasedDeleted,
            LicenseReason::ShedCapacityDropped => EventKind::LicenseShedCapacityDropped,
            LicenseReason::ShedPinnedPriority => EventKind::LicenseShedPinnedPriority,
            LicenseReason::Restored => EventKind::LicenseRestored,
            LicenseReason::DeniedPoolFull => EventKind::LicenseDeniedPoolFull,
        }
    }
}

impl EventKind {
    pub fn severity(self) -> Severity {
        match self {
            EventKind::RouterEnrolled
            | EventKind::EnrollmentRequested
            | EventKind::EnrollmentAccepted
            | EventKind::LicenseGranted
            | EventKind::LicenseReleasedLingerExpired
            | EventKind::LicenseReleasedUnmanaged
            | EventKind::LicenseReleasedDeleted
            | EventKind::LicenseRestored
            | EventKind::LicenseCapacityChanged
            | EventKind::LicenseClockTrusted
            | EventKind::LicenseCodeRedeemed
            | EventKind::TenantResumed
            | EventKind::JobCreated
            | EventKind::JobCancelled
            | EventKind::ArtifactUploaded
            | EventKind::ArtifactDeleted
            | EventKind::RolloutCreated
            | EventKind::RolloutAdvanced
            | EventKind::RolloutResumed
            | EventKind::RolloutCompleted
            | EventKind::RolloutCancelled => Severity::Info,
            EventKind::RolloutPaused => Severity::Warning,
            EventKind::RolloutAborted => Severity::Alarm,
            EventKind::EnrollmentRejected
            | EventKind::EnrollmentRefused
            | EventKind::LicenseShedCapacityDropped
            | EventKind::LicenseShedPinnedPriority
            | EventKind::LicenseDeniedPoolFull
            | EventKind::LicenseLimitReached
            | EventKind::LicenseCapacityDropNotice
            | EventKind::TenantSuspended => Severity::Warning,
            EventKind::CredentialCloned
            | EventKind::LicensePinsExceedCapacity
            | EventKind::LicenseClockInDoubt => Severity::Alarm,
        }
    }
}

/// One entry of a tenant's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub at: Timestamp,
    pub kind: EventKind,
    /// The router the event is about, if any. Kept after the router is deleted.
    pub device_id: Option<DeviceId>,
    /// A sentence for people: what happened, naming what it is about.
    pub message: String,
}

impl Event {
    pub fn new(
        tenant_id: TenantId,
        at: Timestamp,
        kind: EventKind,
        device_id: Option<DeviceId>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: EventId::new(),
            tenant_id,
            at,
            kind,
            device_id,
            message: message.into(),
        }
    }
}

/// Which events a listing shows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kind: Option<EventKind>,
    pub severity: Option<Severity>,
    pub device_id: Option<DeviceId>,
    /// Only events older than this one (the last of the previous page).
    pub before: Option<EventId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloned_credential_is_an_alarm() {
        assert_eq!(EventKind::CredentialCloned.severity(), Severity::Alarm);
        assert_eq!(EventKind::RouterEnrolled.severity(), Severity::Info);
    }

    #[test]
    fn kinds_have_distinct_names() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }
}
