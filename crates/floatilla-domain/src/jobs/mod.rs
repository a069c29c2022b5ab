//! Management tasks: the job kinds, one router's execution of a job and its states, rollouts in
//! phases, and maintenance windows. Rules without I/O; the server stores and dispatches.

pub mod artifact;
pub mod execution;
pub mod rollout;
pub mod window;

pub use artifact::{ArtifactKind, ByteRange, UnsatisfiableRange, requested_range};
pub use execution::{
    ExecutionEvent, ExecutionState, InvalidTransition, JobKind, deadline, moves, next_state,
    pending_state,
};
pub use rollout::{PhaseSize, PhaseTally, Plan, RolloutPolicy, RolloutStatus, StatusChange, plan};
pub use window::{MaintenanceWindow, WindowError};
