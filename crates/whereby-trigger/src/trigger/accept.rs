//! The accept loop: connections up to `max_connections`, each served with the
//! per-connection [`Limits`], and closed when idle or when the server stops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{Activity, Limits, Tracked};

/// How long the accept loop waits after an error such as a full file table,
/// before it tries again (connections being served meanwhile go on).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// The accept loop, and what each connection it starts needs.
pub(super) struct Server {
    http: http1::Builder,
    limits: Limits,
    router: Router,
    /// Cancelled when the server stops: every connection then closes as soon
    /// as it has no request in progress.
    stop: CancellationToken,
    /// Every connection task, so that stopping can wait for the last one.
    connections: TaskTracker,
}

impl Server {
    /// A server of `router` with `limits`.
    pub(super) fn new(limits: Limits, router: Router) -> Server {
        Server {
            http: limits.http1(),
            limits,
            router,
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
    async fn accept_until(&self, listener: &TcpListener, shutdown: impl Future<Output = ()>) {
        // A slot is taken before accepting, not after: beyond the cap, new
        // connections stay in the kernel's listen backlog, delayed rather than
        // refused, at no cost to the server, and are taken in order as
        // connections end (the header and idle timers see that they do).
        let slots = Arc::new(Semaphore::new(
            self.limits.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                biased;
                () = &mut shutdown => return,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_closed) => return,
                },
            };
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
            let connection = self.connection(stream, peer);
            self.connections.spawn(async move {
                let _slot = slot;
                connection.await;
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
    ) -> impl Future<Output = ()> + Send + 'static {
        let activity = Activity::new();
        let service = Tracked::new(self.router.clone(), activity.clone());
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

/// An accept error that concerns one client only, not the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
