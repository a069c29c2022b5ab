//! The JSON shapes of API answers and requests.

use chrono::{DateTime, Utc};
use floatilla_domain::TimerProfile;
use floatilla_domain::events::Event;
use floatilla_domain::licensing::Seats;
use floatilla_domain::model::{
    ApiToken, ConnectionRecord, Device, DeviceStatus, EnrollmentToken, Group,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub serial: String,
    pub name: String,
    /// The group's name, if the router is in one.
    pub group: Option<String>,
    /// `preregistered` (imported, not enrolled yet), `pending` (waits for an admin),
    /// `accepted` or `rejected`.
    pub enrollment: String,
    /// `online` or `offline`.
    pub connection_state: String,
    pub connected_since: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_disconnect_at: Option<DateTime<Utc>>,
    /// Why the last connection ended: clean_close, connection_lost, ping_timeout, superseded,
    /// server_shutdown, protocol_error, credential_revoked or tenant_suspended.
    pub last_disconnect_reason: Option<String>,
    pub model: String,
    pub firmware: String,
    pub agent_version: String,
    /// `licensed` (holds a seat), `excess` (live and managed but beyond the capacity: receives
    /// no updates or tasks), `inactive` (no live session) or `unmanaged`.
    pub license_state: String,
    /// The reason of the router's last license transition: granted, released_linger_expired,
    /// released_unmanaged, released_deleted, shed_capacity_dropped, shed_pinned_priority,
    /// restored or denied_pool_full; null before its first.
    pub license_reason: Option<String>,
    /// Unmanaged routers stay visible but never hold a seat.
    pub managed: bool,
    /// Pinned routers stand first in line for a seat.
    pub pinned: bool,
    /// Its tags, in name order.
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl DeviceView {
    pub fn new(d: &Device, tags: Vec<String>) -> Self {
        Self {
            id: d.id.to_string(),
            serial: d.serial.clone(),
            name: d.name.clone(),
            group: d.group_name.clone(),
            enrollment: d.enrollment.as_str().to_owned(),
            connection_state: d.connection_state.as_str().to_owned(),
            connected_since: d.connected_since,
            last_seen: d.last_seen,
            last_disconnect_at: d.last_disconnect_at,
            last_disconnect_reason: d.last_disconnect_reason.map(|r| r.as_str().to_owned()),
            model: d.model.clone(),
            firmware: d.firmware.clone(),
            agent_version: d.agent_version.clone(),
            license_state: d.license.state.as_str().to_owned(),
            license_reason: d.license.reason.map(|r| r.as_str().to_owned()),
            managed: d.license.managed,
            pinned: d.license.pinned,
            tags,
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    pub uptime_secs: Option<u64>,
    pub cellular_signal_dbm: Option<i32>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub wan_address: Option<String>,
    pub reported_at: Option<DateTime<Utc>>,
    /// How far the router's clock was off at its last connection (router minus server), in
    /// seconds; null when within 5 minutes.
    pub clock_skew_secs: Option<i64>,
}

impl From<&DeviceStatus> for StatusView {
    fn from(s: &DeviceStatus) -> Self {
        Self {
            uptime_secs: s.uptime_secs,
            cellular_signal_dbm: s.cellular_signal_dbm,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            wan_address: s.wan_address.clone(),
            reported_at: s.reported_at,
            clock_skew_secs: s.clock_skew_secs,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub session_id: String,
    pub node_id: String,
    pub remote_addr: String,
    pub connected_at: DateTime<Utc>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

impl From<&ConnectionRecord> for ConnectionView {
    fn from(c: &ConnectionRecord) -> Self {
        Self {
            session_id: c.session_id.to_string(),
            node_id: c.node_id.clone(),
            remote_addr: c.remote_addr.clone(),
            connected_at: c.connected_at,
            disconnected_at: c.disconnected_at,
            reason: c.reason.map(|r| r.as_str().to_owned()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    pub status: StatusView,
    /// The most recent connections, newest first.
    pub connection_history: Vec<ConnectionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub items: Vec<DeviceView>,
    /// How many routers match the filters, over all pages.
    pub total: u64,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next: Option<String>,
}

/// `PATCH /api/v1/devices/{id}`: absent fields stay as they are; `"group": null` ungroups.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatchRequest {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub group: Option<Option<String>>,
    /// `false` takes the router out of management: it gives up its seat and receives nothing.
    pub managed: Option<bool>,
    /// `true` puts the router first in line for a seat.
    pub pinned: Option<bool>,
    /// Replaces the router's tags.
    pub tags: Option<Vec<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowReenrollmentRequest {
    /// How long the consent lasts (default 24).
    pub valid_for_hours: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    /// The group's heartbeat timing; `null` when its routers use the server's.
    pub timer_profile: Option<TimerProfileView>,
    /// When rollouts may change its routers, "02:00-04:00 Europe/Berlin"; `null`: any time.
    pub maintenance_window: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        Self {
            id: g.id.to_string(),
            name: g.name.clone(),
            timer_profile: g.timer_profile.map(TimerProfileView::from),
            maintenance_window: g.maintenance_window.map(|w| w.to_string()),
            created_at: g.created_at,
        }
    }
}

/// How often the server pings the group's routers and how long it waits for each pong. A
/// router learns its timing when it connects.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerProfileView {
    pub ping_interval_secs: u32,
    pub pong_timeout_secs: u32,
}

impl From<TimerProfile> for TimerProfileView {
    fn from(p: TimerProfile) -> Self {
        Self {
            ping_interval_secs: p.ping_interval_secs,
            pong_timeout_secs: p.pong_timeout_secs,
        }
    }
}

impl From<TimerProfileView> for TimerProfile {
    fn from(p: TimerProfileView) -> Self {
        Self {
            ping_interval_secs: p.ping_interval_secs,
            pong_timeout_secs: p.pong_timeout_secs,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    pub name: String,
    #[serde(default)]
    pub timer_profile: Option<TimerProfileView>,
    /// A daily window in a time zone, "02:00-04:00 Europe/Berlin", outside which rollouts
    /// leave the group's routers alone.
    #[serde(default)]
    pub maintenance_window: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatchRequest {
    pub name: Option<String>,
    /// A profile, or `null` to use the server's timing again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<TimerProfileView>)]
    pub timer_profile: Option<Option<TimerProfileView>>,
    /// A window, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub maintenance_window: Option<Option<String>>,
}

/// How the tenant admits new routers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentPolicyView {
    /// `open` (any router with a valid token), `approval` (an admin accepts each new router)
    /// or `preregistered` (only imported serials).
    pub policy: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// `info`, `warning` or `alarm`.
    pub severity: String,
    pub device_id: Option<String>,
    pub message: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id.to_string(),
            at: e.at,
            kind: e.kind.as_str().to_owned(),
            severity: e.kind.severity().as_str().to_owned(),
            device_id: e.device_id.map(|d| d.to_string()),
            message: e.message.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

/// What importing one CSV row did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportRow {
    /// The row's line in the file (the header is line 1 when there is one).
    pub line: u64,
    pub serial: Option<String>,
    /// `created`, `updated` or `failed`.
    pub result: String,
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub created: u64,
    pub updated: u64,
    pub failed: u64,
    pub rows: Vec<ImportRow>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    pub name: String,
    /// How many routers may enroll with it; null or absent for no limit.
    pub max_uses: Option<u32>,
    /// When it stops working; absent: in 7 days; null: never.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// The group new routers join.
    pub group: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenView {
    pub id: String,
    pub name: String,
    /// The token to give routers; only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub group: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl EnrollmentTokenView {
    pub fn new(t: &EnrollmentToken, group: Option<String>, token: Option<String>) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            token,
            max_uses: t.max_uses,
            uses: t.uses,
            expires_at: t.expires_at,
            group,
            revoked_at: t.revoked_at,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiTokenRequest {
    pub name: String,
    /// viewer, operator or admin.
    pub role: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The bearer token; only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiTokenView {
    pub fn new(t: &ApiToken, token: Option<String>) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            role: t.role.as_str().to_owned(),
            token,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// An error answer: a stable snake_case code and a human-readable message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

/// The license pool now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    /// Seats: a number, or `"unlimited"`.
    #[schema(value_type = Object)]
    pub capacity: serde_json::Value,
    /// Routers holding a seat.
    pub in_use: u64,
    /// Seats free; null when the capacity is unlimited.
    pub free: Option<u64>,
    /// Live managed routers beyond the capacity.
    pub excess: u64,
    /// Managed routers pinned first in line (live or not).
    pub pinned: u64,
    /// The ids of the licenses that count now.
    pub counting_licenses: Vec<String>,
    /// The next change of capacity, if any is scheduled.
    pub next_change: Option<CapacityChangeView>,
    /// Why the pool grants nothing, when it does not.
    pub explanation: Option<String>,
    /// Whether license decisions follow the wall clock now.
    pub clock: ClockView,
    /// A warning while the capacity drops within a notice window (30, 14, 7, 1 days by
    /// default), e.g. "in 14 days, on 2027-01-31 at 00:00 UTC 25 seats expire: 12 routers
    /// would become excess".
    pub warning: Option<String>,
}

/// The wall clock as license decisions see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClockView {
    /// While `false`, capacity holds where it was: no license starts or ends.
    pub trusted: bool,
    /// `behind_signed_time` or `jumped`, while in doubt.
    pub doubt: Option<String>,
    /// How far the wall clock is off, in seconds (negative: behind).
    pub off_by_secs: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstallationView {
    /// Signed license files name the installation they are for.
    pub installation_id: String,
    /// `on-prem` or `cloud`.
    pub mode: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CapacityChangeView {
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub from: serde_json::Value,
    #[schema(value_type = Object)]
    pub to: serde_json::Value,
    /// Licensed routers that would become excess, with the fleet as it is now.
    pub routers_shed: u64,
    /// Excess routers that would be licensed.
    pub routers_restored: u64,
    /// The change in plain words.
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LicenseView {
    pub id: String,
    pub name: String,
    /// A number, or `"unlimited"`.
    #[schema(value_type = Object)]
    pub seats: Seats,
    pub not_before: DateTime<Utc>,
    /// Null for a permanent license.
    pub not_after: Option<DateTime<Utc>>,
    /// The end of its grace period, if it has one: it counts until then.
    pub grace_until: Option<DateTime<Utc>>,
    /// `valid`, `not_yet_valid`, `expiring`, `in_grace`, `expired` or `superseded`.
    pub status: String,
    /// Whole days until it stops counting, while `expiring` or `in_grace`.
    pub days_left: Option<i64>,
    /// Whether the pool sums its seats now.
    pub counting: bool,
    /// Installed from a signed license file.
    pub signed: bool,
    pub serial: Option<String>,
    pub customer: Option<String>,
    pub issued_at: Option<DateTime<Utc>>,
    /// Serials this license replaces from its start.
    pub supersedes: Vec<String>,
    /// When a successor replaces this license.
    pub superseded_from: Option<DateTime<Utc>>,
    pub entitlements: Vec<String>,
    /// The issuing key that signed it.
    pub issuer_key_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A router, named.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouterRef {
    pub id: String,
    pub serial: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LicenseList {
    pub items: Vec<LicenseView>,
}

/// An unsigned license, for servers that accept them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseRequest {
    pub name: String,
    /// A number, or `"unlimited"`.
    #[schema(value_type = Object)]
    pub seats: Seats,
    /// Default: now.
    pub not_before: Option<DateTime<Utc>>,
    /// Default: never (a permanent license).
    pub not_after: Option<DateTime<Utc>>,
}

/// Routers to change: `ids` or `group` (every router in it now), and the settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkLicenseRequest {
    /// Router ids; or
    pub ids: Option<Vec<String>>,
    /// a group's name (its routers now); or
    pub group: Option<String>,
    /// a tag (the routers carrying it now).
    pub tag: Option<String>,
    pub managed: Option<bool>,
    pub pinned: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkLicenseResult {
    /// How many routers the settings were applied to.
    pub changed: u64,
}

/// One hour's or day's license usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub start: DateTime<Utc>,
    /// The most managed routers with a live session at once (licensed and excess).
    pub peak_managed: u64,
    pub peak_licensed: u64,
    /// Excess routers times the minutes they were excess.
    pub excess_router_minutes: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageList {
    /// `hour` or `day`.
    pub granularity: String,
    pub items: Vec<UsageView>,
}
