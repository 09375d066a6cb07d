//! Throughput under concurrent keep-alive connections, on loopback.
//!
//! Three servers are started in this process, one after the other, each on
//! `127.0.0.1:0`:
//!
//! - `baseline`: a bare hyper HTTP/1.1 server that reads the body and answers
//!   200 with the same bytes the Trigger sends (`{"outcome":"triggered"}`);
//! - `ephemeral`: the Trigger with everything in memory (`serve --ephemeral`);
//! - `durable`: the Trigger with its SQLite store (WAL, the log flushed before
//!   any answer) in a fresh temporary directory, opened as `serve --data-dir`
//!   opens it, so every answer waits for its event id to be committed and
//!   flushed to disk (group commit). The store is wrapped to count its
//!   transactions and flushes, which shows how well they are grouped;
//! - `postgres` (with `--store-url URL`): the same with the PostgreSQL store
//!   that replicas share, on a database of its own (`scripts/bench-postgres.sh`
//!   starts a throw-away cluster on loopback and runs all four).
//!
//! Both Triggers verify signatures and fire on every `room.client.joined`, as
//! `serve --on room.client.joined` does (without its stdout and log output).
//! Each is driven by `--connections` keep-alive connections (default 64) from a
//! raw HTTP/1.1 client for `--seconds` (default 5) after a short warm-up; every
//! request is a fresh, correctly signed webhook with a unique id, and any answer
//! other than 200 `{"outcome":"triggered"}` is an error. For each server it
//! prints requests/s, p50/p99/max latency and errors, then the ratios; it exits
//! 1 if any request failed (or with `--require-ratio R`, if durable/ephemeral is
//! below R), 2 on a usage error.
//!
//! ```text
//! cargo bench -p whereby-trigger --bench throughput
//! cargo bench -p whereby-trigger --bench throughput -- --seconds 10 --only ephemeral,durable
//! cargo bench -p whereby-trigger --bench throughput -- --external 127.0.0.1:8080 --only external
//! ```
//!
//! `--external ADDR` drives a server that is already running on a loopback
//! address (say `whereby-trigger serve --on room.client.joined --secret S`, or
//! another implementation to compare with) with the same load; there any 2xx
//! answer counts as a success.
//!
//! Everything is bounded: each server gets `--seconds` plus the warm-up, at most
//! `--max-requests` requests, and a request that takes longer than 10 s is an
//! error. Client and servers share the machine's cores, so the numbers are a
//! lower bound of what the server alone could do.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use whereby_trigger::config::DEFAULT_LEASE;
use whereby_trigger::store::{
    Change, Delivery, MemoryStore, Retention, Snapshot, SqliteStore, Store, StoreError,
};
use whereby_trigger::webhook::{RoomClientJoined, SigningSecret, unix_now};
use whereby_trigger::{DedupLimits, MemoryDedup, Trigger, TriggerHandle};

/// The secret the in-process Triggers verify with (and `--secret`'s default).
const SECRET: &str = "whsec_bench_only";
/// What the Trigger answers a webhook that fired; the baseline answers the same.
const TRIGGERED: &[u8] = br#"{"outcome":"triggered"}"#;
/// The event type every request carries.
const EVENT_TYPE: &str = "room.client.joined";
/// A request not answered within this is an error (the Trigger's own request
/// deadline is 4.5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer head accepted from a server.
const MAX_HEAD: usize = 16 * 1024;
/// How many error messages are kept per server, to show.
const SHOWN_ERRORS: usize = 5;

const USAGE: &str = "\
usage: cargo bench -p whereby-trigger --bench throughput -- [OPTIONS]

  --seconds N          measured seconds per server [default: 5]
  --warmup-ms N        unmeasured warm-up per server, in ms [default: 500]
  --connections N      concurrent keep-alive connections [default: 64]
  --max-requests N     most requests per server, warm-up included [default: 5000000]
  --only LIST          comma-separated servers to run: baseline, ephemeral, durable,
                       postgres, external [default: baseline,ephemeral,durable (+ postgres
                       and external if given)]
  --store-url URL      the PostgreSQL database of `postgres` (an empty one: its schema
                       is created; a loopback address)
  --data-dir DIR       where the durable store's temporary directory is made
                       [default: the system's temp dir]
  --external ADDR      also drive a server already running on this loopback address
  --path PATH          webhook path of the external server [default: /]
  --secret S           secret to sign for the external server [default: whsec_bench_only]
  --server-threads N   worker threads of the servers' runtime [default: all cores]
  --client-threads N   worker threads of the load generator [default: all cores]
  --require-ratio R    exit 1 if durable/ephemeral throughput is below R (e.g. 0.5)
  --noop-store         run `durable` with a store whose commits do nothing: the cost of
                       the durable code path (hand-off, group commit) without SQLite
  --help               this text
";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    Ephemeral,
    Durable,
    Postgres,
    External,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Ephemeral => "ephemeral",
            Kind::Durable => "durable",
            Kind::Postgres => "postgres",
            Kind::External => "external",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        [
            Kind::Baseline,
            Kind::Ephemeral,
            Kind::Durable,
            Kind::Postgres,
            Kind::External,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

#[derive(Debug)]
struct Options {
    seconds: f64,
    warmup: Duration,
    connections: usize,
    max_requests: u64,
    only: Option<Vec<Kind>>,
    data_dir: Option<PathBuf>,
    external: Option<SocketAddr>,
    path: String,
    secret: String,
    server_threads: usize,
    client_threads: usize,
    require_ratio: Option<f64>,
    noop_store: bool,
    store_url: Option<String>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut o = Options {
            seconds: 5.0,
            warmup: Duration::from_millis(500),
            connections: 64,
            max_requests: 5_000_000,
            only: None,
            data_dir: None,
            external: None,
            path: "/".to_owned(),
            secret: SECRET.to_owned(),
            server_threads: cores,
            client_threads: cores,
            require_ratio: None,
            noop_store: false,
            store_url: None,
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            // `--name=value` as well as `--name value`.
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || -> Result<String, String> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
                v.parse()
                    .map_err(|_| format!("{name}: not a number: {v:?}"))
            }
            match name.as_str() {
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                "--help" | "-h" => return Err(String::new()),
                "--seconds" => o.seconds = number(&name, &value()?)?,
                "--warmup-ms" => o.warmup = Duration::from_millis(number(&name, &value()?)?),
                "--connections" => o.connections = number(&name, &value()?)?,
                "--max-requests" => o.max_requests = number(&name, &value()?)?,
                "--server-threads" => o.server_threads = number(&name, &value()?)?,
                "--client-threads" => o.client_threads = number(&name, &value()?)?,
                "--require-ratio" => o.require_ratio = Some(number(&name, &value()?)?),
                "--noop-store" => o.noop_store = true,
                "--data-dir" => o.data_dir = Some(PathBuf::from(value()?)),
                "--path" => o.path = value()?,
                "--store-url" => o.store_url = Some(value()?),
                "--secret" => o.secret = value()?,
                "--external" => {
                    let v = value()?;
                    let addr: SocketAddr = v
                        .parse()
                        .map_err(|_| format!("--external: not an IP:PORT address: {v:?}"))?;
                    if !addr.ip().is_loopback() {
                        return Err(format!("--external: {addr} is not a loopback address"));
                    }
                    o.external = Some(addr);
                }
                "--only" => {
                    let v = value()?;
                    let kinds = v
                        .split(',')
                        .map(|n| {
                            Kind::parse(n.trim())
                                .ok_or_else(|| format!("--only: unknown server {n:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    o.only = Some(kinds);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
            return Err("--seconds must be more than 0 and at most 3600".to_owned());
        }
        if o.connections == 0 || o.connections > 4096 {
            return Err("--connections must be between 1 and 4096".to_owned());
        }
        if o.max_requests == 0 || o.server_threads == 0 || o.client_threads == 0 {
            return Err("--max-requests and the thread counts must be at least 1".to_owned());
        }
        if !o.path.starts_with('/') {
            return Err("--path must start with '/'".to_owned());
        }
        if o.only.as_ref().is_some_and(|k| k.contains(&Kind::External)) && o.external.is_none() {
            return Err("--only external needs --external ADDR".to_owned());
        }
        if o.only.as_ref().is_some_and(|k| k.contains(&Kind::Postgres)) && o.store_url.is_none() {
            return Err("--only postgres needs --store-url URL".to_owned());
        }
        Ok(o)
    }

    fn kinds(&self) -> Vec<Kind> {
        match &self.only {
            Some(kinds) => kinds.clone(),
            None => {
                let mut kinds = vec![Kind::Baseline, Kind::Ephemeral, Kind::Durable];
                if self.store_url.is_some() {
                    kinds.push(Kind::Postgres);
                }
                if self.external.is_some() {
                    kinds.push(Kind::External);
                }
                kinds
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------

/// A server under test, running on the servers' runtime.
enum Server {
    Baseline {
        addr: SocketAddr,
        task: tokio::task::JoinHandle<()>,
    },
    Trigger {
        handle: TriggerHandle,
        fired: Arc<AtomicU64>,
        durable: Option<(TempDir, Arc<CommitStats>)>,
    },
    External {
        addr: SocketAddr,
    },
}

impl Server {
    async fn start(kind: Kind, options: &Options) -> Result<Server, String> {
        match kind {
            Kind::Baseline => baseline().await,
            Kind::Ephemeral => trigger(None).await,
            Kind::Durable => {
                let dir = TempDir::new(options.data_dir.as_deref())?;
                let store: Box<dyn Store> = if options.noop_store {
                    Box::new(MemoryStore)
                } else {
                    Box::new(SqliteStore::open(&dir.0).map_err(|e| e.to_string())?)
                };
                let store = Arc::new(Counted {
                    store,
                    stats: Arc::new(CommitStats::default()),
                });
                trigger(Some((store, dir))).await
            }
            Kind::Postgres => {
                let url = options.store_url.as_deref().ok_or("no --store-url")?;
                let store = Arc::new(Counted {
                    store: postgres_store(url)?,
                    stats: Arc::new(CommitStats::default()),
                });
                // No directory: the database is the store.
                let dir = TempDir::new(options.data_dir.as_deref())?;
                trigger(Some((store, dir))).await
            }
            Kind::External => Ok(Server::External {
                addr: options.external.ok_or("no --external address")?,
            }),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Server::Baseline { addr, .. } | Server::External { addr } => *addr,
            Server::Trigger { handle, .. } => handle.local_addr(),
        }
    }

    /// Stops the server; for a Trigger, returns how many trigger events its
    /// callback saw, and for the durable one what its store committed.
    async fn stop(self) -> Result<Stopped, String> {
        match self {
            Server::Baseline { task, .. } => {
                task.abort();
                Ok(Stopped::default())
            }
            Server::External { .. } => Ok(Stopped::default()),
            Server::Trigger {
                handle,
                fired,
                durable,
            } => {
                handle.shutdown().await.map_err(|e| e.to_string())?;
                let mut commits = None;
                // The shutdown flushed the store.
                if let Some((dir, stats)) = durable {
                    drop(dir);
                    commits = Some(stats.snapshot());
                }
                Ok(Stopped {
                    fired: Some(fired.load(Ordering::SeqCst)),
                    commits,
                })
            }
        }
    }
}

/// What a server reported when it stopped.
#[derive(Default)]
struct Stopped {
    /// Trigger events the callback saw.
    fired: Option<u64>,
    /// (transactions, changes, total µs in commit) of the durable store.
    commits: Option<StoreStats>,
}

/// The PostgreSQL store at `url`, as `serve --store-url` opens it.
#[cfg(feature = "postgres")]
fn postgres_store(url: &str) -> Result<Box<dyn Store>, String> {
    use whereby_trigger::store::{PgStore, PgStoreOptions};
    let store = PgStore::connect(url, PgStoreOptions::new("bench")).map_err(|e| e.to_string())?;
    Ok(Box::new(store))
}

#[cfg(not(feature = "postgres"))]
fn postgres_store(_: &str) -> Result<Box<dyn Store>, String> {
    Err("built without the `postgres` feature".to_owned())
}

/// The durable store, counting its transactions: how well commits are grouped.
struct Counted {
    store: Box<dyn Store>,
    stats: Arc<CommitStats>,
}

#[derive(Default)]
struct CommitStats {
    transactions: AtomicU64,
    changes: AtomicU64,
    busy_us: AtomicU64,
    syncs: AtomicU64,
    sync_us: AtomicU64,
}

/// What the store did during a run.
#[derive(Debug, Clone, Copy, Default)]
struct StoreStats {
    transactions: u64,
    changes: u64,
    busy_us: u64,
    syncs: u64,
    sync_us: u64,
}

impl CommitStats {
    fn snapshot(&self) -> StoreStats {
        StoreStats {
            transactions: self.transactions.load(Ordering::SeqCst),
            changes: self.changes.load(Ordering::SeqCst),
            busy_us: self.busy_us.load(Ordering::SeqCst),
            syncs: self.syncs.load(Ordering::SeqCst),
            sync_us: self.sync_us.load(Ordering::SeqCst),
        }
    }
}

impl Store for Counted {
    fn load(
        &self,
        now_ms: i64,
        id_max_age_ms: i64,
        room_idle_ms: i64,
    ) -> Result<Snapshot, StoreError> {
        self.store.load(now_ms, id_max_age_ms, room_idle_ms)
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.store.commit(changes);
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        self.stats.busy_us.fetch_add(us, Ordering::Relaxed);
        result
    }

    fn sync(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.store.sync();
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats.sync_us.fetch_add(us, Ordering::Relaxed);
        result
    }

    fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        self.store.pending()
    }

    fn prune(&self, now_ms: i64, id_max_age_ms: i64, room_idle_ms: i64) -> Result<(), StoreError> {
        self.store.prune(now_ms, id_max_age_ms, room_idle_ms)
    }
}

/// The bare hyper server: read the body, answer 200 with the Trigger's bytes.
async fn baseline() -> Result<Server, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("cannot bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        // Aborting the accept loop drops the set, which aborts every connection.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            connections.spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let mut response = Response::new(Full::new(Bytes::from_static(TRIGGERED)));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            // Reap finished connections so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(Server::Baseline { addr, task })
}

/// The Trigger as `serve --on room.client.joined` builds it, with the durable
/// store when one is given.
async fn trigger(store: Option<(Arc<Counted>, TempDir)>) -> Result<Server, String> {
    let fired = Arc::new(AtomicU64::new(0));
    let counter = fired.clone();
    let dedup = Arc::new(MemoryDedup::new(DedupLimits::default()));
    let mut builder = Trigger::builder()
        .port(0)
        .bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .secret(SECRET)
        .on(|_: &RoomClientJoined| true)
        .on_trigger(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .dedup_store(dedup);
    let durable = match store {
        Some((store, dir)) => {
            let limits = DedupLimits::default();
            let retention = Retention {
                id_max_age_ms: i64::try_from(limits.max_age.as_millis()).unwrap_or(i64::MAX),
                room_idle_ms: i64::try_from(DEFAULT_LEASE.as_millis()).unwrap_or(i64::MAX),
            };
            let stats = store.stats.clone();
            builder = builder.store(store, retention);
            Some((dir, stats))
        }
        None => None,
    };
    let handle = builder
        .build()
        .map_err(|e| e.to_string())?
        .start()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Server::Trigger {
        handle,
        fired,
        durable,
    })
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: Option<&std::path::Path>) -> Result<TempDir, String> {
        let parent = parent.map_or_else(std::env::temp_dir, PathBuf::from);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(
            "whereby-trigger-bench-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// What every connection of one run shares.
struct Plan {
    addr: SocketAddr,
    path: String,
    secret: SigningSecret,
    /// The compact sample webhook, split around its id.
    body_prefix: String,
    body_suffix: String,
    /// Unique per run, so ids never repeat across servers.
    run: String,
    /// Whether the answer must be exactly 200 `{"outcome":"triggered"}`.
    strict: bool,
    measure_from: Instant,
    measure_until: Instant,
    /// Requests started so far, against `max_requests`.
    started: AtomicU64,
    max_requests: u64,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latencies (µs) of the successful requests answered in the window.
    latencies_us: Vec<u32>,
    /// Successful answers, all of them (warm-up and after the window too).
    ok_total: u64,
    /// When the last successful answer in the window arrived.
    last_in_window: Option<Instant>,
    errors: u64,
    messages: Vec<String>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.messages.len() < SHOWN_ERRORS {
            self.messages.push(message);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok_total += other.ok_total;
        self.last_in_window = self.last_in_window.max(other.last_in_window);
        self.errors += other.errors;
        for m in other.messages {
            if self.messages.len() < SHOWN_ERRORS {
                self.messages.push(m);
            }
        }
    }
}

/// One keep-alive connection sending webhooks back to back until the window
/// closes or the request budget is spent. A failed request is counted and the
/// connection is opened again.
async fn connection(plan: Arc<Plan>, index: usize) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut request = Vec::with_capacity(2048);
    let mut answer = Vec::with_capacity(1024);
    let mut seq: u64 = 0;
    loop {
        if Instant::now() >= plan.measure_until
            || plan.started.fetch_add(1, Ordering::Relaxed) >= plan.max_requests
        {
            break;
        }
        let conn = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect(plan.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(e) => {
                    tally.error(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut conn = conn;
        seq += 1;
        build_request(&plan, index, seq, &mut request);
        let sent = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, &request, &mut answer))
            .await
        {
            Err(_) => tally.error(format!("no answer within {REQUEST_TIMEOUT:?}")),
            Ok(Err(e)) => tally.error(e),
            Ok(Ok(answered)) => {
                let done = Instant::now();
                let ok = if plan.strict {
                    answered.status == 200 && &answer[answered.body.clone()] == TRIGGERED
                } else {
                    (200..300).contains(&answered.status)
                };
                if ok {
                    tally.ok_total += 1;
                    if sent >= plan.measure_from && done <= plan.measure_until {
                        let us = done.duration_since(sent).as_micros();
                        tally
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                        tally.last_in_window = tally.last_in_window.max(Some(done));
                    }
                } else {
                    tally.error(format!(
                        "HTTP {}: {}",
                        answered.status,
                        String::from_utf8_lossy(&answer[answered.body.clone()])
                    ));
                }
                if !answered.close {
                    stream = Some(conn);
                }
            }
        }
    }
    tally
}

/// Writes one signed webhook request with a fresh id into `out`.
fn build_request(plan: &Plan, index: usize, seq: u64, out: &mut Vec<u8>) {
    let mut body = String::with_capacity(plan.body_prefix.len() + plan.body_suffix.len() + 48);
    body.push_str(&plan.body_prefix);
    body.push_str(&format!("{}-{index}-{seq}", plan.run));
    body.push_str(&plan.body_suffix);
    let signature = plan.secret.sign(unix_now(), body.as_bytes());
    out.clear();
    let _ = write!(
        out,
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         whereby-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
        plan.path,
        plan.addr,
        body.len()
    );
    out.extend_from_slice(body.as_bytes());
}

/// An answer's status, where its body is in the buffer, and whether the
/// server closes the connection after it.
struct Answered {
    status: u16,
    body: std::ops::Range<usize>,
    close: bool,
}

/// Sends `request` and reads one answer (Content-Length framed) into `buf`.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Answered, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("answer head too large".to_owned());
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".to_owned());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = 0usize;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| format!("bad content-length {value:?}"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported transfer-encoding {value:?}"));
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let end = head_end + length;
    while buf.len() < end {
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed in the middle of an answer".to_owned());
        }
    }
    if buf.len() > end {
        return Err("more bytes than one answer (the server answered unasked)".to_owned());
    }
    Ok(Answered {
        status,
        body: head_end..end,
        close,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The sample webhook, compact, split around its id.
fn body_template() -> Result<(String, String), String> {
    const MARK: &str = "@@ID@@";
    let sample = whereby_trigger::webhook::sample::sample(EVENT_TYPE)
        .ok_or("no sample payload for room.client.joined")?;
    let mut value: serde_json::Value = serde_json::from_str(sample).map_err(|e| e.to_string())?;
    value["id"] = serde_json::Value::String(MARK.to_owned());
    let text = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    let (prefix, suffix) = text.split_once(MARK).ok_or("id marker lost")?;
    Ok((prefix.to_owned(), suffix.to_owned()))
}

// ---------------------------------------------------------------------------
// Running and reporting
// ---------------------------------------------------------------------------

struct Measured {
    kind: Kind,
    requests: u64,
    seconds: f64,
    p50_us: u32,
    p99_us: u32,
    max_us: u32,
    errors: u64,
    messages: Vec<String>,
    commits: Option<StoreStats>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn run_one(
    kind: Kind,
    options: &Options,
    servers: &Runtime,
    clients: &Runtime,
) -> Result<Measured, String> {
    let server = servers.block_on(Server::start(kind, options))?;
    let (body_prefix, body_suffix) = body_template()?;
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let seconds = Duration::from_secs_f64(options.seconds);
    let run = format!(
        "bench-{}-{}-{}",
        kind.name(),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let plan = Arc::new(Plan {
        addr: server.addr(),
        path: if kind == Kind::External {
            options.path.clone()
        } else {
            "/".to_owned()
        },
        secret: SigningSecret::new(if kind == Kind::External {
            options.secret.as_str()
        } else {
            SECRET
        }),
        body_prefix,
        body_suffix,
        run,
        strict: kind != Kind::External,
        measure_from,
        measure_until: measure_from + seconds,
        started: AtomicU64::new(0),
        max_requests: options.max_requests,
    });
    let mut tally = clients.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for index in 0..options.connections {
            set.spawn(connection(plan.clone(), index));
        }
        let mut all = Tally::default();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(t) => all.merge(t),
                Err(e) => all.error(format!("a connection task failed: {e}")),
            }
        }
        all
    });
    // A request budget that ran out early shortens the window.
    let window_end = if plan.started.load(Ordering::Relaxed) > plan.max_requests {
        tally.last_in_window.unwrap_or(measure_from)
    } else {
        plan.measure_until
    };
    let window = window_end
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let stopped = servers.block_on(server.stop())?;
    if let Some(fired) = stopped.fired
        && fired != tally.ok_total
    {
        tally.error(format!(
            "{} answers said triggered but the callback saw {fired} events",
            tally.ok_total
        ));
    }
    tally.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let l = &tally.latencies_us;
        if l.is_empty() {
            return 0;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i]
    };
    Ok(Measured {
        kind,
        requests: tally.latencies_us.len() as u64,
        seconds: window.max(f64::MIN_POSITIVE),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: tally.latencies_us.last().copied().unwrap_or(0),
        errors: tally.errors,
        messages: tally.messages,
        commits: stopped.commits,
    })
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(message) => {
            if message.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("throughput: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = |threads: usize, name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
    };
    let (servers, clients) = match (
        runtime(options.server_threads, "server"),
        runtime(options.client_threads, "client"),
    ) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("throughput: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!(
        "whereby-trigger throughput: {} keep-alive connections, {} s per server after {} ms \
         warm-up, every request a freshly signed {EVENT_TYPE} with a unique id; \
         {} server / {} client threads on {} cores",
        options.connections,
        options.seconds,
        options.warmup.as_millis(),
        options.server_threads,
        options.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if options.noop_store {
        println!("durable runs with a store whose commits do nothing (--noop-store)");
    }
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "server", "requests", "req/s", "p50", "p99", "max", "errors"
    );
    let mut results = Vec::new();
    let mut failed = false;
    let mut too_slow = false;
    for kind in options.kinds() {
        match run_one(kind, &options, &servers, &clients) {
            Ok(m) => {
                println!(
                    "{:<10} {:>10} {:>10.0} {:>10} {:>10} {:>10} {:>7}",
                    m.kind.name(),
                    m.requests,
                    m.rate(),
                    ms(m.p50_us),
                    ms(m.p99_us),
                    ms(m.max_us),
                    m.errors
                );
                if let Some(stats) = m.commits
                    && stats.transactions > 0
                    && stats.syncs > 0
                {
                    println!(
                        "           store: {} transactions for {} changes ({:.1} per \
                             transaction, {:.2} ms each); {} syncs ({:.1} transactions per \
                             sync, {:.2} ms each)",
                        stats.transactions,
                        stats.changes,
                        stats.changes as f64 / stats.transactions as f64,
                        stats.busy_us as f64 / stats.transactions as f64 / 1000.0,
                        stats.syncs,
                        stats.transactions as f64 / stats.syncs as f64,
                        stats.sync_us as f64 / stats.syncs as f64 / 1000.0
                    );
                }
                for message in &m.messages {
                    println!("           error: {message}");
                }
                if m.requests == 0 {
                    println!(
                        "           no request was answered in the measured window \
                         (was --max-requests spent in the warm-up?)"
                    );
                }
                failed |= m.errors > 0 || m.requests == 0;
                results.push(m);
            }
            Err(e) => {
                println!("{:<10} could not run: {e}", kind.name());
                failed = true;
            }
        }
    }
    let rate = |k: Kind| results.iter().find(|m| m.kind == k).map(Measured::rate);
    println!();
    if let (Some(d), Some(e)) = (rate(Kind::Durable), rate(Kind::Ephemeral)) {
        let ratio = d / e;
        println!("durable/ephemeral  {ratio:.2}  (goal: at least 0.50)");
        if let Some(required) = options.require_ratio
            && ratio < required
        {
            println!("FAIL: durable/ephemeral {ratio:.2} is below the required {required:.2}");
            too_slow = true;
        }
    }
    if let (Some(e), Some(b)) = (rate(Kind::Ephemeral), rate(Kind::Baseline)) {
        println!("ephemeral/baseline {:.2}", e / b);
    }
    if let (Some(d), Some(b)) = (rate(Kind::Durable), rate(Kind::Baseline)) {
        println!("durable/baseline   {:.2}", d / b);
    }
    if let (Some(p), Some(d)) = (rate(Kind::Postgres), rate(Kind::Durable)) {
        println!("postgres/durable   {:.2}  (goal: at least 0.50)", p / d);
    }
    if failed {
        println!("FAIL: a request failed or a server could not be measured");
    }
    if failed || too_slow {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
