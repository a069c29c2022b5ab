//! The embedded SQLite store, for single-node sites.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};

use crate::accounts::impl_accounts;
use crate::artifacts::impl_artifacts;
use crate::cluster::{ClusterMessage, Subscription, impl_cluster};
use crate::enrollment::impl_enrollment_control;
use crate::events::impl_event_log;
use crate::jobs::impl_jobs;
use crate::licensing::impl_license_pools;
use crate::provider::impl_provider;
use crate::rollouts::impl_rollouts;
use crate::shared::{check_schema_version, impl_store};
use crate::tags::impl_tags;
use crate::webhooks::impl_webhooks;
use crate::{Backend, Result};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock before failing:
/// the admin CLI writes the same file while a server runs.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool. Readers run concurrently under WAL; writers queue on the file's
/// write lock whatever the pool size, so a few connections are enough.
const MAX_CONNECTIONS: u32 = 8;

const WAL_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// A [`Store`](crate::Store) in one SQLite database file.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;
    /// SQLite's `LIKE` already ignores case (for ASCII letters).
    const ROUTER_SEARCH: &'static str =
        "(d.serial LIKE {pattern} ESCAPE '\\' OR d.name LIKE {pattern} ESCAPE '\\')";
    const SEARCH_PLANNING: Option<&'static str> = None;

    /// `BEGIN IMMEDIATE` already holds the database's write lock.
    const LOCK_POOL: &'static str = "SELECT version, next_place, capacity, licenses_revision, \
        usage_at, usage_managed, usage_licensed, usage_excess \
        FROM license_pools WHERE tenant_id = $1";
    const LOCK_SERVICE_CLOCK: &'static str =
        "SELECT downtime_ms, alive_at FROM service_clock WHERE id = 1";
    const INSERT_POOL_LOG: &'static str = "INSERT INTO license_log (tenant_id, position, op) \
        SELECT value ->> 'tenant_id', value ->> 'position', value ->> 'op' FROM json_each($1)";
    /// The unary `+` keeps SQLite from scanning the tenant's routers by the tenant index for
    /// every array element: each element finds its row by id instead.
    const UPDATE_POOL_ROUTERS: &'static str = "UPDATE devices SET \
        managed = r.value ->> 'managed', pinned = r.value ->> 'pinned', \
        license_place = r.value ->> 'place', license_session = r.value ->> 'session', \
        linger_until = r.value ->> 'linger_until', license_state = r.value ->> 'state', \
        license_reason = COALESCE(r.value ->> 'reason', license_reason) \
        FROM json_each($1) AS r WHERE devices.id = r.value ->> 'id' AND +devices.tenant_id = $2";
    /// Routers' reports, a JSON array (see `jobs::report_rounds`): each moves its execution if
    /// it stands in one of the report's states. The unary `+` keeps each report finding its row
    /// by id rather than by a router's index.
    const REPORT_EXECUTIONS: &'static str = "UPDATE job_executions SET \
        state = r.value ->> 'to_state', \
        reason = COALESCE(r.value ->> 'reason', job_executions.reason), \
        updated_at = r.value ->> 'at', finished_at = r.value ->> 'finished_at' \
        FROM json_each($1) AS r WHERE job_executions.id = r.value ->> 'id' \
        AND +job_executions.tenant_id = r.value ->> 'tenant' \
        AND +job_executions.device_id = r.value ->> 'device' \
        AND (r.value ->> 'attempt' IS NULL OR job_executions.attempt = r.value ->> 'attempt') \
        AND job_executions.state IN (SELECT value FROM json_each(r.value -> 'from_states'))";
    const INSERT_EVENTS: &'static str = "INSERT INTO events \
        (id, tenant_id, at, kind, device_id, message) \
        SELECT value ->> 'id', value ->> 'tenant_id', value ->> 'at', value ->> 'kind', \
        value ->> 'device_id', value ->> 'message' FROM json_each($1)";

    /// Opens the database file, creating it and its directory when missing, and brings its
    /// schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                sqlx::Error::Configuration(
                    format!("cannot create directory {}: {e}", parent.display()).into(),
                )
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL keeps the database consistent on power loss (only the latest
            // commits may be lost) and saves an fsync per transaction.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        enable_wal(&options).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// Takes the write lock at BEGIN rather than at the first write. A deferred transaction that
    /// reads before it writes fails outright (SQLITE_BUSY, without waiting) if another
    /// connection committed in between; an immediate one waits up to the busy timeout instead.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A deferred transaction: under WAL, all its reads see the snapshot of its first one.
    async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin().await?)
    }
}

/// Switches a new file to WAL (a persistent setting) before the pool opens it. The switch needs an
/// exclusive lock that SQLite does not wait for (busy_timeout does not apply), so of two
/// processes opening the same new file at once one fails with SQLITE_BUSY at once: this retries
/// for as long as the busy timeout. Once the file is in WAL mode, connecting no longer needs
/// that lock.
async fn enable_wal(options: &SqliteConnectOptions) -> Result<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match SqliteConnection::connect_with(options).await {
            Ok(conn) => return Ok(conn.close().await?),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(WAL_RETRY_INTERVAL).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SQLITE_BUSY, or one of its extended codes.
fn is_busy(error: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == SQLITE_BUSY),
        _ => false,
    }
}

/// Checks the schema version and applies pending migrations while holding the write lock, so a
/// server and the admin CLI opening a new file at once cannot both try to create the schema.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let has_migrations: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *tx)
    .await?;
    let newest_applied: Option<i64> = if has_migrations > 0 {
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *tx)
            .await?
    } else {
        None
    };
    check_schema_version(newest_applied, &MIGRATOR)?;
    // `run_direct` is `run` on a connection we already hold: `run` takes an `Acquire` with a
    // lifetime rustc cannot relate to this transaction, which makes the future of `open` not
    // `Send` (the "implementation of `Acquire` is not general enough" error).
    MIGRATOR.run_direct(None, &mut *tx, false).await?;
    tx.commit().await?;
    Ok(())
}

impl SqliteStore {
    /// Placeholders for a statement whose parameters are all these, bound in order: anonymous
    /// (`?`), because SQLite looks up a numbered or named parameter's name by walking all of
    /// them, which makes binding thousands of `$N` parameters quadratic.
    fn sequential_placeholders(_first: usize, count: usize) -> String {
        vec!["?"; count].join(", ")
    }

    /// A single node has nobody to tell.
    async fn publish_message(&self, _message: &ClusterMessage) -> Result<()> {
        Ok(())
    }

    async fn open_subscription(&self) -> Result<Option<Subscription>> {
        Ok(None)
    }
}

impl_store!(SqliteStore);
impl_event_log!(SqliteStore);
impl_enrollment_control!(SqliteStore);
impl_cluster!(SqliteStore);
impl_license_pools!(SqliteStore);
impl_webhooks!(SqliteStore);
impl_provider!(SqliteStore);
impl_tags!(SqliteStore);
impl_jobs!(SqliteStore);
impl_artifacts!(SqliteStore);
impl_rollouts!(SqliteStore);
impl_accounts!(SqliteStore);
