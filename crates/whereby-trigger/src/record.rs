//! Record: what a webhook changed becomes durable before it is answered.
//!
//! The step between [`evaluate`](crate::evaluate) and [`dispatch`](crate::dispatch):
//! the rules' [`Decision`] becomes the store's [`Change`]s (the event id, the
//! claims taken and released, the room's state, one queued delivery per action
//! call, each with its [`DeliveryTicket`](crate::actions::DeliveryTicket)),
//! committed as one unit through the [`Journal`]. A `Recording` finishes
//! the webhook once the commit is known, even if the request that started it is
//! gone, so an event that was committed is always dispatched. [`Durable`] opens
//! the store at start: it reads ids, claims and rooms back, and resumes the
//! queued deliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use whereby_webhook::ParseOptions;

use crate::deduplicate::Deduplicate;
use crate::rules::engine::Decision;
use crate::rules::engine::Engine;
use crate::state::claims::{ClaimKey, Claims};
use crate::state::room::RoomKey;
use crate::store::outbox::{Missing, Outbox, POLL_EVERY, delivery_of};
use crate::store::{
    Change, Committer, DeliveryStatus, Journal, PendingCommit, Retention, Store, StoreError,
    StoredClaim,
};
use crate::util::{millis, now_ms};

/// The durable half of a Trigger: where changes are committed before a webhook
/// is answered, and the queue of action deliveries.
#[derive(Clone)]
pub(crate) struct Durable {
    /// Where changes are committed (group commit into the store).
    pub(crate) journal: Arc<dyn Journal>,
    /// The deliveries being carried out.
    pub(crate) outbox: Arc<Outbox>,
    /// Read for the deliveries to resume.
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("failed", &self.journal.has_failed())
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

/// What a restart found in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Remembered event ids.
    pub ids: usize,
    /// Claims still held.
    pub claims: usize,
    /// Rooms with state.
    pub rooms: usize,
    /// Deliveries still pending.
    pub pending: usize,
    /// Dead letters.
    pub dead: usize,
}

impl Durable {
    /// Reads `store` back — remembered ids into `dedup`, and with an engine its
    /// claims and room state — and starts recording through it. Claims released
    /// by their holders (an assistant ended) are recorded from now on.
    ///
    /// Pending deliveries are not resumed here: the Trigger resumes them once it
    /// serves (so that resumed actions find their rules), then every
    /// `POLL_EVERY`, and flushes the store when it stops.
    pub(crate) fn restore(
        store: Arc<dyn Store>,
        dedup: &dyn Deduplicate,
        engine: Option<&Engine>,
        retention: Retention,
    ) -> Result<(Durable, Restored), StoreError> {
        let now_ms = now_ms();
        let now = Instant::now();
        let snapshot = store.load(now_ms, retention.id_max_age_ms, retention.room_idle_ms)?;
        let ago = |at_ms: i64| Duration::from_millis(u64::try_from(now_ms - at_ms).unwrap_or(0));
        let mut restored = Restored::default();
        for (id, at_ms) in &snapshot.ids {
            // Reserve, then remember at the original time, so that ages carry on.
            dedup.reserve(id, now);
            dedup.remember(id, now.checked_sub(ago(*at_ms)).unwrap_or(now));
            restored.ids += 1;
        }
        if let Some(engine) = engine {
            for claim in &snapshot.claims {
                if hold_until(engine.claims(), &claim.key, claim.expires_ms, now_ms, now) {
                    restored.claims += 1;
                }
            }
            for (key, state, seen_ms) in &snapshot.rooms {
                if let Some(room) = RoomKey::parse(key)
                    && engine.rooms().import(room, state, ago(*seen_ms), now)
                {
                    restored.rooms += 1;
                }
            }
        }
        restored.pending = snapshot
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .count();
        restored.dead = snapshot.deliveries.len() - restored.pending;

        let journal: Arc<dyn Journal> = Arc::new(Committer::start(store.clone(), retention));
        if let Some(engine) = engine {
            let recorder = journal.clone();
            engine.claims().set_release_hook(Box::new(move |key| {
                recorder.commit_later(vec![Change::ReleaseClaim {
                    key: key.to_string(),
                }]);
            }));
        }
        let outbox = Outbox::new(journal.clone());
        Ok((
            Durable {
                journal,
                outbox,
                store,
            },
            restored,
        ))
    }

    /// Resumes pending deliveries now, then every second picks up those that
    /// `outbox retry` made pending again. Stops when the task is aborted.
    /// Stored webhooks are read with `options`, those the server parses with.
    pub(crate) fn spawn_poller(
        &self,
        engine: Arc<Engine>,
        options: ParseOptions,
    ) -> JoinHandle<()> {
        let outbox = self.outbox.clone();
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                // The read blocks on SQLite: off the async workers.
                let reader = store.clone();
                match tokio::task::spawn_blocking(move || reader.pending()).await {
                    Ok(Ok(pending)) => {
                        let rules = engine.rules();
                        let find = |trigger: &str, kind: &str| {
                            let rule = rules
                                .iter()
                                .find(|r| **r.name() == *trigger)
                                .ok_or(Missing::Trigger)?;
                            rule.actions()
                                .iter()
                                .find(|a| a.kind() == kind)
                                .cloned()
                                .ok_or(Missing::Action)
                        };
                        outbox.resume(pending, &find, engine.claims(), &options);
                    }
                    Ok(Err(err)) => tracing::warn!(%err, "cannot read pending deliveries"),
                    Err(err) => tracing::warn!(%err, "the pending-deliveries read failed"),
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        })
    }
}

/// What `decision` changed, for the store: the room's state, the claims taken
/// and released, and one queued delivery per action call.
pub(crate) fn changes(decision: &Decision) -> Vec<Change> {
    let mut changes = Vec::with_capacity(2 + decision.taken.len() + decision.calls.len());
    if let (Some(key), Some(state)) = (&decision.room_key, &decision.room_state) {
        changes.push(Change::Room {
            key: key.to_string(),
            state: state.clone(),
            seen_ms: now_ms(),
        });
    }
    for (key, _) in &decision.released {
        changes.push(Change::ReleaseClaim {
            key: key.to_string(),
        });
    }
    // The store keeps wall-clock expiries, so that a restart (a new `Instant`
    // origin) can tell which claims are still held.
    let now = now_ms();
    for (claim, lease) in &decision.taken {
        let key = claim.key();
        changes.push(Change::Claim(StoredClaim {
            key: key.to_string(),
            expires_ms: now.saturating_add(millis(*lease)),
        }));
    }
    for call in &decision.calls {
        changes.push(Change::Enqueue(delivery_of(
            &call.event,
            call.action.kind(),
            call.delivery_id.clone(),
        )));
    }
    changes
}

/// Submits everything webhook `id` changed (its id, and what `rules` decided)
/// as one commit. Every action call gets its delivery ticket first, so that
/// the outbox's poll never takes a just-committed delivery for a forgotten one.
pub(crate) fn submit(durable: &Durable, id: &str, rules: Option<&mut Decision>) -> PendingCommit {
    let mut changes = vec![Change::RememberId {
        id: id.to_owned(),
        at_ms: now_ms(),
    }];
    if let Some(rules) = rules {
        for call in &mut rules.calls {
            call.event.delivery = durable.outbox.ticket(call.delivery_id.clone());
        }
        changes.extend(self::changes(rules));
    }
    durable.journal.submit(changes)
}

/// Takes claim `key` (as the store writes it) as held until `expires_ms`: a
/// receiver sharing the store holds it. Held without a handle here, so nothing
/// here releases it; it ends when its lease does, or when a `stop_on` here
/// releases the trigger's claims in the room.
pub(crate) fn hold_elsewhere(claims: &Arc<Claims>, key: &str, expires_ms: i64) {
    hold_until(claims, key, expires_ms, now_ms(), Instant::now());
}

/// Holds the stored claim `key` until `expires_ms` (wall clock), `now_ms`
/// being `now`: a claim read back at start, or one another receiver holds.
/// `false`, logged, when the store's key cannot be read.
fn hold_until(claims: &Arc<Claims>, key: &str, expires_ms: i64, now_ms: i64, now: Instant) -> bool {
    let Some(key) = ClaimKey::parse(key) else {
        tracing::warn!(key, "an unreadable claim in the store is ignored");
        return false;
    };
    let left = u64::try_from(expires_ms.saturating_sub(now_ms)).unwrap_or(0);
    claims.restore(key, now + Duration::from_millis(left));
    true
}

/// What a webhook does once its commit is known: dispatch what it decided, or
/// give back what it took.
pub(crate) trait Settle: Send + 'static {
    /// What settling gives.
    type Output: Send + 'static;
    /// Finishes the webhook with the commit's result.
    fn settle(self, committed: Result<(), StoreError>) -> Self::Output;
}

/// A webhook whose changes are on their way to the store. Awaited, it settles
/// the webhook in the request's own task once the commit is known; dropped
/// before that (the client went away, the deadline passed), it hands the rest
/// to a task of its own, so that an event that was committed is still
/// dispatched. Spawning only then, not for every webhook, keeps the common path
/// free of a task and a wake-up.
pub(crate) struct Recording<S: Settle> {
    commit: PendingCommit,
    rest: Option<S>,
    runtime: tokio::runtime::Handle,
}

impl<S: Settle> Recording<S> {
    /// Waits for `commit`, then settles `rest`. Must be created on a Tokio
    /// runtime.
    pub(crate) fn new(commit: PendingCommit, rest: S) -> Self {
        Recording {
            commit,
            rest: Some(rest),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The settled result; `None` only if the webhook was settled already.
    pub(crate) async fn finish(mut self) -> Option<S::Output> {
        let committed = (&mut self.commit).await;
        self.rest.take().map(|rest| rest.settle(committed))
    }
}

impl<S: Settle> Drop for Recording<S> {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take() {
            let commit = std::mem::replace(&mut self.commit, PendingCommit::closed());
            self.runtime.spawn(async move {
                let _ = rest.settle(commit.await);
            });
        }
    }
}
