//! The tables' rows as both backends return them, and their conversion to and from the domain's
//! records. Both schemas store ids as UUID text and instants as BIGINT milliseconds since the
//! epoch, so one set of row types decodes from either driver.

use std::str::FromStr;

use chrono::DateTime;
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::model::{
    ApiToken, ConnectionRecord, Credential, Device, DeviceLicense, DeviceStatus, EnrollmentToken,
    Group, Tenant,
};
use floatilla_domain::{ConnectionState, DisconnectReason, Role, TimerProfile, Timestamp};
use sqlx::FromRow;

use floatilla_domain::licensing::{
    Capacity, LedgerRouter, LicenseTerm, Seats, ServiceInstant, UsageBucket, UsageSample,
};

use crate::{License, PoolHead, Result, SignedDetails, StoreError};

/// A timestamp as stored: milliseconds since the epoch. Finer precision is dropped.
pub(crate) fn millis(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn opt_millis(at: Option<Timestamp>) -> Option<i64> {
    at.map(millis)
}

/// A JSON document for the `devices.status` column.
pub(crate) fn status_json(status: &DeviceStatus) -> Result<String> {
    serde_json::to_string(status).map_err(|e| StoreError::Corrupt(format!("device status: {e}")))
}

pub(crate) fn timestamp(column: &str, millis: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {millis} is out of range")))
}

pub(crate) fn opt_timestamp(column: &str, millis: Option<i64>) -> Result<Option<Timestamp>> {
    millis.map(|m| timestamp(column, m)).transpose()
}

/// Parses a stored name or id, blaming the column when it does not parse.
pub(crate) fn parse<T>(column: &str, text: &str) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column} `{text}`: {e}")))
}

pub(crate) fn opt_parse<T>(column: &str, text: Option<&str>) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    text.map(|t| parse(column, t)).transpose()
}

fn count(column: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value}")))
}

#[derive(FromRow)]
pub(crate) struct TenantRow {
    id: String,
    name: String,
    enrollment_policy: String,
    created_at: i64,
    suspended_at: Option<i64>,
    contact_email: Option<String>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(row: TenantRow) -> Result<Self> {
        Ok(Tenant {
            id: parse("tenants.id", &row.id)?,
            name: row.name,
            enrollment_policy: parse("tenants.enrollment_policy", &row.enrollment_policy)?,
            created_at: timestamp("tenants.created_at", row.created_at)?,
            suspended_at: opt_timestamp("tenants.suspended_at", row.suspended_at)?,
            contact_email: row.contact_email,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct GroupRow {
    id: String,
    tenant_id: String,
    name: String,
    ping_interval_secs: Option<i64>,
    pong_timeout_secs: Option<i64>,
    created_at: i64,
    maintenance_window: Option<String>,
}

/// A timer profile from its two columns, which are set together or not at all.
fn timer_profile(
    table: &str,
    ping_interval_secs: Option<i64>,
    pong_timeout_secs: Option<i64>,
) -> Result<Option<TimerProfile>> {
    match (ping_interval_secs, pong_timeout_secs) {
        (Some(ping), Some(pong)) => Ok(Some(TimerProfile {
            ping_interval_secs: count(&format!("{table}.ping_interval_secs"), ping)?,
            pong_timeout_secs: count(&format!("{table}.pong_timeout_secs"), pong)?,
        })),
        (None, None) => Ok(None),
        _ => Err(StoreError::Corrupt(format!(
            "{table}: only one of ping_interval_secs and pong_timeout_secs is set"
        ))),
    }
}

impl TryFrom<GroupRow> for Group {
    type Error = StoreError;
    fn try_from(row: GroupRow) -> Result<Self> {
        Ok(Group {
            id: parse("groups.id", &row.id)?,
            tenant_id: parse("groups.tenant_id", &row.tenant_id)?,
            name: row.name,
            timer_profile: timer_profile("groups", row.ping_interval_secs, row.pong_timeout_secs)?,
            maintenance_window: row
                .maintenance_window
                .map(|w| parse("groups.maintenance_window", &w))
                .transpose()?,
            created_at: timestamp("groups.created_at", row.created_at)?,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct EnrollmentTokenRow {
    id: String,
    tenant_id: String,
    name: String,
    secret_hash: String,
    max_uses: Option<i64>,
    uses: i64,
    expires_at: Option<i64>,
    group_id: Option<String>,
    revoked_at: Option<i64>,
    created_at: i64,
}

impl TryFrom<EnrollmentTokenRow> for EnrollmentToken {
    type Error = StoreError;
    fn try_from(row: EnrollmentTokenRow) -> Result<Self> {
        Ok(EnrollmentToken {
            id: parse("enrollment_tokens.id", &row.id)?,
            tenant_id: parse("enrollment_tokens.tenant_id", &row.tenant_id)?,
            name: row.name,
            secret_hash: row.secret_hash,
            max_uses: row
                .max_uses
                .map(|max| count("enrollment_tokens.max_uses", max))
                .transpose()?,
            uses: count("enrollment_tokens.uses", row.uses)?,
            expires_at: opt_timestamp("enrollment_tokens.expires_at", row.expires_at)?,
            group_id: opt_parse("enrollment_tokens.group_id", row.group_id.as_deref())?,
            revoked_at: opt_timestamp("enrollment_tokens.revoked_at", row.revoked_at)?,
            created_at: timestamp("enrollment_tokens.created_at", row.created_at)?,
        })
    }
}

/// A device joined with its group's name and timer profile (see `select_devices!` in the shared implementation).
#[derive(FromRow)]
pub(crate) struct DeviceRow {
    id: String,
    tenant_id: String,
    serial: String,
    name: String,
    model: String,
    firmware: String,
    agent_version: String,
    group_id: Option<String>,
    group_name: Option<String>,
    group_ping_interval_secs: Option<i64>,
    group_pong_timeout_secs: Option<i64>,
    enrollment: String,
    connection_state: String,
    connected_since: Option<i64>,
    last_seen: Option<i64>,
    last_disconnect_at: Option<i64>,
    last_disconnect_reason: Option<String>,
    status: String,
    reenroll_allowed_until: Option<i64>,
    license_state: String,
    license_reason: Option<String>,
    managed: bool,
    pinned: bool,
    created_at: i64,
}

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;
    fn try_from(row: DeviceRow) -> Result<Self> {
        Ok(Device {
            id: parse("devices.id", &row.id)?,
            tenant_id: parse("devices.tenant_id", &row.tenant_id)?,
            serial: row.serial,
            name: row.name,
            model: row.model,
            firmware: row.firmware,
            agent_version: row.agent_version,
            group_id: opt_parse("devices.group_id", row.group_id.as_deref())?,
            group_name: row.group_name,
            timer_profile: timer_profile(
                "groups",
                row.group_ping_interval_secs,
                row.group_pong_timeout_secs,
            )?,
            enrollment: parse("devices.enrollment", &row.enrollment)?,
            connection_state: parse::<ConnectionState>(
                "devices.connection_state",
                &row.connection_state,
            )?,
            connected_since: opt_timestamp("devices.connected_since", row.connected_since)?,
            last_seen: opt_timestamp("devices.last_seen", row.last_seen)?,
            last_disconnect_at: opt_timestamp(
                "devices.last_disconnect_at",
                row.last_disconnect_at,
            )?,
            last_disconnect_reason: opt_parse::<DisconnectReason>(
                "devices.last_disconnect_reason",
                row.last_disconnect_reason.as_deref(),
            )?,
            status: serde_json::from_str(&row.status)
                .map_err(|e| StoreError::Corrupt(format!("devices.status: {e}")))?,
            reenroll_allowed_until: opt_timestamp(
                "devices.reenroll_allowed_until",
                row.reenroll_allowed_until,
            )?,
            license: DeviceLicense {
                state: parse("devices.license_state", &row.license_state)?,
                reason: opt_parse("devices.license_reason", row.license_reason.as_deref())?,
                managed: row.managed,
                pinned: row.pinned,
            },
            created_at: timestamp("devices.created_at", row.created_at)?,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct CredentialRow {
    id: String,
    device_id: String,
    secret_hash: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<CredentialRow> for Credential {
    type Error = StoreError;
    fn try_from(row: CredentialRow) -> Result<Self> {
        Ok(Credential {
            id: parse("credentials.id", &row.id)?,
            device_id: parse("credentials.device_id", &row.device_id)?,
            secret_hash: row.secret_hash,
            created_at: timestamp("credentials.created_at", row.created_at)?,
            expires_at: timestamp("credentials.expires_at", row.expires_at)?,
            revoked_at: opt_timestamp("credentials.revoked_at", row.revoked_at)?,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ConnectionRow {
    session_id: String,
    device_id: String,
    node_id: String,
    remote_addr: String,
    connected_at: i64,
    disconnected_at: Option<i64>,
    reason: Option<String>,
}

impl TryFrom<ConnectionRow> for ConnectionRecord {
    type Error = StoreError;
    fn try_from(row: ConnectionRow) -> Result<Self> {
        Ok(ConnectionRecord {
            session_id: parse("connection_history.session_id", &row.session_id)?,
            device_id: parse("connection_history.device_id", &row.device_id)?,
            node_id: row.node_id,
            remote_addr: row.remote_addr,
            connected_at: timestamp("connection_history.connected_at", row.connected_at)?,
            disconnected_at: opt_timestamp(
                "connection_history.disconnected_at",
                row.disconnected_at,
            )?,
            reason: opt_parse("connection_history.reason", row.reason.as_deref())?,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ApiTokenRow {
    id: String,
    tenant_id: Option<String>,
    name: String,
    role: String,
    secret_hash: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiTokenRow> for ApiToken {
    type Error = StoreError;
    fn try_from(row: ApiTokenRow) -> Result<Self> {
        Ok(ApiToken {
            id: parse("api_tokens.id", &row.id)?,
            tenant_id: opt_parse("api_tokens.tenant_id", row.tenant_id.as_deref())?,
            name: row.name,
            role: parse::<Role>("api_tokens.role", &row.role)?,
            secret_hash: row.secret_hash,
            created_at: timestamp("api_tokens.created_at", row.created_at)?,
            revoked_at: opt_timestamp("api_tokens.revoked_at", row.revoked_at)?,
        })
    }
}

/// Converts fetched rows into domain records, failing on the first corrupt one.
#[derive(FromRow)]
pub(crate) struct EventRow {
    id: String,
    tenant_id: String,
    at: i64,
    kind: String,
    device_id: Option<String>,
    message: String,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(row: EventRow) -> Result<Self> {
        Ok(Event {
            id: parse("events.id", &row.id)?,
            tenant_id: parse("events.tenant_id", &row.tenant_id)?,
            at: timestamp("events.at", row.at)?,
            kind: parse::<EventKind>("events.kind", &row.kind)?,
            device_id: opt_parse("events.device_id", row.device_id.as_deref())?,
            message: row.message,
        })
    }
}

pub(crate) fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

#[derive(FromRow)]
pub(crate) struct LicenseRow {
    id: String,
    tenant_id: String,
    name: String,
    seats: Option<i64>,
    not_before: i64,
    not_after: Option<i64>,
    grace_until: Option<i64>,
    created_at: i64,
    serial: Option<String>,
    customer: Option<String>,
    issued_at: Option<i64>,
    supersedes: String,
    entitlements: String,
    issuer_key_id: Option<String>,
    signed_text: Option<String>,
}

fn string_list(column: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

impl TryFrom<LicenseRow> for License {
    type Error = StoreError;
    fn try_from(row: LicenseRow) -> Result<Self> {
        let seats = match row.seats {
            None => Seats::Unlimited,
            Some(n) => Seats::Count(count("licenses.seats", n)?),
        };
        Ok(License {
            id: parse("licenses.id", &row.id)?,
            tenant_id: parse("licenses.tenant_id", &row.tenant_id)?,
            name: row.name,
            term: LicenseTerm {
                seats,
                not_before: timestamp("licenses.not_before", row.not_before)?,
                not_after: opt_timestamp("licenses.not_after", row.not_after)?,
                grace_until: opt_timestamp("licenses.grace_until", row.grace_until)?,
            },
            signed: match (row.serial, row.signed_text) {
                (Some(serial), Some(text)) => Some(SignedDetails {
                    serial,
                    customer: row.customer.unwrap_or_default(),
                    issued_at: timestamp(
                        "licenses.issued_at",
                        row.issued_at.unwrap_or(row.created_at),
                    )?,
                    supersedes: string_list("licenses.supersedes", &row.supersedes)?,
                    entitlements: string_list("licenses.entitlements", &row.entitlements)?,
                    issuer_key_id: row.issuer_key_id.unwrap_or_default(),
                    text,
                }),
                _ => None,
            },
            created_at: timestamp("licenses.created_at", row.created_at)?,
        })
    }
}

fn unsigned(column: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value}")))
}

#[derive(FromRow)]
pub(crate) struct PoolHeadRow {
    version: i64,
    next_place: i64,
    capacity: Option<i64>,
    licenses_revision: i64,
    usage_at: Option<i64>,
    usage_managed: i64,
    usage_licensed: i64,
    usage_excess: i64,
}

impl TryFrom<PoolHeadRow> for PoolHead {
    type Error = StoreError;
    fn try_from(row: PoolHeadRow) -> Result<Self> {
        let usage = match row.usage_at {
            None => None,
            Some(at) => Some(UsageSample {
                at: timestamp("license_pools.usage_at", at)?,
                managed_live: unsigned("license_pools.usage_managed", row.usage_managed)?,
                licensed: unsigned("license_pools.usage_licensed", row.usage_licensed)?,
                excess: unsigned("license_pools.usage_excess", row.usage_excess)?,
            }),
        };
        Ok(PoolHead {
            version: unsigned("license_pools.version", row.version)?,
            next_place: unsigned("license_pools.next_place", row.next_place)?,
            capacity: match row.capacity {
                None => Capacity::Unlimited,
                Some(n) => Capacity::Limited(unsigned("license_pools.capacity", n)?),
            },
            licenses_revision: unsigned("license_pools.licenses_revision", row.licenses_revision)?,
            usage,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct LedgerRow {
    id: String,
    managed: bool,
    pinned: bool,
    license_place: Option<i64>,
    license_session: Option<String>,
    linger_until: Option<i64>,
    license_state: String,
}

impl TryFrom<LedgerRow> for LedgerRouter {
    type Error = StoreError;
    fn try_from(row: LedgerRow) -> Result<Self> {
        Ok(LedgerRouter {
            device: parse("devices.id", &row.id)?,
            managed: row.managed,
            pinned: row.pinned,
            place: row
                .license_place
                .map(|p| unsigned("devices.license_place", p))
                .transpose()?,
            session: opt_parse("devices.license_session", row.license_session.as_deref())?,
            linger_until: row.linger_until.map(ServiceInstant::from_millis),
            state: parse("devices.license_state", &row.license_state)?,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct UsageRow {
    bucket_start: i64,
    peak_managed: i64,
    peak_licensed: i64,
    excess_router_millis: i64,
}

impl TryFrom<UsageRow> for UsageBucket {
    type Error = StoreError;
    fn try_from(row: UsageRow) -> Result<Self> {
        Ok(UsageBucket {
            start: timestamp("license_usage.bucket_start", row.bucket_start)?,
            peak_managed: unsigned("license_usage.peak_managed", row.peak_managed)?,
            peak_licensed: unsigned("license_usage.peak_licensed", row.peak_licensed)?,
            excess_router_millis: unsigned(
                "license_usage.excess_router_millis",
                row.excess_router_millis,
            )?,
        })
    }
}
