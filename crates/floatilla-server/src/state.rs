//! What every request handler and session task shares.

use std::sync::Arc;

use floatilla_domain::Clock;
use floatilla_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::ForwardedCalls;
use crate::config::ServerConfig;
use crate::gateway::admission::Admission;
use crate::gateway::job_reports::JobReports;
use crate::gateway::last_seen::LastSeen;
use crate::gateway::registry::SessionRegistry;
use crate::installation::Installation;
use crate::licensing::Pools;
use crate::tenancy::Tenancy;
use crate::tls::CertificateAuthority;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    pub installation: Arc<Installation>,
    pub ca: Arc<CertificateAuthority>,
    /// This node's view of the tenants' license pools, through which every change goes.
    pub licensing: Arc<Pools>,
    /// Which tenants are suspended, and their budgets of failed activation-code attempts.
    pub tenancy: Arc<Tenancy>,
    pub sessions: Arc<SessionRegistry>,
    pub last_seen: Arc<LastSeen>,
    /// Routers' reports about their jobs, waiting to be written in one batch.
    pub job_reports: Arc<JobReports>,
    /// One permit per artifact download this node may serve at once.
    pub downloads: Arc<tokio::sync::Semaphore>,
    /// Held while this node takes a step of a rollout: the periodic tick and a step started by
    /// the API must not both release executions from the same tally.
    pub rollout_steps: Arc<tokio::sync::Mutex<()>>,
    /// The cap on open router channels and the rate of new ones.
    pub admission: Arc<Admission>,
    /// Calls waiting for an answer from the node that holds the router's session.
    pub forwarded_calls: Arc<ForwardedCalls>,
    /// Failed console logins per address and account on this node.
    pub login_throttle: Arc<std::sync::Mutex<floatilla_domain::accounts::LoginThrottle>>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// Every control-channel task, so shutdown can wait for them to record their end.
    pub session_tasks: TaskTracker,
}
