//! Start AI assistants in Whereby rooms at the right moment.
//!
//! A [`Trigger`] receives Whereby's webhooks, proves they came from Whereby, asks
//! your predicate for the event's type whether an assistant should start, and
//! hands every "yes" over as a [`TriggerEvent`] — the room URL and the webhook —
//! on a stream, to a callback, or both. It is the Trigger API of Whereby's
//! Node.js Assistant SDK, plus signature verification, duplicate suppression and
//! clean shutdown.
//!
//! ```
//! use whereby_trigger::Trigger;
//! use whereby_trigger::webhook::{RoomClientJoined, SigningSecret};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Start an assistant when the first participant joins a room.
//! let trigger = Trigger::builder()
//!     .port(0) // any free port; the default is 8080
//!     .bind("127.0.0.1".parse()?)
//!     .secret("whsec_example")
//!     .on(|joined: &RoomClientJoined| joined.data.num_clients == Some(1))
//!     .build()?;
//! let mut events = trigger.subscribe();
//! let handle = trigger.start().await?;
//!
//! // What Whereby would send.
//! let body = whereby_trigger::webhook::sample::sample("room.client.joined").unwrap();
//! let signature = SigningSecret::new("whsec_example")
//!     .sign(whereby_trigger::webhook::unix_now(), body.as_bytes());
//! let answer = reqwest::Client::new()
//!     .post(format!("http://{}/", handle.local_addr()))
//!     .header("content-type", "application/json")
//!     .header("whereby-signature", signature)
//!     .body(body)
//!     .send()
//!     .await?;
//! assert_eq!(answer.text().await?, r#"{"outcome":"triggered"}"#);
//!
//! let event = events.recv().await.unwrap();
//! assert_eq!(event.room_url, "https://acme.whereby.com/standup-3f9a2c");
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # What happens to a delivery
//!
//! Each step is a module: `receive` (calls the steps, answers) → [`extract`]
//! (Content-Type, body limit, then [`verify`]: `Whereby-Signature`, and
//! [`parse`]: typed webhook, room URL) → [`deduplicate`]
//! (one evaluation per event id) → `evaluate` (your predicate) → `record` (the
//! id is remembered) → `dispatch` (streams and callbacks). The steps whose
//! types you meet are public; the others are private, and what they give you
//! ([`Outcome`], [`EvaluateError`], [`TriggerEvent`], [`Restored`],
//! [`Rejection`]) is at the crate's root. The answers:
//!
//! | case | answer |
//! | --- | --- |
//! | predicate true | 200 `{"outcome":"triggered"}` |
//! | predicate false, or none for the type | 200 `{"outcome":"not_matched"}` |
//! | a type the Trigger does not evaluate | 200 `{"outcome":"ignored"}` |
//! | an id already answered or being evaluated | 200 `{"outcome":"duplicate"}` |
//! | a config trigger matched but its claim is held (nothing fired) | 200 `{"outcome":"suppressed"}` |
//! | a `stop_on` / `stop_when` stopped an assistant (nothing fired) | 200 `{"outcome":"stopped"}` |
//! | unreadable webhook; no `id`, `type` or `data.roomName`; no `data.subdomain` and no [default](TriggerBuilder::default_subdomain); room fields that would leave the URL | 400 `{"error": …, "field": …}` |
//! | any other field missing or of another JSON type | evaluated as usual: `None` in the typed structs (an integer id reads as its decimal text), as sent in [`TriggerEvent::raw_webhook`] |
//! | HTTP/1.1 without `Host`, two `Host`s, or one that is not `host[:port]` | 400 `host_missing` / `host_invalid` |
//! | signature missing, malformed, stale, wrong | 401 |
//! | body over the limit | 413 |
//! | Content-Type not `application/json` | 415 |
//! | predicate failed or panicked | 500 (Whereby retries) |
//! | predicate timed out, or the request passed its deadline | 503 (Whereby retries) |
//! | the durable store could not commit | 503 (Whereby retries) |
//! | body read too slowly / headers too large | 408 / 431 |
//!
//! # Layout
//!
//! - [`trigger`]: [`TriggerBuilder`], [`Trigger`], [`TriggerHandle`].
//! - [`extract`], [`verify`], [`parse`], [`deduplicate`]: the pipeline's
//!   public steps (the verified body as a type, the parser, a custom id store).
//! - [`Rejection`]: the one place failures become HTTP answers.
//! - [`config`]: the TOML file (`[server]`, `[verify]`, `[store]`, `[[trigger]]`).
//! - [`rules`]: CEL `when`, the engine that decides.
//! - [`actions`]: the [`Action`](actions::Action) trait and its delivery
//!   ticket, `run`, `forward`, `stdout`.
//! - [`state`]: room state and `once_per` claims, which rules take and actions hold.
//! - [`store`]: the durable store and its outbox of at-least-once deliveries.
//! - [`registry`]: config → rules with their actions, kept across reloads.
//! - [`replay`]: recorded webhooks through the rules, without actions.
//! - [`limits`]: time-outs and caps, and the guard that keeps them for a
//!   mounted [`Trigger::router`] too.
//! - [`admin`]: the operators' listener (`/metrics`, `/status`).
//! - [`units`]: durations and sizes as people write them (`30s`, `64KiB`).
//! - [`webhook`]: the `whereby-webhook` crate (types, parsing, signatures).
//!
//! Imports point one way, from the server down: `trigger`, `registry`,
//! `replay` → `admin`, `config`, `limits` → `receive` → the steps in order →
//! `rules`, `store` → `actions` → `state` and the metrics → `units`, `webhook`;
//! a step never imports a later one (`ARCHITECTURE.md` at the repository's
//! root draws the whole map).
//!
//! # Growing without breaking
//!
//! What the crate hands you (events, answers, errors, summaries, statuses) is
//! `#[non_exhaustive]`: a later version may add a field or a variant, so match
//! with a `_` arm and read fields rather than build the values. Two kinds of
//! types stay open on purpose: settings whose fields you set
//! ([`limits::Limits`] and [`DedupLimits`]: write `..Default::default()`, as
//! their examples do, and a new field is no break;
//! `actions::forward::ForwardSpec`, with the `forward` feature: start from
//! `ForwardSpec::new`;
//! [`actions::run::RunSpec`] has no default, so a hand-built one names every
//! field and would meet a new one: build it from a config where you can), and
//! what a [`store::Store`]
//! implementation builds ([`store::Snapshot`], [`store::Delivery`],
//! [`store::StoredClaim`], [`store::StoredStop`]): an implementation has to
//! store every field, so a new one changes the seam for it either way.

pub mod actions;
pub mod admin;
pub mod config;
pub mod deduplicate;
mod dispatch;
mod error;
mod evaluate;
pub mod extract;
pub mod limits;
mod metrics;
pub mod parse;
mod receive;
mod record;
pub mod registry;
pub mod replay;
pub mod rules;
pub mod state;
pub mod store;
pub mod trigger;
pub mod units;
mod util;
pub mod verify;

/// The webhook types, parser and signature verifier this crate builds on.
pub use whereby_webhook as webhook;

pub use deduplicate::{DedupLimits, Deduplicate, IdStatus, MemoryDedup, Reservation};
pub use dispatch::{TriggerEvent, TriggerEvents};
pub use error::Rejection;
pub use evaluate::EvaluateError;
pub use receive::{HEALTH_PATH, Outcome, READY_PATH};
pub use record::Restored;
pub use trigger::{ConfigError, ServeError, Trigger, TriggerBuilder, TriggerHandle};
pub use util::BoxError;

/// Compiles the README's Rust example, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
