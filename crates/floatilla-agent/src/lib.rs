//! The router side of Floatilla: enrollment and the verified control channel.
//!
//! This crate never links server code: a router build contains only what is here.

pub mod connection;
pub mod tls;

pub use connection::{
    ChannelError, ControlChannel, ServerAddress, enroll, open_channel, open_websocket,
};
pub use tls::{ServerTrust, TrustError};
