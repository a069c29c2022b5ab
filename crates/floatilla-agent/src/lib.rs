//! The router side of Floatilla: enrollment and the verified control channel.
//!
//! This crate never links server code: a router build contains only what is here.

pub mod clock;
pub mod connection;
pub mod tls;

pub use clock::RouterClock;
pub use connection::{ChannelError, Connector, ControlChannel, ServerAddress};
pub use tls::{ServerTrust, TrustError};
