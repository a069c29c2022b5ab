//! Where an installation's data lives, for `serve`, `admin` and `demo`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use floatilla_store::{Location, Store};
use serde::Deserialize;

/// Where the installation's data lives.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageOptions {
    /// Directory for the embedded SQLite database (default ./floatilla-data).
    #[arg(long, env = "FLOATILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use PostgreSQL instead of SQLite, e.g. postgres://user@host/floatilla.
    #[arg(long, env = "FLOATILLA_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StorageOptions {
    pub fn or(self, file: StorageOptions) -> Self {
        Self {
            data_dir: self.data_dir.or(file.data_dir),
            database_url: self.database_url.or(file.database_url),
        }
    }

    pub fn location(&self) -> anyhow::Result<Location> {
        match &self.database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Location::Postgres(url.clone()))
            }
            Some(url) => anyhow::bail!("unsupported database URL `{url}`: expected postgres://…"),
            None => Ok(Location::Sqlite(
                self.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("floatilla-data"))
                    .join("floatilla.db"),
            )),
        }
    }

    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        let location = self.location()?;
        floatilla_store::open(&location)
            .await
            .with_context(|| format!("cannot open the database ({})", describe(&location)))
    }
}

fn describe(location: &Location) -> String {
    match location {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => url.split('@').next_back().unwrap_or(url).to_owned(),
    }
}
