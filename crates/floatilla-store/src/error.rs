use thiserror::Error;

/// A storage failure. `code()` gives each kind a stable name for logs and API errors.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "this database was written by a newer Floatilla (schema version {found}; this build knows up to {known}): upgrade Floatilla, or point it at another database"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("stored value is not valid: {0}")]
    Corrupt(String),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Conflict(_) => "conflict",
            StoreError::SchemaTooNew { .. } => "schema_too_new",
            StoreError::Corrupt(_) => "corrupt_data",
            StoreError::Migration(_) => "migration_failed",
            StoreError::Database(_) => "database_error",
        }
    }
}
