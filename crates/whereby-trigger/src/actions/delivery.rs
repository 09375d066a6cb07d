//! An action's handle on the delivery it carries out: where it reports done,
//! another attempt, or given up.
//!
//! The ticket is defined here, beside the actions that hold it; what records a
//! delivery's fate (the durable outbox) implements [`DeliveryLedger`], so that
//! actions know nothing of the store.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ActionKind;
use crate::metrics::{ActionResult, ActionStats};

/// Where the fate of deliveries is recorded.
pub trait DeliveryLedger: Send + Sync + 'static {
    /// Delivery `id` was carried out: it leaves the queue.
    fn done(&self, id: &str);
    /// An attempt at `id` failed and another will follow.
    fn attempted(&self, id: &str, attempts: u32, error: &str);
    /// `id` was given up: it stays as a dead letter.
    fn dead(&self, id: &str, error: &str);
    /// The last ticket of `id` is gone; `finished` says whether `done` or
    /// `dead` was reported (if not, the delivery stays pending for later).
    fn released(&self, id: &str, finished: bool);
}

/// An action's handle on its delivery. Cheap to clone; all clones are one
/// delivery.
#[derive(Clone)]
pub struct DeliveryTicket {
    inner: Arc<Ticket>,
}

struct Ticket {
    id: String,
    /// Attempts made before this process took the delivery over.
    attempts: u32,
    /// When the delivery was queued (or last made pending again by hand).
    queued_ms: i64,
    ledger: Arc<dyn DeliveryLedger>,
    finished: AtomicBool,
    /// The action's counters (`actions_total`), when the ticket was issued
    /// for a call of a rule this process built.
    stats: Option<Arc<ActionStats>>,
}

impl std::fmt::Debug for DeliveryTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeliveryTicket")
            .field(&self.inner.id)
            .finish()
    }
}

impl DeliveryTicket {
    /// A ticket for delivery `id`, `attempts` already made, queued at
    /// `queued_ms`, whose fate goes to `ledger`.
    pub fn new(
        id: String,
        attempts: u32,
        queued_ms: i64,
        ledger: Arc<dyn DeliveryLedger>,
    ) -> DeliveryTicket {
        DeliveryTicket {
            inner: Arc::new(Ticket {
                id,
                attempts,
                queued_ms,
                ledger,
                finished: AtomicBool::new(false),
                stats: None,
            }),
        }
    }

    /// This ticket, counting what it reports in `stats`. Only before it is
    /// cloned (a clone keeps it as it was).
    pub(crate) fn counted(mut self, stats: Option<Arc<ActionStats>>) -> DeliveryTicket {
        if let Some(ticket) = Arc::get_mut(&mut self.inner) {
            ticket.stats = stats;
        }
        self
    }

    fn count(&self, result: ActionResult) {
        if let Some(stats) = &self.inner.stats {
            stats.count(result);
        }
    }

    /// The delivery's id: `<trigger>:<event id>[:stop]:<action kind>`, each part
    /// encoded as [`event_key`] says.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Attempts already made, by this process or before a restart: an action
    /// that counts attempts carries on from here rather than from zero.
    pub fn attempts_made(&self) -> u32 {
        self.inner.attempts
    }

    /// When the delivery was queued, in ms since the Unix epoch: its age, for
    /// giving up, counts from here. `outbox retry` makes it now again.
    pub fn queued_ms(&self) -> i64 {
        self.inner.queued_ms
    }

    /// Delivered: the delivery leaves the queue.
    pub fn done(&self) {
        if !self.inner.finished.swap(true, Ordering::SeqCst) {
            self.count(ActionResult::Ok);
            self.inner.ledger.done(&self.inner.id);
        }
    }

    /// An attempt failed and another will follow: recorded for `outbox list`.
    pub fn attempted(&self, attempts: u32, error: &str) {
        self.count(ActionResult::Retry);
        self.inner.ledger.attempted(&self.inner.id, attempts, error);
    }

    /// Given up: the delivery stays as a dead letter until retried or dropped.
    pub fn dead(&self, error: &str) {
        if !self.inner.finished.swap(true, Ordering::SeqCst) {
            self.count(ActionResult::Dead);
            self.inner.ledger.dead(&self.inner.id, error);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.ledger
            .released(&self.id, self.finished.load(Ordering::SeqCst));
    }
}

/// `<trigger>:<event id>`, and `:stop` for a stop: what tells one start or stop
/// from every other, as the `Idempotency-Key` of `forward` and the head of a
/// delivery id. Each part is written by [`push_key_part`], so that the key splits
/// back into exactly the parts it was made of: two different events never share
/// a key, whatever their ids (`Z:stop` is not the stop of `Z`), and a receiver
/// that drops duplicates by key never drops a real action.
pub(crate) fn event_key(trigger: &str, event_id: &str, action: ActionKind) -> String {
    let mut key = String::with_capacity(trigger.len() + event_id.len() + 6);
    push_key_part(&mut key, trigger);
    key.push(':');
    push_key_part(&mut key, event_id);
    if action == ActionKind::Stop {
        key.push_str(":stop");
    }
    key
}

/// The id of the delivery of one action call: [`event_key`], `:`, the action's
/// kind (encoded the same way), and `#<n>` for the `n`th action of one kind on a
/// rule (from the second on).
pub(crate) fn delivery_id(
    trigger: &str,
    event_id: &str,
    action: ActionKind,
    kind: &str,
    n: usize,
) -> String {
    let mut id = event_key(trigger, event_id, action);
    id.push(':');
    push_key_part(&mut id, kind);
    if n > 1 {
        let _ = write!(id, "#{n}");
    }
    id
}

/// Appends `part` with every byte outside `[A-Za-z0-9._-]` as `%XX` (upper-case
/// hex, the bytes of its UTF-8). `%` and `:` are among them, so an encoded part
/// never holds the separator and decodes one way only; an id of the usual
/// characters stays as it is, readable.
fn push_key_part(out: &mut String, part: &str) {
    for &b in part.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parts of a key, decoded: what makes [`event_key`] unambiguous is that
    /// this function exists.
    fn decode_event_key(key: &str) -> Option<(String, String, ActionKind)> {
        let parts: Vec<&str> = key.split(':').collect();
        let action = match parts.as_slice() {
            [_, _] => ActionKind::Start,
            [_, _, "stop"] => ActionKind::Stop,
            _ => return None,
        };
        Some((decode_part(parts[0])?, decode_part(parts[1])?, action))
    }

    fn decode_part(part: &str) -> Option<String> {
        let mut bytes = Vec::new();
        let mut rest = part.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'%' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            } else {
                bytes.push(b);
                rest = tail;
            }
        }
        String::from_utf8(bytes).ok()
    }

    fn action() -> impl Strategy<Value = ActionKind> {
        prop_oneof![Just(ActionKind::Start), Just(ActionKind::Stop)]
    }

    /// Names and ids made to collide: separators, escapes, controls, any text.
    fn part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9._-]{0,8}",
            "[a-z:%0-9A-F]{0,8}",
            "(stop|:stop|%3A|%25|:|%|\r|\n| |#)*",
            "\\PC{0,6}",
            any::<String>(),
        ]
    }

    #[test]
    fn the_issues_collisions_are_gone() {
        assert_ne!(
            event_key("fwd", "k1\r", ActionKind::Start),
            event_key("fwd", "k1%0D", ActionKind::Start)
        );
        assert_ne!(
            event_key("fwd", "Z:stop", ActionKind::Start),
            event_key("fwd", "Z", ActionKind::Stop)
        );
        // A trigger named by hand in Rust, not validated by a config.
        assert_ne!(
            event_key("a:b", "c", ActionKind::Start),
            event_key("a", "b:c", ActionKind::Start)
        );
        assert_eq!(event_key("fwd", "k1\r", ActionKind::Start), "fwd:k1%0D");
        assert_eq!(event_key("fwd", "k1%0D", ActionKind::Start), "fwd:k1%250D");
        assert_eq!(
            event_key("fwd", "Z:stop", ActionKind::Start),
            "fwd:Z%3Astop"
        );
        assert_eq!(event_key("t", "é", ActionKind::Stop), "t:%C3%A9:stop");
        assert_eq!(
            delivery_id("r:1", "l2", ActionKind::Stop, "my#kind", 2),
            "r%3A1:l2:stop:my%23kind#2"
        );
    }

    proptest! {
        #[test]
        fn event_keys_decode_to_what_made_them(trigger in part(), id in part(), action in action()) {
            let key = event_key(&trigger, &id, action);
            prop_assert_eq!(decode_event_key(&key), Some((trigger, id, action)));
            // A valid header value: visible ASCII only.
            prop_assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key}");
        }

        #[test]
        fn distinct_events_have_distinct_keys(
            t in part(), x in part(), y in part(), other in (part(), part(), action()),
        ) {
            use ActionKind::{Start, Stop};
            let start = |t: &str, id: &str| (t.to_owned(), id.to_owned(), Start);
            // Pairs made to collide under a naive join, and one at random.
            let pairs = [
                (start(&t, &format!("{x}:stop")), (t.clone(), x.clone(), Stop)),
                (start(&format!("{t}:{x}"), &y), start(&t, &format!("{x}:{y}"))),
                (start(&t, &format!("{x}\r")), start(&t, &format!("{x}%0D"))),
                (start(&t, &format!("{x}%")), start(&t, &format!("{x}%25"))),
                (start(&t, &x), other),
            ];
            for (a, b) in pairs {
                let (ka, kb) = (event_key(&a.0, &a.1, a.2), event_key(&b.0, &b.1, b.2));
                prop_assert_eq!(a == b, ka == kb, "{:?} {:?}: {} {}", a, b, ka, kb);
            }
        }

        #[test]
        fn readable_ids_stay_readable(
            trigger in "[A-Za-z0-9._-]{1,12}",
            id in "[A-Za-z0-9._-]{1,40}",
        ) {
            prop_assert_eq!(event_key(&trigger, &id, ActionKind::Start), format!("{trigger}:{id}"));
            prop_assert_eq!(event_key(&trigger, &id, ActionKind::Stop), format!("{trigger}:{id}:stop"));
            prop_assert_eq!(
                delivery_id(&trigger, &id, ActionKind::Stop, "forward", 1),
                format!("{trigger}:{id}:stop:forward")
            );
        }

        #[test]
        fn delivery_ids_decode_to_the_call(
            trigger in part(), id in part(), action in action(), kind in part(), n in 1usize..4,
        ) {
            let delivery = delivery_id(&trigger, &id, action, &kind, n);
            let (rest, nth) = match delivery.rsplit_once('#') {
                Some((rest, nth)) => (rest, nth.parse().ok()),
                None => (delivery.as_str(), Some(1)),
            };
            let (key, encoded_kind) = rest.rsplit_once(':').expect("a kind");
            prop_assert_eq!(nth, Some(n));
            prop_assert_eq!(decode_part(encoded_kind), Some(kind));
            prop_assert_eq!(decode_event_key(key), Some((trigger, id, action)));
        }
    }
}
