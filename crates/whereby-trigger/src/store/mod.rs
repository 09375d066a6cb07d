//! Record: what a webhook changed, made durable before it is answered.
//!
//! A delivery is answered 2xx only once everything it changed — its id, the
//! claims it took, its room's state, the action deliveries it queued — is
//! committed and synced. The [`Store`] trait is that commit and sync;
//! `SqliteStore` (the `sqlite` feature) keeps it on disk (WAL, flushed before
//! any answer), `PgStore` (`postgres`) in a database several servers share,
//! [`MemoryStore`] keeps nothing (`--ephemeral` and the library default).
//! The committer groups concurrent commits into one transaction and the
//! transactions made during one flush into the next flush, so durability costs
//! one flush per batch, not per webhook.

use std::fmt;
use std::time::Duration;

mod commit;
pub(crate) mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use commit::Retention;
pub(crate) use commit::sync_failed;
pub(crate) use commit::{Committer, Journal, PendingCommit};
#[cfg(feature = "postgres")]
pub use postgres::{PgStore, PgStoreOptions};
#[cfg(feature = "sqlite")]
pub use sqlite::{DB_FILE, LOCK_FILE, SqliteStore};

/// State of a queued action delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Waiting to be delivered, or being delivered.
    Pending,
    /// Given up: a permanent failure, or out of attempts or time.
    Dead,
}

impl DeliveryStatus {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Dead => "dead",
        }
    }
}

/// One action call, queued: which trigger's which action, for which event.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Unique: `<trigger>:<event id>[:stop]:<action kind>`.
    pub id: String,
    /// The trigger's name.
    pub trigger: String,
    /// The action's kind (`run`, `forward`, `stdout`, or a custom one).
    pub kind: String,
    /// `start` or `stop`.
    pub action: String,
    /// The claim a start holds, as its stored key; empty for a stop.
    pub claim: String,
    /// The room URL; empty for a webhook without a room.
    pub room_url: String,
    /// The room's state when the webhook was processed, as the action event's
    /// `room` (JSON); `None` without a room, and in deliveries stored before
    /// it was kept.
    pub room: Option<String>,
    /// The webhook as received.
    pub webhook: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was queued (ms since the epoch).
    pub created_ms: i64,
    /// Pending or dead.
    pub status: DeliveryStatus,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (ms since the epoch), as the failed
    /// attempt before it set (a backoff, a receiver's `Retry-After`); `None`
    /// before any, and once made pending again by hand.
    pub retry_at_ms: Option<i64>,
    /// In a store shared by several servers, the one carrying it out (or
    /// that last did); empty when none has taken it yet, and in a store of
    /// one process.
    pub node: String,
}

impl Delivery {
    /// How long until its next attempt, seen at `now_ms`: `None` when it is
    /// due (attempted at once), dead, or never failed.
    pub fn retry_in(&self, now_ms: i64) -> Option<Duration> {
        self.retry_at_ms
            .filter(|_| self.status == DeliveryStatus::Pending)
            .and_then(|at| crate::util::until_ms(at, now_ms))
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("trigger", &self.trigger)
            .field("kind", &self.kind)
            .field("action", &self.action)
            .field("attempts", &self.attempts)
            .field("status", &self.status)
            .field("last_error", &self.last_error)
            .field("retry_at_ms", &self.retry_at_ms)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A held claim, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClaim {
    /// The claim key, as [`ClaimKey`](crate::state::claims::ClaimKey) encodes it.
    pub key: String,
    /// When it expires (ms since the epoch).
    pub expires_ms: i64,
    /// The trigger that took it (several can share a claim); empty when
    /// stored before it was kept, and then the key's name.
    pub holder: String,
    /// The stop pending on it.
    pub stop: Option<StoredStop>,
}

/// A stop waiting out a trigger's `stop_after`, as stored with its claim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredStop {
    /// When it is due (ms since the epoch).
    pub due_ms: i64,
    /// The trigger whose `stop_on` or `stop_when` asked for it.
    pub rule: String,
    /// `stop_on` or `stop_when`.
    pub cause: String,
    /// The room URL of the webhook that asked for it; empty without one.
    pub room_url: String,
    /// That webhook as received.
    pub webhook: String,
}

/// A signed webhook refused 400, kept so that it can be fed through the rules
/// after an upgrade or a config change (`whereby-trigger quarantine`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quarantined {
    /// The first 16 hex digits of the body's SHA-256: the same body is kept once.
    pub id: String,
    /// When it was refused (ms since the epoch).
    pub at_ms: i64,
    /// The answer's `code` (`invalid_webhook`, `invalid_room`).
    pub code: String,
    /// The answer's `field`, when it named one.
    pub field: Option<String>,
    /// The answer's `error`.
    pub error: String,
    /// The body as received.
    pub body: Vec<u8>,
}

impl Quarantined {
    /// A refused `body`, named by its digest.
    pub fn new(body: &[u8], code: &str, field: Option<&str>, error: &str, at_ms: i64) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Quarantined {
            id,
            at_ms,
            code: code.to_owned(),
            field: field.map(str::to_owned),
            error: error.to_owned(),
            body: body.to_vec(),
        }
    }
}

impl fmt::Debug for Quarantined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quarantined")
            .field("id", &self.id)
            .field("at_ms", &self.at_ms)
            .field("code", &self.code)
            .field("field", &self.field)
            .field("error", &self.error)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// How long a delivery stays with the server that took it from a shared store
/// without being renewed, unless `[store] lease` says otherwise.
pub const DEFAULT_SHARED_LEASE: Duration = Duration::from_secs(30);

/// Most refused webhooks kept; the oldest go first.
pub const QUARANTINE_MAX: u32 = 1000;

/// Longest a refused webhook is kept.
pub const QUARANTINE_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// One change a webhook (or an action's progress) makes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// An event id answered 2xx.
    RememberId {
        /// The id.
        id: String,
        /// When (ms since the epoch).
        at_ms: i64,
    },
    /// A claim taken.
    Claim(StoredClaim),
    /// A claim released by its holder (its assistant ended), with the stop
    /// pending on it. A store shared by several servers releases it only for
    /// the server holding it: one whose claim ran out and was taken by
    /// another must not end the other's.
    ReleaseClaim {
        /// The claim key.
        key: String,
    },
    /// A claim ended by a stop (`stop_on`, `stop_when` at once), whichever
    /// server holds it: that server stops its assistant when it sees the
    /// claim gone.
    StopClaim {
        /// The claim key.
        key: String,
    },
    /// A claim ended by its pending stop, now due (`stop_after`). Servers
    /// sharing a store may all see it due: only the first one's commit ends
    /// the claim, later ones (and one whose stop was cancelled meanwhile) are
    /// refused with [`StoreError::StopGone`].
    FireStop {
        /// The claim key.
        key: String,
    },
    /// A stop set on a held claim, to happen when it is due.
    ScheduleStop {
        /// The claim key.
        key: String,
        /// The stop.
        stop: StoredStop,
    },
    /// The stop pending on a claim cancelled; the claim stays held.
    CancelStop {
        /// The claim key.
        key: String,
    },
    /// A room's state after an event, as JSON.
    Room {
        /// `subdomain` + `roomName`.
        key: String,
        /// The state.
        state: String,
        /// When the room was last seen (ms since the epoch).
        seen_ms: i64,
    },
    /// A delivery queued.
    Enqueue(Delivery),
    /// A delivery finished: remove it.
    Done {
        /// The delivery id.
        id: String,
    },
    /// A delivery attempt failed; it stays pending.
    Attempted {
        /// The delivery id.
        id: String,
        /// Attempts made so far.
        attempts: u32,
        /// Why the last one failed.
        error: String,
        /// When the next is due (ms since the epoch); `None` when none
        /// follows.
        retry_at_ms: Option<i64>,
    },
    /// A signed webhook refused 400, kept (see [`Quarantined`]).
    Quarantine(Quarantined),
    /// Nothing but a write: asked by the readiness probe while commits fail,
    /// to learn whether the store can commit again.
    Probe {
        /// When (ms since the epoch).
        at_ms: i64,
    },
    /// A delivery was given up.
    Dead {
        /// The delivery id.
        id: String,
        /// Why.
        error: String,
    },
}

/// Everything the store holds, read at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Remembered ids, each once, with when they were last answered; oldest first.
    pub ids: Vec<(String, i64)>,
    /// Claims not yet expired.
    pub claims: Vec<StoredClaim>,
    /// Room states: key, JSON, last seen.
    pub rooms: Vec<(String, String, i64)>,
    /// Pending and dead deliveries, oldest first.
    pub deliveries: Vec<Delivery>,
}

/// What [`Store::take`] hands a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Taken {
    /// Pending deliveries for this process to carry out now, oldest first.
    pub deliveries: Vec<Delivery>,
    /// The live claims of the starts among them, now held by this process
    /// (it runs their assistants): to hold in its memory.
    pub claims: Vec<StoredClaim>,
    /// `run` starts this process carries out whose claim has ended elsewhere
    /// (a stop received by another server): their assistants are to stop.
    pub ended: Vec<Delivery>,
    /// Every live claim, in a store shared by several processes, so that each
    /// one's memory of them follows the others' (a claim released elsewhere is
    /// released here); `None` in a store of one process, whose memory is the
    /// truth.
    pub live_claims: Option<Vec<StoredClaim>>,
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
    /// The data directory is held by another server (or another store of this
    /// one): two servers on one directory would each fire every event.
    #[error("the data directory {path} is in use by another whereby-trigger{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse {
        /// The directory.
        path: String,
        /// The process holding it, when it could be read.
        pid: Option<u32>,
    },
    /// A commit failed (disk full, read-only, locked …); nothing of it applies.
    #[error("cannot commit to the store: {0}")]
    Commit(String),
    /// A read failed.
    #[error("cannot read the store: {0}")]
    Read(String),
    /// Committed changes could not be made durable (an I/O error while syncing).
    #[error("cannot sync the store to disk: {0}")]
    Sync(String),
    /// The changes record an event id the store holds already: another
    /// receiver sharing the store recorded that event first. Nothing of the
    /// changes applies; the delivery is a duplicate. (A store of one process
    /// never says so: its receiver's own memory of ids comes first.)
    #[error("event `{id}` was recorded already, by another receiver")]
    AlreadyRecorded {
        /// The event id.
        id: String,
    },
    /// A claim the changes take is held, live, by another receiver sharing the
    /// store. Nothing of the changes applies; the receiver takes the claim as
    /// held until `expires_ms` and decides again, so its rule is suppressed
    /// there as it would be here. (A store of one process never says so: its
    /// receiver's own claims come first.)
    #[error("claim `{key}` is held by another receiver")]
    ClaimHeld {
        /// The claim, as [`StoredClaim::key`] writes it.
        key: String,
        /// When the other receiver's claim expires, in ms since the Unix epoch.
        expires_ms: i64,
    },
    /// A due stop the changes carry out was carried out by another server
    /// sharing the store first, or cancelled there. Nothing of the changes
    /// applies. (A store of one process never says so.)
    #[error("the stop pending on claim `{key}` was carried out or cancelled by another server")]
    StopGone {
        /// The claim, as [`StoredClaim::key`] writes it.
        key: String,
    },
    /// The committer has stopped.
    #[error("the store is closed")]
    Closed,
}

/// Where the state of a Trigger lives. A [`commit`](Store::commit) applies all of
/// a batch or none of it; a [`sync`](Store::sync) then makes every commit before
/// it durable. Nothing is acknowledged to anyone before its sync has returned.
///
/// The two are separate so that the next batch can be committed while the
/// previous one is being synced: one disk flush then covers several commits.
pub trait Store: Send + Sync + 'static {
    /// Reads everything, dropping what expired before `now_ms` (ids older than
    /// `id_max_age_ms`, expired claims, rooms idle longer than `room_idle_ms`).
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn load(
        &self,
        now_ms: i64,
        id_max_age_ms: i64,
        room_idle_ms: i64,
    ) -> Result<Snapshot, StoreError>;

    /// Applies `changes` atomically. They may not survive a crash of the machine
    /// until the next [`sync`](Store::sync) has returned.
    ///
    /// # Errors
    /// [`StoreError::Commit`]; then none of `changes` applies.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;

    /// Makes every commit that returned before this call durable (on disk, past
    /// the operating system's cache). Called from another thread than
    /// [`commit`](Store::commit), possibly while a commit runs. A store whose
    /// commits are durable already returns `Ok(())`.
    ///
    /// # Errors
    /// [`StoreError::Sync`]; then those commits may be lost in a crash.
    fn sync(&self) -> Result<(), StoreError>;

    /// Pending deliveries, oldest first, to resume.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        Ok(Vec::new())
    }

    /// The pending deliveries this process is to carry out, oldest first:
    /// those it is not carrying out yet. `held` are the ids it carries out now.
    ///
    /// A store of one process returns every pending delivery (the default).
    /// A store shared by several hands each one to one process at a time, on
    /// a lease that the holder renews with every call (its `held`) and that
    /// another process may take once it has run out (the holder died); it
    /// also says which of `held` lost their claim elsewhere, and what every
    /// process holds (see [`Taken`]).
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn take(&self, held: &[String]) -> Result<Taken, StoreError> {
        let _ = held;
        Ok(Taken {
            deliveries: self.pending()?,
            ..Taken::default()
        })
    }

    /// This process's name among those sharing the store (`--node-id`); `None`
    /// for a store of one process (the default).
    fn node(&self) -> Option<String> {
        None
    }

    /// How long a delivery stays with a process that stopped renewing it,
    /// in a store shared by several (see [`take`](Store::take)); `None` for a
    /// store of one process (the default). A process that cannot renew for
    /// half of it stops what it runs, since another may take it over.
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Asks the store to call `wake` whenever a process sharing it changed
    /// something this one may have to act on (a claim taken or ended, a
    /// delivery queued), and once after each reconnection, so that it looks at
    /// once ([`take`](Store::take)) instead of at its next poll. A store of one
    /// process has no others to hear from: it never calls it (the default).
    fn watch(&self, wake: std::sync::Arc<dyn Fn() + Send + Sync>) {
        let _ = wake;
    }

    /// Pending and dead deliveries, oldest first, for the status page and the
    /// metrics. By default only the pending ones.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.pending()
    }

    /// The refused webhooks kept, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        Ok(Vec::new())
    }

    /// Called once the server using the store has stopped and flushed it: a
    /// store that holds something for its server lets it go, so that a new
    /// server (in this process too) can open it at once. The SQLite store
    /// releases its data directory. Does nothing by default.
    fn release(&self) {}

    /// Deletes what expired before `now_ms`, as [`load`](Store::load) does, so a
    /// long-running server's database stays bounded.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    fn prune(&self, now_ms: i64, id_max_age_ms: i64, room_idle_ms: i64) -> Result<(), StoreError> {
        let _ = (now_ms, id_max_age_ms, room_idle_ms);
        Ok(())
    }
}

/// A store that keeps nothing: every commit succeeds at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self, _: i64, _: i64, _: i64) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn commit(&self, _: &[Change]) -> Result<(), StoreError> {
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
