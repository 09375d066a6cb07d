//! The store the operator's commands (`outbox`, `quarantine`) work on: a data
//! directory beside the server that holds it, or the database replicas share.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use whereby_trigger::store::{SqliteStore, Store, StoreError};

/// Where the store is: `--data-dir`, or `--store-url` for a shared database.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The server's data directory. [default: ./whereby-trigger-data]
    #[arg(long, value_name = "DIR", global = true, conflicts_with = "store_url")]
    data_dir: Option<PathBuf>,

    /// The PostgreSQL database the servers share (as `serve --store-url`).
    #[arg(
        long,
        value_name = "URL",
        global = true,
        env = "WHEREBY_TRIGGER_STORE_URL"
    )]
    store_url: Option<String>,
}

/// An open store, with the operator's writes.
pub(crate) enum Operated {
    Sqlite(Box<SqliteStore>),
    #[cfg(feature = "postgres")]
    Pg(Box<whereby_trigger::store::PgStore>),
}

impl StoreArgs {
    /// Opens the store without taking it from its server: the data directory's
    /// lock stays the server's, and a database is shared anyway.
    pub(crate) fn open(self) -> anyhow::Result<Operated> {
        if let Some(url) = self.store_url {
            return open_url(&url);
        }
        let dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(crate::serve::DEFAULT_DATA_DIR));
        // "No store" only when there is none: `exists()` would also say false for
        // a store that cannot be read (permissions, a file where the directory
        // should be), which needs another fix.
        let db = dir.join(whereby_trigger::store::DB_FILE);
        match db.try_exists() {
            Ok(true) => {}
            Ok(false) => bail!(
                "no store in {} (start the server with --data-dir {0} first)",
                dir.display()
            ),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read the store {}", db.display()));
            }
        }
        Ok(Operated::Sqlite(Box::new(SqliteStore::open_shared(&dir)?)))
    }
}

#[cfg(feature = "postgres")]
fn open_url(url: &str) -> anyhow::Result<Operated> {
    use whereby_trigger::store::{PgStore, PgStoreOptions};
    let node = format!("operator-{}", std::process::id());
    let store = PgStore::connect(url, PgStoreOptions::new(node))?;
    Ok(Operated::Pg(Box::new(store)))
}

#[cfg(not(feature = "postgres"))]
fn open_url(_: &str) -> anyhow::Result<Operated> {
    bail!(
        "a store URL needs PostgreSQL, and this whereby-trigger was built without its `postgres` feature"
    )
}

impl Operated {
    /// The store, to read.
    pub(crate) fn store(&self) -> &dyn Store {
        match self {
            Operated::Sqlite(store) => store.as_ref(),
            #[cfg(feature = "postgres")]
            Operated::Pg(store) => store.as_ref(),
        }
    }

    /// Makes a delivery pending again, afresh; `false` when there is none.
    pub(crate) fn retry(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Operated::Sqlite(store) => store.retry(id),
            #[cfg(feature = "postgres")]
            Operated::Pg(store) => store.retry(id),
        }
    }

    /// Makes every dead delivery pending again; how many.
    pub(crate) fn retry_dead(&self) -> Result<u64, StoreError> {
        match self {
            Operated::Sqlite(store) => store.retry_dead().map(|n| n as u64),
            #[cfg(feature = "postgres")]
            Operated::Pg(store) => store.retry_dead(),
        }
    }

    /// Removes a delivery; `false` when there is none.
    pub(crate) fn drop_delivery(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Operated::Sqlite(store) => store.drop_delivery(id),
            #[cfg(feature = "postgres")]
            Operated::Pg(store) => store.drop_delivery(id),
        }
    }

    /// Removes a refused webhook; `false` when there is none.
    pub(crate) fn drop_quarantined(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Operated::Sqlite(store) => store.drop_quarantined(id),
            #[cfg(feature = "postgres")]
            Operated::Pg(store) => store.drop_quarantined(id),
        }
    }
}
