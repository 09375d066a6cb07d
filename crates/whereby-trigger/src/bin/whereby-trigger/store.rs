//! The store `serve` and `worker` open: a data directory (SQLite) or a
//! PostgreSQL database shared with other processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(not(feature = "postgres"))]
use anyhow::bail;
use whereby_trigger::config::Config;
use whereby_trigger::store::{SqliteStore, Store};

use crate::serve::DEFAULT_DATA_DIR;

/// The store the flags and the file name. A flag beats the file; a data
/// directory given as a flag beats a database in the file.
pub(crate) fn open_store(
    store_url: Option<&str>,
    data_dir: Option<&Path>,
    node_id: Option<String>,
    config: &Config,
    runs_actions: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    let url = match (store_url, data_dir) {
        (Some(url), _) => Some(url),
        (None, Some(_)) => None,
        (None, None) => config.store.url.as_ref().map(|u| u.expose()),
    };
    if let Some(url) = url {
        return shared_store(url, node_id, config, runs_actions);
    }
    let dir = data_dir
        .map(Path::to_path_buf)
        .or_else(|| config.store.dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let store = SqliteStore::open(&dir)?;
    tracing::info!(path = %store.path().display(), "durable store");
    Ok(Arc::new(store))
}

/// The PostgreSQL store at `url`, for this process as `node_id` (or its
/// default name).
#[cfg(feature = "postgres")]
fn shared_store(
    url: &str,
    node_id: Option<String>,
    config: &Config,
    runs_actions: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    use whereby_trigger::store::{PgStore, PgStoreOptions};
    let node = node_id.unwrap_or_else(default_node_id);
    let mut options = PgStoreOptions::new(node).runs_actions(runs_actions);
    if let Some(lease) = config.store.lease {
        options = options.lease(lease);
    }
    let store = PgStore::connect(url, options)?;
    tracing::info!(database = %store.shown(), node = %store.node_id(), "shared store");
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
fn shared_store(_: &str, _: Option<String>, _: &Config, _: bool) -> anyhow::Result<Arc<dyn Store>> {
    bail!(
        "a store URL needs PostgreSQL, and this whereby-trigger was built without its `postgres` feature"
    )
}

/// `HOSTNAME-PID`: unique per process on one machine, and telling which
/// machine across several.
#[cfg(feature = "postgres")]
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}
