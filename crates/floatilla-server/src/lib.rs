//! Floatilla's server: the device gateway (enrollment and control channels), the REST API v1,
//! Prometheus metrics and the TLS that protects them, as thin layers over the domain and store.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod console;
pub mod error;
pub mod events;
pub mod gateway;
pub mod installation;
pub mod jobs;
pub mod licensing;
pub mod mail;
pub mod metrics;
pub mod proxy_protocol;
pub mod rollouts;
pub mod server;
pub mod state;
pub mod tenancy;
pub mod tls;
pub mod webhooks;

pub use config::{ConsoleListener, ServerConfig, SmtpSettings};
pub use error::Error;
pub use installation::{Installation, Trial};
pub use server::{RunningServer, StartError, start};
