//! The receiver: a fake `forward` target, a real HTTP server on `127.0.0.1`
//! that records every request and answers it as scripted.
//!
//! It runs on a runtime of its own, so the same receiver serves a
//! `#[tokio::test]` (which waits with [`Receiver::wait_for_requests`]) and a
//! plain `#[test]` of the binary (which waits with [`Receiver::wait_for`]).
//! What it can do, for the tests that need it:
//!
//! - answers: scripted ones for the first requests ([`Receiver::replies`]), then
//!   whatever [`Receiver::answer_with`] picks from the request's
//!   `Idempotency-Key` and how many requests with that key came before (200
//!   unless told otherwise); an answer may carry a `Retry-After`;
//! - holding: a [`Receiver::holding`] receiver answers only as
//!   [`Receiver::release`] lets requests through;
//! - flapping: a [`Receiver::closed`] receiver has its port reserved but refuses
//!   connections until [`Receiver::listen`], and
//!   [`Receiver::drop_connections`] closes the next connections unanswered.
//!
//! Every request is recorded (method, path, headers, body, the status
//! answered) the moment it arrives, before it is held, and every wait for
//! requests is bounded.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, Semaphore};

use super::{TIMEOUT, until_notified};

/// An answer: a status and, if any, a `Retry-After` value (seconds).
pub(crate) type Answer = (u16, Option<&'static str>);

/// Picks the answer to a request from its `Idempotency-Key` ("" if it has
/// none) and how many requests with that key came before it.
type Answerer = Box<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// One request as the receiver saw it, and the status it was answered.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    // Only the end-to-end tests look at these two.
    #[cfg_attr(not(feature = "cli"), expect(dead_code))]
    pub(crate) method: String,
    #[cfg_attr(not(feature = "cli"), expect(dead_code))]
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) status: u16,
}

impl Request {
    /// The value of header `name`, or "" if the request has none (or one
    /// that is not visible ASCII).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The `Idempotency-Key`, or "".
    pub(crate) fn key(&self) -> &str {
        self.header("idempotency-key")
    }

    /// The body as JSON; a body that is not JSON is its text as a JSON string.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the receiver's server and the test share.
struct Inner {
    requests: Mutex<Vec<Request>>,
    /// Woken each time a request is recorded.
    arrived: Notify,
    /// Answers for the next requests, in order; then `answerer`.
    replies: Mutex<VecDeque<Answer>>,
    answerer: Mutex<Answerer>,
    /// Whether a request waits for a permit of `gate` before it is answered.
    holding: AtomicBool,
    gate: Semaphore,
    /// Connections still to be closed unanswered, and how many were.
    to_drop: AtomicUsize,
    dropped: AtomicUsize,
}

/// A fake `forward` target on `127.0.0.1`; see the module's documentation.
/// Dropping it stops the server.
pub(crate) struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// The reserved port, until [`Receiver::listen`].
    socket: Mutex<Option<TcpSocket>>,
    /// Serves the receiver; `None` only while dropping.
    runtime: Option<Runtime>,
}

impl Receiver {
    /// A receiver that listens at once and answers 200 to every request.
    pub(crate) fn start() -> Receiver {
        let receiver = Receiver::closed();
        receiver.listen();
        receiver
    }

    /// A receiver whose port is reserved, so no one else can take it, but
    /// which refuses connections until [`Receiver::listen`]: a target that is
    /// down.
    pub(crate) fn closed() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the receiver");
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind the receiver's port");
        let addr = socket.local_addr().expect("the receiver's address");
        let answerer: Answerer = Box::new(|_, _| (200, None));
        Receiver {
            addr,
            inner: Arc::new(Inner {
                requests: Mutex::new(Vec::new()),
                arrived: Notify::new(),
                replies: Mutex::new(VecDeque::new()),
                answerer: Mutex::new(answerer),
                holding: AtomicBool::new(false),
                gate: Semaphore::new(0),
                to_drop: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
            }),
            socket: Mutex::new(Some(socket)),
            runtime: Some(runtime),
        }
    }

    /// Starts answering on the reserved port: the target is up.
    pub(crate) fn listen(&self) {
        let socket = lock(&self.socket)
            .take()
            .expect("the receiver listens only once");
        let runtime = self.runtime();
        let _entered = runtime.enter();
        let listener = Accepting {
            inner: socket.listen(1024).expect("listen on the reserved port"),
            shared: self.inner.clone(),
        };
        let app = axum::Router::new()
            .fallback(record_and_answer)
            .with_state(self.inner.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    /// Answers the next requests with `answers`, in order, before anything
    /// [`Receiver::answer_with`] says.
    pub(crate) fn replies(self, answers: &[Answer]) -> Receiver {
        lock(&self.inner.replies).extend(answers.iter().copied());
        self
    }

    /// From now on (once the scripted replies are used up), answers each
    /// request with what `answerer` picks from its `Idempotency-Key` and how
    /// many requests with that key came before it.
    pub(crate) fn answer_with(
        &self,
        answerer: impl Fn(&str, usize) -> Answer + Send + Sync + 'static,
    ) {
        *lock(&self.inner.answerer) = Box::new(answerer);
    }

    /// From now on, answers `answer` to every request (after the scripted
    /// replies).
    pub(crate) fn always(&self, answer: Answer) {
        self.answer_with(move |_, _| answer);
    }

    /// Holds every request, recorded but unanswered, until
    /// [`Receiver::release`] lets it through.
    pub(crate) fn holding(self) -> Receiver {
        self.inner.holding.store(true, Ordering::SeqCst);
        self
    }

    /// Lets `requests` more held requests be answered.
    pub(crate) fn release(&self, requests: usize) {
        self.inner.gate.add_permits(requests);
    }

    /// Closes the next `connections` connections unanswered, like a target
    /// that is restarting.
    pub(crate) fn drop_connections(&self, connections: usize) {
        self.inner.to_drop.fetch_add(connections, Ordering::SeqCst);
    }

    /// How many connections were closed unanswered.
    pub(crate) fn dropped(&self) -> usize {
        self.inner.dropped.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:<port>/assistants`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/assistants", self.addr)
    }

    /// The requests so far, in the order they arrived.
    pub(crate) fn received(&self) -> Vec<Request> {
        lock(&self.inner.requests).clone()
    }

    /// Waits (at most [`TIMEOUT`]) until `count` requests arrived; returns them
    /// all. For a test on a runtime.
    pub(crate) async fn wait_for_requests(&self, count: usize) -> Vec<Request> {
        let what = format!("{count} request(s) at the receiver");
        self.wait(&what, TIMEOUT, |requests| requests.len() >= count)
            .await
    }

    /// Waits (at most `bound`) until `done` holds for the requests; returns
    /// them.
    async fn wait(
        &self,
        what: &str,
        bound: Duration,
        done: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let arrived = until_notified(&self.inner.arrived, || {
            let requests = lock(&self.inner.requests);
            done(&requests).then(|| requests.clone())
        });
        tokio::time::timeout(bound, arrived)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {bound:?} waiting for {what}; got so far: {:#?}",
                    self.received()
                )
            })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the receiver's runtime")
    }
}

/// Waits for requests from a test without a runtime (the end-to-end tests),
/// each wait bounded by [`WAIT`](super::binary::WAIT).
#[cfg(feature = "cli")]
impl Receiver {
    /// Waits until `count` requests arrived; returns them all.
    pub(crate) fn wait_for(&self, count: usize) -> Vec<Request> {
        self.wait_until(&format!("{count} forward request(s)"), |requests| {
            requests.len() >= count
        })
    }

    /// Waits until `done` holds for the requests; returns them.
    pub(crate) fn wait_until(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        self.runtime()
            .block_on(self.wait(what, super::binary::WAIT, done))
    }

    /// How many requests of each `Idempotency-Key` were answered 2xx.
    pub(crate) fn delivered(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for request in self.received() {
            if (200..300).contains(&request.status) {
                *counts.entry(request.key().to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits until every key of `keys` was answered 2xx at least once;
    /// returns the requests.
    pub(crate) fn wait_delivered(&self, keys: &[String]) -> Vec<Request> {
        // Checked at every arrival, under the lock the next request waits
        // for: linear in the requests, so that a long wait does not slow the
        // receiver down (and make its senders time out).
        self.wait_until(&format!("{} deliveries", keys.len()), |requests| {
            let answered: std::collections::HashSet<&str> = requests
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .map(Request::key)
                .collect();
            keys.iter().all(|key| answered.contains(key.as_str()))
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Without waiting for requests still held: a test may end on a
        // runtime, where waiting is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Records the request, picks its answer, waits for the gate if the receiver
/// holds requests, and answers.
async fn record_and_answer(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, retry_after) = {
        let mut requests = lock(&inner.requests);
        let mut request = Request {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers,
            body,
            status: 0,
        };
        let before = requests.iter().filter(|r| r.key() == request.key()).count();
        let scripted = lock(&inner.replies).pop_front();
        let answer = scripted.unwrap_or_else(|| (lock(&inner.answerer))(request.key(), before));
        request.status = answer.0;
        requests.push(request);
        answer
    };
    inner.arrived.notify_waiters();
    if inner.holding.load(Ordering::SeqCst) {
        inner
            .gate
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }
    let status = StatusCode::from_u16(status).expect("a valid status");
    match retry_after {
        Some(seconds) => (status, [("retry-after", seconds)]).into_response(),
        None => status.into_response(),
    }
}

/// The receiver's listener: closes the connections it is told to drop.
struct Accepting {
    inner: TcpListener,
    shared: Arc<Inner>,
}

impl axum::serve::Listener for Accepting {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                continue;
            };
            let drop_it = self
                .shared
                .to_drop
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if drop_it {
                self.shared.dropped.fetch_add(1, Ordering::SeqCst);
                drop(stream);
                continue;
            }
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
