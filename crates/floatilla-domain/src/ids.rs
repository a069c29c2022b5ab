//! Typed identifiers, so a device id can never be passed where a tenant id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A customer's space: every router, group, token and license belongs to one.
    TenantId
);
id_type!(
    /// A router known to the server.
    DeviceId
);
id_type!(GroupId);
id_type!(
    /// One entry of the event log; time-ordered, so listings page by it.
    EventId
);
id_type!(EnrollmentTokenId);
id_type!(
    /// A management task for one or more routers.
    JobId
);
id_type!(
    /// One router's execution of a job.
    ExecutionId
);
id_type!(
    /// A batch of activation codes the provider created together.
    CodeBatchId
);
id_type!(ApiTokenId);
id_type!(
    /// One router credential (several exist briefly while one is being renewed).
    CredentialId
);
id_type!(
    /// One control-channel connection of a router.
    SessionId
);
id_type!(
    /// A license installed in a tenant's pool.
    LicenseId
);
id_type!(
    /// An address to which a tenant's events are POSTed.
    WebhookId
);
id_type!(
    /// One event on its way to one webhook, with all its attempts.
    WebhookDeliveryId
);
id_type!(
    /// A file jobs install: a firmware image, a software package, a configuration or
    /// certificates.
    ArtifactId
);
id_type!(
    /// A person who logs in to the console.
    UserId
);
id_type!(
    /// One entry of the audit log; time-ordered, so listings page by it.
    AuditEntryId
);
