//! The Trigger: its builder, the server it runs, and the handle that stops it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use whereby_webhook::{
    BaseDomain, DEFAULT_TOLERANCE, InvalidBaseDomain, ParseOptions, RoomUrlError, SigningSecret,
    TypedWebhook, Verifier,
};

use crate::deduplicate::{DedupLimits, Deduplicate, MemoryDedup};
use crate::dispatch::{Dispatcher, TriggerEvent, TriggerEvents};
use crate::evaluate::Predicates;
use crate::limits::{Activity, Limits, Tracked};
use crate::parse::{ParsedWebhook, Parser};
use crate::receive::{App, HEALTH_PATH, WebhookObserver, router};
use crate::record::{Durable, Restored};
use crate::rules::engine::Engine;
use crate::store::{Retention, Store, StoreError};
use crate::util::BoxError;
use crate::verify::{SignaturePolicy, Verification};

/// Default listening port, as in the Node SDK.
pub const DEFAULT_PORT: u16 = 8080;
/// Default largest accepted body: Whereby's payloads are well under 4 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default time a predicate may take: below Whereby's 5-second delivery timeout,
/// so a slow predicate gets a 503 (and a retry) rather than a silent time-out.
pub const DEFAULT_PREDICATE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the accept loop waits after an error such as a full file table,
/// before it tries again (connections being served meanwhile go on).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// A setting the builder cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The webhook path does not start with `/`, holds a character other than
    /// letters, digits and `-._~/`, or collides with the health path.
    #[error(
        "webhook path `{0}` must start with '/', hold only letters, digits and -._~/, \
         and must not be {HEALTH_PATH}"
    )]
    Path(String),
    /// The base domain is not a valid domain name.
    #[error(transparent)]
    BaseDomain(#[from] InvalidBaseDomain),
    /// The default subdomain is not one DNS label.
    #[error("default subdomain `{subdomain}`: {source}")]
    Subdomain {
        /// The subdomain asked for.
        subdomain: String,
        /// What is wrong with it.
        source: RoomUrlError,
    },
    /// A limit is zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    /// Both [`TriggerBuilder::store`] and [`TriggerBuilder::durable`] were given.
    #[error("a Trigger has one store: set either `store` or `durable`, not both")]
    TwoStores,
    /// The store given to [`TriggerBuilder::store`] could not be read back.
    #[error("the store cannot be read: {0}")]
    Store(StoreError),
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
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

/// Configures a [`Trigger`]: where it listens, how it verifies, and which
/// predicates decide.
#[must_use]
pub struct TriggerBuilder {
    port: u16,
    bind: IpAddr,
    path: String,
    secrets: Vec<SigningSecret>,
    tolerance: Duration,
    base_domain: String,
    default_subdomain: Option<String>,
    max_body: usize,
    predicate_timeout: Duration,
    limits: Limits,
    dedup_limits: DedupLimits,
    dedup: Option<Arc<dyn Deduplicate>>,
    predicates: Predicates,
    dispatcher: Dispatcher,
    engine: Option<Arc<Engine>>,
    observers: Vec<WebhookObserver>,
    durable: Option<Durable>,
    store: Option<(Arc<dyn Store>, Retention)>,
    shutdown_hooks: Vec<ShutdownHook>,
}

/// Work to do when the server stops, after its last request is answered.
type ShutdownHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl Default for TriggerBuilder {
    fn default() -> Self {
        TriggerBuilder {
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            path: "/".to_owned(),
            secrets: Vec::new(),
            tolerance: DEFAULT_TOLERANCE,
            base_domain: whereby_webhook::DEFAULT_BASE_DOMAIN.to_owned(),
            default_subdomain: None,
            max_body: DEFAULT_MAX_BODY,
            predicate_timeout: DEFAULT_PREDICATE_TIMEOUT,
            limits: Limits::default(),
            dedup_limits: DedupLimits::default(),
            dedup: None,
            predicates: Predicates::default(),
            dispatcher: Dispatcher::default(),
            engine: None,
            observers: Vec::new(),
            durable: None,
            store: None,
            shutdown_hooks: Vec::new(),
        }
    }
}

impl std::fmt::Debug for TriggerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerBuilder")
            .field("port", &self.port)
            .field("bind", &self.bind)
            .field("path", &self.path)
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .field("base_domain", &self.base_domain)
            .field("default_subdomain", &self.default_subdomain)
            .field("max_body", &self.max_body)
            .field("predicate_timeout", &self.predicate_timeout)
            .field("limits", &self.limits)
            .field("predicates", &self.predicates)
            .finish_non_exhaustive()
    }
}

impl TriggerBuilder {
    /// The port to listen on (default 8080; 0 picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The address to listen on (default `0.0.0.0`).
    pub fn bind(mut self, addr: IpAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The path webhooks are posted to (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Adds a signing secret. With none, unsigned webhooks are accepted (and a
    /// warning is logged); add two during a rotation.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets.push(SigningSecret::new(secret));
        self
    }

    /// How far a signature's timestamp may be from now (default 300 s).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The domain room URLs are built on (default `whereby.com`).
    pub fn base_domain(mut self, domain: impl Into<String>) -> Self {
        self.base_domain = domain.into();
        self
    }

    /// The subdomain of webhooks that carry none (Whereby's payloads before
    /// 2025 have no `data.subdomain`), as the first Trigger of Whereby's SDK
    /// took it as an option. A payload's own subdomain always wins; without a
    /// default (the default), a webhook with none is answered 400.
    ///
    /// ```
    /// # fn main() -> Result<(), whereby_trigger::ConfigError> {
    /// let trigger = whereby_trigger::Trigger::builder().default_subdomain("acme").build()?;
    /// # Ok(()) }
    /// ```
    pub fn default_subdomain(mut self, subdomain: impl Into<String>) -> Self {
        self.default_subdomain = Some(subdomain.into());
        self
    }

    /// The largest accepted body, in bytes (default 64 KiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How long an asynchronous predicate may run (default 4 s). Synchronous
    /// predicates run inline and should be quick.
    pub fn predicate_timeout(mut self, timeout: Duration) -> Self {
        self.predicate_timeout = timeout;
        self
    }

    /// Replaces every server limit at once (see [`Limits`] for the defaults).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a client may take to send a request's head, idle time before it
    /// included (default 10 s); then it is disconnected.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// How long a client may take to send a body once the head is in (default
    /// 3 s); then it is answered 408.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.body_read_timeout = timeout;
        self
    }

    /// The largest request head, in bytes (default 16 KiB); a larger one is
    /// answered 431.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_header_bytes = bytes;
        self
    }

    /// How many connections are served at once (default 1024); further ones
    /// wait in the kernel's listen backlog.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.limits.max_connections = connections;
        self
    }

    /// How long a request may take to be answered once its head is in (default
    /// 4.5 s, below Whereby's 5 s); then it is abandoned and answered 503. Keep it
    /// above the predicate timeout.
    pub fn request_deadline(mut self, deadline: Duration) -> Self {
        self.limits.request_deadline = deadline;
        self
    }

    /// How long a kept-alive connection may wait for its next request (default
    /// 6 s); zero turns keep-alive off.
    pub fn keep_alive_idle(mut self, idle: Duration) -> Self {
        self.limits.keep_alive_idle = idle;
        self
    }

    /// Bounds of the in-memory memory of answered ids (default 100,000 ids, 24 h).
    pub fn dedup_limits(mut self, limits: DedupLimits) -> Self {
        self.dedup_limits = limits;
        self
    }

    /// Replaces the in-memory id store, e.g. with one shared by several replicas.
    pub fn dedup_store(mut self, store: Arc<dyn Deduplicate>) -> Self {
        self.dedup = Some(store);
        self
    }

    /// Starts an assistant when `predicate` returns `true` for a webhook of type `E`.
    /// Replaces an earlier predicate for the same type.
    ///
    /// ```
    /// use whereby_trigger::Trigger;
    /// use whereby_trigger::webhook::RoomClientJoined;
    ///
    /// let builder = Trigger::builder().on(|e: &RoomClientJoined| e.data.num_clients == Some(1));
    /// ```
    pub fn on<E, F>(mut self, predicate: F) -> Self
    where
        E: TypedWebhook,
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        self.predicates.set_sync(move |e: &E| Ok(predicate(e)));
        self
    }

    /// Like [`TriggerBuilder::on`], for a predicate that can fail; an error is
    /// answered 500 (Whereby retries) and logged.
    pub fn try_on<E, F, Err>(mut self, predicate: F) -> Self
    where
        E: TypedWebhook,
        F: Fn(&E) -> Result<bool, Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        self.predicates
            .set_sync(move |e: &E| predicate(e).map_err(Into::into));
        self
    }

    /// An asynchronous predicate, for rules that need I/O. It gets its own copy of
    /// the webhook and must finish within the predicate timeout, or the delivery is
    /// answered 503.
    ///
    /// ```
    /// use whereby_trigger::Trigger;
    /// use whereby_trigger::webhook::AssistantRequested;
    ///
    /// let builder = Trigger::builder().on_async(|e: AssistantRequested| async move {
    ///     e.data.subdomain == "acme"
    /// });
    /// ```
    pub fn on_async<E, F, Fut>(mut self, predicate: F) -> Self
    where
        E: TypedWebhook,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.predicates.set_async(move |e: E| {
            let matched = predicate(e);
            async move { Ok(matched.await) }
        });
        self
    }

    /// An asynchronous predicate that can fail.
    pub fn try_on_async<E, F, Fut, Err>(mut self, predicate: F) -> Self
    where
        E: TypedWebhook,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, Err>> + Send + 'static,
        Err: Into<BoxError>,
    {
        self.predicates.set_async(move |e: E| {
            let matched = predicate(e);
            async move { matched.await.map_err(Into::into) }
        });
        self
    }

    /// Runs `callback` for every trigger event, on the request's task, before the
    /// delivery is answered. Keep it short (hand work to a task); a panic in it is
    /// logged and does not affect the answer.
    pub fn on_trigger<F>(mut self, callback: F) -> Self
    where
        F: Fn(&TriggerEvent) + Send + Sync + 'static,
    {
        self.dispatcher.add_callback(Arc::new(callback));
        self
    }

    /// Adds config rules: every evaluated webhook also goes through `engine`,
    /// which starts and stops its actions. A delivery is answered `triggered`
    /// when a typed predicate matched or a rule fired.
    pub fn rules(mut self, engine: Arc<Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Makes the Trigger durable: a webhook is answered 2xx only after its id, the
    /// claims it took, its room's state and the deliveries it queued are
    /// committed; a failed commit is answered 503 and nothing fires. Build it
    /// with [`Durable::open`].
    pub fn durable(mut self, durable: Durable) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Makes the Trigger durable on `store`: what it holds (remembered ids, and
    /// with [`rules`](Self::rules) claims and room state) is read back by
    /// [`build`](Self::build), every webhook is answered 2xx only once what it
    /// changed is committed, queued deliveries are resumed while the Trigger
    /// serves, and the store is flushed when it stops. `retention` bounds how
    /// long ids and idle rooms are kept.
    pub fn store(mut self, store: Arc<dyn Store>, retention: Retention) -> Self {
        self.store = Some((store, retention));
        self
    }

    /// Runs `hook` when the server stops: after the last request is answered
    /// and the event streams have ended, before the store's final flush, in the
    /// order the hooks were added. Use it to stop what the trigger events
    /// started (see [`Actions::shutdown`](crate::rules::build::Actions::shutdown))
    /// and to flush what they wrote.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shutdown_hooks
            .push(Box::new(move || Box::pin(hook()) as Pin<Box<_>>));
        self
    }

    /// Calls `observer` with every verified, parsed webhook, duplicates included,
    /// before it is deduplicated (e.g. to record deliveries for `replay`).
    pub fn observe<F>(mut self, observer: F) -> Self
    where
        F: Fn(&ParsedWebhook) + Send + Sync + 'static,
    {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting that cannot work.
    pub fn build(self) -> Result<Trigger, ConfigError> {
        let path_ok = self.path.starts_with('/')
            && self
                .path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
        if !path_ok || self.path == HEALTH_PATH {
            return Err(ConfigError::Path(self.path));
        }
        if self.max_body == 0 {
            return Err(ConfigError::Zero("max_body"));
        }
        if self.predicate_timeout.is_zero() {
            return Err(ConfigError::Zero("predicate_timeout"));
        }
        if self.dedup_limits.max_ids == 0 {
            return Err(ConfigError::Zero("dedup max_ids"));
        }
        self.limits.validate().map_err(ConfigError::Zero)?;
        let base_domain = BaseDomain::new(&self.base_domain)?;
        let mut options = ParseOptions::new();
        if let Some(subdomain) = self.default_subdomain {
            options = options
                .with_default_subdomain(&subdomain)
                .map_err(|source| ConfigError::Subdomain { subdomain, source })?;
        }
        let policy = if self.secrets.is_empty() {
            SignaturePolicy::Unsigned
        } else {
            SignaturePolicy::Required(Verifier::new(self.secrets).with_tolerance(self.tolerance))
        };
        let dedup = self
            .dedup
            .unwrap_or_else(|| Arc::new(MemoryDedup::new(self.dedup_limits)));
        let (durable, restored) = match (self.durable, self.store) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoStores),
            (Some(durable), None) => (Some(durable), None),
            (None, Some((store, retention))) => {
                let (durable, restored) =
                    Durable::restore(store, dedup.as_ref(), self.engine.as_deref(), retention)
                        .map_err(ConfigError::Store)?;
                (Some(durable), Some(restored))
            }
            (None, None) => (None, None),
        };
        let dispatcher = Arc::new(self.dispatcher);
        Ok(Trigger {
            addr: SocketAddr::new(self.bind, self.port),
            path: self.path,
            limits: self.limits,
            restored,
            shutdown_hooks: self.shutdown_hooks,
            app: Arc::new(App {
                policy: Verification::new(policy),
                parser: Parser::new(base_domain, options),
                max_body: self.max_body,
                predicate_timeout: self.predicate_timeout,
                dedup,
                predicates: self.predicates,
                dispatcher,
                engine: self.engine,
                observers: self.observers,
                durable,
            }),
        })
    }
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
    /// miss none.
    pub fn subscribe(&self) -> TriggerEvents {
        self.app.dispatcher.subscribe()
    }

    /// What [`TriggerBuilder::store`] read back at build, if it was given.
    pub fn restored(&self) -> Option<Restored> {
        self.restored
    }

    /// The options webhooks are parsed with (the default subdomain), e.g. to
    /// read stored webhooks back as the server reads new ones.
    pub fn parse_options(&self) -> &ParseOptions {
        self.app.parser.options()
    }

    /// The handle on this Trigger's signature policy: replace its secrets while
    /// it runs (a rotation) with [`Verification::replace_secrets`].
    pub fn verification(&self) -> Verification {
        self.app.policy.clone()
    }

    /// The axum router, to mount in an existing application
    /// (`app.nest_service("/whereby", trigger.router())` or `merge`). It serves the
    /// webhook path and `/healthz`, with the per-request [`Limits`]: a body
    /// slower than `body_read_timeout` is answered 408, a request not answered
    /// within `request_deadline` 503, and a panic while handling one 500. The
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
    pub async fn start(self) -> Result<TriggerHandle, ServeError> {
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: self.addr,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        let dispatcher = self.app.dispatcher.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.serve(listener, stop.clone().cancelled_owned()));
        Ok(TriggerHandle {
            local_addr,
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
    /// every second); when it stops, the [shutdown hooks](TriggerBuilder::on_shutdown)
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
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let dispatcher = self.app.dispatcher.clone();
        let router = self.router();
        // Resumed actions look their rules up, so the poller starts with the
        // server, not at build.
        let poller = match (&self.app.durable, &self.app.engine) {
            (Some(durable), Some(engine)) => {
                Some(durable.spawn_poller(engine.clone(), self.app.parser.options().clone()))
            }
            _ => None,
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, path = %self.path, "listening for Whereby webhooks");
        }
        let server = Server {
            http: self.limits.http1(),
            limits: self.limits,
            router,
            stop: CancellationToken::new(),
            connections: TaskTracker::new(),
        };
        server.accept_until(&listener, shutdown).await;
        // Nothing new gets in from here on, then every open connection is told
        // to finish what it is doing and close.
        drop(listener);
        server.stop.cancel();
        server.connections.close();
        server.connections.wait().await;
        dispatcher.close();
        if let Some(poller) = poller {
            poller.abort();
        }
        for hook in self.shutdown_hooks {
            hook().await;
        }
        if let Some(durable) = &self.app.durable {
            // What the actions reported while stopping is on disk before this
            // returns.
            durable.committer.flush().await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    fn warn_if_unsigned(&self) {
        if self.app.policy.is_unsigned() {
            tracing::warn!(
                "no signing secret configured: unsigned webhooks are accepted, so anyone who \
                 can reach this server can start assistants"
            );
        }
    }
}

/// A running Trigger.
///
/// Dropping the handle leaves the server running; call
/// [`TriggerHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct TriggerHandle {
    local_addr: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TriggerHandle {
    /// The address the server is bound to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

/// The accept loop, and what each connection it starts needs.
struct Server {
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
