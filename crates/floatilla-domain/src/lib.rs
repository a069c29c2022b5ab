//! Floatilla's rules, free of I/O: identifiers, tenancy, roles, connection states and their
//! disconnect reasons, timers, and the clock every deadline is measured on.

pub mod accounts;
pub mod clock;
pub mod clones;
pub mod connection;
pub mod enrollment;
pub mod events;
pub mod ids;
pub mod jobs;
pub mod licensing;
pub mod model;
mod names;
pub mod tenancy;
pub mod timers;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use connection::{ConnectionState, DisconnectReason};
pub use ids::{
    ApiTokenId, ArtifactId, AuditEntryId, CodeBatchId, CredentialId, DeviceId, EnrollmentTokenId,
    EventId, ExecutionId, GroupId, JobId, LicenseId, SessionId, TenantId, UserId,
    WebhookDeliveryId, WebhookId,
};
pub use tenancy::{Mode, Role};
pub use timers::{TimerChange, TimerProfile, Timers};
