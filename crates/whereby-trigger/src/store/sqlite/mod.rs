//! The on-disk store: SQLite in WAL mode, flushed to disk before anything is
//! answered.
//!
//! WAL lets `whereby-trigger outbox` read and edit the queue while the server
//! runs. A commit writes the log (`synchronous = NORMAL`); [`Store::sync`]
//! flushes it, from the committer's sync thread, so one flush covers every
//! commit made while the previous flush ran. That is as durable as
//! `synchronous = FULL` (which flushes the log inside each commit), since no
//! webhook is answered before the flush that covers it.
//!
//! Why one file: every SQL statement of this store (the schema and its
//! migration, the operator's writes, load and prune, and `apply`, the
//! statements of each `Change`) is kept beside the schema it reads and writes,
//! so that changing a table is a change to one file; the tests are already
//! `tests.rs`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Change, Delivery, DeliveryStatus, Quarantined, Snapshot, Store, StoreError, StoredClaim,
    StoredStop,
};
use crate::util::now_ms;

/// How long a commit waits for a lock held by another process (`outbox`).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// The database file inside the data directory.
pub const DB_FILE: &str = "whereby-trigger.sqlite3";

/// The lock file inside the data directory: held (`flock`) by the one server
/// that uses it, with that server's pid inside.
pub const LOCK_FILE: &str = "whereby-trigger.lock";

/// The schema. Answered ids go to an append-only log in arrival order, not to a
/// table keyed by id: ids are random, so keying by them made every id of a
/// group commit dirty a page of its own (one 4 KiB WAL frame per webhook), while
/// appending dirties one or two. Lookups never need the table: ids are checked
/// in memory and read back only at start. The same id may be logged twice (after
/// the memory forgot it); loading keeps the latest.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_log (id TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS event_log_at ON event_log (at_ms);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    expires_ms INTEGER NOT NULL,
    holder TEXT NOT NULL DEFAULT '',
    stop TEXT
);
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    code TEXT NOT NULL,
    field TEXT,
    error TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (key TEXT PRIMARY KEY, state TEXT NOT NULL, seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    trigger TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    claim TEXT NOT NULL,
    room_url TEXT NOT NULL,
    room TEXT,
    webhook TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    retry_at_ms INTEGER
);
";

/// A [`Store`] in a SQLite database file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Reads (the outbox's poll, `outbox list`) go through their own connection:
    /// WAL lets them proceed while a commit holds the writer, so a poll never
    /// waits behind a slow or locked commit.
    reader: Mutex<Connection>,
    path: PathBuf,
    /// The write-ahead log, which [`Store::sync`] flushes.
    wal: PathBuf,
    /// Whether the directory entry of the log has been flushed once.
    wal_entry_synced: AtomicBool,
    /// Which file the database, its log and the lock file were when opened
    /// (the log: when first synced): a file deleted or replaced under the
    /// server is noticed at the next flush, instead of writing on into an
    /// unlinked file, or beside a second server.
    files: Mutex<FileIds>,
    /// The data directory's lock, held while the store lives (`None` for
    /// [`SqliteStore::open_shared`]).
    dir_lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in directory `dir` for a server,
    /// holding the directory for as long as the store lives: a second server
    /// on it would fire every event a second time, so it is refused.
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another store holds the directory;
    /// [`StoreError::Open`] when the directory or database cannot be created or
    /// opened.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let lock = lock_dir(dir)?;
        let store = SqliteStore::open_shared(dir)?;
        let lock_id = file_id_of(&lock).map_err(|e| fail(e.to_string()))?;
        store.files.lock().unwrap_or_else(|p| p.into_inner()).lock = Some(lock_id);
        *store.dir_lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
        Ok(store)
    }

    /// Opens the store in `dir` beside the server that holds it, for the
    /// operator's commands (`outbox`): SQLite's own locking keeps their writes
    /// and the server's apart.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the directory or database cannot be created or
    /// opened.
    pub fn open_shared(dir: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        // Below the request deadline (4.5 s), so a locked database is answered
        // 503 `store_unavailable` rather than timing the request out.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(e.to_string()))?;
        // NORMAL: a commit writes the log without flushing it; `sync` flushes
        // it (from another thread, so that the next commit need not wait for
        // the disk), and nothing is answered before. Together that is as
        // durable as FULL, which flushes inside every commit. Checkpoints
        // still flush the log before and the database after.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(e.to_string()))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| fail(e.to_string()))?;
        migrate(&conn).map_err(|e| fail(format!("cannot upgrade the database: {e}")))?;
        let reader = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        reader
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        let db_id = file_id(&path).map_err(|e| fail(e.to_string()))?;
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            path,
            files: Mutex::new(FileIds {
                db: db_id,
                wal: None,
                lock: None,
            }),
            wal: PathBuf::from(wal),
            wal_entry_synced: AtomicBool::new(false),
            dir_lock: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pending and dead deliveries, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    pub fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        read_deliveries(&self.read())
    }

    /// Makes a delivery pending again, starting afresh: no attempts, queued
    /// now (so that `max_age` gives it its full time); `false` when no delivery
    /// has that id.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn retry(&self, id: &str) -> Result<bool, StoreError> {
        self.write_now(
            "UPDATE deliveries SET status = 'pending', attempts = 0, created_ms = ?2, \
             retry_at_ms = NULL WHERE id = ?1",
            params![id, now_ms()],
        )
        .map(|n| n > 0)
    }

    /// Makes every dead delivery pending again, afresh as [`Self::retry`] does;
    /// returns how many.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn retry_dead(&self) -> Result<usize, StoreError> {
        self.write_now(
            "UPDATE deliveries SET status = 'pending', attempts = 0, created_ms = ?1, \
             retry_at_ms = NULL WHERE status = 'dead'",
            params![now_ms()],
        )
    }

    /// Removes a delivery; `false` when no delivery has that id.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn drop_delivery(&self, id: &str) -> Result<bool, StoreError> {
        self.write_now("DELETE FROM deliveries WHERE id = ?1", params![id])
            .map(|n| n > 0)
    }

    /// Removes a refused webhook from the quarantine; `false` when none has
    /// that id.
    ///
    /// # Errors
    /// [`StoreError::Commit`].
    pub fn drop_quarantined(&self, id: &str) -> Result<bool, StoreError> {
        self.write_now("DELETE FROM quarantine WHERE id = ?1", params![id])
            .map(|n| n > 0)
    }

    /// One statement of the operator's commands, made durable before it
    /// returns (they answer the operator at once); the rows it changed.
    fn write_now(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        let n = self.lock().execute(sql, params).map_err(commit_error)?;
        self.sync()?;
        Ok(n)
    }

    /// Whether a claim with `key` is stored and unexpired at `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    pub fn claim_held(&self, key: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.read()
            .query_row(
                "SELECT 1 FROM claims WHERE key = ?1 AND expires_ms > ?2",
                params![key, now_ms],
                |_| Ok(()),
            )
            .optional()
            .map(|row| row.is_some())
            .map_err(read_error)
    }
}

/// The schema version `PRAGMA user_version` holds once [`migrate`] has run.
const SCHEMA_VERSION: i64 = 3;

/// Columns added after a table was first created, with their definition:
/// version 2 keeps a claim's holder and pending stop, and a delivery's room;
/// version 3 when a delivery's next attempt is due.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("claims", "holder", "TEXT NOT NULL DEFAULT ''"),
    ("claims", "stop", "TEXT"),
    ("deliveries", "room", "TEXT"),
    ("deliveries", "retry_at_ms", "INTEGER"),
];

/// Brings a database written by an earlier version up to [`SCHEMA`], in one
/// transaction: version 0 kept ids in `event_ids`, keyed by id; before
/// version 2 the tables lacked [`ADDED_COLUMNS`].
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let old_ids: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_ids')",
        [],
        |row| row.get(0),
    )?;
    let mut upgrade = String::from("BEGIN IMMEDIATE;");
    for (table, column, definition) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            params![table, column],
            |row| row.get(0),
        )?;
        if !present {
            upgrade.push_str(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition};"
            ));
        }
    }
    if old_ids {
        upgrade.push_str(
            "INSERT INTO event_log (id, at_ms) SELECT id, at_ms FROM event_ids ORDER BY at_ms;
             DROP TABLE event_ids;",
        );
    }
    upgrade.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"));
    conn.execute_batch(&upgrade).inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })
}

/// Flushes a directory's entries (on Unix; elsewhere the file's flush is all
/// there is).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Takes the data directory's lock, or says who holds it. The lock is the
/// kernel's (`flock`): it goes with the process, however it ends, so a crash
/// never leaves the directory locked.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let fail = |e: std::io::Error| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    #[cfg(unix)]
    {
        if let Err(err) = try_flock(&file) {
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(fail(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StoreError::InUse {
                path: dir.display().to_string(),
                pid: text.trim().parse().ok(),
            });
        }
    }
    file.set_len(0).map_err(fail)?;
    file.rewind().map_err(fail)?;
    write!(file, "{}", std::process::id()).map_err(fail)?;
    Ok(file)
}

/// An exclusive `flock` on `file`, without waiting. (`File::try_lock` would
/// do, from Rust 1.89; the crate supports 1.88.)
#[cfg(unix)]
#[allow(unsafe_code)]
fn try_flock(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the
    // duration of the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn commit_error(err: rusqlite::Error) -> StoreError {
    StoreError::Commit(err.to_string())
}

fn read_error(err: rusqlite::Error) -> StoreError {
    StoreError::Read(err.to_string())
}

fn read_deliveries(conn: &Connection) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, trigger, kind, action, claim, room_url, webhook, attempts, created_ms, \
             status, last_error, room, retry_at_ms FROM deliveries ORDER BY created_ms, id",
        )
        .map_err(read_error)?;
    let rows = stmt
        .query_map([], |row| {
            let status: String = row.get(9)?;
            Ok(Delivery {
                id: row.get(0)?,
                trigger: row.get(1)?,
                kind: row.get(2)?,
                action: row.get(3)?,
                claim: row.get(4)?,
                room_url: row.get(5)?,
                webhook: row.get(6)?,
                attempts: row.get(7)?,
                created_ms: row.get(8)?,
                status: if status == "dead" {
                    DeliveryStatus::Dead
                } else {
                    DeliveryStatus::Pending
                },
                last_error: row.get(10)?,
                room: row.get(11)?,
                retry_at_ms: row.get(12)?,
                node: String::new(),
            })
        })
        .map_err(read_error)?;
    rows.collect::<Result<_, _>>().map_err(read_error)
}

impl Store for SqliteStore {
    fn load(
        &self,
        now_ms: i64,
        id_max_age_ms: i64,
        room_idle_ms: i64,
    ) -> Result<Snapshot, StoreError> {
        self.prune(now_ms, id_max_age_ms, room_idle_ms)
            .map_err(|e| StoreError::Read(e.to_string()))?;
        let conn = self.lock();
        let ids = conn
            .prepare("SELECT id, max(at_ms) FROM event_log GROUP BY id ORDER BY 2")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(read_error)?;
        let claims = conn
            .prepare("SELECT key, expires_ms, holder, stop FROM claims")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    let stop: Option<String> = row.get(3)?;
                    Ok(StoredClaim {
                        key: row.get(0)?,
                        expires_ms: row.get(1)?,
                        holder: row.get(2)?,
                        // An unreadable stop is no stop: the claim still ends
                        // with its lease.
                        stop: stop.and_then(|json| serde_json::from_str(&json).ok()),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(read_error)?;
        let rooms = conn
            .prepare("SELECT key, state, seen_ms FROM rooms")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(read_error)?;
        let deliveries = read_deliveries(&conn)?;
        Ok(Snapshot {
            ids,
            claims,
            rooms,
            deliveries,
        })
    }

    fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        read_deliveries(&self.read())
    }

    fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut all = read_deliveries(&self.read())?;
        all.retain(|d| d.status == DeliveryStatus::Pending);
        Ok(all)
    }

    fn prune(&self, now_ms: i64, id_max_age_ms: i64, room_idle_ms: i64) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM event_log WHERE at_ms <= ?1",
            params![now_ms.saturating_sub(id_max_age_ms)],
        )
        .map_err(commit_error)?;
        conn.execute("DELETE FROM claims WHERE expires_ms <= ?1", params![now_ms])
            .map_err(commit_error)?;
        conn.execute(
            "DELETE FROM quarantine WHERE at_ms <= ?1",
            params![now_ms.saturating_sub(super::QUARANTINE_MAX_AGE_MS)],
        )
        .map_err(commit_error)?;
        conn.execute(
            "DELETE FROM rooms WHERE seen_ms <= ?1",
            params![now_ms.saturating_sub(room_idle_ms)],
        )
        .map_err(commit_error)?;
        Ok(())
    }

    /// Flushes the write-ahead log, where every commit so far is (in WAL mode
    /// the database file only changes at checkpoints, which flush it
    /// themselves). The first time, the log's directory entry is flushed too,
    /// so that the file itself survives a crash.
    fn sync(&self) -> Result<(), StoreError> {
        let sync_error =
            |e: std::io::Error| StoreError::Sync(format!("{}: {e}", self.wal.display()));
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let gone = |what: &Path, how: &str| {
            StoreError::Sync(format!(
                "{} was {how} while the server used it: what it committed since is not in the file a restart would read",
                what.display()
            ))
        };
        // The lock is a lock only while its file is the one at the path: once
        // it is deleted or replaced, a second server can take the directory
        // and fire every event again. This server stops answering 2xx then,
        // as for a database gone, and the operator restarts one of them.
        if let Some(held) = files.lock {
            let lock = self.path.with_file_name(LOCK_FILE);
            let lost = |how: &str| {
                StoreError::Sync(format!(
                    "{} was {how} while the server held it: another server can now take the data directory and fire the same events; restart this one",
                    lock.display()
                ))
            };
            match file_id(&lock) {
                Ok(id) if id == held => {}
                Ok(_) => return Err(lost("replaced")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(lost("deleted"));
                }
                Err(e) => {
                    return Err(StoreError::Sync(format!("{}: {e}", lock.display())));
                }
            }
        }
        match file_id(&self.path) {
            Ok(id) if id == files.db => {}
            Ok(_) => return Err(gone(&self.path, "replaced")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(gone(&self.path, "deleted"));
            }
            Err(e) => return Err(sync_error(e)),
        }
        let wal = match std::fs::File::open(&self.wal) {
            Ok(wal) => wal,
            // No log yet: nothing was committed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && files.wal.is_none() => {
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(gone(&self.wal, "deleted"));
            }
            Err(e) => return Err(sync_error(e)),
        };
        // SQLite keeps the log it opened until its last connection closes:
        // another file at its path is not the one being written.
        let id = file_id_of(&wal).map_err(sync_error)?;
        match files.wal {
            None => files.wal = Some(id),
            Some(first) if first != id => return Err(gone(&self.wal, "replaced")),
            Some(_) => {}
        }
        drop(files);
        wal.sync_data().map_err(sync_error)?;
        if !self.wal_entry_synced.load(Ordering::Acquire) {
            if let Some(dir) = self.wal.parent() {
                sync_dir(dir).map_err(sync_error)?;
            }
            self.wal_entry_synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare(
                "SELECT id, at_ms, code, field, error, body FROM quarantine ORDER BY at_ms, id",
            )
            .map_err(read_error)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Quarantined {
                    id: row.get(0)?,
                    at_ms: row.get(1)?,
                    code: row.get(2)?,
                    field: row.get(3)?,
                    error: row.get(4)?,
                    body: row.get(5)?,
                })
            })
            .map_err(read_error)?;
        rows.collect::<Result<_, _>>().map_err(read_error)
    }

    fn release(&self) {
        self.dir_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(commit_error)?;
        for change in changes {
            apply(&tx, change).map_err(commit_error)?;
        }
        tx.commit().map_err(commit_error)
    }
}

/// A file's identity: device and inode (on Unix; elsewhere, its length is
/// all there is, and only a deletion is noticed).
type FileId = (u64, u64);

/// The identities of the database, its log and the directory's lock file.
struct FileIds {
    db: FileId,
    wal: Option<FileId>,
    /// `None` without the directory's lock ([`SqliteStore::open_shared`]).
    lock: Option<FileId>,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    Ok(id_of(&std::fs::metadata(path)?))
}

fn file_id_of(file: &std::fs::File) -> std::io::Result<FileId> {
    Ok(id_of(&file.metadata()?))
}

fn id_of(meta: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

fn stop_json(stop: &StoredStop) -> String {
    // A struct of strings and integers always serialises.
    serde_json::to_string(stop).unwrap_or_default()
}

/// Statements are cached on the connection: parsing SQL for every row was a
/// visible part of a group commit's time.
fn apply(tx: &rusqlite::Transaction<'_>, change: &Change) -> rusqlite::Result<usize> {
    match change {
        Change::RememberId { id, at_ms } => tx
            .prepare_cached("INSERT INTO event_log (id, at_ms) VALUES (?1, ?2)")?
            .execute(params![id, at_ms]),
        Change::Claim(claim) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO claims (key, expires_ms, holder, stop) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                claim.key,
                claim.expires_ms,
                claim.holder,
                claim.stop.as_ref().map(stop_json)
            ]),
        Change::ScheduleStop { key, stop } => tx
            .prepare_cached("UPDATE claims SET stop = ?2 WHERE key = ?1")?
            .execute(params![key, stop_json(stop)]),
        Change::CancelStop { key } => tx
            .prepare_cached("UPDATE claims SET stop = NULL WHERE key = ?1")?
            .execute(params![key]),
        Change::ReleaseClaim { key } | Change::StopClaim { key } | Change::FireStop { key } => tx
            .prepare_cached("DELETE FROM claims WHERE key = ?1")?
            .execute(params![key]),
        Change::Room {
            key,
            state,
            seen_ms,
        } => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO rooms (key, state, seen_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, state, seen_ms]),
        Change::Enqueue(d) => tx
            .prepare_cached(
                "INSERT OR IGNORE INTO deliveries (id, trigger, kind, action, claim, room_url, \
             webhook, attempts, created_ms, status, last_error, room, retry_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                d.id,
                d.trigger,
                d.kind,
                d.action,
                d.claim,
                d.room_url,
                d.webhook,
                d.attempts,
                d.created_ms,
                d.status.as_str(),
                d.last_error,
                d.room,
                d.retry_at_ms
            ]),
        Change::Done { id } => tx
            .prepare_cached("DELETE FROM deliveries WHERE id = ?1")?
            .execute(params![id]),
        Change::Attempted {
            id,
            attempts,
            error,
            retry_at_ms,
        } => tx
            .prepare_cached(
                "UPDATE deliveries SET attempts = ?2, last_error = ?3, retry_at_ms = ?4 \
                 WHERE id = ?1",
            )?
            .execute(params![id, attempts, error, retry_at_ms]),
        Change::Quarantine(q) => {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO quarantine (id, at_ms, code, field, error, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![q.id, q.at_ms, q.code, q.field, q.error, q.body])?;
            // Bounded by count as well as by age (see `prune`): a flood of
            // refused webhooks keeps the newest.
            tx.prepare_cached(
                "DELETE FROM quarantine WHERE id NOT IN \
                 (SELECT id FROM quarantine ORDER BY at_ms DESC, id LIMIT ?1)",
            )?
            .execute(params![super::QUARANTINE_MAX])?;
            Ok(added)
        }
        Change::Probe { at_ms } => tx
            .prepare_cached("INSERT OR REPLACE INTO probe (id, at_ms) VALUES (1, ?1)")?
            .execute(params![at_ms]),
        Change::Dead { id, error } => tx
            .prepare_cached("UPDATE deliveries SET status = 'dead', last_error = ?2 WHERE id = ?1")?
            .execute(params![id, error]),
    }
}

#[cfg(test)]
mod tests;
