//! The records the server keeps, and the decisions that depend only on them and the clock.

use serde::{Deserialize, Serialize};

use crate::enrollment::{EnrollmentPolicy, EnrollmentState};
use crate::licensing::{LicenseReason, LicenseState};
use crate::timers::TimerProfile;
use crate::{
    ApiTokenId, ConnectionState, CredentialId, DeviceId, DisconnectReason, EnrollmentTokenId,
    GroupId, Role, SessionId, TenantId, Timestamp,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub enrollment_policy: EnrollmentPolicy,
    pub created_at: Timestamp,
    /// Set while the provider has suspended the tenant: its routers and tokens are refused.
    pub suspended_at: Option<Timestamp>,
    /// Where notices about the tenant's licenses are e-mailed, if anywhere.
    pub contact_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The group's heartbeat timing; `None` uses the server's.
    pub timer_profile: Option<TimerProfile>,
    /// When rollouts may change the group's routers; `None`: at any time.
    pub maintenance_window: Option<crate::jobs::MaintenanceWindow>,
    pub created_at: Timestamp,
}

/// A shared secret that lets routers enroll themselves into a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub id: EnrollmentTokenId,
    pub tenant_id: TenantId,
    pub name: String,
    /// SHA-256 of the token's secret, hex encoded: the secret itself is never stored.
    pub secret_hash: String,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: Option<Timestamp>,
    pub group_id: Option<GroupId>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// Why an enrollment token cannot be used (any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Revoked,
    Expired,
    UsedUp,
}

impl EnrollmentToken {
    /// `None` when the token may enroll one more router at `now`.
    pub fn refusal(&self, now: Timestamp) -> Option<TokenRefusal> {
        if self.revoked_at.is_some() {
            Some(TokenRefusal::Revoked)
        } else if self.expires_at.is_some_and(|expires| now >= expires) {
            Some(TokenRefusal::Expired)
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some(TokenRefusal::UsedUp)
        } else {
            None
        }
    }
}

/// What a router last reported about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub uptime_secs: Option<u64>,
    pub cellular_signal_dbm: Option<i32>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub wan_address: Option<String>,
    pub reported_at: Option<Timestamp>,
    /// How far the router's clock was off at its last HELLO (router minus server), in seconds,
    /// when that was more than [`DeviceStatus::CLOCK_SKEW_TOLERANCE_SECS`].
    #[serde(default)]
    pub clock_skew_secs: Option<i64>,
}

impl DeviceStatus {
    /// A router clock further off than this is reported.
    pub const CLOCK_SKEW_TOLERANCE_SECS: i64 = 300;

    /// This status updated with what a router reported; fields it left out keep their values.
    pub fn merged(&self, update: DeviceStatus) -> DeviceStatus {
        DeviceStatus {
            uptime_secs: update.uptime_secs.or(self.uptime_secs),
            cellular_signal_dbm: update.cellular_signal_dbm.or(self.cellular_signal_dbm),
            rx_bytes: update.rx_bytes.or(self.rx_bytes),
            tx_bytes: update.tx_bytes.or(self.tx_bytes),
            wan_address: update.wan_address.or_else(|| self.wan_address.clone()),
            reported_at: update.reported_at.or(self.reported_at),
            clock_skew_secs: self.clock_skew_secs,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: DeviceId,
    pub tenant_id: TenantId,
    pub serial: String,
    pub name: String,
    pub model: String,
    pub firmware: String,
    pub agent_version: String,
    pub group_id: Option<GroupId>,
    pub group_name: Option<String>,
    /// The timer profile of the router's group, if it has one.
    pub timer_profile: Option<TimerProfile>,
    pub enrollment: EnrollmentState,
    pub connection_state: ConnectionState,
    pub connected_since: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub last_disconnect_at: Option<Timestamp>,
    pub last_disconnect_reason: Option<DisconnectReason>,
    pub status: DeviceStatus,
    /// Until when an admin allowed this serial to enroll again without its credential.
    pub reenroll_allowed_until: Option<Timestamp>,
    pub license: DeviceLicense,
    pub created_at: Timestamp,
}

/// A router's standing in its tenant's license pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLicense {
    pub state: LicenseState,
    /// Why it is in that state: the reason of its last transition (`None` before its first).
    pub reason: Option<LicenseReason>,
    /// Unmanaged routers never hold a seat.
    pub managed: bool,
    /// Pinned routers stand first in line.
    pub pinned: bool,
}

impl Default for DeviceLicense {
    fn default() -> Self {
        Self {
            state: LicenseState::Inactive,
            reason: None,
            managed: true,
            pinned: false,
        }
    }
}

/// A router's proof of identity: a random secret of which only the SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: CredentialId,
    pub device_id: DeviceId,
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl Credential {
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// One control-channel connection, from HELLO to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub session_id: SessionId,
    pub device_id: DeviceId,
    pub node_id: String,
    pub remote_addr: String,
    pub connected_at: Timestamp,
    pub disconnected_at: Option<Timestamp>,
    pub reason: Option<DisconnectReason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: ApiTokenId,
    /// The tenant the token acts in; none for a provider token (and only for one).
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Which routers a fleet listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub connection_state: Option<ConnectionState>,
    pub enrollment: Option<EnrollmentState>,
    /// Case-insensitive substring of the serial or the name.
    pub query: Option<String>,
    pub group_id: Option<GroupId>,
    pub license_state: Option<LicenseState>,
    /// Routers carrying every one of these tags.
    pub tags: Vec<String>,
    /// Routers of exactly this model.
    pub model: Option<String>,
    /// Routers running exactly this firmware version.
    pub firmware: Option<String>,
}

/// The most characters of a tag.
pub const MAX_TAG_CHARS: usize = 64;

/// A tag as given, in its stored form: trimmed and lower case, 1 to [`MAX_TAG_CHARS`] letters,
/// digits and `-_.:/`, so that tags read the same in URLs, CSV files and filters.
pub fn checked_tag(tag: &str) -> Result<String, String> {
    let tag = tag.trim().to_lowercase();
    let allowed = |c: char| c.is_alphanumeric() || "-_.:/".contains(c);
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS || !tag.chars().all(allowed) {
        return Err(format!(
            "{tag:?} is not a tag: 1 to {MAX_TAG_CHARS} letters, digits and - _ . : /"
        ));
    }
    Ok(tag)
}

/// One page of a listing ordered by serial: `after` is the last serial of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match the filter, over all pages.
    pub total: u64,
    /// Present when more items follow.
    pub next_after: Option<String>,
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_lower_case_and_plain() {
        assert_eq!(checked_tag(" Site:Hamburg ").unwrap(), "site:hamburg");
        assert_eq!(checked_tag("fw/5.2_beta-1").unwrap(), "fw/5.2_beta-1");
        for bad in ["", "   ", "two words", "a,b", "x".repeat(65).as_str()] {
            assert!(checked_tag(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn token(now: Timestamp) -> EnrollmentToken {
        EnrollmentToken {
            id: EnrollmentTokenId::new(),
            tenant_id: TenantId::new(),
            name: "line 3".into(),
            secret_hash: String::new(),
            max_uses: Some(2),
            uses: 0,
            expires_at: Some(now + Duration::days(7)),
            group_id: None,
            revoked_at: None,
            created_at: now,
        }
    }

    #[test]
    fn token_is_usable_until_it_expires_is_used_up_or_revoked() {
        let now = Utc::now();
        let mut t = token(now);
        assert_eq!(t.refusal(now), None);
        assert_eq!(
            t.refusal(now + Duration::days(7)),
            Some(TokenRefusal::Expired)
        );
        t.uses = 2;
        assert_eq!(t.refusal(now), Some(TokenRefusal::UsedUp));
        t.revoked_at = Some(now);
        assert_eq!(t.refusal(now), Some(TokenRefusal::Revoked));
    }

    #[test]
    fn unlimited_tokens_without_expiry_stay_usable() {
        let now = Utc::now();
        let mut t = token(now);
        t.max_uses = None;
        t.expires_at = None;
        t.uses = 1_000_000;
        assert_eq!(t.refusal(now + Duration::days(3650)), None);
    }

    #[test]
    fn a_partial_status_keeps_what_it_does_not_mention() {
        let before = DeviceStatus {
            uptime_secs: Some(10),
            cellular_signal_dbm: Some(-80),
            clock_skew_secs: Some(-3600),
            ..DeviceStatus::default()
        };
        let after = before.merged(DeviceStatus {
            uptime_secs: Some(20),
            ..DeviceStatus::default()
        });
        assert_eq!(after.uptime_secs, Some(20));
        assert_eq!(after.cellular_signal_dbm, Some(-80));
        assert_eq!(after.clock_skew_secs, Some(-3600));
    }

    #[test]
    fn credential_validity_ends_at_expiry_or_revocation() {
        let now = Utc::now();
        let mut c = Credential {
            id: CredentialId::new(),
            device_id: DeviceId::new(),
            secret_hash: String::new(),
            created_at: now,
            expires_at: now + Duration::days(1),
            revoked_at: None,
        };
        assert!(c.is_valid_at(now));
        assert!(!c.is_valid_at(now + Duration::days(1)));
        c.revoked_at = Some(now);
        assert!(!c.is_valid_at(now));
    }
}
