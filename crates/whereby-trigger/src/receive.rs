//! Receive: the HTTP side of the pipeline.
//!
//! receive → extract ([`verify`](crate::verify), [`parse`](crate::parse)) →
//! [`deduplicate`] → [`evaluate`](crate::evaluate) → [`record`] →
//! [`dispatch`](crate::dispatch), each step in its
//! own module; this one calls them in order and answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

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
}

impl Outcome {
    /// The JSON body this outcome is answered with.
    pub fn body(self) -> &'static str {
        match self {
            Outcome::Triggered => r#"{"outcome":"triggered"}"#,
            Outcome::NotMatched => r#"{"outcome":"not_matched"}"#,
            Outcome::Ignored => r#"{"outcome":"ignored"}"#,
            Outcome::Duplicate => r#"{"outcome":"duplicate"}"#,
        }
    }
}

impl Outcome {
    /// The outcome as the answer names it (the `outcome` label of the metrics).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::NotMatched => "not_matched",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
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
    let webhook = get(|| async { StatusCode::OK })
        .post(receive)
        .fallback(|| async { Rejection::MethodNotAllowed });
    Router::new()
        .route(path, webhook)
        .route(HEALTH_PATH, get(health))
        .route(READY_PATH, get(ready))
        .fallback(|| async { Rejection::NotFound })
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

async fn receive(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Outcome, Rejection> {
    let mut observed = Observed {
        started: Instant::now(),
        type_slot: crate::metrics::type_slot(None),
        room: crate::metrics::ShortText::NONE,
        who: crate::metrics::ShortText::NONE,
        deadline: app.request_deadline,
        done: false,
    };
    let answer = handle(app, headers, body, &mut observed).await;
    observed.done = true;
    let outcome = match &answer {
        Ok(outcome) => outcome.label(),
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
    type_slot: usize,
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
    app: Arc<App>,
    headers: HeaderMap,
    body: Body,
    observed: &mut Observed,
) -> Result<Outcome, Rejection> {
    let parsed = match app.extract.webhook(&headers, body).await {
        Ok(parsed) => parsed,
        Err(refused) => return Err(quarantine(&app, refused).await),
    };
    observed.type_slot = crate::metrics::type_slot(Some(parsed.event.event_type()));
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
        tracing::debug!(id, "duplicate delivery");
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
    let rules = decide(&app, &parsed);
    let Some(durable) = &app.durable else {
        return Ok(finish(&app, reservation, decision, rules, parsed));
    };
    let mut recorded = Recorded {
        app: app.clone(),
        reservation,
        decision,
        rules,
        parsed,
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
        } = self;
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
                let again = Recorded {
                    app,
                    reservation,
                    decision,
                    rules: None,
                    parsed,
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
        for verdict in &rules.verdicts {
            tracing::info!(
                id = parsed.event.id(),
                r#type = parsed.event.type_name(),
                "{verdict}"
            );
        }
        if rules.fired() {
            outcome = Outcome::Triggered;
        } else if outcome == Outcome::Ignored
            && rules
                .verdicts
                .iter()
                .any(|v| matches!(v, Verdict::NotMatched { .. } | Verdict::Suppressed { .. }))
        {
            // A type without a typed predicate that a rule names is evaluated.
            outcome = Outcome::NotMatched;
        }
        rules.dispatch();
    }
    if decision == Decision::Matched {
        let room_url = parsed.room_url.unwrap_or_default();
        tracing::info!(id = parsed.event.id(), r#type = parsed.event.type_name(), %room_url, "triggered");
        app.dispatcher
            .dispatch(&TriggerEvent::new(room_url, parsed.event, parsed.raw));
    }
    outcome
}
