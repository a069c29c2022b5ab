//! Floating licenses: what licenses grant over time, and the rule that hands out their seats.

pub mod forecast;
pub mod ledger;
pub mod license;
pub mod pool;
#[cfg(test)]
mod pool_model;
pub mod service_clock;
pub mod usage;

pub use forecast::{CapacityForecast, next_capacity_change};
pub use ledger::{Ledger, LedgerRouter, PoolOp};
pub use license::{Capacity, LicenseTerm, Seats, capacity_at, next_boundary};
pub use pool::{
    Changes, LicenseReason, LicenseState, Pool, PoolCounts, PoolError, PoolEvent, StoredRouter,
    Transition,
};
pub use service_clock::{ServiceClock, ServiceInstant};
pub use usage::{Granularity, UsageBucket, UsageSample, accrue};
