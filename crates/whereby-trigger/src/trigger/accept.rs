//! The accept loop: connections up to `max_connections` (at the cap, the one
//! waiting longest without a request gives way), each served with the
//! per-connection [`Limits`], and closed when idle or when the server stops.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{Activity, Direct, Limits, Tracked};

/// How long the accept loop waits after an error such as a full file table,
/// before it tries again (connections being served meanwhile go on).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// The accept loop, and what each connection it starts needs.
pub(super) struct Server {
    http: http1::Builder,
    limits: Limits,
    router: Router,
    /// The webhook route, served before the router.
    direct: Option<Arc<Direct>>,
    /// Cancelled when the server stops: every connection then closes as soon
    /// as it has no request in progress.
    stop: CancellationToken,
    /// Every connection task, so that stopping can wait for the last one.
    connections: TaskTracker,
}

impl Server {
    /// A server of `router` (and `direct` before it) with `limits`.
    pub(super) fn new(limits: Limits, router: Router, direct: Option<Arc<Direct>>) -> Server {
        Server {
            http: limits.http1(),
            limits,
            router,
            direct,
            stop: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Serves on `listener` until `shutdown` completes; then nothing new gets
    /// in, every open connection is told to finish what it is doing and close,
    /// and this returns once the last one has.
    pub(super) async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.accept_until(&listener, shutdown).await;
        drop(listener);
        self.stop.cancel();
        self.connections.close();
        self.connections.wait().await;
    }

    /// Accepts connections until `shutdown` completes, serving at most
    /// `max_connections` at once.
    ///
    /// At the cap, a new connection takes the place of the one that has waited
    /// longest without a request in progress (a head still arriving, or idle
    /// between requests), which is closed: idle and slow connections, however
    /// many, cannot keep a complete webhook out past Whereby's timeout. Only
    /// when every connection has a request in progress does the next one wait
    /// in the kernel's backlog until one ends (each ends within the request
    /// deadline).
    async fn accept_until(&self, listener: &TcpListener, shutdown: impl Future<Output = ()>) {
        let live = Arc::new(Live::default());
        let cap = self.limits.max_connections.max(1);
        tokio::pin!(shutdown);
        loop {
            // A connection that no room can be made for stays in the backlog,
            // delayed, not refused, until one ends.
            loop {
                let ended = live.ended.notified();
                if live.has_room(cap) {
                    break;
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = ended => {}
                }
            }
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // The client gave up before it was accepted.
                    Err(err) if is_connection_error(&err) => continue,
                    // Out of file descriptors or memory: wait for connections
                    // to end rather than stop serving.
                    Err(err) => {
                        tracing::error!(error = %err, "cannot accept a connection; retrying");
                        tokio::select! {
                            () = &mut shutdown => return,
                            () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        }
                    }
                },
            };
            // Answers are one small write; without Nagle they leave at once.
            let _ = stream.set_nodelay(true);
            // Only now that one has come: the connection made room for is the
            // one waiting longest at this moment. If every connection began a
            // request since `has_room` looked, this one waits, unserved, as
            // it would have in the backlog.
            loop {
                let ended = live.ended.notified();
                if live.make_room(cap) {
                    break;
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = ended => {}
                }
            }
            let activity = Activity::new();
            let evict = CancellationToken::new();
            let id = live.add(activity.clone(), evict.clone());
            let connection = self.connection(stream, peer, activity.clone());
            let live = live.clone();
            self.connections.spawn(async move {
                tokio::pin!(connection);
                tokio::select! {
                    () = connection.as_mut() => {}
                    () = evict.cancelled() => {
                        if activity.waiting_since().is_some() {
                            // Dropping the connection closes it.
                            tracing::debug!(%peer, "closed to make room: no request in progress at the connection cap");
                        } else {
                            // A head completed since it was chosen: its request
                            // is answered (the cap is one over meanwhile).
                            connection.await;
                        }
                    }
                }
                live.remove(id);
            });
        }
    }

    /// Serves one connection until it closes: on the server's stop, or after
    /// `keep_alive_idle` without a request, it is told to finish the request
    /// in progress (if any) and close.
    fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        activity: Arc<Activity>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let service = Tracked::new(self.router.clone(), self.direct.clone(), activity.clone());
        let connection = self.http.serve_connection(TokioIo::new(stream), service);
        let keep_alive = self.limits.keep_alive();
        let idle = keep_alive.unwrap_or_default();
        let stop = self.stop.clone();
        async move {
            tokio::pin!(connection);
            let watchdog = tokio::time::sleep(idle);
            tokio::pin!(watchdog);
            let mut closing = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(err) = served {
                            // Timed-out heads, oversized heads, clients gone: the
                            // client's problem, and under attack a flood.
                            tracing::debug!(%peer, error = %err, "connection ended");
                        }
                        return;
                    }
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = &mut watchdog, if !closing && keep_alive.is_some() => {
                        match activity.idle_deadline(idle) {
                            Some(at) if at <= Instant::now() => {
                                tracing::debug!(%peer, "closing an idle connection");
                                closing = true;
                                connection.as_mut().graceful_shutdown();
                            }
                            Some(at) => watchdog.as_mut().reset(at),
                            None => watchdog.as_mut().reset(Instant::now() + idle),
                        }
                    }
                }
            }
        }
    }
}

/// The connections being served, to find one to close at the cap. Locked
/// once per connection (opened, closed) and, at the cap, once per accept: never
/// per request.
#[derive(Default)]
struct Live {
    connections: Mutex<Connections>,
    /// Told whenever a connection ends.
    ended: Notify,
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, (Arc<Activity>, CancellationToken)>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, activity: Arc<Activity>, evict: CancellationToken) -> u64 {
        let mut connections = self.lock();
        let id = connections.next_id;
        connections.next_id += 1;
        connections.open.insert(id, (activity, evict));
        id
    }

    fn remove(&self, id: u64) {
        self.lock().open.remove(&id);
        self.ended.notify_waiters();
    }

    /// Whether a connection may be accepted: below `cap`, or with one that
    /// could give way (no request in progress).
    fn has_room(&self, cap: usize) -> bool {
        let connections = self.lock();
        connections.open.len() < cap
            || connections
                .open
                .values()
                .any(|(activity, _)| activity.waiting_since().is_some())
    }

    /// Below `cap` again, for the connection just accepted: closes the one
    /// that has waited longest without a request in progress. `false` when
    /// every connection has one.
    fn make_room(&self, cap: usize) -> bool {
        let mut connections = self.lock();
        if connections.open.len() < cap {
            return true;
        }
        let oldest = connections
            .open
            .iter()
            .filter_map(|(id, (activity, _))| activity.waiting_since().map(|since| (since, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        // Out of the count at once; its task ends at its next poll.
        if let Some((_, evict)) = connections.open.remove(&id) {
            evict.cancel();
        }
        true
    }
}

/// An accept error that concerns one client only, not the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
