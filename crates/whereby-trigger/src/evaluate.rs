//! Evaluate: ask the user's predicate for the event's type whether to start an
//! assistant.
//!
//! A predicate is registered per event type and typed on that type's struct.
//! Synchronous predicates run inline (they are meant for cheap checks such as
//! `numClients == 1`); asynchronous ones run as their own task, so a panic is
//! contained and a predicate that overruns the timeout is abandoned.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::time::Duration;

use whereby_webhook::{EventType, TypedWebhook, WebhookEvent};

use crate::util::{BoxError, panic_message};

type BoxFuture = Pin<Box<dyn Future<Output = Result<bool, BoxError>> + Send + 'static>>;
type SyncFn = dyn Fn(&WebhookEvent) -> Result<bool, BoxError> + Send + Sync;
type AsyncFn = dyn Fn(&WebhookEvent) -> BoxFuture + Send + Sync;

/// One registered predicate, erased over its event type.
enum Predicate {
    Sync(Box<SyncFn>),
    Async(Box<AsyncFn>),
}

/// What the rules decided about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The predicate returned `true`: start an assistant.
    Matched,
    /// The predicate returned `false`, or none is registered for the type.
    NotMatched,
    /// The type is not one the Trigger evaluates.
    Ignored,
}

/// Why a predicate gave no answer. None of these is remembered: Whereby's retry is
/// evaluated afresh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvaluateError {
    /// The predicate returned an error.
    #[error("the predicate for {event_type} failed: {source}")]
    Failed {
        /// The event type whose predicate failed.
        event_type: EventType,
        /// The predicate's error.
        source: BoxError,
    },
    /// The predicate panicked.
    #[error("the predicate for {event_type} panicked: {message}")]
    Panicked {
        /// The event type whose predicate panicked.
        event_type: EventType,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The predicate did not finish in time.
    #[error("the predicate for {event_type} did not finish within {timeout:?}")]
    TimedOut {
        /// The event type whose predicate overran.
        event_type: EventType,
        /// The configured timeout.
        timeout: Duration,
    },
}

/// The predicates of a Trigger, one slot per evaluated type.
#[derive(Default)]
pub(crate) struct Predicates {
    slots: [Option<Predicate>; 5],
}

impl std::fmt::Debug for Predicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registered: Vec<&str> = EventType::ALL
            .iter()
            .filter(|t| self.slots[t.index()].is_some())
            .map(|t| t.as_str())
            .collect();
        f.debug_struct("Predicates")
            .field("registered", &registered)
            .finish()
    }
}

impl Predicates {
    /// Registers a fallible synchronous predicate for `E`, replacing any earlier one.
    pub(crate) fn set_sync<E, F>(&mut self, predicate: F)
    where
        E: TypedWebhook,
        F: Fn(&E) -> Result<bool, BoxError> + Send + Sync + 'static,
    {
        self.slots[E::EVENT_TYPE.index()] = Some(Predicate::Sync(Box::new(move |event| {
            // The slot is chosen by type, so the variant always matches.
            E::from_event(event).map_or(Ok(false), &predicate)
        })));
    }

    /// Registers a fallible asynchronous predicate for `E`, replacing any earlier one.
    /// It receives its own copy of the webhook, as it may outlive the request.
    pub(crate) fn set_async<E, F, Fut>(&mut self, predicate: F)
    where
        E: TypedWebhook,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, BoxError>> + Send + 'static,
    {
        self.slots[E::EVENT_TYPE.index()] =
            Some(Predicate::Async(Box::new(
                move |event| match E::from_event(event) {
                    Some(typed) => Box::pin(predicate(typed.clone())),
                    None => Box::pin(async { Ok(false) }),
                },
            )));
    }

    /// Evaluates `event` with its type's predicate.
    ///
    /// # Errors
    /// An [`EvaluateError`] when the predicate failed, panicked or overran `timeout`.
    pub(crate) async fn evaluate(
        &self,
        event: &WebhookEvent,
        timeout: Duration,
    ) -> Result<Decision, EvaluateError> {
        let Some(event_type) = event.event_type() else {
            return Ok(Decision::Ignored);
        };
        let matched = match &self.slots[event_type.index()] {
            None => false,
            Some(Predicate::Sync(predicate)) => {
                match catch_unwind(AssertUnwindSafe(|| predicate(event))) {
                    Ok(Ok(matched)) => matched,
                    Ok(Err(source)) => return Err(EvaluateError::Failed { event_type, source }),
                    Err(panic) => {
                        return Err(EvaluateError::Panicked {
                            event_type,
                            message: panic_message(panic.as_ref()),
                        });
                    }
                }
            }
            Some(Predicate::Async(predicate)) => {
                // A task of its own contains a panic, and can be aborted when the
                // request gives up on it.
                let task = AbortOnDrop(tokio::spawn(predicate(event)));
                match tokio::time::timeout(timeout, task).await {
                    Err(_) => {
                        return Err(EvaluateError::TimedOut {
                            event_type,
                            timeout,
                        });
                    }
                    Ok(Ok(Ok(matched))) => matched,
                    Ok(Ok(Err(source))) => {
                        return Err(EvaluateError::Failed { event_type, source });
                    }
                    Ok(Err(join)) => {
                        return Err(EvaluateError::Panicked {
                            event_type,
                            message: match join.try_into_panic() {
                                Ok(panic) => panic_message(panic.as_ref()),
                                Err(_) => "the predicate task was cancelled".to_owned(),
                            },
                        });
                    }
                }
            }
        };
        Ok(if matched {
            Decision::Matched
        } else {
            Decision::NotMatched
        })
    }
}

/// Aborts the predicate task if the request is dropped or times out first.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whereby_webhook::{RoomClientJoined, RoomSessionStarted, sample};

    fn event(event_type: &str) -> WebhookEvent {
        whereby_webhook::parse(sample::sample(event_type).unwrap().as_bytes()).unwrap()
    }

    const T: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn sync_predicate_decides_for_its_type_only() {
        let mut p = Predicates::default();
        p.set_sync(|e: &RoomClientJoined| Ok(e.data.num_clients == Some(1)));
        assert_eq!(
            p.evaluate(&event("room.client.joined"), T).await.unwrap(),
            Decision::Matched
        );
        assert_eq!(
            p.evaluate(&event("room.client.left"), T).await.unwrap(),
            Decision::NotMatched
        );
        assert_eq!(
            p.evaluate(&event("room.client.knocked"), T).await.unwrap(),
            Decision::Ignored
        );
    }

    #[tokio::test]
    async fn failures_are_reported_not_raised() {
        let mut p = Predicates::default();
        p.set_sync(|_: &RoomClientJoined| Err("no database".into()));
        p.set_sync(|_: &RoomSessionStarted| panic!("boom"));
        let err = p
            .evaluate(&event("room.client.joined"), T)
            .await
            .unwrap_err();
        assert!(matches!(err, EvaluateError::Failed { .. }), "{err}");
        let err = p
            .evaluate(&event("room.session.started"), T)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn async_predicates_time_out_and_contain_panics() {
        let mut p = Predicates::default();
        p.set_async(|_: RoomClientJoined| async {
            std::future::pending::<()>().await;
            Ok(true)
        });
        p.set_async(|e: RoomSessionStarted| async move {
            if e.data.subdomain == "acme" {
                panic!("async boom");
            }
            Ok(true)
        });
        let err = p
            .evaluate(&event("room.client.joined"), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, EvaluateError::TimedOut { .. }), "{err}");
        let err = p
            .evaluate(&event("room.session.started"), T)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, EvaluateError::Panicked { message, .. } if message == "async boom"),
            "{err}"
        );
    }
}
