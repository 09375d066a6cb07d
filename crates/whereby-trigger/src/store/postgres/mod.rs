//! The shared store: PostgreSQL, for several servers on one database.
//!
//! Everything the embedded store promises holds across the servers sharing
//! it, through the database rather than any one server's memory:
//!
//! - An event id is recorded once: ids have a unique key, so a duplicate
//!   racing at another server waits for the first one's transaction and is
//!   then refused ([`StoreError::AlreadyRecorded`]); its receiver answers
//!   `duplicate`.
//! - A claim is taken only when no other server holds it live
//!   ([`StoreError::ClaimHeld`]), and released only by the server holding it.
//! - A room's state is merged, not overwritten: each part from the newest
//!   event that set it, whichever server received that event.
//! - A delivery belongs to the server that queued it, on a lease that server
//!   renews while it carries the delivery out ([`Store::take`]); a delivery
//!   whose server died is taken by another once the lease runs out.
//!
//! PostgreSQL's commit is durable (with `synchronous_commit` on, its default),
//! so [`Store::sync`] has nothing to do. The committer still groups
//! concurrent webhooks into one transaction, so a busy server pays one round
//! trip per batch, not per webhook.
//!
//! Why one file: every SQL statement of the shared store (the migration, the
//! lease query of [`Store::take`], the statements of each `Change`) is kept
//! beside the schema it depends on, so that changing a table is a change to
//! one file; the connection's thread is already `session.rs`, and the tests
//! run on throw-away clusters (`tests/it/shared_store.rs`, `replicas.rs`).

mod session;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::Row;

use self::session::{Fail, Session, prepared};
use super::{
    Change, Delivery, DeliveryStatus, Quarantined, Snapshot, Store, StoreError, StoredClaim,
    StoredStop, Taken,
};
use crate::state::claims::{ClaimKey, ClaimScope};
use crate::state::room::Rooms;
use crate::util::{millis, now_ms};

/// The schema every table lives in.
const SCHEMA: &str = "whereby_trigger";

/// Run on every new connection: unqualified names are the store's tables.
const SETUP: &str = "SET search_path TO whereby_trigger";

/// The lock key that makes migrations one at a time when several servers
/// start at once (`pg_advisory_xact_lock`): "whtr" in ASCII.
const MIGRATION_LOCK: i64 = 0x7768_7472;

/// The schema's versions, in order: version N is reached by running the
/// first N. Only ever appended to.
const MIGRATIONS: [&str; 2] = [
    "
CREATE TABLE whereby_trigger.events (
    id text PRIMARY KEY,
    at_ms bigint NOT NULL
);
CREATE INDEX events_at ON whereby_trigger.events (at_ms);
CREATE TABLE whereby_trigger.claims (
    key text PRIMARY KEY,
    expires_ms bigint NOT NULL,
    holder text NOT NULL,
    node text NOT NULL,
    stop text,
    event_scoped boolean NOT NULL
);
CREATE INDEX claims_shared ON whereby_trigger.claims (expires_ms) WHERE NOT event_scoped;
CREATE TABLE whereby_trigger.rooms (
    key text PRIMARY KEY,
    state text NOT NULL,
    seen_ms bigint NOT NULL
);
CREATE TABLE whereby_trigger.deliveries (
    id text PRIMARY KEY,
    trigger text NOT NULL,
    kind text NOT NULL,
    action text NOT NULL,
    claim text NOT NULL,
    room_url text NOT NULL,
    room text,
    webhook text NOT NULL,
    attempts bigint NOT NULL,
    created_ms bigint NOT NULL,
    status text NOT NULL,
    last_error text,
    node text NOT NULL,
    lease_ms bigint NOT NULL
);
CREATE INDEX deliveries_due ON whereby_trigger.deliveries (status, lease_ms);
CREATE TABLE whereby_trigger.quarantine (
    id text PRIMARY KEY,
    at_ms bigint NOT NULL,
    code text NOT NULL,
    field text,
    error text NOT NULL,
    body bytea NOT NULL
);
CREATE TABLE whereby_trigger.probe (id integer PRIMARY KEY, at_ms bigint NOT NULL);
",
    "
ALTER TABLE whereby_trigger.deliveries ADD COLUMN retry_at_ms bigint;
",
];

/// Most deliveries one [`Store::take`] hands out.
const TAKE_MAX: i64 = 256;

/// How a [`PgStore`] connects and shares work.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgStoreOptions {
    /// This process's name among those sharing the database: the holder of
    /// its claims and deliveries. Unique per process.
    pub node_id: String,
    /// How long a delivery stays with this process without a renewal before
    /// another may take it (it renews every second while it holds it);
    /// [`DEFAULT_SHARED_LEASE`](super::DEFAULT_SHARED_LEASE) unless set.
    pub lease: Duration,
    /// How long connecting may take before it fails (a commit then fails,
    /// and its webhook is answered 503).
    pub connect_timeout: Duration,
    /// Whether this process carries out deliveries (the default). A receiver
    /// that does not (`serve --no-actions`) queues them for any worker to take
    /// at once and takes none itself.
    pub runs_actions: bool,
}

impl PgStoreOptions {
    /// The defaults, with `node_id` as this process's name.
    pub fn new(node_id: impl Into<String>) -> Self {
        PgStoreOptions {
            node_id: node_id.into(),
            lease: super::DEFAULT_SHARED_LEASE,
            connect_timeout: Duration::from_secs(2),
            runs_actions: true,
        }
    }

    /// Sets [`runs_actions`](Self::runs_actions).
    #[must_use]
    pub fn runs_actions(mut self, runs: bool) -> Self {
        self.runs_actions = runs;
        self
    }

    /// Sets [`lease`](Self::lease).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

/// A [`Store`] in a PostgreSQL database shared by several servers.
pub struct PgStore {
    /// The committer's connection.
    commits: Session,
    /// Everything else: reads, leases, the operator's commands.
    others: Session,
    node: String,
    lease_ms: i64,
    runs_actions: bool,
    /// `postgres://user@host:port/db`, without the password, for messages.
    shown: String,
    /// To connect the listener of [`Store::watch`].
    config: postgres::Config,
    /// Tells the listener to end (when the store is dropped).
    closed: Arc<AtomicBool>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("at", &self.shown)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, or
    /// `host=… user=…`), creating or upgrading the store's schema
    /// (`whereby_trigger`) first. The password comes from the URL, else from
    /// `PGPASSWORD`.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the URL cannot be read, the database cannot
    /// be reached, or its schema was written by a newer version.
    pub fn connect(url: &str, options: PgStoreOptions) -> Result<PgStore, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| StoreError::Open {
            path: "the store URL".to_owned(),
            reason: format!("not a PostgreSQL URL: {e}"),
        })?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        config.application_name(&format!("whereby-trigger {}", options.node_id));
        let shown = show(&config);
        let fail = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        let start =
            |name| Session::start(name, config.clone(), SETUP).map_err(|e| fail(e.to_string()));
        let store = PgStore {
            commits: start("commit")?,
            others: start("read")?,
            node: options.node_id,
            lease_ms: millis(options.lease).max(1),
            runs_actions: options.runs_actions,
            shown: shown.clone(),
            config: config.clone(),
            closed: Arc::new(AtomicBool::new(false)),
        };
        store
            .commits
            .run(|conn| migrate(&mut conn.client))
            .map_err(|f| f.into_store(fail))?;
        let asynchronous = store
            .commits
            .run(|conn| {
                let row = conn.client.query_one("SHOW synchronous_commit", &[])?;
                Ok(row.get::<_, String>(0) == "off")
            })
            .unwrap_or(false);
        if asynchronous {
            tracing::warn!(database = %shown, "synchronous_commit is off: a crash of the database may lose webhooks that were answered 2xx");
        }
        Ok(store)
    }

    /// Where the store is, without the password: `postgres://user@host:port/db`
    /// (or `postgres://user@/db?host=SOCKET_DIR` over a Unix socket).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// This process's name among those sharing the database.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Makes a delivery pending again, starting afresh (no attempts, queued
    /// now, free for any server to take); `false` when no delivery has that id.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |client| {
            client.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, created_ms = $2, \
                 lease_ms = 0, retry_at_ms = NULL WHERE id = $1",
                &[&id, &now_ms()],
            )
        })
        .map(|n| n > 0)
    }

    /// Makes every dead delivery pending again, afresh as [`Self::retry`]
    /// does; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn retry_dead(&self) -> Result<u64, StoreError> {
        self.write(|client| {
            client.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, created_ms = $1, \
                 lease_ms = 0, retry_at_ms = NULL WHERE status = 'dead'",
                &[&now_ms()],
            )
        })
    }

    /// Removes a delivery; `false` when no delivery has that id.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn drop_delivery(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |client| client.execute("DELETE FROM deliveries WHERE id = $1", &[&id]))
            .map(|n| n > 0)
    }

    /// Removes a refused webhook from the quarantine; `false` when none has
    /// that id.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn drop_quarantined(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |client| client.execute("DELETE FROM quarantine WHERE id = $1", &[&id]))
            .map(|n| n > 0)
    }

    /// One of the operator's statements, on the second connection.
    fn write<R: Send + 'static>(
        &self,
        mut job: impl FnMut(&mut postgres::Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.others
            .run(move |conn| job(&mut conn.client).map_err(Fail::Db))
            .map_err(|f| f.into_store(StoreError::Commit))
    }

    fn read<R: Send + 'static>(
        &self,
        mut job: impl FnMut(&mut postgres::Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.others
            .run(move |conn| job(&mut conn.client).map_err(Fail::Db))
            .map_err(|f| f.into_store(StoreError::Read))
    }
}

/// `postgres://user@host:port/db` of `config`: where it is, never the
/// password.
fn show(config: &postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config
        .get_user()
        .map_or_else(String::new, |user| format!("{user}@"));
    let db = config.get_dbname().unwrap_or("");
    match config.get_hosts().first() {
        // An IPv6 address in brackets, as in a URL, so its port stands apart.
        Some(postgres::config::Host::Tcp(name)) if name.contains(':') => {
            format!("postgres://{user}[{name}]:{port}/{db}")
        }
        Some(postgres::config::Host::Tcp(name)) => format!("postgres://{user}{name}:{port}/{db}"),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(dir)) => {
            format!("postgres://{user}/{db}?host={}", dir.display())
        }
        None => format!("postgres://{user}localhost:{port}/{db}"),
    }
}

/// Creates the schema, or brings it up to [`MIGRATIONS`], in one transaction
/// under an advisory lock: servers starting together run it one after the
/// other, and all but the first find nothing to do.
fn migrate(client: &mut postgres::Client) -> Result<(), Fail> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {SCHEMA};
         CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL);"
    ))?;
    let version: i32 = tx
        .query_opt(
            &format!("SELECT max(version) FROM {SCHEMA}.schema_version"),
            &[],
        )?
        .and_then(|row| row.get::<_, Option<i32>>(0))
        .unwrap_or(0);
    let known = MIGRATIONS.len();
    let from = usize::try_from(version).unwrap_or(usize::MAX);
    if from > known {
        return Err(Fail::Store(StoreError::Open {
            path: SCHEMA.to_owned(),
            reason: format!(
                "the schema is version {version}, written by a newer whereby-trigger; this one knows up to {known}"
            ),
        }));
    }
    for migration in &MIGRATIONS[from..] {
        tx.batch_execute(migration)?;
    }
    if from < known {
        let to = i32::try_from(known).unwrap_or(i32::MAX);
        tx.execute(&format!("DELETE FROM {SCHEMA}.schema_version"), &[])?;
        tx.execute(
            &format!("INSERT INTO {SCHEMA}.schema_version (version) VALUES ($1)"),
            &[&to],
        )?;
        tracing::info!(from = version, to, "store schema upgraded");
    }
    tx.commit()?;
    Ok(())
}

const DELIVERY_COLUMNS: &str = "id, trigger, kind, action, claim, room_url, room, webhook, \
                                attempts, created_ms, status, last_error, node, retry_at_ms";

fn delivery(row: &Row) -> Delivery {
    let status: String = row.get(10);
    Delivery {
        id: row.get(0),
        trigger: row.get(1),
        kind: row.get(2),
        action: row.get(3),
        claim: row.get(4),
        room_url: row.get(5),
        room: row.get(6),
        webhook: row.get(7),
        attempts: u32::try_from(row.get::<_, i64>(8)).unwrap_or(u32::MAX),
        created_ms: row.get(9),
        status: if status == "dead" {
            DeliveryStatus::Dead
        } else {
            DeliveryStatus::Pending
        },
        last_error: row.get(11),
        node: row.get(12),
        retry_at_ms: row.get(13),
    }
}

fn read_deliveries(client: &mut postgres::Client) -> Result<Vec<Delivery>, postgres::Error> {
    let rows = client.query(
        &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY created_ms, id"),
        &[],
    )?;
    Ok(rows.iter().map(delivery).collect())
}

fn prune(
    client: &mut postgres::Client,
    now_ms: i64,
    id_max_age_ms: i64,
    room_idle_ms: i64,
) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(
        "DELETE FROM events WHERE at_ms <= $1",
        &[&now_ms.saturating_sub(id_max_age_ms)],
    )?;
    tx.execute("DELETE FROM claims WHERE expires_ms <= $1", &[&now_ms])?;
    tx.execute(
        "DELETE FROM quarantine WHERE at_ms <= $1",
        &[&now_ms.saturating_sub(super::QUARANTINE_MAX_AGE_MS)],
    )?;
    tx.execute(
        "DELETE FROM rooms WHERE seen_ms <= $1",
        &[&now_ms.saturating_sub(room_idle_ms)],
    )?;
    tx.commit()
}

impl Store for PgStore {
    fn load(
        &self,
        now_ms: i64,
        id_max_age_ms: i64,
        room_idle_ms: i64,
    ) -> Result<Snapshot, StoreError> {
        self.read(move |client| {
            prune(client, now_ms, id_max_age_ms, room_idle_ms)?;
            let ids = client
                .query("SELECT id, at_ms FROM events ORDER BY at_ms, id", &[])?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let claims = client
                .query(
                    "SELECT key, expires_ms, holder, stop FROM claims WHERE expires_ms > $1",
                    &[&now_ms],
                )?
                .iter()
                .map(stored_claim)
                .collect();
            let rooms = client
                .query("SELECT key, state, seen_ms FROM rooms", &[])?
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect();
            let deliveries = read_deliveries(client)?;
            Ok(Snapshot {
                ids,
                claims,
                rooms,
                deliveries,
            })
        })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let changes = changes.to_vec();
        let node = self.node.clone();
        // Without actions here, what is queued is any worker's at once.
        let owner = Owner {
            node: if self.runs_actions {
                node.clone()
            } else {
                String::new()
            },
            lease_ms: if self.runs_actions {
                self.lease_ms
            } else {
                i64::MIN
            },
        };
        self.commits
            .run(move |conn| apply_all(conn, &changes, &node, &owner))
            .map_err(|f| f.into_store(StoreError::Commit))
    }

    /// Nothing to do: a PostgreSQL commit is durable when it returns.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut all = self.deliveries()?;
        all.retain(|d| d.status == DeliveryStatus::Pending);
        Ok(all)
    }

    fn take(&self, held: &[String]) -> Result<Taken, StoreError> {
        let held = held.to_vec();
        let node = self.node.clone();
        let lease_ms = self.lease_ms;
        if !self.runs_actions {
            // Nothing to carry out here: only the claims, for this
            // receiver's memory of them.
            return self.read(move |client| {
                Ok(Taken {
                    live_claims: Some(live_claims(client, now_ms())?),
                    ..Taken::default()
                })
            });
        }
        self.read(move |client| take(client, &node, lease_ms, &held))
    }

    fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.read(read_deliveries)
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.read(|client| {
            Ok(client
                .query(
                    "SELECT id, at_ms, code, field, error, body FROM quarantine ORDER BY at_ms, id",
                    &[],
                )?
                .iter()
                .map(|row| Quarantined {
                    id: row.get(0),
                    at_ms: row.get(1),
                    code: row.get(2),
                    field: row.get(3),
                    error: row.get(4),
                    body: row.get(5),
                })
                .collect())
        })
    }

    fn prune(&self, now_ms: i64, id_max_age_ms: i64, room_idle_ms: i64) -> Result<(), StoreError> {
        self.write(move |client| prune(client, now_ms, id_max_age_ms, room_idle_ms))
    }

    fn node(&self) -> Option<String> {
        Some(self.node.clone())
    }

    /// Hands what this server still holds to the others at once: after a
    /// clean stop its pending deliveries (assistants stopped by the shutdown
    /// among them) need not wait out their lease to be taken over.
    fn release(&self) {
        let node = self.node.clone();
        let freed = self.write(move |client| {
            client.execute(
                "UPDATE deliveries SET lease_ms = 0 WHERE node = $1 AND status = 'pending'",
                &[&node],
            )
        });
        match freed {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "handed over to the other servers"),
            Err(err) => {
                tracing::warn!(%err, "cannot hand this server's deliveries over; they are taken over when their lease lapses")
            }
        }
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(
            u64::try_from(self.lease_ms).unwrap_or(0),
        ))
    }

    /// Listens (`LISTEN`) on a connection of its own, on a thread of its own,
    /// reconnecting after a failure; the commits that others must hear of
    /// (claims and stops of a room or session, deliveries left for any
    /// server) notify it.
    fn watch(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        let config = self.config.clone();
        let closed = self.closed.clone();
        let spawned = std::thread::Builder::new()
            .name("postgres-listen".into())
            .spawn(move || listen(&config, &closed, wake.as_ref()));
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot listen for other servers' changes: polling only");
        }
    }
}

/// The notification channel.
const CHANNEL: &str = "whereby_trigger";

/// How long the listener waits for a notification before it looks whether the
/// store was dropped (and the connection still lives).
const LISTEN_TICK: Duration = Duration::from_secs(1);

fn listen(config: &postgres::Config, closed: &AtomicBool, wake: &(dyn Fn() + Send + Sync)) {
    use postgres::fallible_iterator::FallibleIterator;
    while !closed.load(Ordering::Acquire) {
        if let Ok(mut client) = config.connect(postgres::NoTls)
            && client.batch_execute(&format!("LISTEN {CHANNEL}")).is_ok()
        {
            // Whatever was notified while not listening is looked at now.
            wake();
            while !closed.load(Ordering::Acquire) && !client.is_closed() {
                let mut notifications = client.notifications();
                let mut heard = notifications.timeout_iter(LISTEN_TICK);
                match heard.next() {
                    Ok(Some(_)) => wake(),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
        if !closed.load(Ordering::Acquire) {
            std::thread::sleep(LISTEN_TICK);
        }
    }
}

/// [`Store::take`] in one transaction: renews what `node` holds, takes what
/// is free (a lapsed lease) or addressed to it, moves the claims of the starts
/// it took to it, and reads which held starts lost their claim and every
/// live claim.
fn take(
    client: &mut postgres::Client,
    node: &str,
    lease_ms: i64,
    held: &[String],
) -> Result<Taken, postgres::Error> {
    let now = now_ms();
    let until = now.saturating_add(lease_ms);
    let mut tx = client.transaction()?;
    if !held.is_empty() {
        tx.execute(
            "UPDATE deliveries SET lease_ms = $2 \
             WHERE node = $1 AND id = ANY($3) AND status = 'pending'",
            &[&node, &until, &held],
        )?;
    }
    // SKIP LOCKED: servers polling at the same moment each take other
    // deliveries instead of queueing behind one another.
    let rows = tx.query(
        &format!(
            "UPDATE deliveries SET node = $1, lease_ms = $2 WHERE id IN ( \
             SELECT id FROM deliveries \
             WHERE status = 'pending' AND NOT (id = ANY($4)) AND (lease_ms <= $3 OR node = $1) \
             ORDER BY created_ms, id LIMIT {TAKE_MAX} FOR UPDATE SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        ),
        &[&node, &until, &now, &held],
    )?;
    let mut deliveries: Vec<Delivery> = rows.iter().map(delivery).collect();
    deliveries.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    // The assistants of the starts taken run here now: so do their claims, so
    // that a stop finds them here and only this server releases them.
    let starts: Vec<&str> = deliveries
        .iter()
        .filter(|d| d.action == "start" && !d.claim.is_empty())
        .map(|d| d.claim.as_str())
        .collect();
    let claims = if starts.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "UPDATE claims SET node = $1 WHERE key = ANY($2) AND expires_ms > $3 \
             RETURNING key, expires_ms, holder, stop",
            &[&node, &starts, &now],
        )?
        .iter()
        .map(stored_claim)
        .collect()
    };
    let ended = if held.is_empty() {
        Vec::new()
    } else {
        tx.query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d \
                 WHERE d.id = ANY($1) AND d.kind = 'run' AND d.action = 'start' AND d.claim <> '' \
                 AND NOT EXISTS (SELECT 1 FROM claims c \
                     WHERE c.key = d.claim AND c.node = $2 AND c.expires_ms > $3)"
            ),
            &[&held, &node, &now],
        )?
        .iter()
        .map(delivery)
        .collect()
    };
    let live = live_claims(&mut tx, now)?;
    tx.commit()?;
    Ok(Taken {
        deliveries,
        claims,
        ended,
        live_claims: Some(live),
    })
}

/// Every claim live at `now` that a process must know of: those of a room or
/// a session, and those of one event whose assistant runs (a pending `run`
/// start holds it). The claims of single events whose action is over (every
/// `forward` with the default `once_per = "event"`) are left out: as many as
/// the events of a lease, and nothing to stop.
fn live_claims(
    client: &mut impl postgres::GenericClient,
    now: i64,
) -> Result<Vec<StoredClaim>, postgres::Error> {
    Ok(client
        .query(
            "SELECT key, expires_ms, holder, stop FROM claims \
             WHERE NOT event_scoped AND expires_ms > $1 \
             UNION ALL \
             SELECT c.key, c.expires_ms, c.holder, c.stop FROM deliveries d \
             JOIN claims c ON c.key = d.claim \
             WHERE d.status = 'pending' AND d.kind = 'run' AND d.action = 'start' \
             AND c.event_scoped AND c.expires_ms > $1",
            &[&now],
        )?
        .iter()
        .map(stored_claim)
        .collect())
}

/// Whether claim `key` is of one event (`once_per = "event"`).
fn event_scoped(key: &str) -> bool {
    ClaimKey::parse(key).is_some_and(|key| matches!(key.scope, ClaimScope::Event(_)))
}

/// Who the deliveries a commit queues belong to: the committing node, for a
/// lease, or nobody (`""`, lapsed at once) when it runs no actions.
struct Owner {
    node: String,
    lease_ms: i64,
}

fn stored_claim(row: &Row) -> StoredClaim {
    StoredClaim {
        key: row.get(0),
        expires_ms: row.get(1),
        holder: row.get(2),
        // An unreadable stop is no stop: the claim still ends with its lease.
        stop: row
            .get::<_, Option<String>>(3)
            .and_then(|json| serde_json::from_str(&json).ok()),
    }
}

const INSERT_IDS: &str = "INSERT INTO events (id, at_ms) \
     SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT (id) DO NOTHING RETURNING id";
const INSERT_ROOMS: &str = "INSERT INTO rooms (key, state, seen_ms) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ON CONFLICT (key) DO NOTHING \
     RETURNING key";
const LOCK_ROOMS: &str = "SELECT key, state FROM rooms WHERE key = ANY($1) ORDER BY key FOR UPDATE";
const UPDATE_ROOM: &str =
    "UPDATE rooms SET state = $2, seen_ms = GREATEST(seen_ms, $3) WHERE key = $1";
const TAKE_CLAIM: &str = "INSERT INTO claims (key, expires_ms, holder, node, stop, event_scoped) \
     VALUES ($1, $2, $3, $4, $5, $7) ON CONFLICT (key) DO UPDATE SET \
     expires_ms = EXCLUDED.expires_ms, holder = EXCLUDED.holder, node = EXCLUDED.node, \
     stop = EXCLUDED.stop WHERE claims.expires_ms <= $6 OR claims.node = EXCLUDED.node \
     RETURNING 1";
const CLAIM_EXPIRES: &str = "SELECT expires_ms FROM claims WHERE key = $1";
const RELEASE_CLAIM: &str = "DELETE FROM claims WHERE key = $1 AND node = $2";
const STOP_CLAIM: &str = "DELETE FROM claims WHERE key = $1";
const FIRE_STOP: &str = "DELETE FROM claims WHERE key = $1 AND stop IS NOT NULL";
const SCHEDULE_STOP: &str = "UPDATE claims SET stop = $2 WHERE key = $1";
const CANCEL_STOP: &str = "UPDATE claims SET stop = NULL WHERE key = $1";
const ENQUEUE: &str = "INSERT INTO deliveries (id, trigger, kind, action, claim, room_url, room, \
     webhook, attempts, created_ms, status, last_error, node, lease_ms, retry_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (id) DO NOTHING";
const DONE: &str = "DELETE FROM deliveries WHERE id = $1";
const ATTEMPTED: &str =
    "UPDATE deliveries SET attempts = $2, last_error = $3, retry_at_ms = $4 WHERE id = $1";
const DEAD: &str = "UPDATE deliveries SET status = 'dead', last_error = $2 WHERE id = $1";
const QUARANTINE: &str = "INSERT INTO quarantine (id, at_ms, code, field, error, body) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";
const QUARANTINE_BOUND: &str = "DELETE FROM quarantine WHERE id NOT IN \
     (SELECT id FROM quarantine ORDER BY at_ms DESC, id LIMIT $1)";
const NOTIFY: &str = "SELECT pg_notify('whereby_trigger', '')";
const PROBE: &str = "INSERT INTO probe (id, at_ms) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET at_ms = EXCLUDED.at_ms";

/// Applies a batch in one transaction. Locks are taken in one order in every
/// transaction — event ids, then rooms, each sorted — so that two servers
/// committing overlapping batches wait for each other instead of deadlocking.
fn apply_all(
    conn: &mut session::Conn,
    changes: &[Change],
    node: &str,
    owner: &Owner,
) -> Result<(), Fail> {
    let now = now_ms();
    let (client, cache) = conn.split();
    let mut tx = client.transaction()?;

    // Ids first: a duplicate is refused before anything else is written.
    let mut ids: Vec<(&str, i64)> = changes
        .iter()
        .filter_map(|change| match change {
            Change::RememberId { id, at_ms } => Some((id.as_str(), *at_ms)),
            _ => None,
        })
        .collect();
    if !ids.is_empty() {
        ids.sort_unstable();
        let (names, ats): (Vec<&str>, Vec<i64>) = ids.iter().copied().unzip();
        let statement = prepared(&mut tx, cache, INSERT_IDS)?;
        let added = tx.query(&statement, &[&names, &ats])?;
        if added.len() < names.len() {
            let added: HashSet<String> = added.iter().map(|row| row.get(0)).collect();
            let id = names
                .iter()
                .find(|id| !added.contains(**id))
                .unwrap_or(&names[0]);
            return Err(Fail::Store(StoreError::AlreadyRecorded {
                id: (*id).to_owned(),
            }));
        }
    }

    // Rooms: a new room is inserted; a known one is locked, merged, updated.
    let mut rooms: BTreeMap<&str, (String, i64)> = BTreeMap::new();
    for change in changes {
        if let Change::Room {
            key,
            state,
            seen_ms,
        } = change
        {
            match rooms.get_mut(key.as_str()) {
                Some((merged, seen)) => {
                    *merged = Rooms::merge_stored(merged, state).unwrap_or_else(|| state.clone());
                    *seen = (*seen).max(*seen_ms);
                }
                None => {
                    rooms.insert(key, (state.clone(), *seen_ms));
                }
            }
        }
    }
    if !rooms.is_empty() {
        let keys: Vec<&str> = rooms.keys().copied().collect();
        let states: Vec<&str> = rooms.values().map(|(state, _)| state.as_str()).collect();
        let seen: Vec<i64> = rooms.values().map(|(_, seen)| *seen).collect();
        let statement = prepared(&mut tx, cache, INSERT_ROOMS)?;
        let inserted: HashSet<String> = tx
            .query(&statement, &[&keys, &states, &seen])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let known: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|key| !inserted.contains(*key))
            .collect();
        if !known.is_empty() {
            let statement = prepared(&mut tx, cache, LOCK_ROOMS)?;
            let stored = tx.query(&statement, &[&known])?;
            let update = prepared(&mut tx, cache, UPDATE_ROOM)?;
            for row in &stored {
                let key: &str = row.get(0);
                let old: &str = row.get(1);
                let Some((new, seen)) = rooms.get(key) else {
                    continue;
                };
                let merged = Rooms::merge_stored(old, new).unwrap_or_else(|| new.clone());
                tx.execute(&update, &[&key, &merged, seen])?;
            }
        }
    }

    let queued = (
        owner.node.as_str(),
        now.saturating_add(owner.lease_ms).max(0),
    );
    for change in changes {
        apply(&mut tx, cache, change, node, now, queued)?;
    }
    // The others hear of what they may have to act on at once (delivered at
    // commit; one notification per transaction, however many changes): a
    // claim they must know of taken or ended, a stop, a delivery any worker
    // may take. Not of a claim of one event, nor of a delivery this server
    // carries out itself: a busy receiver wakes nobody.
    let heard = changes.iter().any(|change| match change {
        Change::Claim(claim) => !event_scoped(&claim.key),
        Change::StopClaim { .. }
        | Change::FireStop { .. }
        | Change::ScheduleStop { .. }
        | Change::CancelStop { .. }
        | Change::ReleaseClaim { .. } => true,
        Change::Enqueue(_) => owner.node.is_empty(),
        _ => false,
    });
    if heard {
        let statement = prepared(&mut tx, cache, NOTIFY)?;
        tx.execute(&statement, &[])?;
    }
    tx.commit()?;
    Ok(())
}

fn stop_json(stop: &StoredStop) -> String {
    // A struct of strings and integers always serialises.
    serde_json::to_string(stop).unwrap_or_default()
}

/// One change of the batch (ids and rooms are done by [`apply_all`]).
fn apply(
    tx: &mut postgres::Transaction<'_>,
    cache: &mut std::collections::HashMap<&'static str, postgres::Statement>,
    change: &Change,
    node: &str,
    now: i64,
    (owner, lease_until): (&str, i64),
) -> Result<(), Fail> {
    let mut run = |sql: &'static str,
                   params: &[&(dyn postgres::types::ToSql + Sync)]|
     -> Result<u64, postgres::Error> {
        let statement = prepared(tx, cache, sql)?;
        tx.execute(&statement, params)
    };
    match change {
        Change::RememberId { .. } | Change::Room { .. } => {}
        Change::Claim(claim) => {
            let stop = claim.stop.as_ref().map(stop_json);
            let taken = run(
                TAKE_CLAIM,
                &[
                    &claim.key,
                    &claim.expires_ms,
                    &claim.holder,
                    &node,
                    &stop,
                    &now,
                    &event_scoped(&claim.key),
                ],
            )?;
            if taken == 0 {
                let statement = prepared(tx, cache, CLAIM_EXPIRES)?;
                let expires_ms = tx
                    .query_opt(&statement, &[&claim.key])?
                    .map_or(now, |row| row.get(0));
                return Err(Fail::Store(StoreError::ClaimHeld {
                    key: claim.key.clone(),
                    expires_ms,
                }));
            }
        }
        Change::ReleaseClaim { key } => {
            run(RELEASE_CLAIM, &[key, &node])?;
        }
        Change::StopClaim { key } => {
            run(STOP_CLAIM, &[key])?;
        }
        Change::FireStop { key } => {
            if run(FIRE_STOP, &[key])? == 0 {
                return Err(Fail::Store(StoreError::StopGone { key: key.clone() }));
            }
        }
        Change::ScheduleStop { key, stop } => {
            run(SCHEDULE_STOP, &[key, &stop_json(stop)])?;
        }
        Change::CancelStop { key } => {
            run(CANCEL_STOP, &[key])?;
        }
        Change::Enqueue(d) => {
            run(
                ENQUEUE,
                &[
                    &d.id,
                    &d.trigger,
                    &d.kind,
                    &d.action,
                    &d.claim,
                    &d.room_url,
                    &d.room,
                    &d.webhook,
                    &i64::from(d.attempts),
                    &d.created_ms,
                    &d.status.as_str(),
                    &d.last_error,
                    &owner,
                    &lease_until,
                    &d.retry_at_ms,
                ],
            )?;
        }
        Change::Done { id } => {
            run(DONE, &[id])?;
        }
        Change::Attempted {
            id,
            attempts,
            error,
            retry_at_ms,
        } => {
            run(ATTEMPTED, &[id, &i64::from(*attempts), error, retry_at_ms])?;
        }
        Change::Dead { id, error } => {
            run(DEAD, &[id, error])?;
        }
        Change::Quarantine(q) => {
            run(
                QUARANTINE,
                &[&q.id, &q.at_ms, &q.code, &q.field, &q.error, &q.body],
            )?;
            // Bounded by count as well as by age, as the embedded store is.
            run(QUARANTINE_BOUND, &[&i64::from(super::QUARANTINE_MAX)])?;
        }
        Change::Probe { at_ms } => {
            run(PROBE, &[at_ms])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shown_url_has_no_password_and_no_empty_user() {
        let show = |url: &str| super::show(&url.parse().unwrap());
        assert_eq!(
            show("postgres://someone:secret@db.internal:6432/trigger"),
            "postgres://someone@db.internal:6432/trigger"
        );
        assert_eq!(
            show("postgres://127.0.0.1/x"),
            "postgres://127.0.0.1:5432/x"
        );
        assert_eq!(
            show("host=db user=app password=secret dbname=t"),
            "postgres://app@db:5432/t"
        );
        assert_eq!(
            show("postgres://u@[::1]:6432/t"),
            "postgres://u@[::1]:6432/t"
        );
        assert_eq!(
            show("host=/run/postgresql user=u dbname=t"),
            "postgres://u@/t?host=/run/postgresql"
        );
    }
}
