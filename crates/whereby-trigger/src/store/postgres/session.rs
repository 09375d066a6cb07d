//! One connection to PostgreSQL on a thread of its own.
//!
//! The client blocks its caller, and the store is called from everywhere: the
//! committer's threads, blocking tasks, and `TriggerBuilder::build` on an async
//! worker, where a client that drives its own runtime may not block. So each
//! connection lives on a plain thread that runs the jobs sent to it, one at a
//! time, and its callers wait on a channel, which is allowed anywhere.
//!
//! A connection that broke (the server restarted, the network dropped) is
//! opened again by the next job: the store comes back on its own when the
//! database does, without a restart.

use std::collections::HashMap;
use std::sync::{Mutex, mpsc};

use postgres::{Client, NoTls, Statement, Transaction};

use crate::store::StoreError;

/// Why a job failed: the database said no or could not be reached, or the
/// store refused the changes (a duplicate, a claim held elsewhere).
#[derive(Debug)]
pub(super) enum Fail {
    Db(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Fail {
    fn from(err: postgres::Error) -> Self {
        Fail::Db(err)
    }
}

impl Fail {
    /// The store's error, a database failure being `as_error`'s kind.
    pub(super) fn into_store(self, as_error: impl FnOnce(String) -> StoreError) -> StoreError {
        match self {
            Fail::Db(err) => as_error(describe(&err)),
            Fail::Store(err) => err,
        }
    }
}

/// What PostgreSQL said, with the detail its `Display` leaves out.
pub(super) fn describe(err: &postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// Whether `err` says the connection is gone rather than the statement
/// wrong: closed, a connection exception (SQLSTATE class 08), or the server
/// ending it (class 57P: shut down, crashed, not yet taking connections).
fn broken(err: &postgres::Error) -> bool {
    err.is_closed()
        || err.code().is_some_and(|code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        })
}

/// An open connection and the statements prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// `sql` prepared once per connection: each parse would cost a round trip.
pub(super) fn prepared(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(statement) = cache.get(sql) {
        return Ok(statement.clone());
    }
    let statement = tx.prepare(sql)?;
    cache.insert(sql, statement.clone());
    Ok(statement)
}

impl Conn {
    /// The client and the statement cache, borrowed apart so that a
    /// transaction on the one can use the other.
    pub(super) fn split(&mut self) -> (&mut Client, &mut HashMap<&'static str, Statement>) {
        (&mut self.client, &mut self.statements)
    }
}

type Job = Box<dyn FnOnce(&mut Link) + Send>;

/// The thread's side: the settings to connect with and the connection, if open.
struct Link {
    config: postgres::Config,
    /// Run once on every new connection.
    setup: &'static str,
    conn: Option<Conn>,
}

impl Link {
    fn conn(&mut self) -> Result<&mut Conn, postgres::Error> {
        let conn = match self.conn.take() {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => {
                let mut client = self.config.connect(NoTls)?;
                client.batch_execute(self.setup)?;
                Conn {
                    client,
                    statements: HashMap::new(),
                }
            }
        };
        Ok(self.conn.insert(conn))
    }
}

/// A connection on its thread. Dropping it ends the thread.
pub(super) struct Session {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Session {
    /// Starts the thread `name`; it connects at its first job.
    pub(super) fn start(
        name: &str,
        config: postgres::Config,
        setup: &'static str,
    ) -> std::io::Result<Session> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("postgres-{name}"))
            .spawn(move || {
                let mut link = Link {
                    config,
                    setup,
                    conn: None,
                };
                while let Ok(job) = rx.recv() {
                    job(&mut link);
                }
            })?;
        Ok(Session {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `job` on the connection (opened first if need be) and waits for
    /// its answer. A connection found broken by the job (the server restarted
    /// since it was last used) is opened again and the job run once more: a
    /// transaction that failed so did not commit, or, if the break came with
    /// its commit, is refused as a duplicate the second time.
    pub(super) fn run<R: Send + 'static>(
        &self,
        mut job: impl FnMut(&mut Conn) -> Result<R, Fail> + Send + 'static,
    ) -> Result<R, Fail> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |link: &mut Link| {
            let mut result = match link.conn() {
                Ok(conn) => job(conn),
                Err(err) => Err(Fail::Db(err)),
            };
            if matches!(&result, Err(Fail::Db(err)) if broken(err)) {
                link.conn = None;
                result = match link.conn() {
                    Ok(conn) => job(conn),
                    Err(err) => Err(Fail::Db(err)),
                };
            }
            let _ = reply.send(result);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(Fail::Store(StoreError::Closed));
        }
        answer
            .recv()
            .unwrap_or(Err(Fail::Store(StoreError::Closed)))
    }
}
