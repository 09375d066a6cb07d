//! An action's handle on the delivery it carries out: where it reports done,
//! another attempt, or given up.
//!
//! The ticket is defined here, beside the actions that hold it; what records a
//! delivery's fate (the durable outbox) implements [`DeliveryLedger`], so that
//! actions know nothing of the store.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ActionEvent, ActionKind};
use crate::metrics::{ActionResult, ActionStats};

/// Where the fate of deliveries is recorded.
pub trait DeliveryLedger: Send + Sync + 'static {
    /// Delivery `id` was carried out: it leaves the queue.
    fn done(&self, id: &str);
    /// An attempt at `id` failed: `attempts` made so far, the last with
    /// `error`. `retry_at_ms` is when the next is due (ms since the epoch),
    /// kept so that a delivery taken up after a restart waits for it too;
    /// `None` when none follows (the last attempt, before `dead`).
    fn attempted(&self, id: &str, attempts: u32, error: &str, retry_at_ms: Option<i64>);
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
    /// When its next attempt is due, if an earlier one set a time.
    retry_at_ms: Option<i64>,
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
                retry_at_ms: None,
                ledger,
                finished: AtomicBool::new(false),
                stats: None,
            }),
        }
    }

    /// This ticket, for a delivery whose next attempt is due at `retry_at_ms`
    /// (ms since the epoch), as an earlier attempt recorded. Only before it is
    /// cloned (a clone keeps it as it was).
    pub fn due_at(mut self, retry_at_ms: Option<i64>) -> DeliveryTicket {
        if let Some(ticket) = Arc::get_mut(&mut self.inner) {
            ticket.retry_at_ms = retry_at_ms;
        }
        self
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
    /// with every byte outside `[A-Za-z0-9._-]` written `%XX` (upper-case hex of
    /// its UTF-8), so that no two deliveries share an id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Attempts already made, by this process or before a restart: an action
    /// that counts attempts carries on from here rather than from zero.
    pub fn attempts_made(&self) -> u32 {
        self.inner.attempts
    }

    /// When the next attempt is due, in ms since the Unix epoch, as the
    /// attempt before a restart recorded it: an action that retries waits
    /// until then before its first attempt.
    pub fn retry_at_ms(&self) -> Option<i64> {
        self.inner.retry_at_ms
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

    /// An attempt failed and another will follow in `retry_in`: recorded
    /// (with when, for a restart to wait too) for `outbox list`, and counted
    /// `retry`.
    pub fn attempted(&self, attempts: u32, error: &str, retry_in: std::time::Duration) {
        self.count(ActionResult::Retry);
        let retry_in = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX);
        let retry_at_ms = crate::util::now_ms().saturating_add(retry_in);
        self.inner
            .ledger
            .attempted(&self.inner.id, attempts, error, Some(retry_at_ms));
    }

    /// The last attempt (the `attempts`th) failed with `last_error` and none
    /// will follow: recorded, so that the stored count includes it, then given
    /// up with `error` as [`DeliveryTicket::dead`] does. Counted `dead` only:
    /// no retry follows it.
    pub fn dead_after(&self, attempts: u32, last_error: &str, error: &str) {
        if !self.inner.finished.load(Ordering::SeqCst) {
            self.inner
                .ledger
                .attempted(&self.inner.id, attempts, last_error, None);
        }
        self.dead(error);
    }

    /// Given up: the delivery stays as a dead letter until retried or dropped.
    pub fn dead(&self, error: &str) {
        if !self.inner.finished.swap(true, Ordering::SeqCst) {
            self.count(ActionResult::Dead);
            self.inner.ledger.dead(&self.inner.id, error);
        }
    }
}

/// Where an action that tracks its deliveries reports the fate of one call:
/// to the call's ticket, which records it and counts it, or, for a call
/// without one (a Trigger without a store), to the action's counters alone,
/// so that `actions_total` counts with a store and without one alike.
#[derive(Clone, Copy)]
pub(crate) struct Fate<'a> {
    ticket: Option<&'a DeliveryTicket>,
    stats: &'a ActionStats,
}

impl<'a> Fate<'a> {
    /// The fate of `event`, counted in `stats` when it has no ticket.
    pub(crate) fn of(event: &'a ActionEvent, stats: &'a ActionStats) -> Fate<'a> {
        Fate {
            ticket: event.delivery.as_ref(),
            stats,
        }
    }

    /// Carried out ([`DeliveryTicket::done`]).
    pub(crate) fn done(self) {
        match self.ticket {
            Some(ticket) => ticket.done(),
            None => self.stats.count(ActionResult::Ok),
        }
    }

    /// An attempt failed and another follows ([`DeliveryTicket::attempted`]).
    #[cfg(any(test, feature = "forward"))]
    pub(crate) fn attempted(self, attempts: u32, error: &str, retry_in: std::time::Duration) {
        match self.ticket {
            Some(ticket) => ticket.attempted(attempts, error, retry_in),
            None => self.stats.count(ActionResult::Retry),
        }
    }

    /// Given up ([`DeliveryTicket::dead`]); `error` is made only for a ticket.
    pub(crate) fn dead(self, error: impl FnOnce() -> String) {
        match self.ticket {
            Some(ticket) => ticket.dead(&error()),
            None => self.stats.count(ActionResult::Dead),
        }
    }

    /// The last attempt failed: given up ([`DeliveryTicket::dead_after`]).
    #[cfg(any(test, feature = "forward"))]
    pub(crate) fn dead_after(
        self,
        attempts: u32,
        last_error: &str,
        error: impl FnOnce() -> String,
    ) {
        match self.ticket {
            Some(ticket) => ticket.dead_after(attempts, last_error, &error()),
            None => self.stats.count(ActionResult::Dead),
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

    /// A ledger that keeps the attempts recorded.
    #[derive(Default)]
    struct Attempts(std::sync::Mutex<Vec<(u32, bool)>>);

    impl DeliveryLedger for Attempts {
        fn done(&self, _: &str) {}
        fn attempted(&self, _: &str, attempts: u32, _: &str, retry_at_ms: Option<i64>) {
            self.0
                .lock()
                .unwrap()
                .push((attempts, retry_at_ms.is_some()));
        }
        fn dead(&self, _: &str, _: &str) {}
        fn released(&self, _: &str, _: bool) {}
    }

    fn counts(stats: &ActionStats) -> [u64; 3] {
        [ActionResult::Ok, ActionResult::Retry, ActionResult::Dead].map(|r| stats.get(r))
    }

    #[test]
    fn only_an_attempt_that_is_retried_counts_retry() {
        let ledger = Arc::new(Attempts::default());
        let stats = Arc::new(ActionStats::default());
        let ticket =
            DeliveryTicket::new("d".into(), 0, 0, ledger.clone()).counted(Some(stats.clone()));
        // Two attempts, the second the last: one retry, one dead.
        ticket.attempted(1, "503", std::time::Duration::from_secs(1));
        ticket.dead_after(2, "503", "gave up after 2 attempts: 503");
        assert_eq!(counts(&stats), [0, 1, 1]);
        // Both attempts are recorded, the last one too, only the first with
        // a time for the next.
        assert_eq!(*ledger.0.lock().unwrap(), [(1, true), (2, false)]);

        // A 4xx on the first attempt is not retried: dead only.
        let stats = Arc::new(ActionStats::default());
        let ticket = DeliveryTicket::new("e".into(), 0, 0, ledger).counted(Some(stats.clone()));
        ticket.dead_after(1, "400", "400");
        assert_eq!(counts(&stats), [0, 0, 1]);
    }

    #[test]
    fn a_call_without_a_ticket_is_counted_by_its_fate() {
        let raw = whereby_webhook::sample::sample("room.client.joined").unwrap();
        let event = ActionEvent::new(
            ActionKind::Start,
            "t",
            whereby_webhook::parse(raw.as_bytes()).unwrap(),
            bytes::Bytes::from_static(raw.as_bytes()),
        );
        let stats = ActionStats::default();
        let fate = Fate::of(&event, &stats);
        fate.attempted(1, "503", std::time::Duration::from_secs(1));
        fate.dead_after(2, "503", || unreachable!("no ticket to tell"));
        fate.done();
        fate.dead(|| unreachable!("no ticket to tell"));
        assert_eq!(counts(&stats), [1, 1, 2]);
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
