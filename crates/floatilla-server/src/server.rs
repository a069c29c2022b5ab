//! Starting and stopping a server node: listeners, TLS, background tasks, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use floatilla_domain::Clock;
use floatilla_domain::licensing::NoticeWindows;
use floatilla_protocol::CaFingerprint;
use floatilla_store::Store;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::error::Error;
use crate::gateway::admission::Admission;
use crate::gateway::last_seen::LastSeen;
use crate::gateway::registry::SessionRegistry;
use crate::installation::Installation;
use crate::licensing::{PoolSettings, Pools};
use crate::state::AppState;
use crate::tls::{self, CertificateAuthority, LEAF_RENEW_BEFORE_DAYS, LeafResolver, TlsError};

/// The peer address of a connection, put into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long shutdown waits for sessions to say goodbye and for requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setup(#[from] Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node. Dropping it does not stop it: call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub console_addr: Option<SocketAddr>,
    state: AppState,
    http_shutdown: CancellationToken,
    background: TaskTracker,
}

impl RunningServer {
    /// The device channel's address as routers are given it.
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    pub fn ca_fingerprint(&self) -> CaFingerprint {
        self.state.ca.fingerprint()
    }

    pub fn ca_certificate_pem(&self) -> &str {
        self.state.ca.certificate_pem()
    }

    pub fn installation(&self) -> &Installation {
        &self.state.installation
    }

    /// How many routers hold a control channel to this node.
    pub fn connected_routers(&self) -> usize {
        self.state.sessions.len()
    }

    /// Creates an enrollment token for the on-premises tenant, valid for `valid_for`: for
    /// programs that embed a server (the demo).
    pub async fn create_enrollment_token(
        &self,
        name: &str,
        valid_for: chrono::Duration,
    ) -> Result<String, Error> {
        let tenant = self.on_prem_tenant()?;
        let expires_at = Some(self.state.clock.now() + valid_for);
        let (_, text) = crate::api::tokens::issue_enrollment_token(
            &self.state,
            tenant,
            name,
            None,
            expires_at,
            None,
        )
        .await?;
        Ok(text)
    }

    /// Creates an API token for the on-premises tenant.
    pub async fn create_api_token(
        &self,
        name: &str,
        role: floatilla_domain::Role,
    ) -> Result<String, Error> {
        let tenant = self.on_prem_tenant()?;
        let (_, text) =
            crate::api::tokens::issue_api_token(&self.state, tenant, name, role).await?;
        Ok(text)
    }

    /// A console account of the on-premises tenant with a newly generated password, which
    /// replaces the password of an account that exists already: for programs that embed a
    /// server (the demo). Answers the password.
    pub async fn console_account(
        &self,
        email: &str,
        role: floatilla_domain::Role,
    ) -> Result<String, Error> {
        let tenant = self.on_prem_tenant()?;
        let store = self.state.store.as_ref();
        let password = crate::accounts::generated_password();
        match store.user_by_email(email).await? {
            Some(mut user) if user.tenant_id == Some(tenant) => {
                user.password_hash = Some(crate::accounts::hash_password(password.clone()).await?);
                user.status = floatilla_domain::accounts::UserStatus::Active;
                store.update_user(&user).await?;
            }
            Some(_) => {
                return Err(Error::Conflict(format!(
                    "{email} belongs to another tenant"
                )));
            }
            None => {
                crate::accounts::create_user(
                    store,
                    self.state.clock.now(),
                    email,
                    role,
                    Some(tenant),
                    password.clone(),
                )
                .await?;
            }
        }
        Ok(password)
    }

    /// The on-premises tenant's licenses.
    pub async fn licenses(&self) -> Result<Vec<floatilla_store::License>, Error> {
        Ok(self.state.store.licenses(self.on_prem_tenant()?).await?)
    }

    /// Adds an unsigned license to the on-premises tenant's pool (the server must accept
    /// them): for programs that embed a server (the demo).
    pub async fn add_unsigned_license(
        &self,
        name: &str,
        seats: floatilla_domain::licensing::Seats,
        not_after: Option<floatilla_domain::Timestamp>,
    ) -> Result<(), Error> {
        let tenant = self.on_prem_tenant()?;
        let request = crate::api::views::LicenseRequest {
            name: name.to_owned(),
            seats,
            not_before: None,
            not_after,
        };
        crate::api::licensing::add_unsigned_license(&self.state, tenant, &request)
            .await
            .map(|_| ())
    }

    fn on_prem_tenant(&self) -> Result<floatilla_domain::TenantId, Error> {
        self.state.installation.on_prem_tenant.ok_or_else(|| {
            Error::invalid("tenant_required", "a cloud installation has many tenants")
        })
    }

    /// Tells every router to come back later, records their disconnects, finishes requests in
    /// flight and stops.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.state.session_tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.state.session_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some router sessions did not end in time");
        }
        self.http_shutdown.cancel();
        self.background.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("some requests did not finish in time");
        }
        // Stopped cleanly, with every session recorded as ended: nothing for others to close.
        if let Err(error) = self
            .state
            .store
            .forget_node(&self.state.config.node_id)
            .await
        {
            tracing::warn!(%error, "cannot remove this node from the cluster's list");
        }
    }
}

/// Opens the installation, binds the listeners and starts serving.
pub async fn start(
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    config
        .timers
        .validate()
        .map_err(|message| Error::invalid("invalid_timers", message))?;
    // Install the recorder before anything is counted.
    crate::metrics::handle();
    let installation = Installation::open(store.as_ref(), clock.as_ref(), config.mode).await?;
    let ca = Arc::new(CertificateAuthority::load_or_create(store.as_ref()).await?);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let mut config = config;
    if config.node_id.is_empty() {
        config.node_id = crate::config::default_node_id(local_addr.port());
    }
    let names = tls::leaf_names(local_addr.ip(), &config.hostnames);
    let resolver = Arc::new(LeafResolver::new(ca.issue_leaf(&names, clock.now())?)?);
    let device_tls = tls::server_config(resolver.clone())?;

    let console = match &config.console {
        Some(console) => {
            let tls = tls::config_from_files(&console.certificate, &console.private_key)?;
            let listener =
                TcpListener::bind(console.listen)
                    .await
                    .map_err(|source| StartError::Listen {
                        addr: console.listen,
                        source,
                    })?;
            Some((listener, tls))
        }
        None => None,
    };

    let admission = Arc::new(Admission::new(
        config.max_router_connections,
        config.max_connects_per_sec,
    ));
    let sessions = Arc::new(SessionRegistry::default());
    let licensing = Pools::open(
        store.clone(),
        config.node_id.clone(),
        clock.clone(),
        sessions.clone(),
        PoolSettings {
            linger: config.license_linger,
            notice_windows: NoticeWindows::new(config.license_notice_days.clone()),
            mailer: match &config.smtp {
                Some(settings) => Some(Arc::new(
                    crate::mail::Mailer::new(settings)
                        .map_err(|e| Error::invalid("invalid_smtp", e.to_string()))?,
                )),
                None => None,
            },
        },
    )
    .await
    .map_err(Error::from)?;
    // Sessions this node left open when it last stopped uncleanly are over; their routers'
    // lingers start now (the outage did not count against them).
    let closed = store
        .close_node_sessions(
            &config.node_id,
            clock.now(),
            floatilla_domain::DisconnectReason::ConnectionLost,
        )
        .await
        .map_err(Error::from)?;
    if !closed.is_empty() {
        tracing::warn!(closed = closed.len(), node = %config.node_id, "closed sessions left open by an earlier run");
    }
    crate::licensing::sessions_closed(&licensing, &closed, clock.now()).await;
    let downloads = Arc::new(tokio::sync::Semaphore::new(config.max_downloads));
    let state = AppState {
        store: store.clone(),
        clock: clock.clone(),
        config: Arc::new(config),
        installation: Arc::new(installation),
        ca: ca.clone(),
        licensing: licensing.clone(),
        tenancy: Arc::new(crate::tenancy::Tenancy::load(store.as_ref()).await?),
        sessions,
        last_seen: Arc::new(LastSeen::default()),
        job_reports: Arc::default(),
        downloads,
        rollout_steps: Arc::default(),
        admission,
        forwarded_calls: Arc::default(),
        login_throttle: Arc::default(),
        shutdown: CancellationToken::new(),
        session_tasks: TaskTracker::new(),
    };
    let http_shutdown = CancellationToken::new();
    let background = TaskTracker::new();

    let device_routes = Router::new()
        .merge(crate::gateway::routes())
        .merge(operator_routes(&state))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone());
    background.spawn(serve(
        listener,
        device_tls,
        device_routes,
        state.config.proxy_protocol,
        http_shutdown.clone(),
    ));

    let console_addr = match console {
        Some((listener, tls)) => {
            let addr = listener.local_addr().ok();
            let routes = operator_routes(&state)
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .with_state(state.clone());
            background.spawn(serve(listener, tls, routes, false, http_shutdown.clone()));
            addr
        }
        None => None,
    };

    let last_seen = state.last_seen.clone();
    background.spawn(crate::gateway::flush_every(
        state.config.last_seen_flush_interval,
        state.shutdown.clone(),
        async move || last_seen.flush(store.as_ref()).await,
    ));
    let (job_reports, store) = (state.job_reports.clone(), state.store.clone());
    background.spawn(crate::gateway::flush_every(
        crate::gateway::job_reports::FLUSH_INTERVAL,
        state.shutdown.clone(),
        async move || job_reports.flush(store.as_ref()).await,
    ));
    background.spawn(rotate_leaf(state.clone(), resolver, names));
    background.spawn(prune_expired(state.clone()));
    background.spawn(crate::cluster::listen(state.clone()));
    background.spawn(crate::cluster::watch_nodes(state.clone()));
    background.spawn(licensing.run_timers(http_shutdown.clone()));
    background.spawn(crate::webhooks::run(state.clone()));
    background.spawn(crate::jobs::end_overdue(state.clone()));
    background.spawn(crate::rollouts::run(state.clone()));

    Ok(RunningServer {
        local_addr,
        console_addr,
        state,
        http_shutdown,
        background,
    })
}

/// The API and the console, with the audit log recording what they change.
fn operator_routes(state: &AppState) -> Router<AppState> {
    crate::api::routes()
        .merge(crate::console::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record_changes,
        ))
}

/// Accepts TLS connections and serves HTTP/1.1 (with WebSocket upgrades) until `shutdown`.
/// With `proxy_protocol`, each connection must start with a load balancer's PROXY header, whose
/// source address becomes the connection's remote address.
async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: Router,
    proxy_protocol: bool,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let accepted = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, async {
                let (stream, remote) = if proxy_protocol {
                    crate::proxy_protocol::accept(tcp, peer).await?
                } else {
                    (crate::proxy_protocol::Rewind::plain(tcp), peer)
                };
                Ok::<_, std::io::Error>((acceptor.accept(stream).await?, remote))
            })
            .await;
            let (tls, remote) = match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(routes.map_request(
                move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(RemoteAddr(remote));
                    request
                },
            ));
            let mut connection = std::pin::pin!(
                hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
            );
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %remote, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
}

/// Replaces the device leaf certificate before it expires.
async fn rotate_leaf(state: AppState, resolver: Arc<LeafResolver>, names: Vec<String>) {
    loop {
        let due = resolver.expires_at() - chrono::Duration::days(LEAF_RENEW_BEFORE_DAYS);
        tokio::select! {
            () = state.clock.sleep_until(due) => {}
            () = state.shutdown.cancelled() => return,
        }
        match state.ca.issue_leaf(&names, state.clock.now()) {
            Ok(leaf) => match resolver.replace(leaf) {
                Ok(()) => {
                    tracing::info!(expires_at = %resolver.expires_at(), "rotated the device certificate")
                }
                Err(error) => tracing::error!(%error, "cannot use the new device certificate"),
            },
            Err(error) => tracing::error!(%error, "cannot issue a new device certificate"),
        }
        if resolver.expires_at() - chrono::Duration::days(LEAF_RENEW_BEFORE_DAYS)
            <= state.clock.now()
        {
            // Issuing failed: try again in an hour rather than in a tight loop.
            let retry = state.clock.now() + chrono::Duration::hours(1);
            tokio::select! {
                () = state.clock.sleep_until(retry) => {}
                () = state.shutdown.cancelled() => return,
            }
        }
    }
}

/// How many history rows one statement deletes, so pruning never holds locks for long.
const PRUNE_BATCH: u32 = 5_000;

/// How long an artifact upload may take before its remains are removed.
const STALE_UPLOAD: chrono::Duration = chrono::Duration::hours(24);

/// Deletes connection history and events past the retention period, and artifact uploads that
/// never completed: at start, then once a day.
async fn prune_expired(state: AppState) {
    loop {
        // The next round is due a day after this one began: a clock that moved on while this
        // one ran makes it due at once, rather than a day after that.
        let began = state.clock.now();
        let cutoff = began - state.config.retention;
        let store = &state.store;
        prune("connection history", cutoff, |batch| {
            store.prune_connection_history(cutoff, batch)
        })
        .await;
        prune("events", cutoff, |batch| store.prune_events(cutoff, batch)).await;
        let audit_cutoff = began - state.config.audit_retention;
        prune("audit log", audit_cutoff, |batch| {
            store.prune_audit(audit_cutoff, batch)
        })
        .await;
        let lifetime = state.config.session_lifetime;
        if let Err(error) = store
            .prune_console_sessions(began - lifetime.absolute, began - lifetime.idle)
            .await
        {
            tracing::warn!(%error, "cannot remove ended console sessions");
        }
        // An upload whose node stopped before it completed would otherwise hold its name and
        // version for ever.
        match store.abandon_stale_uploads(began - STALE_UPLOAD).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed artifact uploads that never completed"),
            Err(error) => tracing::warn!(%error, "cannot remove stale artifact uploads"),
        }
        let next = began + chrono::Duration::days(1);
        tokio::select! {
            () = state.clock.sleep_until(next) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}

/// Deletes batch after batch until a batch comes back short.
async fn prune<F, Fut>(what: &str, cutoff: floatilla_domain::Timestamp, mut delete_batch: F)
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = floatilla_store::Result<u64>>,
{
    let mut pruned = 0;
    loop {
        match delete_batch(PRUNE_BATCH).await {
            Ok(deleted) => {
                pruned += deleted;
                if deleted < u64::from(PRUNE_BATCH) {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, what, "cannot prune; will retry");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(pruned, %cutoff, what, "pruned past the retention period");
    }
}
