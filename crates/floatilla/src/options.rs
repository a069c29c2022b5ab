//! What subcommands share: how a config file fills what flags and the environment leave open
//! (precedence: flag, then environment variable, then config file, then default), signals, and
//! the open-file limit.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// Reads a TOML config file into `T` (its keys are the long flag names with `_` for `-`).
pub fn read_config_file<T: for<'de> Deserialize<'de> + Default>(
    path: Option<&Path>,
) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Raises this process's open-file limit to the hard limit: every router connection is one.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}
