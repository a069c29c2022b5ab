//! The router side of Floatilla: enrollment, the verified control channel, the agent that runs on
//! a router, and the simulator that runs thousands of virtual routers.
//!
//! This crate never links server code: a router build contains only what is here.

pub mod agent;
pub mod clock;
pub mod connection;
pub mod download;
pub mod jobs;
pub mod router;
pub mod simulate;
pub mod tls;

pub use clock::RouterClock;
pub use connection::{ChannelError, Connector, ControlChannel, ServerAddress};
pub use router::{Enrolled, RouterEvent, RouterHost, RouterIdentity, RouterSettings, run_router};
pub use tls::{ServerTrust, TrustError};
