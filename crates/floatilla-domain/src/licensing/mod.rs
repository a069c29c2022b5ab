//! Floating licenses: what licenses grant over time, and the rule that hands out their seats.

pub mod activation;
pub mod clock_guard;
pub mod forecast;
pub mod ledger;
pub mod license;
pub mod pool;
#[cfg(test)]
mod pool_model;
pub mod service_clock;
pub mod signed;
pub mod usage;

pub use clock_guard::{ClockChange, ClockDoubt, ClockGuard, ClockVerdict};
pub use forecast::{CapacityForecast, NoticeWindows, next_capacity_change, next_capacity_drop};
pub use ledger::{Ledger, LedgerRouter, PoolOp};
pub use license::{
    Capacity, EXPIRING_WITHIN_DAYS, LicenseStatus, LicenseTerm, Lineage, Seats, capacity_at,
    effective_terms, license_status, next_boundary, superseded_at,
};
pub use pool::{
    Changes, LicenseReason, LicenseState, Pool, PoolCounts, PoolError, PoolEvent, StoredRouter,
    Transition,
};
pub use service_clock::{ServiceClock, ServiceInstant};
pub use signed::{
    ClaimsError, FormatError, IssuerCertificate, IssuerKey, IssuerPublicKey, LicenseClaims,
    LicenseRejection, RootKey, RootPublicKey, SignedIssuerCertificate, VerifiedLicense, inspect,
    issue, verify,
};
pub use usage::{Granularity, UsageBucket, UsageSample, accrue};
