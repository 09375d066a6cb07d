//! [`TriggerBuilder`]: every setting, checked by [`TriggerBuilder::build`].
//!
//! Why one file: it is the builder's public surface, one documented setter per
//! setting (a quarter of the lines are their docs), and `build`, which checks
//! them all and assembles the pipeline's shared state in one place; the
//! Trigger's life and the accept loop are already `mod.rs` and `accept.rs`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use whereby_webhook::{
    AssistantRequested, BaseDomain, DEFAULT_TOLERANCE, EventType, InvalidBaseDomain, ParseOptions,
    RoomClientJoined, RoomClientLeft, RoomSessionEnded, RoomSessionStarted, RoomUrlError,
    SecretError, SigningSecret, TypedWebhook, Verifier,
};

use crate::actions::stdout::LineSink;
use crate::config::ServerConfig;
use crate::deduplicate::{DedupLimits, Deduplicate, MemoryDedup};
use crate::dispatch::{Dispatcher, TriggerEvent};
use crate::evaluate::Predicates;
use crate::extract::Extract;
use crate::extract::WebhookObserver;
use crate::limits::Limits;
use crate::parse::{ParsedWebhook, Parser};
use crate::receive::{App, HEALTH_PATH};
use crate::record::Durable;
use crate::rules::engine::Engine;
use crate::store::{Retention, Store, StoreError};
use crate::util::BoxError;
use crate::verify::{SignaturePolicy, ToleranceError, Verification, check_tolerance};

use super::{DEFAULT_MAX_BODY, DEFAULT_PORT, DEFAULT_PREDICATE_TIMEOUT, ShutdownHook, Trigger};

/// A setting the builder cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// A signing secret is empty or only whitespace (an unset variable, most
    /// likely), which anyone could sign with.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The signature tolerance is under [`MIN_TOLERANCE`](crate::verify::MIN_TOLERANCE).
    #[error("signature tolerance: {0}")]
    Tolerance(#[from] ToleranceError),
    /// A limit is zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    /// The store given to [`TriggerBuilder::store`] could not be read back.
    #[error("the store cannot be read: {0}")]
    Store(StoreError),
    /// [`TriggerBuilder::run_actions`] or [`TriggerBuilder::receive_webhooks`]
    /// was turned off without a store (and rules) to hand the actions over
    /// through: nothing would ever carry them out, or receive them.
    #[error("{0} needs a store shared with the servers that do the rest")]
    NoStore(&'static str),
}

/// Configures a [`Trigger`]: where it listens, how it verifies, and which
/// predicates decide.
#[must_use]
pub struct TriggerBuilder {
    port: u16,
    bind: IpAddr,
    /// The admin listener's address; `None`: no admin listener.
    admin: Option<SocketAddr>,
    path: String,
    /// A refused secret fails [`TriggerBuilder::build`], not the chain of calls.
    secrets: Vec<Result<SigningSecret, SecretError>>,
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
    store: Option<(Arc<dyn Store>, Retention)>,
    shutdown_hooks: Vec<ShutdownHook>,
    /// Flushed after the shutdown hooks, which may still write to them.
    sinks: Vec<LineSink>,
    run_actions: bool,
    receive_webhooks: bool,
}

impl Default for TriggerBuilder {
    fn default() -> Self {
        TriggerBuilder {
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            admin: None,
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
            store: None,
            shutdown_hooks: Vec::new(),
            sinks: Vec::new(),
            run_actions: true,
            receive_webhooks: true,
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

    /// Serves the admin routes (`/metrics`, `/status`, `/status.json`) on `addr`
    /// when the Trigger [serves](Trigger::serve); `None` (the default): none.
    /// Keep it on loopback or a private network: the status page shows rooms,
    /// claims and deliveries. Port 0 picks a free one
    /// ([`TriggerHandle::admin_addr`](super::TriggerHandle::admin_addr)).
    pub fn admin(mut self, addr: Option<SocketAddr>) -> Self {
        self.admin = addr;
        self
    }

    /// The path webhooks are posted to (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Adds a signing secret. With none, unsigned webhooks are accepted (and a
    /// warning is logged); add two during a rotation. One that is empty or only
    /// whitespace makes [`TriggerBuilder::build`] fail.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets.push(SigningSecret::try_new(secret));
        self
    }

    /// How far a signature's timestamp may be from now (default 300 s; at
    /// least 1 s, or [`TriggerBuilder::build`] fails); and how far ahead of
    /// this server's clock a webhook's `createdAt` is believed when ordering a
    /// room's events (further, the time it was received is used), signed or not.
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

    /// Applies a config file's `[server]` table: every setting it gives
    /// (address, port, path, body and predicate limits, default subdomain, the
    /// accept loop's limits); the others keep their current values. Call it
    /// before the setters that should win over the file, as `serve`'s flags do.
    ///
    /// ```
    /// use whereby_trigger::Trigger;
    /// use whereby_trigger::config::Config;
    ///
    /// let config = Config::from_toml("[server]\nport = 9000\nsubdomain = \"acme\"\n", &|_: &str| None)?;
    /// let trigger = Trigger::builder().server_config(&config.server).build()?;
    /// assert_eq!(trigger.addr().port(), 9000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn server_config(mut self, server: &ServerConfig) -> Self {
        if let Some(bind) = server.bind {
            self.bind = bind;
        }
        if let Some(port) = server.port {
            self.port = port;
        }
        if let Some(path) = &server.path {
            self.path.clone_from(path);
        }
        if let Some(max_body) = server.max_body {
            self.max_body = max_body;
        }
        if let Some(timeout) = server.predicate_timeout {
            self.predicate_timeout = timeout;
        }
        if let Some(subdomain) = &server.subdomain {
            self.default_subdomain = Some(subdomain.clone());
        }
        self.limits = server.limits();
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

    /// Fires on every webhook of `event_type`: [`on`](Self::on) with a predicate
    /// that is always true (what `serve --on TYPE` does).
    pub fn on_every(self, event_type: EventType) -> Self {
        match event_type {
            EventType::RoomClientJoined => self.on(|_: &RoomClientJoined| true),
            EventType::RoomClientLeft => self.on(|_: &RoomClientLeft| true),
            EventType::RoomSessionStarted => self.on(|_: &RoomSessionStarted| true),
            EventType::RoomSessionEnded => self.on(|_: &RoomSessionEnded| true),
            EventType::AssistantRequested => self.on(|_: &AssistantRequested| true),
        }
    }

    /// Writes every trigger event to `sink` as a JSON line (what `serve` prints
    /// on stdout); the sink is flushed and closed when the server stops, after
    /// the [shutdown hooks](Self::on_shutdown).
    pub fn print_events(self, sink: LineSink) -> Self {
        let printer = sink.clone();
        let mut builder =
            self.on_trigger(move |event| printer.write_with(|out| event.write_json_line(out)));
        builder.sinks.push(sink);
        builder
    }

    /// Appends every verified webhook to `sink` as a JSON line, duplicates
    /// included, for `replay` (what `serve --record FILE` does); flushed and
    /// closed like [`print_events`](Self::print_events)' sink.
    pub fn record_webhooks(self, sink: LineSink) -> Self {
        let writer = sink.clone();
        let mut builder =
            self.observe(move |parsed| writer.write_with(|out| parsed.write_json_line(out)));
        builder.sinks.push(sink);
        builder
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

    /// Whether this Trigger carries out its rules' actions (the default). With
    /// `false` it only receives: what its rules decide is committed to the
    /// [store](Self::store) for other servers sharing it to carry out (`serve
    /// --no-actions` beside `whereby-trigger worker`); the store must hand
    /// them over too (`PgStoreOptions::runs_actions`). Needs a store.
    pub fn run_actions(mut self, run: bool) -> Self {
        self.run_actions = run;
        self
    }

    /// Whether this Trigger receives webhooks (the default). With `false` it
    /// is a worker: it carries out what the receivers sharing its
    /// [store](Self::store) queued, and its webhook path answers 503
    /// `not_receiving` (so that Whereby retries elsewhere); `/healthz` and
    /// `/readyz` still answer. Needs a store.
    pub fn receive_webhooks(mut self, receive: bool) -> Self {
        self.receive_webhooks = receive;
        self
    }

    /// Runs `hook` when the server stops: after the last request is answered
    /// and the event streams have ended, before the store's final flush, in the
    /// order the hooks were added. Use it to stop what the trigger events
    /// started (see [`Registry::shutdown`](crate::registry::Registry::shutdown))
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
        let secrets = self.secrets.into_iter().collect::<Result<Vec<_>, _>>()?;
        check_tolerance(self.tolerance)?;
        let policy = if secrets.is_empty() {
            SignaturePolicy::Unsigned
        } else {
            SignaturePolicy::Required(Verifier::new(secrets).with_tolerance(self.tolerance))
        };
        if self.store.is_none() {
            if !self.run_actions {
                return Err(ConfigError::NoStore("receiving without running actions"));
            }
            if !self.receive_webhooks {
                return Err(ConfigError::NoStore("a worker"));
            }
        }
        let dedup = self
            .dedup
            .unwrap_or_else(|| Arc::new(MemoryDedup::new(self.dedup_limits)));
        let (durable, restored) = match self.store {
            Some((store, retention)) => {
                let (durable, restored) = Durable::restore(
                    store,
                    dedup.as_ref(),
                    self.engine.as_deref(),
                    retention,
                    &options,
                )
                .map_err(ConfigError::Store)?;
                (
                    Some(durable.running_actions(self.run_actions)),
                    Some(restored),
                )
            }
            None => (None, None),
        };
        let dispatcher = Arc::new(self.dispatcher);
        let mut shutdown_hooks = self.shutdown_hooks;
        for sink in self.sinks {
            shutdown_hooks.push(Box::new(move || {
                Box::pin(sink.flush_and_close().wait_async()) as Pin<Box<_>>
            }));
        }
        Ok(Trigger {
            addr: SocketAddr::new(self.bind, self.port),
            admin: self.admin,
            admin_listener: None,
            path: self.path,
            limits: self.limits,
            restored,
            shutdown_hooks,
            app: Arc::new(App {
                extract: Extract {
                    policy: Verification::new(policy),
                    parser: Parser::new(base_domain, options),
                    max_body: self.max_body,
                    observers: self.observers,
                    tolerance: self.tolerance,
                },
                predicate_timeout: self.predicate_timeout,
                request_deadline: self.limits.request_deadline,
                dedup,
                predicates: self.predicates,
                dispatcher,
                engine: self.engine,
                durable,
                receives: self.receive_webhooks,
            }),
        })
    }
}
