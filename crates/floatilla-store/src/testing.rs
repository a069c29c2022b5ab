//! Disposable databases for tests, in this crate and in the server's integration tests.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tempfile::TempDir;

use crate::{Location, Result, Store};

/// The environment variable naming the PostgreSQL server for tests: a URL whose user may create
/// and drop databases.
pub const POSTGRES_URL_VAR: &str = "FLOATILLA_TEST_POSTGRES_URL";

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `bench` on a fresh SQLite database, then on a fresh PostgreSQL one when a server is
/// reachable: for benchmarks that compare the backends.
pub fn on_each_backend(
    runtime: &tokio::runtime::Runtime,
    mut bench: impl FnMut(&str, Arc<dyn Store>),
) {
    let sqlite = TestDb::sqlite();
    bench(
        "sqlite",
        runtime.block_on(sqlite.open()).expect("open SQLite"),
    );
    if let Some(postgres) = runtime.block_on(TestDb::postgres()) {
        bench(
            "postgres",
            runtime.block_on(postgres.open()).expect("open PostgreSQL"),
        );
    }
}

/// A fresh, empty database that is removed when this value drops.
pub struct TestDb {
    location: Location,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Removing the directory removes the database file with its WAL and shared-memory files.
    Sqlite {
        _dir: TempDir,
    },
    Postgres {
        admin_url: String,
        database: String,
    },
}

impl TestDb {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory for an SQLite test");
        TestDb {
            location: Location::Sqlite(dir.path().join("floatilla.db")),
            cleanup: Cleanup::Sqlite { _dir: dir },
        }
    }

    /// A new database on the PostgreSQL server named by [`POSTGRES_URL_VAR`] (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`), or `None`, after a notice on stderr, when
    /// that server cannot be reached. In CI (`CI=true`) an unreachable server is a failure
    /// instead: the PostgreSQL tests must not be skipped silently there.
    pub async fn postgres() -> Option<TestDb> {
        let url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let admin = match PgConnectOptions::from_str(&url) {
            Ok(options) => options,
            Err(e) => panic!("{POSTGRES_URL_VAR}={url} is not a PostgreSQL URL: {e}"),
        };
        // Bounded, so that an unroutable address fails fast instead of hanging every test.
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            PgConnection::connect_with(&admin)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CONNECT_TIMEOUT:?}")));
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
                "PostgreSQL not reachable at {url} ({e}); PostgreSQL tests are mandatory in CI \
                 (set {POSTGRES_URL_VAR})"
            ),
            Err(e) => {
                // Straight to the process's stderr: the test harness captures `eprintln!`, and
                // a skipped backend should be noticed.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTICE: PostgreSQL not reachable at {url} ({e}); skipping PostgreSQL tests \
                     (set {POSTGRES_URL_VAR})"
                );
                return None;
            }
        };
        let database = format!("floatilla_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create test database {database} at {url}: {e}"));
        let _ = conn.close().await;
        let location =
            Location::Postgres(admin.clone().database(&database).to_url_lossy().to_string());
        Some(TestDb {
            location,
            cleanup: Cleanup::Postgres {
                admin_url: url,
                database,
            },
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Opens (and so migrates) the database.
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        crate::open(&self.location).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Cleanup::Postgres {
            admin_url,
            database,
        } = &self.cleanup
        else {
            return;
        };
        // Drop cannot await, and may run inside (or outside) a runtime, so the database is
        // dropped from a thread with its own runtime. FORCE ends the connections that stores
        // opened on it still hold.
        let admin_url = admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        let dropped = std::thread::spawn(move || -> std::result::Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the dropping thread panicked".into()));
        if let Err(e) = dropped {
            let _ = writeln!(
                std::io::stderr(),
                "WARNING: could not drop test database {database}: {e}"
            );
        }
    }
}
