//! Receive: the HTTP side of the pipeline.
//!
//! receive → extract ([`verify`](crate::verify), [`parse`](crate::parse)) →
//! [`deduplicate`] → [`evaluate`](crate::evaluate) → [`record`] →
//! [`dispatch`](crate::dispatch), each step in its
//! own module; this one calls them in order and answers.
//!
//! Why one file: it holds everything between a request and its answer that
//! is not a step: `handle` (75 lines, the steps in order), settling the
//! commit (`Recorded`, `finish`, deciding again while another receiver holds
//! a claim), the quarantine, and the counters and `webhook` span, which must
//! see every way a request ends, a dropped one included; the last 80 lines
//! test the span.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{Instrument, Span};
use whereby_webhook::InRoom;

use crate::deduplicate::{self, Deduplicate, Reserved};
use crate::dispatch::{Dispatcher, TriggerEvent};
use crate::error::Rejection;
use crate::evaluate::{Decision, Predicates};
use crate::extract::Extract;
use crate::parse::ParsedWebhook;
use crate::record::{self, Durable, Recording, Settle};
use crate::rules::engine::{Engine, Verdict};
use crate::store::StoreError;

/// Path of the liveness probe.
pub const HEALTH_PATH: &str = "/healthz";

/// Path of the readiness probe.
pub const READY_PATH: &str = "/readyz";

/// Everything a request needs, shared by all requests. Nothing in it is locked
/// as a whole: the dedup store shards its own state, and the rest is read-only.
pub(crate) struct App {
    pub(crate) extract: Extract,
    pub(crate) predicate_timeout: Duration,
    /// What the guard layer answers `deadline` after (only to label a webhook
    /// whose handler it dropped).
    pub(crate) request_deadline: Duration,
    pub(crate) dedup: Arc<dyn Deduplicate>,
    pub(crate) predicates: Predicates,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) engine: Option<Arc<Engine>>,
    pub(crate) durable: Option<Durable>,
    /// Whether the webhook path takes webhooks; a worker's does not.
    pub(crate) receives: bool,
}

/// The answer to a delivery that was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The predicate returned `true`; one trigger event was dispatched.
    Triggered,
    /// The predicate returned `false`, or none is registered for the type.
    NotMatched,
    /// The type is not one the Trigger evaluates.
    Ignored,
    /// The id was answered before, or is being evaluated right now.
    Duplicate,
    /// A config trigger matched, but its `once_per` claim was already held, so
    /// no second assistant started (and nothing else fired).
    Suppressed,
    /// A `stop_on` or `stop_when` stopped an assistant (and nothing fired).
    Stopped,
}

impl Outcome {
    /// The outcome's name, as in its body.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::NotMatched => "not_matched",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
            Outcome::Suppressed => "suppressed",
            Outcome::Stopped => "stopped",
        }
    }

    /// The JSON body this outcome is answered with.
    pub fn body(self) -> &'static str {
        match self {
            Outcome::Triggered => r#"{"outcome":"triggered"}"#,
            Outcome::NotMatched => r#"{"outcome":"not_matched"}"#,
            Outcome::Ignored => r#"{"outcome":"ignored"}"#,
            Outcome::Duplicate => r#"{"outcome":"duplicate"}"#,
            Outcome::Suppressed => r#"{"outcome":"suppressed"}"#,
            Outcome::Stopped => r#"{"outcome":"stopped"}"#,
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body(),
        )
            .into_response()
    }
}

pub(crate) fn router(app: Arc<App>, path: &str) -> Router {
    let webhook_path: Arc<str> = Arc::from(path);
    let webhook = if app.receives {
        get(|| async { StatusCode::OK })
            .post(receive)
            .fallback(|| async { Rejection::MethodNotAllowed })
    } else {
        post(|| async { Rejection::NotReceiving })
            .get(|| async { Rejection::NotReceiving })
            .fallback(|| async { Rejection::MethodNotAllowed })
    };
    Router::new()
        .route(path, webhook)
        .route(HEALTH_PATH, get(health))
        .route(READY_PATH, get(ready))
        .fallback(move || async move { Rejection::NotFound { webhook_path } })
        .with_state(app)
}

/// 200 while webhooks can be taken; 503 `store_unavailable` once the store
/// has failed for good (a failed flush to disk), so that an orchestrator
/// restarts the process.
async fn health(State(app): State<Arc<App>>) -> Result<StatusCode, Rejection> {
    match &app.durable {
        Some(durable) if durable.journal.has_failed() => {
            Err(Rejection::Store(crate::store::sync_failed()))
        }
        _ => Ok(StatusCode::OK),
    }
}

/// 200 while a webhook would be committed; 503 `store_unavailable` while the
/// store cannot commit (failed for good, or its last commit failed and no
/// later one succeeded), so that an orchestrator sends webhooks elsewhere
/// meanwhile. Taken out of rotation, a server gets no webhooks to learn from
/// that its store is back, so while commits fail the probe tries one of its
/// own. (The rules are loaded before the server answers at all.)
async fn ready(State(app): State<Arc<App>>) -> Result<StatusCode, Rejection> {
    let Some(durable) = &app.durable else {
        return Ok(StatusCode::OK);
    };
    if durable.journal.has_failed() {
        return Err(Rejection::Store(crate::store::sync_failed()));
    }
    if durable.journal.is_failing() {
        let probe = vec![crate::store::Change::Probe {
            at_ms: crate::util::now_ms(),
        }];
        durable
            .journal
            .submit(probe)
            .await
            .map_err(Rejection::Store)?;
    }
    Ok(StatusCode::OK)
}

/// The webhook handler: one `webhook` span per request, ended by one line
/// with its outcome and latency.
async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let log = WebhookLog::start();
    let span = log.span.clone();
    async move {
        let answer = observe(&app, headers, body, &log).await;
        log.answered(answer)
    }
    .instrument(span)
    .await
}

/// [`receive`] for a request the server's connection hands over itself,
/// past the router (see `limits::Direct`).
pub(crate) async fn receive_request(app: Arc<App>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    receive(State(app), parts.headers, body).await
}

/// The pipeline, counted in the metrics however it ends.
async fn observe(
    app: &Arc<App>,
    headers: HeaderMap,
    body: Body,
    log: &WebhookLog,
) -> Result<Outcome, Rejection> {
    let mut observed = Observed {
        started: Instant::now(),
        type_slot: crate::metrics::type_slot(None),
        room: crate::metrics::ShortText::NONE,
        who: crate::metrics::ShortText::NONE,
        deadline: app.request_deadline,
        done: false,
    };
    let answer = handle(app, headers, body, log, &mut observed).await;
    observed.done = true;
    let outcome = match &answer {
        Ok(outcome) => outcome.as_str(),
        Err(rejection) => rejection.code(),
    };
    observed.count(outcome);
    answer
}

/// Counts one webhook when it is answered (`webhooks_total` and the request
/// duration): when `receive` returns, or when its future is dropped because
/// the request's deadline passed or it panicked (the guard layer answers those).
struct Observed {
    started: Instant,
    type_slot: crate::metrics::TypeSlot,
    room: crate::metrics::ShortText,
    /// The participant of a join or a leave.
    who: crate::metrics::ShortText,
    deadline: Duration,
    done: bool,
}

impl Observed {
    fn count(&self, outcome: &str) {
        let latency = self.started.elapsed();
        crate::metrics::metrics().webhook(
            self.type_slot,
            outcome,
            [&self.room, &self.who],
            latency,
        );
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if !self.done {
            // The codes `limits::guard` answers with when it drops the
            // handler; before the deadline, the client went away (unanswered).
            self.count(if std::thread::panicking() {
                "internal_error"
            } else if self.started.elapsed() >= self.deadline {
                "deadline"
            } else {
                "client_gone"
            });
        }
    }
}

/// The pipeline, step by step; `observed` learns the webhook's type and room
/// once it is parsed.
async fn handle(
    app: &Arc<App>,
    headers: HeaderMap,
    body: Body,
    log: &WebhookLog,
    observed: &mut Observed,
) -> Result<Outcome, Rejection> {
    let parsed = match app.extract.webhook(&headers, body).await {
        Ok(parsed) => parsed,
        Err(refused) => return Err(quarantine(app, refused).await),
    };
    log.webhook(&parsed);
    observed.type_slot = crate::metrics::type_slot(Some(&parsed.event));
    if let Some(room) = parsed.event.in_room() {
        observed.room = crate::metrics::ShortText::of(room.subdomain(), room.room_name());
    }
    let who = match &parsed.event {
        whereby_webhook::WebhookEvent::RoomClientJoined(w) => w.data.display_name.as_deref(),
        whereby_webhook::WebhookEvent::RoomClientLeft(w) => w.data.display_name.as_deref(),
        _ => None,
    };
    if let Some(who) = who {
        observed.who = crate::metrics::ShortText::of("", who);
    }
    let id = parsed.event.id();
    let Some(reservation) = deduplicate::reserve(&app.dedup, id, app.durable.is_some())
        .await
        .map_err(Rejection::Store)?
    else {
        return Ok(Outcome::Duplicate);
    };

    // If the predicate fails or the client goes away, dropping `reservation`
    // releases the id so Whereby's retry is fresh.
    let decision = app
        .predicates
        .evaluate(&parsed.event, app.predicate_timeout)
        .await?;

    // From here on nothing awaits but the commit, and `Recording` finishes the
    // webhook even if this future is dropped: a client that goes away cannot
    // leave an event half recorded.
    let rules = decide(app, &parsed);
    let Some(durable) = &app.durable else {
        return Ok(finish(app, reservation, decision, rules, parsed));
    };
    let mut recorded = Recorded {
        app: app.clone(),
        reservation,
        decision,
        rules,
        parsed,
        span: log.span.clone(),
    };
    let mut retries = 0;
    loop {
        let commit = record::submit(durable, recorded.parsed.event.id(), recorded.rules.as_mut());
        match Recording::new(commit, recorded).finish().await {
            Some(Settled::Answer(answer)) => return answer,
            Some(Settled::ClaimHeld(again, err)) => {
                // Another receiver holds a claim this decision took; it is
                // held here too now, so deciding again suppresses that rule.
                if retries == CLAIM_RETRIES {
                    return Err(Rejection::Store(err));
                }
                retries += 1;
                recorded = Recorded {
                    rules: decide(&again.app, &again.parsed),
                    ..*again
                };
            }
            None => return Err(Rejection::Store(StoreError::Closed)),
        }
    }
}

/// The answer to a request that is not a webhook. A signed one that could not
/// be parsed is answered 400, which Whereby never retries: so it is kept in
/// the store's quarantine first (bounded), to be fed through the rules once an
/// upgrade or a config change makes it readable (`whereby-trigger quarantine`).
/// Without a store it is only logged.
async fn quarantine(app: &App, refused: crate::extract::Refused) -> Rejection {
    let rejection = Rejection::Request(refused.error);
    let Some(body) = refused.signed_body else {
        return rejection;
    };
    let kept = crate::store::Quarantined::new(
        &body,
        rejection.code(),
        rejection.field(),
        &rejection.client_message(),
        crate::util::now_ms(),
    );
    let Some(durable) = &app.durable else {
        tracing::warn!(quarantine = %kept.id, code = kept.code, error = kept.error, bytes = body.len(),
            "a signed webhook was refused and is not kept (no store): it is lost");
        return rejection;
    };
    let id = kept.id.clone();
    match durable
        .journal
        .submit(vec![crate::store::Change::Quarantine(kept)])
        .await
    {
        Ok(()) => {
            tracing::warn!(quarantine = %id, code = rejection.code(), "a signed webhook was refused and quarantined: `whereby-trigger quarantine list` shows it")
        }
        Err(err) => {
            tracing::error!(quarantine = %id, %err, "a signed webhook was refused and could not be quarantined: it is lost")
        }
    }
    rejection
}

/// How often one webhook is decided again because another receiver holds a
/// claim it took: each round learns one more held claim, so this bounds the
/// claims one webhook can lose to others before it is answered 503.
const CLAIM_RETRIES: usize = 4;

/// The config rules' decision for a webhook, claims taken.
fn decide(app: &App, parsed: &ParsedWebhook) -> Option<crate::rules::engine::Decision> {
    app.engine.as_ref().map(|engine| {
        engine.decide_at(
            &parsed.event,
            &parsed.raw,
            parsed.room_url.as_deref(),
            Instant::now(),
            parsed.ordered_at,
        )
    })
}

/// What a webhook needs after its commit.
struct Recorded {
    app: Arc<App>,
    reservation: Reserved,
    decision: Decision,
    rules: Option<crate::rules::engine::Decision>,
    parsed: ParsedWebhook,
    /// The webhook's span, entered while settling: on a task of its own (the
    /// request gone), what is logged still names the webhook.
    span: Span,
}

/// How a commit settled a webhook.
enum Settled {
    /// Its answer.
    Answer(Result<Outcome, Rejection>),
    /// Another receiver holds a claim it took: its claims were given back and
    /// that one is held here until the other's expires; decide again.
    ClaimHeld(Box<Recorded>, StoreError),
}

impl Settle for Recorded {
    type Output = Settled;

    fn settle(self, committed: Result<(), StoreError>) -> Settled {
        let Recorded {
            app,
            reservation,
            decision,
            rules,
            parsed,
            span,
        } = self;
        let entered = span.enter();
        let answer = match committed {
            Ok(()) => Ok(finish(&app, reservation, decision, rules, parsed)),
            Err(StoreError::AlreadyRecorded { .. }) => {
                // Another receiver sharing the store recorded this event first:
                // it fires there, not here, and the id is known from now on.
                if let (Some(rules), Some(engine)) = (rules, &app.engine) {
                    rules.abandon(engine.claims());
                }
                let mut reservation = reservation;
                reservation.remember();
                tracing::debug!(
                    id = parsed.event.id(),
                    "duplicate delivery, recorded by another receiver"
                );
                Ok(Outcome::Duplicate)
            }
            Err(StoreError::ClaimHeld { key, expires_ms }) => {
                if let Some(engine) = &app.engine {
                    if let Some(rules) = rules {
                        rules.abandon(engine.claims());
                    }
                    record::hold_elsewhere(engine.claims(), &key, expires_ms);
                }
                tracing::debug!(id = parsed.event.id(), claim = %key, "claim held by another receiver; deciding again");
                let err = StoreError::ClaimHeld { key, expires_ms };
                drop(entered);
                let again = Recorded {
                    app,
                    reservation,
                    decision,
                    rules: None,
                    parsed,
                    span,
                };
                return Settled::ClaimHeld(Box::new(again), err);
            }
            Err(err) => {
                // Nothing fires: the claims go back as they were, and the id is
                // released (with `reservation`) for Whereby's retry.
                if let (Some(rules), Some(engine)) = (rules, &app.engine) {
                    rules.abandon(engine.claims());
                }
                Err(Rejection::Store(err))
            }
        };
        Settled::Answer(answer)
    }
}

/// Records the answer in memory and dispatches: the id is remembered, the rules'
/// actions start or stop, and a matching typed predicate's event goes to the
/// subscribers. Synchronous, so it cannot be split.
fn finish(
    app: &App,
    mut reservation: Reserved,
    decision: Decision,
    rules: Option<crate::rules::engine::Decision>,
    parsed: ParsedWebhook,
) -> Outcome {
    reservation.remember();
    let mut outcome = match decision {
        Decision::Ignored => Outcome::Ignored,
        Decision::NotMatched => Outcome::NotMatched,
        Decision::Matched => Outcome::Triggered,
    };
    if let Some(rules) = rules {
        // The webhook's id and type are the `webhook` span's.
        for verdict in &rules.verdicts {
            tracing::info!("{verdict}");
        }
        // The answer tells what the webhook did, most telling first: a start
        // beats a stop, a stop beats a start that a held claim suppressed, so
        // that `not_matched` means "nothing happened".
        if rules.fired() {
            outcome = Outcome::Triggered;
        } else if outcome == Outcome::Triggered {
            // A typed predicate matched: its event was dispatched.
        } else if rules
            .verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Stopped { .. }))
        {
            outcome = Outcome::Stopped;
        } else if rules
            .verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Suppressed { .. }))
        {
            outcome = Outcome::Suppressed;
        } else if outcome == Outcome::Ignored
            && rules
                .verdicts
                .iter()
                .any(|v| matches!(v, Verdict::NotMatched { .. }))
        {
            // A type without a typed predicate that a rule names is evaluated.
            outcome = Outcome::NotMatched;
        }
        rules.dispatch();
    }
    if decision == Decision::Matched {
        let room_url = parsed.room_url.unwrap_or_default();
        // At debug: the answer's line says `triggered` and names the room, so
        // at info a webhook costs one line, as the README says.
        tracing::debug!(%room_url, "triggered");
        app.dispatcher
            .dispatch(&TriggerEvent::new(room_url, parsed.event, parsed.raw));
    }
    outcome
}

/// The `webhook` span of one request, and the line that ends it.
///
/// The span is at info level; when the filter leaves it out, nothing is
/// recorded, timed or formatted (`started` is `None`). Its fields are filled as
/// they become known: `id`, `type` and `room` once the webhook is parsed, so
/// that every line logged while it is handled carries them; `outcome` and
/// `latency_ms` with the answer.
struct WebhookLog {
    span: Span,
    started: Option<Instant>,
    /// Set once the answer is logged; a request dropped before (its deadline
    /// passed, its client left, or it panicked) is logged when this is dropped.
    answered: bool,
}

impl WebhookLog {
    fn start() -> WebhookLog {
        let span = tracing::info_span!(
            "webhook",
            id = tracing::field::Empty,
            "type" = tracing::field::Empty,
            room = tracing::field::Empty,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let started = (!span.is_disabled()).then(Instant::now);
        WebhookLog {
            span,
            started,
            answered: false,
        }
    }

    /// Records what the webhook is, borrowed: formatted only by the subscriber.
    fn webhook(&self, parsed: &ParsedWebhook) {
        if self.started.is_none() {
            return;
        }
        self.span.record("id", parsed.event.id());
        self.span.record("type", parsed.event.type_name());
        if let Some(room) = parsed.event.in_room() {
            self.span
                .record("room", tracing::field::display(RoomLabel(room)));
        }
    }

    /// Milliseconds since the request reached the handler, to the microsecond.
    fn latency_ms(&self) -> Option<f64> {
        self.started.map(|started| {
            // Whole microseconds, so that a line shows `0.412`, not 17 digits.
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            f64::from(micros) / 1000.0
        })
    }

    fn record_end(&self, outcome: &str, latency_ms: f64) {
        self.span.record("outcome", outcome);
        self.span.record("latency_ms", latency_ms);
    }

    /// Logs the answer and turns it into the response. A refusal is logged
    /// here (with its error) rather than by `Rejection::into_response`, so that
    /// a webhook ends with one line.
    fn answered(mut self, answer: Result<Outcome, Rejection>) -> Response {
        self.answered = true;
        let latency_ms = self.latency_ms();
        match answer {
            // The line first, then the span (for a subscriber that exports
            // spans): a line does not show the two twice.
            Ok(outcome) => {
                if let Some(latency_ms) = latency_ms {
                    tracing::info!(outcome = outcome.as_str(), latency_ms, "webhook answered");
                    self.record_end(outcome.as_str(), latency_ms);
                }
                outcome.into_response()
            }
            Err(rejection) => {
                // Refusals are logged at warn and error even when the span is
                // filtered out; the latency is then unknown.
                rejection.log(latency_ms);
                if let Some(latency_ms) = latency_ms {
                    self.record_end(rejection.code(), latency_ms);
                }
                rejection.respond()
            }
        }
    }
}

impl Drop for WebhookLog {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let Some(latency_ms) = self.latency_ms() else {
            return;
        };
        // The guard around the handler answers these (503 or 500) and logs
        // why; this line ties that to the webhook's id.
        let outcome = if std::thread::panicking() {
            "panicked"
        } else {
            "abandoned"
        };
        let _entered = self.span.enter();
        tracing::warn!(
            outcome,
            latency_ms,
            "webhook not answered by its handler (request deadline, client gone or panic); \
             what it recorded is kept"
        );
        self.record_end(outcome, latency_ms);
    }
}

/// A room as the actions' lines name it, `subdomain/roomName`, written only
/// when a line is.
struct RoomLabel<'a>(&'a dyn InRoom);

impl std::fmt::Display for RoomLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.room_name();
        f.write_str(self.0.subdomain())?;
        // One spelling per room, as `RoomKey` has it: `standup` is `/standup`.
        if !name.starts_with('/') {
            f.write_str("/")?;
        }
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log written to memory, for one thread's subscriber.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        /// What `f` logs at `level` and above.
        fn of(level: tracing::Level, f: impl FnOnce()) -> String {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(level)
                .finish();
            tracing::subscriber::with_default(subscriber, f);
            let text = logs.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8_lossy(&text).into_owned()
        }
    }

    #[test]
    fn an_answer_ends_the_span_with_one_line() {
        let text = Logs::of(tracing::Level::INFO, || {
            let log = WebhookLog::start();
            let _response = log.answered(Ok(Outcome::Triggered));
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("webhook answered"), "{text}");
        assert!(lines[0].contains(r#"outcome="triggered""#), "{text}");
        assert!(lines[0].contains("latency_ms="), "{text}");
    }

    #[test]
    fn a_handler_dropped_before_its_answer_is_logged() {
        let text = Logs::of(tracing::Level::INFO, || drop(WebhookLog::start()));
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains(r#"outcome="abandoned""#), "{text}");
    }

    #[test]
    fn with_the_span_filtered_out_nothing_is_timed_but_refusals_are_logged() {
        let text = Logs::of(tracing::Level::WARN, || {
            let log = WebhookLog::start();
            assert!(log.started.is_none());
            let _response = log.answered(Ok(Outcome::NotMatched));
            drop(WebhookLog::start());
            let log = WebhookLog::start();
            let _response = log.answered(Err(Rejection::NotFound {
                webhook_path: "/".into(),
            }));
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("webhook refused"), "{text}");
        assert!(lines[0].contains(r#"code="not_found""#), "{text}");
        assert!(!lines[0].contains("latency_ms"), "{text}");
    }
}
