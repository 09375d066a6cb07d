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
use crate::state::claims::{ClaimKey, Claims, PendingStop, StopCause};
use crate::state::room::RoomKey;
use crate::store::outbox::{Missing, Outbox, POLL_EVERY, delivery_of, read_back};
use crate::store::{
    Change, Committer, DeliveryStatus, Journal, PendingCommit, Retention, Store, StoreError,
    StoredClaim, StoredStop,
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
    /// Whether this server carries out the actions it decides on; when not,
    /// they are only committed, for the workers sharing the store.
    runs_actions: bool,
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
    /// The store, to read for the status page and the metrics.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

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
        options: &ParseOptions,
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
                if restore_claim(engine.claims(), claim, options, now_ms, now) {
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
                runs_actions: true,
            },
            restored,
        ))
    }

    /// This Durable, carrying out the actions it records (`run`) or only
    /// recording them for others (see `TriggerBuilder::run_actions`).
    pub(crate) fn running_actions(mut self, run: bool) -> Durable {
        self.runs_actions = run;
        self
    }

    /// Lets the store go once the server has stopped and flushed it (see
    /// [`Store::release`]).
    pub(crate) fn release(&self) {
        self.store.release();
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
        let woken = Arc::new(tokio::sync::Notify::new());
        let waker = woken.clone();
        store.watch(Arc::new(move || waker.notify_one()));
        // Cut off from a shared store for half a lease, this server stops what
        // it runs: the others may take it over when the lease lapses.
        let fence_after = store.lease().map(|lease| lease / 2);
        let mut renewed = Instant::now();
        let mut fenced = false;
        tokio::spawn(async move {
            loop {
                // The read blocks on the store: off the async workers. What
                // this process carries out is renewed, not taken again.
                let reader = store.clone();
                let held = outbox.in_flight_ids();
                match tokio::task::spawn_blocking(move || reader.take(&held)).await {
                    Ok(Ok(taken)) => {
                        renewed = Instant::now();
                        fenced = false;
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
                        let (now_ms, now) = (now_ms(), Instant::now());
                        // The claims of the starts taken are this server's now,
                        // with their handles, before the starts look for them.
                        for claim in &taken.claims {
                            restore_claim(engine.claims(), claim, &options, now_ms, now);
                        }
                        if let Some(live) = &taken.live_claims {
                            follow_claims(engine.claims(), live, &options, now_ms, now);
                        }
                        for delivery in &taken.ended {
                            // Its claim ended elsewhere: over here too, before
                            // the assistant is told, so that the room is free
                            // here once the assistant is gone.
                            if let Some(key) = ClaimKey::parse(&delivery.claim) {
                                engine.claims().forget(&key);
                            }
                            outbox.stop_ended(delivery, &find, &options);
                        }
                        outbox.resume(taken.deliveries, &find, engine.claims(), &options);
                    }
                    Ok(Err(err)) => tracing::warn!(%err, "cannot read pending deliveries"),
                    Err(err) => tracing::warn!(%err, "the pending-deliveries read failed"),
                }
                if !fenced && fence_after.is_some_and(|after| renewed.elapsed() >= after) {
                    fenced = true;
                    tracing::error!(
                        "cannot renew the leases on this server's deliveries: stopping its assistants until the shared store is back"
                    );
                    for rule in engine.rules().iter() {
                        for action in rule.actions() {
                            action.fence();
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL_EVERY) => {}
                    () = woken.notified() => {
                        // Woken by another server's change: looked at soon,
                        // but at most this often however busy the others are.
                        tokio::time::sleep(WOKEN_GAP).await;
                    }
                }
            }
        })
    }
}

/// Least time between two polls woken by other servers' changes.
const WOKEN_GAP: Duration = Duration::from_millis(50);

/// Most time between two looks for due stops: a stop happens at most this
/// late, and one scheduled while the timer sleeps is seen by then.
const STOP_TICK: Duration = Duration::from_millis(500);

/// Runs the stops whose `stop_after` has passed: released, recorded (with a
/// store, committed before their actions are told, as a webhook's are), then
/// dispatched. A failed commit puts them back, to be tried at the next tick.
/// Stops when the task is aborted.
pub(crate) fn spawn_stop_timer(engine: Arc<Engine>, durable: Option<Durable>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wait = engine.next_due().map_or(STOP_TICK, |due| {
                due.saturating_duration_since(Instant::now()).min(STOP_TICK)
            });
            tokio::time::sleep(wait).await;
            let mut decision = engine.fire_due(Instant::now());
            if decision.verdicts.is_empty() {
                continue;
            }
            for verdict in &decision.verdicts {
                tracing::info!("{verdict} (stop_after passed)");
            }
            let Some(durable) = &durable else {
                decision.dispatch();
                continue;
            };
            // A due stop ends its claim only if no other server sharing the
            // store fired it (or cancelled it) first.
            let recorded = recorded(durable, &mut decision)
                .into_iter()
                .map(|change| match change {
                    Change::StopClaim { key } => Change::FireStop { key },
                    other => other,
                })
                .collect();
            match durable.journal.submit(recorded).await {
                Ok(()) => decision.dispatch(),
                Err(StoreError::StopGone { key }) => {
                    tracing::debug!(key, "a due stop was carried out by another server");
                    decision.abandon(engine.claims());
                    // That claim is over here too; the other due stops of
                    // this round fire at the next tick.
                    if let Some(key) = ClaimKey::parse(&key) {
                        engine.claims().forget(&key);
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot record a due stop; it is tried again");
                    decision.abandon(engine.claims());
                }
            }
        }
    })
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
    for released in &decision.released {
        changes.push(Change::StopClaim {
            key: released.key.to_string(),
        });
    }
    // The store keeps wall-clock times, so that a restart (a new `Instant`
    // origin) can tell which claims are still held and when stops are due.
    let now = now_ms();
    for (claim, lease, holder) in &decision.taken {
        let key = claim.key();
        changes.push(Change::Claim(StoredClaim {
            key: key.to_string(),
            expires_ms: now.saturating_add(millis(*lease)),
            holder: holder.to_string(),
            stop: None,
        }));
    }
    let instant = Instant::now();
    for (key, stop) in &decision.scheduled {
        changes.push(Change::ScheduleStop {
            key: key.to_string(),
            stop: StoredStop {
                due_ms: now.saturating_add(millis(stop.due.saturating_duration_since(instant))),
                rule: stop.rule.to_string(),
                cause: stop.cause.as_str().to_owned(),
                room_url: stop.room_url.clone().unwrap_or_default(),
                webhook: String::from_utf8_lossy(&stop.raw).into_owned(),
            },
        });
    }
    for (key, _) in &decision.cancelled {
        changes.push(Change::CancelStop {
            key: key.to_string(),
        });
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

/// What `decision` changed, for the store, with every action call given its
/// delivery ticket first, so that the outbox's poll never takes a
/// just-committed delivery for a forgotten one. On a server that runs no
/// actions the calls are only recorded, for the workers: none is left to
/// carry out here.
fn recorded(durable: &Durable, decision: &mut Decision) -> Vec<Change> {
    if !durable.runs_actions {
        let recorded = changes(decision);
        decision.calls.clear();
        return recorded;
    }
    for call in &mut decision.calls {
        call.event.delivery = durable
            .outbox
            .ticket(call.delivery_id.clone())
            .map(|t| t.counted(call.stats.clone()));
    }
    changes(decision)
}

/// Submits everything webhook `id` changed (its id, and what `rules` decided)
/// as one commit.
pub(crate) fn submit(durable: &Durable, id: &str, rules: Option<&mut Decision>) -> PendingCommit {
    let mut changes = vec![Change::RememberId {
        id: id.to_owned(),
        at_ms: now_ms(),
    }];
    if let Some(rules) = rules {
        changes.extend(recorded(durable, rules));
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
/// being `now`: one another receiver holds. `false`, logged, when the
/// store's key cannot be read.
fn hold_until(claims: &Arc<Claims>, key: &str, expires_ms: i64, now_ms: i64, now: Instant) -> bool {
    let Some(key) = ClaimKey::parse(key) else {
        tracing::warn!(key, "an unreadable claim in the store is ignored");
        return false;
    };
    claims.restore(key, at(expires_ms, now_ms, now));
    true
}

/// The `Instant` of wall-clock time `ms`, `now_ms` being `now`; `now` for a
/// time already past.
fn at(ms: i64, now_ms: i64, now: Instant) -> Instant {
    now + Duration::from_millis(u64::try_from(ms.saturating_sub(now_ms)).unwrap_or(0))
}

/// How long a claim taken here is kept whatever a shared store's view says:
/// longer than a commit can take (the request deadline), so that a claim whose
/// commit lands after the view was read is not dropped.
const CLAIM_SETTLE: Duration = Duration::from_secs(10);

/// Makes this server's memory of claims follow `live`, a shared store's every
/// live claim: taken elsewhere, held here; released elsewhere, released here.
fn follow_claims(
    claims: &Arc<Claims>,
    live: &[StoredClaim],
    options: &ParseOptions,
    now_ms: i64,
    now: Instant,
) {
    let view = live
        .iter()
        .filter_map(|claim| {
            let key = ClaimKey::parse(&claim.key)?;
            let holder: Arc<str> = if claim.holder.is_empty() {
                key.trigger.clone()
            } else {
                Arc::from(claim.holder.as_str())
            };
            let stop = pending_stop(claim, options, now_ms, now);
            Some((key, holder, at(claim.expires_ms, now_ms, now), stop))
        })
        .collect();
    let dropped = claims.sync_shared(view, now, CLAIM_SETTLE);
    if dropped > 0 {
        tracing::debug!(dropped, "claims released by other servers");
    }
}

/// Holds a claim read back at start, with its holder and the stop pending on
/// it (whose webhook is read with `options`, as the server reads them).
/// `false`, logged, when the store's key cannot be read. A stop that cannot
/// be read back is dropped, logged: the claim still ends with its lease.
fn restore_claim(
    claims: &Arc<Claims>,
    claim: &StoredClaim,
    options: &ParseOptions,
    now_ms: i64,
    now: Instant,
) -> bool {
    let Some(key) = ClaimKey::parse(&claim.key) else {
        tracing::warn!(
            key = claim.key,
            "an unreadable claim in the store is ignored"
        );
        return false;
    };
    let holder: Arc<str> = if claim.holder.is_empty() {
        key.trigger.clone()
    } else {
        Arc::from(claim.holder.as_str())
    };
    let stop = pending_stop(claim, options, now_ms, now);
    claims.restore_held(key, holder, at(claim.expires_ms, now_ms, now), stop);
    true
}

/// The stop pending on a stored claim, read back; `None`, logged, when it
/// cannot be (the claim then ends with its lease).
fn pending_stop(
    claim: &StoredClaim,
    options: &ParseOptions,
    now_ms: i64,
    now: Instant,
) -> Option<PendingStop> {
    let stop = claim.stop.as_ref()?;
    let raw = bytes::Bytes::from(stop.webhook.clone().into_bytes());
    let pending = read_back(&raw, &stop.room_url, options)
        .zip(StopCause::parse(&stop.cause))
        .map(|(webhook, cause)| PendingStop {
            due: at(stop.due_ms, now_ms, now),
            rule: Arc::from(stop.rule.as_str()),
            cause,
            webhook,
            raw,
            room_url: (!stop.room_url.is_empty()).then(|| stop.room_url.clone()),
        });
    if pending.is_none() {
        tracing::warn!(
            key = claim.key,
            "a stored pending stop cannot be read back; the claim ends with its lease"
        );
    }
    pending
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
