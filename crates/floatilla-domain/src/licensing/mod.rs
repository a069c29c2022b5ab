//! Floating licenses: what licenses grant over time, and the rule that hands out their seats.

pub mod license;
pub mod pool;
#[cfg(test)]
mod pool_model;

pub use license::{Capacity, LicenseTerm, Seats, capacity_at, next_boundary};
pub use pool::{
    Changes, LicenseReason, LicenseState, Pool, PoolCounts, PoolError, PoolEvent, Transition,
};
