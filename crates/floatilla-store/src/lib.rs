//! Floatilla's storage: one interface, [`Store`], with an embedded SQLite implementation for
//! single-node sites and a PostgreSQL implementation for several nodes sharing one database.
//! Each backend has its own migrations, applied when the store is opened.

mod accounts;
mod artifacts;
mod cluster;
mod enrollment;
mod error;
mod events;
mod jobs;
mod licensing;
mod postgres;
mod provider;
mod rollouts;
mod rows;
mod shared;
mod sqlite;
mod tags;
#[cfg(feature = "testing")]
pub mod testing;
mod webhooks;

pub use accounts::{Accounts, AuditFilter, ConsoleSession};
pub use artifacts::{ARTIFACT_CHUNK_BYTES, Artifact, Artifacts};
pub use cluster::{CallOutcome, Cluster, ClusterMessage, Received, Subscription};
pub use enrollment::{EnrollmentControl, Preregistered, Preregistration};
pub use error::StoreError;
pub use events::EventLog;
pub use jobs::{Execution, ExecutionReport, Job, JobArtifact, Jobs, StateCounts};
pub use licensing::{
    License, LicensePools, PoolHead, PoolHistory, PoolPosition, PoolRead, PoolStep, PoolWrite,
    RouterWrite, SignedDetails,
};
pub use postgres::PgStore;
pub use provider::{CodeFilter, CodeRedemption, IssuedCode, Provider, Redemption, TenantUpdate};
pub use rollouts::{PhaseCount, Rollout, RolloutChange, Rollouts};
pub use sqlite::SqliteStore;
pub use tags::Tags;
pub use webhooks::{
    AttemptRecord, ClaimedDelivery, DeliveryNext, DeliveryState, Webhook, WebhookAttempt,
    WebhookDelivery, Webhooks,
};

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use floatilla_domain::enrollment::EnrollmentState;
use floatilla_domain::events::Event;
use floatilla_domain::model::{
    ApiToken, ConnectionRecord, Credential, Device, DeviceFilter, DeviceStatus, EnrollmentToken,
    Group, Page, PageRequest, Tenant, TokenRefusal,
};
use floatilla_domain::{
    ApiTokenId, CredentialId, DeviceId, DisconnectReason, EnrollmentTokenId, GroupId, SessionId,
    TenantId, TimerProfile, Timestamp,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file (WAL mode), created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://…`).
    Postgres(String),
}

/// Opens the store at `location`, creating an SQLite file if needed, and applies pending
/// migrations. Fails with [`StoreError::SchemaTooNew`] on a database written by a newer build.
pub async fn open(location: &Location) -> Result<Arc<dyn Store>> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        Location::Postgres(url) => Arc::new(PgStore::connect(url).await?),
    })
}

/// Which implementation a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A router enrolling with a token: everything [`Store::enroll`] writes in one transaction.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub token_id: EnrollmentTokenId,
    pub tenant_id: TenantId,
    pub now: Timestamp,
    /// `Some` when the serial is already known and re-enrollment was authorised: the device
    /// keeps its id, name and group, and all its earlier credentials are revoked.
    pub existing_device: Option<DeviceId>,
    /// The id for a new device (ignored when `existing_device` is set).
    pub new_device_id: DeviceId,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub agent_version: String,
    /// The token's group, for a new router or a pre-registered one imported without a group.
    pub group_id: Option<GroupId>,
    /// The router's enrollment state afterwards.
    pub state: EnrollmentState,
    pub credential: Credential,
    /// What the event log says about it, written in the same transaction.
    pub event: Event,
}

/// A session closed for a node that stopped without closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedSession {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub session: SessionId,
}

/// A change to a group. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    pub name: Option<String>,
    /// `Some(None)` removes the group's timer profile.
    pub timer_profile: Option<Option<TimerProfile>>,
    /// `Some(None)` removes the group's maintenance window.
    pub maintenance_window: Option<Option<floatilla_domain::jobs::MaintenanceWindow>>,
}

/// A change an operator makes to a router. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DevicePatch {
    pub name: Option<String>,
    /// `Some(None)` takes the router out of its group.
    pub group_id: Option<Option<GroupId>>,
}

/// Everything Floatilla persists. Every method is a single transaction.
#[async_trait]
pub trait Store:
    EventLog
    + Accounts
    + EnrollmentControl
    + Cluster
    + LicensePools
    + Webhooks
    + Provider
    + Tags
    + Jobs
    + Artifacts
    + Rollouts
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Whether the database answers: for health checks.
    async fn ping(&self) -> Result<()>;

    // Installation settings (key/value).
    async fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` unless `key` already has one, and returns the value in force. Safe when
    /// several processes initialise the same database at once.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String>;

    // Tenants.
    async fn create_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    /// All tenants, oldest first.
    async fn tenants(&self) -> Result<Vec<Tenant>>;

    // Groups. Names are unique per tenant: `Conflict` otherwise.
    async fn create_group(&self, group: &Group) -> Result<()>;
    /// The tenant's groups ordered by name.
    async fn groups(&self, tenant: TenantId) -> Result<Vec<Group>>;
    async fn group(&self, tenant: TenantId, id: GroupId) -> Result<Option<Group>>;
    async fn group_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Group>>;
    async fn update_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        patch: &GroupPatch,
    ) -> Result<Group>;
    /// Deletes the group; its routers and enrollment tokens are left without a group.
    async fn delete_group(&self, tenant: TenantId, id: GroupId) -> Result<()>;

    // Enrollment tokens.
    async fn create_enrollment_token(&self, token: &EnrollmentToken) -> Result<()>;
    /// The tenant's tokens, newest first.
    async fn enrollment_tokens(&self, tenant: TenantId) -> Result<Vec<EnrollmentToken>>;
    async fn enrollment_token(
        &self,
        tenant: TenantId,
        id: EnrollmentTokenId,
    ) -> Result<Option<EnrollmentToken>>;
    async fn enrollment_token_by_hash(&self, secret_hash: &str) -> Result<Option<EnrollmentToken>>;
    async fn revoke_enrollment_token(
        &self,
        tenant: TenantId,
        id: EnrollmentTokenId,
        now: Timestamp,
    ) -> Result<()>;

    /// Counts one use of the token (refused, writing nothing, if the token is revoked, expired or
    /// used up at `now`: checked and counted atomically, so `max_uses` holds under concurrency),
    /// creates or re-keys the device (a pre-registered one keeps its name, and its group unless
    /// it has none), sets its enrollment state, revokes its earlier credentials, stores the new
    /// credential and clears any re-enrollment consent.
    async fn enroll(&self, enrollment: &Enrollment) -> Result<Result<Device, TokenRefusal>>;

    // Devices.
    async fn device(&self, tenant: TenantId, id: DeviceId) -> Result<Option<Device>>;
    /// Any tenant's device: for the device gateway, which learns the tenant from the device.
    async fn device_by_id(&self, id: DeviceId) -> Result<Option<Device>>;
    async fn device_by_serial(&self, tenant: TenantId, serial: &str) -> Result<Option<Device>>;
    /// The serial numbers of those of `ids` that are the tenant's routers, read at once.
    async fn device_serials(
        &self,
        tenant: TenantId,
        ids: &[DeviceId],
    ) -> Result<std::collections::HashMap<DeviceId, String>>;
    /// Lists routers ordered by serial, with the total number that match the filter.
    async fn list_devices(
        &self,
        tenant: TenantId,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<Device>>;
    async fn update_device(
        &self,
        tenant: TenantId,
        id: DeviceId,
        patch: &DevicePatch,
    ) -> Result<Device>;
    /// Deletes the device with its credentials and connection history.
    async fn delete_device(&self, tenant: TenantId, id: DeviceId) -> Result<()>;
    async fn allow_reenrollment(
        &self,
        tenant: TenantId,
        id: DeviceId,
        until: Timestamp,
    ) -> Result<()>;
    /// What the router says about itself in HELLO.
    async fn record_inventory(
        &self,
        id: DeviceId,
        model: &str,
        firmware: &str,
        agent_version: &str,
    ) -> Result<()>;
    async fn record_status(&self, id: DeviceId, status: &DeviceStatus) -> Result<()>;

    // Credentials.
    async fn credential(&self, id: CredentialId) -> Result<Option<Credential>>;
    async fn add_credential(&self, credential: &Credential) -> Result<()>;
    async fn revoke_credential(&self, id: CredentialId, now: Timestamp) -> Result<()>;
    /// Revokes every credential of the device but `except`; returns how many were still
    /// unrevoked.
    async fn revoke_device_credentials(
        &self,
        device: DeviceId,
        except: Option<CredentialId>,
        now: Timestamp,
    ) -> Result<u64>;

    // Connections.
    /// Opens a connection-history row and marks the device online with this as its current
    /// session (`connected_since` and `last_seen` = `connected_at`). Rows the device still has
    /// open end as `superseded` at `connected_at`. With `only_credential`,
    /// every other credential of the device is revoked in the same transaction: the router
    /// connected with that one, so it holds no other.
    async fn record_connect(
        &self,
        record: &ConnectionRecord,
        only_credential: Option<CredentialId>,
    ) -> Result<()>;
    /// Closes the session's history row; the device goes offline (recording `at` and `reason`)
    /// only if this session is still its current one, so a superseded session never takes its
    /// successor offline.
    async fn record_disconnect(
        &self,
        session: SessionId,
        device: DeviceId,
        at: Timestamp,
        reason: DisconnectReason,
    ) -> Result<()>;
    /// Heartbeat bookkeeping for many devices in one transaction.
    async fn record_last_seen(&self, seen: &[(DeviceId, Timestamp)]) -> Result<()>;
    /// Closes every open session of a node (after it stopped without closing them) with
    /// `reason`; returns the routers and sessions it closed.
    async fn close_node_sessions(
        &self,
        node_id: &str,
        at: Timestamp,
        reason: DisconnectReason,
    ) -> Result<Vec<ClosedSession>>;
    /// The device's connections, newest first.
    async fn connection_history(
        &self,
        device: DeviceId,
        limit: u32,
    ) -> Result<Vec<ConnectionRecord>>;

    /// Deletes at most `at_most` connections that ended before `ended_before` (open ones are
    /// kept); returns how many. Called repeatedly, so no single statement holds locks for long.
    async fn prune_connection_history(&self, ended_before: Timestamp, at_most: u32) -> Result<u64>;

    // API tokens.
    async fn create_api_token(&self, token: &ApiToken) -> Result<()>;
    async fn api_token_by_hash(&self, secret_hash: &str) -> Result<Option<ApiToken>>;
    /// The tenant's API tokens, newest first.
    async fn api_tokens(&self, tenant: TenantId) -> Result<Vec<ApiToken>>;
    async fn revoke_api_token(
        &self,
        tenant: TenantId,
        id: ApiTokenId,
        now: Timestamp,
    ) -> Result<()>;
}
