//! The PostgreSQL store, for several nodes sharing one database.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

use crate::accounts::impl_accounts;
use crate::artifacts::impl_artifacts;
use crate::cluster::{CHANNEL, ClusterMessage, Subscription, impl_cluster};
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

/// Connections each node keeps to the database.
const MAX_CONNECTIONS: u32 = 16;

/// The key of the session-level advisory lock held while migrating ("floatill" in ASCII), so that
/// nodes starting at once migrate one after the other.
const MIGRATION_LOCK: i64 = 0x666c_6f61_7469_6c6c;

/// A [`Store`](crate::Store) in a PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    /// For the cluster subscription's own connection, which stays out of the pool.
    options: PgConnectOptions,
}

impl PgStore {
    const BACKEND: Backend = Backend::Postgres;
    /// The lower-case search column (migration 0013), with its trigram index.
    const ROUTER_SEARCH: &'static str = "d.search_text LIKE lower({pattern}) ESCAPE '\\'";
    /// A search is planned for its own pattern: after a few runs of a prepared statement
    /// PostgreSQL may keep one generic plan, which reads the whole trigram index for a pattern
    /// of one or two characters (4 times slower than a scan of the table, measured at 100,000
    /// routers), where a plan for the pattern scans the table or uses the index as it fits.
    const SEARCH_PLANNING: Option<&'static str> =
        Some("SET LOCAL plan_cache_mode = force_custom_plan");

    const LOCK_POOL: &'static str = "SELECT version, next_place, capacity, licenses_revision, \
        usage_at, usage_managed, usage_licensed, usage_excess \
        FROM license_pools WHERE tenant_id = $1 FOR UPDATE";
    const LOCK_SERVICE_CLOCK: &'static str =
        "SELECT downtime_ms, alive_at FROM service_clock WHERE id = 1 FOR UPDATE";
    const INSERT_POOL_LOG: &'static str = "INSERT INTO license_log (tenant_id, position, op) \
        SELECT tenant_id, position, op FROM jsonb_to_recordset($1::jsonb) \
        AS r(tenant_id TEXT, position BIGINT, op TEXT)";
    const UPDATE_POOL_ROUTERS: &'static str = "UPDATE devices d SET \
        managed = r.managed, pinned = r.pinned, license_place = r.place, \
        license_session = r.session, linger_until = r.linger_until, license_state = r.state, \
        license_reason = COALESCE(r.reason, d.license_reason) \
        FROM jsonb_to_recordset($1::jsonb) AS r(id TEXT, managed BOOLEAN, pinned BOOLEAN, \
        place BIGINT, session TEXT, linger_until BIGINT, state TEXT, reason TEXT) \
        WHERE d.id = r.id AND d.tenant_id = $2";
    /// Routers' reports, a JSON array (see `jobs::report_rounds`): each moves its execution if
    /// it stands in one of the report's states.
    const REPORT_EXECUTIONS: &'static str = "UPDATE job_executions e SET state = r.to_state, \
        reason = COALESCE(r.reason, e.reason), updated_at = r.at, finished_at = r.finished_at \
        FROM jsonb_to_recordset($1::jsonb) AS r(id TEXT, tenant TEXT, device TEXT, \
        from_states JSONB, to_state TEXT, reason TEXT, at BIGINT, finished_at BIGINT, \
        attempt BIGINT) \
        WHERE e.id = r.id AND e.tenant_id = r.tenant AND e.device_id = r.device \
        AND (r.attempt IS NULL OR e.attempt = r.attempt) \
        AND e.state IN (SELECT jsonb_array_elements_text(r.from_states))";
    const INSERT_EVENTS: &'static str = "INSERT INTO events \
        (id, tenant_id, at, kind, device_id, message) \
        SELECT id, tenant_id, at, kind, device_id, message FROM jsonb_to_recordset($1::jsonb) \
        AS r(id TEXT, tenant_id TEXT, at BIGINT, kind TEXT, device_id TEXT, message TEXT)";

    /// Connects to the database at `url` (`postgres://…`) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        migrate(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        Ok(Self { pool, options })
    }

    /// READ COMMITTED: a statement that finds a row locked by a concurrent writer waits and then
    /// re-checks its condition against the committed row, which the conditional updates rely on.
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// One snapshot for every statement, so that a listing's count agrees with its rows.
    async fn begin_read(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }
}

/// Our migrations, without sqlx's own advisory lock: ours already covers both the version check
/// and the migration.
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.set_locking(false);
    migrator
}

/// Checks the schema version and applies pending migrations under [`MIGRATION_LOCK`], on a
/// connection of its own: closing it releases the lock, also when migrating failed.
async fn migrate(options: &PgConnectOptions) -> Result<()> {
    let mut conn = PgConnection::connect_with(options).await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut conn)
        .await?;
    let migrated = migrate_locked(&mut conn).await;
    let closed = conn.close().await;
    migrated?;
    Ok(closed?)
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<()> {
    let migrator = migrator();
    let has_migrations: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    let newest_applied: Option<i64> = if has_migrations {
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await?
    } else {
        None
    };
    check_schema_version(newest_applied, &migrator)?;
    // `run_direct` rather than `run`: see the SQLite store's `migrate`.
    migrator.run_direct(None, conn, false).await?;
    Ok(())
}

impl PgStore {
    /// Placeholders `$first, …` for parameters bound in order.
    fn sequential_placeholders(first: usize, count: usize) -> String {
        crate::tags::placeholders(first, count)
    }

    async fn publish_message(&self, message: &ClusterMessage) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(message.encode()?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A connection of its own that listens on the cluster channel, reconnecting when lost. It
    /// comes from a pool of one, so the listener never takes a connection from the queries.
    async fn open_subscription(&self) -> Result<Option<Subscription>> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Subscription::new(listener)))
    }
}

impl_store!(PgStore);
impl_event_log!(PgStore);
impl_enrollment_control!(PgStore);
impl_cluster!(PgStore);
impl_license_pools!(PgStore);
impl_webhooks!(PgStore);
impl_provider!(PgStore);
impl_tags!(PgStore);
impl_jobs!(PgStore);
impl_artifacts!(PgStore);
impl_rollouts!(PgStore);
impl_accounts!(PgStore);
