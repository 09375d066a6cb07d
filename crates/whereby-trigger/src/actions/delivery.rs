//! An action's handle on the delivery it carries out: where it reports done,
//! another attempt, or given up.
//!
//! The ticket is defined here, beside the actions that hold it; what records a
//! delivery's fate (the durable outbox) implements [`DeliveryLedger`], so that
//! actions know nothing of the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
            }),
        }
    }

    /// The delivery's id: `<trigger>:<event id>[:stop]:<action kind>`.
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
            self.inner.ledger.done(&self.inner.id);
        }
    }

    /// An attempt failed and another will follow: recorded for `outbox list`.
    pub fn attempted(&self, attempts: u32, error: &str) {
        self.inner.ledger.attempted(&self.inner.id, attempts, error);
    }

    /// Given up: the delivery stays as a dead letter until retried or dropped.
    pub fn dead(&self, error: &str) {
        if !self.inner.finished.swap(true, Ordering::SeqCst) {
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
