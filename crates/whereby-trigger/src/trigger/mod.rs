//! The Trigger: its [builder](TriggerBuilder), the server it runs, and the
//! handle that stops it.
//!
//! `builder.rs` validates the settings and assembles the pipeline's shared
//! state; this file is the [`Trigger`]'s life (serve, start, shutdown order);
//! `accept.rs` is the accept loop and the per-connection limits.

mod accept;
mod builder;

pub use builder::{ConfigError, TriggerBuilder};

use accept::Server;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use whereby_webhook::ParseOptions;

use crate::dispatch::{Dispatcher, TriggerEvents};
use crate::limits::Limits;
use crate::receive::{App, router};
use crate::record::Restored;
use crate::verify::Verification;

/// Default listening port, as in the Node SDK.
pub const DEFAULT_PORT: u16 = 8080;
/// Default largest accepted body: Whereby's payloads are well under 4 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default time a predicate may take: below Whereby's 5-second delivery timeout,
/// so a slow predicate gets a 503 (and a retry) rather than a silent time-out.
pub const DEFAULT_PREDICATE_TIMEOUT: Duration = Duration::from_secs(4);

/// Work to do when the server stops, after its last request is answered.
type ShutdownHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The listening socket failed (its address could not be read).
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server task panicked or was aborted.
    #[error("the server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A configured Trigger, ready to serve.
///
/// ```no_run
/// use whereby_trigger::Trigger;
/// use whereby_trigger::webhook::RoomClientJoined;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let trigger = Trigger::builder()
///     .secret(std::env::var("WHEREBY_WEBHOOK_SECRET")?)
///     .on(|e: &RoomClientJoined| e.data.num_clients == Some(1))
///     .build()?;
/// let mut events = trigger.subscribe();
/// let handle = trigger.start().await?;
/// while let Some(event) = events.recv().await {
///     println!("start an assistant in {}", event.room_url);
/// }
/// # handle.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Trigger {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    /// Bound by [`Trigger::start`], so that its address is known at once.
    admin_listener: Option<TcpListener>,
    path: String,
    limits: Limits,
    restored: Option<Restored>,
    shutdown_hooks: Vec<ShutdownHook>,
    app: Arc<App>,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("addr", &self.addr)
            .field("admin", &self.admin)
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Trigger {
    /// A builder with the defaults: port 8080 on all interfaces, path `/`, no
    /// secret, 300 s tolerance, `whereby.com`, 64 KiB bodies, 4 s predicates.
    pub fn builder() -> TriggerBuilder {
        TriggerBuilder::default()
    }

    /// A stream of every trigger event from now on. Subscribe before starting to
    /// miss none. The stream ends when the server [`serve`](Self::serve) runs has
    /// stopped; for a mounted [`router`](Self::router), once the Trigger and
    /// every clone of its router are dropped (when the application's server
    /// has stopped).
    pub fn subscribe(&self) -> TriggerEvents {
        self.app.dispatcher.subscribe()
    }

    /// The address it is configured to listen on (port 0: any free one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What [`TriggerBuilder::store`] read back at build, if it was given.
    pub fn restored(&self) -> Option<Restored> {
        self.restored
    }

    /// The options webhooks are parsed with (the default subdomain), e.g. to
    /// read stored webhooks back as the server reads new ones.
    pub fn parse_options(&self) -> &ParseOptions {
        self.app.extract.parser.options()
    }

    /// The handle on this Trigger's signature policy: replace its secrets while
    /// it runs (a rotation) with [`Verification::replace_secrets`].
    pub fn verification(&self) -> Verification {
        self.app.extract.policy.clone()
    }

    /// The axum router, to mount in an existing application
    /// (`app.nest_service("/whereby", trigger.router())` or `merge`). It serves the
    /// webhook path and `/healthz`, with the per-request [`Limits`]: a body
    /// slower than `body_read_timeout` is answered 408, a request not answered
    /// within `request_deadline` 503, and a panic while handling one 500; and
    /// an HTTP/1.1 request without one valid `Host` header is answered 400 (RFC
    /// 9112 §3.2; give one to requests built by hand, e.g. for `oneshot`). The
    /// per-connection limits (head timeout and size, connections, keep-alive)
    /// belong to the server: [`Trigger::serve`]'s, or the application's own.
    pub fn router(&self) -> Router {
        self.warn_if_unsigned();
        crate::limits::guard(router(self.app.clone(), &self.path), &self.limits)
    }

    /// Binds the configured address and serves in the background.
    ///
    /// # Errors
    /// [`ServeError::Bind`] when the address cannot be bound.
    pub async fn start(mut self) -> Result<TriggerHandle, ServeError> {
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: self.addr,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        let admin_addr = match self.admin {
            Some(addr) => {
                let admin = bind(addr).await?;
                let addr = admin.local_addr()?;
                self.admin_listener = Some(admin);
                Some(addr)
            }
            None => None,
        };
        let dispatcher = self.app.dispatcher.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.serve(listener, stop.clone().cancelled_owned()));
        Ok(TriggerHandle {
            local_addr,
            admin_addr,
            dispatcher,
            stop,
            task,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting,
    /// finishes the requests in flight, and ends every event stream.
    ///
    /// The whole server's life is here: with a [store](TriggerBuilder::store)
    /// and rules, queued deliveries are resumed as it starts (and polled for
    /// every second); with rules, stops whose `stop_after` has passed are
    /// carried out (a router mounted elsewhere has no timer for them); when it stops, the [shutdown hooks](TriggerBuilder::on_shutdown)
    /// run in order and the store is flushed, so that what was answered 2xx and
    /// what the actions reported is on disk when this returns.
    ///
    /// Each connection is served by hyper with the [`Limits`] of the builder;
    /// draining is bounded by them too: a request in flight is answered within
    /// the request deadline, and a connection still sending a head is cut off by
    /// the header timer. Idle connections are closed at once.
    ///
    /// # Errors
    /// None at present: an accept error (a full file table, say) is logged and
    /// retried while the connections already open are served.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let admin_listener = match (self.admin_listener.take(), self.admin) {
            (Some(bound), _) => Some(bound),
            (None, Some(addr)) => Some(bind(addr).await?),
            (None, None) => None,
        };
        // The admin listener stops with the public one; its requests are
        // short reads, so it is not drained.
        let admin_stop = CancellationToken::new();
        let admin = admin_listener.map(|admin| {
            if let Ok(addr) = admin.local_addr() {
                tracing::info!(admin = %addr, "admin listener: /metrics, /status, /status.json");
            }
            let router = crate::admin::router(self.app.clone());
            let stop = admin_stop.clone().cancelled_owned();
            tokio::spawn(async move {
                if let Err(err) = axum::serve(admin, router)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(%err, "the admin listener failed");
                }
            })
        });
        let dispatcher = self.app.dispatcher.clone();
        let router = self.router();
        // Resumed actions look their rules up, so the poller starts with the
        // server, not at build.
        let poller = match (&self.app.durable, &self.app.engine) {
            (Some(durable), Some(engine)) => Some(
                durable.spawn_poller(engine.clone(), self.app.extract.parser.options().clone()),
            ),
            _ => None,
        };
        let stop_timer = self.app.engine.as_ref().map(|engine| {
            crate::record::spawn_stop_timer(engine.clone(), self.app.durable.clone())
        });
        if let Ok(addr) = listener.local_addr() {
            if self.app.receives {
                tracing::info!(%addr, path = %self.path, "listening for Whereby webhooks");
            } else {
                tracing::info!(%addr, "worker: listening for probes only (/healthz, /readyz)");
            }
        }
        let direct = self.app.receives.then(|| {
            let app = self.app.clone();
            let handler: crate::limits::DirectHandler = Arc::new(move |request| {
                Box::pin(crate::receive::receive_request(app.clone(), request))
            });
            crate::limits::Direct::post(&self.path, handler, &self.limits)
        });
        Server::new(self.limits, router, direct)
            .run(listener, shutdown)
            .await;
        dispatcher.close();
        admin_stop.cancel();
        if let Some(admin) = admin {
            admin.abort();
        }
        if let Some(poller) = poller {
            poller.abort();
        }
        if let Some(timer) = stop_timer {
            timer.abort();
        }
        for hook in self.shutdown_hooks {
            hook().await;
        }
        if let Some(durable) = &self.app.durable {
            // What the actions reported while stopping is on disk before this
            // returns.
            durable.journal.flush().await;
            durable.release();
        }
        tracing::info!("stopped");
        Ok(())
    }

    fn warn_if_unsigned(&self) {
        if self.app.extract.policy.is_unsigned() {
            tracing::warn!(
                "no signing secret configured: unsigned webhooks are accepted, so anyone who \
                 can reach this server can start assistants"
            );
        }
    }
}

/// Binds the admin listener's address.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A running Trigger.
///
/// Dropping the handle leaves the server running; call
/// [`TriggerHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct TriggerHandle {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TriggerHandle {
    /// The address the server is bound to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when [`TriggerBuilder::admin`] asked for one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A stream of every trigger event from now on.
    pub fn subscribe(&self) -> TriggerEvents {
        self.dispatcher.subscribe()
    }

    /// Stops accepting connections, waits for the requests in flight to be
    /// answered, then ends every event stream.
    ///
    /// # Errors
    /// The error the server stopped with, if any.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.task.await?
    }
}
