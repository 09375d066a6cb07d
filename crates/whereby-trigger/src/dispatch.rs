//! Dispatch: hand each trigger event to every subscriber and callback.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use serde::ser::SerializeStruct;
use tokio::sync::mpsc;
use whereby_webhook::WebhookEvent;

use crate::util::push_single_line;

/// "Start an assistant in this room": what a Trigger emits when a predicate
/// returns `true` (the Node SDK's `TRIGGER_EVENT_SUCCESS`).
///
/// Serialises as `{"roomUrl": …, "triggerWebhook": …}` with the webhook exactly
/// as received, unknown fields included.
#[derive(Debug, Clone)]
pub struct TriggerEvent {
    /// The room an assistant should join, e.g. `https://acme.whereby.com/standup`.
    pub room_url: String,
    /// The webhook that fired the trigger.
    pub trigger_webhook: WebhookEvent,
    raw: Bytes,
}

impl TriggerEvent {
    /// A trigger event for `trigger_webhook`, whose body as received was `raw`.
    pub fn new(room_url: String, trigger_webhook: WebhookEvent, raw: Bytes) -> Self {
        TriggerEvent {
            room_url,
            trigger_webhook,
            raw,
        }
    }

    /// The webhook's body as it was received.
    pub fn raw_webhook(&self) -> &[u8] {
        &self.raw
    }

    /// The event as one line of JSON, newline included: the `stdout` format.
    /// One line for every line splitter: U+2028, U+2029 and U+0085 are escaped.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.raw.len() + self.room_url.len() + 40);
        self.write_json_line(&mut line);
        line
    }

    /// [`TriggerEvent::to_json_line`] appended to `out`, which a caller can
    /// reuse.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"roomUrl\":");
        crate::util::write_json_line(out, &self.room_url);
        out.extend_from_slice(b",\"triggerWebhook\":");
        push_single_line(out, &self.raw);
        out.extend_from_slice(b"}\n");
    }
}

impl Serialize for TriggerEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut compact = Vec::with_capacity(self.raw.len());
        push_single_line(&mut compact, &self.raw);
        let raw = String::from_utf8(compact)
            .ok()
            .and_then(|s| serde_json::value::RawValue::from_string(s).ok());
        let mut s = serializer.serialize_struct("TriggerEvent", 2)?;
        s.serialize_field("roomUrl", &self.room_url)?;
        match raw {
            Some(raw) => s.serialize_field("triggerWebhook", &raw)?,
            // Only reachable for an event built by hand from a non-JSON body.
            None => s.serialize_field("triggerWebhook", &self.trigger_webhook)?,
        }
        s.end()
    }
}

/// A callback run for every trigger event, on the request's task.
pub(crate) type Callback = Arc<dyn Fn(&TriggerEvent) + Send + Sync + 'static>;

/// Fans trigger events out to subscribers and callbacks.
#[derive(Default)]
pub(crate) struct Dispatcher {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<TriggerEvent>>>,
    callbacks: Vec<Callback>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("callbacks", &self.callbacks.len())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Adds a callback; only before the Trigger starts, so the list needs no lock.
    pub(crate) fn add_callback(&mut self, callback: Callback) {
        self.callbacks.push(callback);
    }

    /// A new stream that receives every event dispatched from now on.
    pub(crate) fn subscribe(&self) -> TriggerEvents {
        // Unbounded on purpose: an event whose delivery was answered 2xx must not
        // be dropped because a consumer is slow, and blocking the request on a
        // consumer would make Whereby time out and retry.
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(tx);
        TriggerEvents { rx }
    }

    /// Delivers `event` to every live subscriber and every callback. Never awaits,
    /// so a cancelled request cannot deliver half an event.
    pub(crate) fn dispatch(&self, event: &TriggerEvent) {
        {
            let mut subscribers = self.lock();
            subscribers.retain(|tx| tx.send(event.clone()).is_ok());
        }
        for callback in &self.callbacks {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| callback(event))) {
                let message = crate::util::panic_message(panic.as_ref());
                tracing::error!(room_url = %event.room_url, %message, "a trigger callback panicked");
            }
        }
    }

    /// Ends every subscriber's stream, once the server has drained.
    pub(crate) fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<TriggerEvent>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A stream of trigger events. Every subscriber gets every event dispatched after
/// it subscribed; the stream ends when the Trigger has shut down.
///
/// Use it as a [`futures_core::Stream`], or call [`TriggerEvents::recv`].
#[derive(Debug)]
pub struct TriggerEvents {
    rx: mpsc::UnboundedReceiver<TriggerEvent>,
}

impl TriggerEvents {
    /// The next event, or `None` once the Trigger has shut down and every event
    /// has been received.
    pub async fn recv(&mut self) -> Option<TriggerEvent> {
        self.rx.recv().await
    }

    /// The next event, blocking the thread: for a consumer on a thread of its own.
    /// Must not be called from an async task.
    pub fn blocking_recv(&mut self) -> Option<TriggerEvent> {
        self.rx.blocking_recv()
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<TriggerEvent> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for TriggerEvents {
    type Item = TriggerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TriggerEvent>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use whereby_webhook::sample;

    fn event() -> TriggerEvent {
        let raw = sample::sample("room.client.joined").unwrap();
        TriggerEvent::new(
            "https://acme.whereby.com/standup-3f9a2c".into(),
            whereby_webhook::parse(raw.as_bytes()).unwrap(),
            Bytes::from_static(raw.as_bytes()),
        )
    }

    #[test]
    fn json_line_is_one_line_and_keeps_the_webhook() {
        let line = event().to_json_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["roomUrl"], "https://acme.whereby.com/standup-3f9a2c");
        let original: serde_json::Value =
            serde_json::from_str(sample::sample("room.client.joined").unwrap()).unwrap();
        assert_eq!(v["triggerWebhook"], original);
        // serde's form is the same document.
        let via_serde = serde_json::to_value(event()).unwrap();
        assert_eq!(via_serde, v);
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_and_streams_end_on_close() {
        let mut d = Dispatcher::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        d.add_callback(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        d.add_callback(Arc::new(|_| panic!("callback bug")));
        let mut a = d.subscribe();
        let mut b = d.subscribe();
        drop(d.subscribe()); // a dropped subscriber is pruned, not an error
        for _ in 0..3 {
            d.dispatch(&event());
        }
        d.close();
        for stream in [&mut a, &mut b] {
            let mut n = 0;
            while stream.recv().await.is_some() {
                n += 1;
            }
            assert_eq!(n, 3);
        }
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }
}
