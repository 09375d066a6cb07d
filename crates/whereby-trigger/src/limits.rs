//! Limits: what the server bounds, so that no client — slow, oversized, too
//! many — and no handler — hanging or panicking — can hold it or take it down.
//!
//! [`Limits`] is the configuration, set on the
//! [`TriggerBuilder`](crate::TriggerBuilder). Where each limit is enforced:
//!
//! | limit | enforced by | what the client sees |
//! | --- | --- | --- |
//! | `header_read_timeout` | hyper's header timer | the connection is closed |
//! | `max_header_bytes` | hyper's parser | 431, then the connection is closed |
//! | `body_read_timeout` | a timer on the body (a router layer) | 408 `body_timeout` |
//! | `request_deadline` | a timer on the handler (a router layer) | 503 `deadline` |
//! | a panicking handler | `catch_unwind` around the handler (a router layer) | 500 `internal_error` |
//! | `Host` (RFC 9112 §3.2) | a check before the handler (a router layer) | 400 `host_missing` / `host_invalid` |
//! | `max_connections` | the accept loop in [`trigger`](crate::trigger) | the connection waiting longest without a request (a head still arriving, or idle) is closed for it; with a request in progress on every one, it waits in the kernel's backlog |
//! | `keep_alive_idle` | the connection task in [`trigger`](crate::trigger) | an idle connection is closed |
//!
//! The `Host` check, the body timer, the deadline and panic containment are a
//! layer of the router itself, so a router mounted in another application with
//! [`Trigger::router`](crate::Trigger::router) keeps them; the other limits
//! belong to the server that [`Trigger::start`](crate::Trigger::start) and
//! [`Trigger::serve`](crate::Trigger::serve) run (an application's own server
//! sets its own).
//!
//! Why one file: each limit's setting sits beside where it is enforced, and
//! the router's guard layer and the server's direct route share `guard_one`,
//! so that the two cannot drift apart; the last 260 lines are tests.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use tokio::time::{Instant, Sleep};

pub use crate::error::HostError;
use crate::error::Rejection;
use crate::extract::BodyTimedOut;
use crate::util::{BoxError, panic_message};

/// Default time to receive a request's head. hyper starts this timer as soon as
/// a connection waits for a request, so it also bounds the idle time of a
/// kept-alive connection and must not be shorter than
/// [`DEFAULT_KEEP_ALIVE_IDLE`]. Whereby sends its head in one packet.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to receive a whole body once the head is in: Whereby's payloads
/// are a few KiB. Shorter than [`DEFAULT_REQUEST_DEADLINE`], which also counts
/// the body, so that a slow body is told apart (408) from a slow handler (503).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Default largest request head (request line and headers): Whereby's are well
/// under 2 KiB; common servers allow 8 to 16 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default number of connections served at once. Each holds a file descriptor,
/// so keep it below the process's open-file limit (`ulimit -n`) less what
/// actions need.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time to answer a request once its head is in: below Whereby's 5 s
/// delivery timeout, so an answer that would come too late is a 503 that
/// Whereby retries rather than a time-out on its side.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_millis(4500);
/// Default time a kept-alive connection may wait for its next request: longer
/// than the 4 to 5 s after which common HTTP clients (Node's agent, undici)
/// drop an idle connection, so the client closes first and never sends a
/// request on a connection the server is closing.
pub const DEFAULT_KEEP_ALIVE_IDLE: Duration = Duration::from_secs(6);

/// hyper refuses a read buffer smaller than this.
const MIN_BUF_SIZE: usize = 8 * 1024;

/// How much a client may take from the server: time, bytes and connections.
///
/// ```
/// use std::time::Duration;
/// use whereby_trigger::Trigger;
/// use whereby_trigger::limits::Limits;
///
/// let builder = Trigger::builder().limits(Limits {
///     max_connections: 256,
///     ..Limits::default()
/// });
/// // Or one at a time:
/// let builder = Trigger::builder().header_read_timeout(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to receive a request's head, counted from when the connection starts
    /// waiting for it (so idle time before it counts too). A client still
    /// sending its head then is disconnected without an answer. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time to receive the whole body, counted from the end of the head. A body
    /// still arriving then is answered 408 `body_timeout`. Default 3 s.
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes. A larger one
    /// is answered 431 and the connection is closed. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Connections served at once. At the cap, a new connection takes the
    /// place of the one that has waited longest without a request in progress
    /// (a head still arriving, or idle between requests), which is closed; when
    /// every connection has a request in progress, new ones wait in the
    /// kernel's listen backlog until one ends, delayed rather than refused.
    /// Default 1024.
    pub max_connections: usize,
    /// Time to answer a request, counted from the end of its head. A request
    /// not answered by then is abandoned (its handler is dropped, which releases
    /// the event id) and answered 503 `deadline`, which Whereby retries. Keep it
    /// above the predicate timeout, or a slow predicate is answered `deadline`
    /// rather than `predicate_timeout`. Default 4.5 s.
    pub request_deadline: Duration,
    /// Time a connection, new or kept alive, may stay without a request before
    /// it is closed. Zero turns keep-alive off: every answer closes its
    /// connection.
    /// The header timer runs while a connection waits as well, so the effective
    /// idle limit is the shorter of this and `header_read_timeout`. Default 6 s.
    pub keep_alive_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            keep_alive_idle: DEFAULT_KEEP_ALIVE_IDLE,
        }
    }
}

impl Limits {
    /// Refuses a zero limit (all but `keep_alive_idle`, where zero means off):
    /// the error is the name of the first one that is zero.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        let zero = [
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("body_read_timeout", self.body_read_timeout.is_zero()),
            ("max_header_bytes", self.max_header_bytes == 0),
            ("max_connections", self.max_connections == 0),
            ("request_deadline", self.request_deadline.is_zero()),
        ];
        match zero.into_iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(name),
            None => Ok(()),
        }
    }

    /// The idle limit of a kept-alive connection, or `None` without keep-alive.
    pub(crate) fn keep_alive(&self) -> Option<Duration> {
        (!self.keep_alive_idle.is_zero()).then_some(self.keep_alive_idle)
    }

    /// The HTTP/1 connection settings: header timer, head size, keep-alive.
    pub(crate) fn http1(&self) -> http1::Builder {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // The exact cap on the head; the buffer cap bounds each connection's
            // memory and must hold a whole head.
            .max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes.max(MIN_BUF_SIZE))
            .keep_alive(self.keep_alive().is_some());
        http
    }
}

// ---------------------------------------------------------------------------
// The guard: Host, body timer, deadline, panics
// ---------------------------------------------------------------------------

/// The `Host` header of `request` is as RFC 9112 §3.2 wants it: one, for
/// HTTP/1.1 (an HTTP/2 request has `:authority` instead), and a host with an
/// optional port, or empty (RFC 9110 §7.2).
fn check_host<B>(request: &Request<B>) -> Result<(), HostError> {
    let mut hosts = request.headers().get_all(hyper::header::HOST).iter();
    let Some(host) = hosts.next() else {
        return match request.version() {
            hyper::Version::HTTP_11 => Err(HostError::Missing),
            _ => Ok(()),
        };
    };
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    // The characters of `uri-host [":" port]` (a name, an IPv4 address, an IP
    // literal in brackets): a byte check, since this runs on every request and
    // a full parse would copy the value. No `@` (user info), `/`, `?`, `#`,
    // space or control gets through.
    let is_host_byte = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    };
    if host.as_bytes().iter().all(is_host_byte) {
        Ok(())
    } else {
        Err(HostError::Invalid)
    }
}

/// Guards every request of `router`: its `Host` checked, a body timer, a
/// deadline, and a panic turned into a 500. A layer of the router itself, so
/// that a router mounted in another application keeps them.
pub(crate) fn guard(router: Router, limits: &Limits) -> Router {
    let timeout = limits.body_read_timeout;
    let deadline = limits.request_deadline;
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: Next| {
            guarded(request, next, timeout, deadline)
        },
    ))
}

async fn guarded(
    request: axum::extract::Request,
    next: Next,
    timeout: Duration,
    deadline: Duration,
) -> Response {
    guard_one(request, timeout, deadline, |request| next.run(request)).await
}

/// What the guard layer does for one request, around `handle`.
async fn guard_one<B, F, H>(
    request: Request<B>,
    timeout: Duration,
    deadline: Duration,
    handle: H,
) -> Response
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    H: FnOnce(axum::extract::Request) -> F,
    F: Future<Output = Response>,
{
    if let Err(host) = check_host(&request) {
        return Rejection::Host(host).into_response();
    }
    let request = request.map(|body| axum::body::Body::new(TimedBody::new(body, timeout)));
    // The handler only starts when first polled, inside `catch_unwind`; it runs
    // on this task, not a spawned one, so that the deadline drops it: an
    // abandoned request stops where it is.
    let handled = handle(request);
    match tokio::time::timeout(deadline, AssertUnwindSafe(handled).catch_unwind()).await {
        Err(_elapsed) => Rejection::Deadline { deadline }.into_response(),
        Ok(Err(panic)) => Rejection::Panicked {
            message: panic_message(panic.as_ref()),
        }
        .into_response(),
        Ok(Ok(response)) => response,
    }
}

/// The handler of a [`Direct`] route.
pub(crate) type DirectHandler = Arc<
    dyn Fn(axum::extract::Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync,
>;

/// One route that the server's connections serve themselves, past the
/// router: `POST` to the webhook path. Every webhook went through the
/// router's layers of boxed services, route matching and extractors, which
/// cost more than verifying its signature; this one goes straight to its
/// handler, behind the same guard (Host check, body timer, deadline, panic
/// containment) as the router's layer. Everything else, and a router mounted
/// elsewhere, still goes through the router.
pub(crate) struct Direct {
    path: Arc<str>,
    handler: DirectHandler,
    body_read_timeout: Duration,
    request_deadline: Duration,
}

impl Direct {
    /// `POST path` served by `handler`, guarded with `limits`.
    pub(crate) fn post(path: &str, handler: DirectHandler, limits: &Limits) -> Arc<Direct> {
        Arc::new(Direct {
            path: Arc::from(path),
            handler,
            body_read_timeout: limits.body_read_timeout,
            request_deadline: limits.request_deadline,
        })
    }

    fn takes<B>(&self, request: &Request<B>) -> bool {
        request.method() == hyper::Method::POST && request.uri().path() == &*self.path
    }
}

/// The router as one connection serves it: the connection's [`Activity`]
/// knows whether a request is in progress.
#[derive(Clone)]
pub(crate) struct Tracked {
    router: TowerToHyperService<Router>,
    direct: Option<Arc<Direct>>,
    activity: Arc<Activity>,
}

impl Tracked {
    /// Serves `router` (and `direct`, if any, before it) on one connection,
    /// tracked by `activity`.
    pub(crate) fn new(
        router: Router,
        direct: Option<Arc<Direct>>,
        activity: Arc<Activity>,
    ) -> Self {
        Tracked {
            router: TowerToHyperService::new(router),
            direct,
            activity,
        }
    }
}

type TrackedFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = self.activity.begin();
        if let Some(direct) = self.direct.as_ref().filter(|d| d.takes(&request)) {
            let direct = direct.clone();
            return Box::pin(async move {
                let answer = guard_one(
                    request,
                    direct.body_read_timeout,
                    direct.request_deadline,
                    |request| (direct.handler)(request),
                )
                .await;
                drop(busy);
                Ok(answer)
            });
        }
        let handled = hyper::service::Service::call(&self.router, request);
        Box::pin(async move {
            let answer = handled.await;
            drop(busy);
            answer
        })
    }
}

/// The body of a request that must be complete within a time limit.
///
/// The timer is only looked at when the body has nothing ready, so a body that
/// arrived in time is never refused for being read late; one still trickling
/// in when the timer fires fails with [`BodyTimedOut`], which the handler
/// answers with a 408.
struct TimedBody<B> {
    inner: B,
    timer: Pin<Box<Sleep>>,
    timeout: Duration,
    timed_out: bool,
}

impl<B> TimedBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timer: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            timed_out: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.timed_out = true;
                    Poll::Ready(Some(Err(BodyTimedOut(this.timeout).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------------------
// Connection activity, for the keep-alive idle limit
// ---------------------------------------------------------------------------

/// Whether a connection has a request in progress, and since when it has none.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `origin` to the end of the last request.
    idle_since: AtomicU64,
}

impl Activity {
    /// A connection that starts now, without a request.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    /// When the connection will have been idle for `idle`, or `None` while a
    /// request is in progress.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::SeqCst));
        Some(self.origin + since + idle)
    }

    /// Since when the connection has had no request in progress (its
    /// start, or the end of its last request), or `None` while one is: a
    /// connection that may be closed to make room, the oldest first.
    pub(crate) fn waiting_since(&self) -> Option<Instant> {
        self.idle_deadline(Duration::ZERO)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
}

/// A request in progress; dropping it (answered or abandoned) ends it.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The time first, so a watchdog that sees no request sees its end.
        activity.idle_since.store(now, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_direct_route_takes_posts_to_its_path_alone_and_guards_them() {
        let handler: DirectHandler = Arc::new(|request: axum::extract::Request| {
            Box::pin(async move {
                if request.uri().query() == Some("panic") {
                    panic!("the handler failed");
                }
                "handled".into_response()
            })
        });
        let direct = Direct::post("/hooks", handler, &Limits::default());
        let request = |method: &str, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .header(hyper::header::HOST, "example.test")
                .body(())
                .unwrap()
        };
        assert!(direct.takes(&request("POST", "/hooks")));
        assert!(direct.takes(&request("POST", "/hooks?x=1")));
        assert!(!direct.takes(&request("GET", "/hooks")));
        assert!(!direct.takes(&request("POST", "/hooks/")));
        assert!(!direct.takes(&request("POST", "/other")));

        let answer = |request: Request<http_body_util::Empty<Bytes>>| {
            let direct = direct.clone();
            async move {
                guard_one(
                    request,
                    Duration::from_secs(1),
                    Duration::from_secs(1),
                    |r| (direct.handler)(r),
                )
                .await
            }
        };
        let post = |uri: &str| request("POST", uri).map(|()| http_body_util::Empty::new());
        assert_eq!(answer(post("/hooks")).await.status(), 200);
        // The same guard as the router's layer: a panic is a 500, a head
        // without Host a 400.
        assert_eq!(answer(post("/hooks?panic")).await.status(), 500);
        let mut hostless = post("/hooks");
        hostless.headers_mut().remove(hyper::header::HOST);
        assert_eq!(answer(hostless).await.status(), 400);
    }

    #[test]
    fn defaults_are_valid_and_below_wherebys_timeout() {
        let limits = Limits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert!(limits.request_deadline < Duration::from_secs(5));
        assert!(limits.body_read_timeout < limits.request_deadline);
        assert!(limits.keep_alive_idle <= limits.header_read_timeout);
    }

    #[test]
    fn zero_limits_are_refused_except_keep_alive() {
        let zeroed = [
            Limits {
                header_read_timeout: Duration::ZERO,
                ..Limits::default()
            },
            Limits {
                body_read_timeout: Duration::ZERO,
                ..Limits::default()
            },
            Limits {
                max_header_bytes: 0,
                ..Limits::default()
            },
            Limits {
                max_connections: 0,
                ..Limits::default()
            },
            Limits {
                request_deadline: Duration::ZERO,
                ..Limits::default()
            },
        ];
        for limits in zeroed {
            assert!(limits.validate().is_err(), "{limits:?}");
        }
        let no_keep_alive = Limits {
            keep_alive_idle: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(no_keep_alive.validate(), Ok(()));
        assert_eq!(no_keep_alive.keep_alive(), None);
    }

    /// A Trigger's router mounted in another application keeps the per-request
    /// limits: tested through `oneshot`, on tokio's paused clock.
    mod mounted {
        use std::time::Duration;

        use axum::body::Body as AxumBody;
        use axum::http::{Request, StatusCode};
        use futures_util::StreamExt;
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        use whereby_webhook::{AssistantRequested, RoomClientJoined, sample};

        use crate::Trigger;

        /// The Trigger's router nested under `/whereby` in an application that
        /// has routes of its own.
        fn app(trigger: &Trigger) -> axum::Router {
            axum::Router::new()
                .route("/", axum::routing::get(|| async { "the application" }))
                .nest_service("/whereby", trigger.router())
        }

        async fn post(app: axum::Router, body: AxumBody) -> (StatusCode, serde_json::Value) {
            let request = Request::post("/whereby/")
                .header("host", "app.example")
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            // Bounded, so a missing limit fails the test rather than hanging it.
            let response = tokio::time::timeout(Duration::from_secs(30), app.oneshot(request))
                .await
                .expect("answered within 30 s")
                .unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap())
        }

        fn webhook(event_type: &str) -> AxumBody {
            AxumBody::from(sample::sample(event_type).unwrap())
        }

        #[tokio::test(start_paused = true)]
        async fn a_slow_body_is_408() {
            let trigger = Trigger::builder()
                .body_read_timeout(Duration::from_secs(2))
                .on(|_: &RoomClientJoined| true)
                .build()
                .unwrap();
            let first: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::from_static(b"{"));
            let never_ends =
                futures_util::stream::iter([first]).chain(futures_util::stream::pending());
            let (status, answer) = post(app(&trigger), AxumBody::from_stream(never_ends)).await;
            assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{answer}");
            assert_eq!(answer["code"], "body_timeout");
        }

        #[tokio::test(start_paused = true)]
        async fn a_request_past_its_deadline_is_503() {
            let trigger = Trigger::builder()
                .request_deadline(Duration::from_secs(1))
                .predicate_timeout(Duration::from_secs(60))
                .on_async(|_: AssistantRequested| std::future::pending::<bool>())
                .build()
                .unwrap();
            let (status, answer) = post(app(&trigger), webhook("assistant.requested")).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
            assert_eq!(answer["code"], "deadline");
        }

        #[tokio::test]
        async fn the_stream_of_a_mounted_router_ends_with_it() {
            let trigger = Trigger::builder()
                .on(|_: &RoomClientJoined| true)
                .build()
                .unwrap();
            let mut events = trigger.subscribe();
            let app = app(&trigger);
            drop(trigger);
            let (status, _) = post(app.clone(), webhook("room.client.joined")).await;
            assert_eq!(status, StatusCode::OK);
            assert!(
                events.recv().await.is_some(),
                "the event of the mounted router"
            );
            // The application's server has stopped: its router is gone.
            drop(app);
            let end = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
            assert!(matches!(end, Ok(None)), "the stream ends");
        }

        #[tokio::test]
        async fn a_panic_while_handling_is_500() {
            let trigger = Trigger::builder()
                .observe(|_| panic!("an observer that fails"))
                .build()
                .unwrap();
            let (status, answer) = post(app(&trigger), webhook("room.client.joined")).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
            assert_eq!(answer["code"], "internal_error");
            // The application around it still answers.
            let request = Request::get("/").body(AxumBody::empty()).unwrap();
            let response = app(&trigger).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }

        /// RFC 9112 §3.2 holds in the mounted router too: `Host` is checked
        /// by its own layer, not by the server around it.
        #[tokio::test]
        async fn a_mounted_router_checks_host() {
            use axum::http::Version;
            let trigger = Trigger::builder()
                .on(|_: &RoomClientJoined| true)
                .build()
                .unwrap();
            let request = |version: Version, hosts: &[&str]| {
                let mut request = Request::post("/whereby/")
                    .version(version)
                    .header("content-type", "application/json");
                for host in hosts {
                    request = request.header("host", *host);
                }
                request.body(webhook("room.client.joined")).unwrap()
            };
            let answer = |request: Request<AxumBody>| async {
                let response = app(&trigger).oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                (status, json["code"].as_str().unwrap_or_default().to_owned())
            };
            let refused = [
                (request(Version::HTTP_11, &[]), "host_missing"),
                (
                    request(Version::HTTP_11, &["a.example", "b.example"]),
                    "host_invalid",
                ),
                (
                    request(Version::HTTP_10, &["a.example", "b.example"]),
                    "host_invalid",
                ),
                (
                    request(Version::HTTP_11, &["user@evil.example"]),
                    "host_invalid",
                ),
                (request(Version::HTTP_11, &["a.example/x"]), "host_invalid"),
                (request(Version::HTTP_11, &["a example"]), "host_invalid"),
            ];
            for (request, code) in refused {
                let (status, found) = answer(request).await;
                assert_eq!((status, found.as_str()), (StatusCode::BAD_REQUEST, code));
            }
            for (version, hosts) in [
                (Version::HTTP_10, &[][..]),
                (Version::HTTP_11, &["app.example:8080"][..]),
                (Version::HTTP_11, &["[::1]:80"][..]),
                (Version::HTTP_11, &[""][..]),
            ] {
                let (status, _) = answer(request(version, hosts)).await;
                assert_eq!(status, StatusCode::OK, "{version:?} {hosts:?}");
            }
        }
    }
}
