//! The outbox: action deliveries that must happen at least once.
//!
//! Every action call a webhook causes is committed to the store, with the
//! webhook, before the webhook is answered. The action then reports through its
//! [`DeliveryTicket`]: `done` removes the delivery, `dead` keeps it as a dead
//! letter, and a ticket dropped without either (the server stopped or crashed)
//! leaves it pending, so that it is delivered again on the next start — or
//! sooner, when `whereby-trigger outbox retry` asks for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use whereby_webhook::ParseOptions;

use crate::actions::{Action, ActionEvent, ActionKind, DeliveryLedger, DeliveryTicket};
use crate::state::claims::{ClaimKey, Claims};
use crate::state::room::RoomKey;
use crate::store::{Change, Delivery, DeliveryStatus, Journal};
use crate::util::now_ms;

/// Why a stored delivery has no action to carry it out (see [`Outbox::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Missing {
    /// No trigger of that name is configured.
    Trigger,
    /// The trigger has no action of that kind.
    Action,
}

/// Finds the action of a stored delivery by its trigger's name and its kind.
pub(crate) type FindAction<'a> = &'a dyn Fn(&str, &str) -> Result<Arc<dyn Action>, Missing>;

/// How often the store is read for deliveries to resume or retry.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);

/// The deliveries of this process, and the journal that records their fate.
pub(crate) struct Outbox {
    journal: Arc<dyn Journal>,
    in_flight: Mutex<HashSet<String>>,
    /// Deliveries finished here, with their outcome (`Done`, `Dead`), until a
    /// while after that outcome is committed: a poll must not take them for
    /// forgotten ones, and an outcome whose commit failed is submitted again.
    settled: Arc<Mutex<HashMap<String, Settled>>>,
    /// Starts told to stop because their claim ended elsewhere, until their
    /// assistant has ended: told once, not at every poll.
    ending: Mutex<HashSet<String>>,
}

/// A delivery finished here.
struct Settled {
    /// When it finished (wall clock, ms): a delivery listed as queued after
    /// that was made pending again (`outbox retry`), and is carried out anew.
    at_ms: i64,
    /// What the store is to record: `Done` or `Dead`.
    change: Change,
    /// When that was last submitted.
    submitted: Instant,
    /// When its commit succeeded.
    committed: Option<Instant>,
}

/// An outcome not committed after this long (its commit failed: the store
/// was unavailable) is submitted again.
const SETTLE_WINDOW: Duration = Duration::from_secs(3);

/// How long a delivery is still known as settled once its outcome is
/// committed: longer than a poll takes, so that a poll that read the store
/// just before that commit does not take the delivery for a forgotten one.
const FORGET_AFTER: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl DeliveryLedger for Outbox {
    fn done(&self, id: &str) {
        self.settle(id, Change::Done { id: id.to_owned() });
    }

    fn attempted(&self, id: &str, attempts: u32, error: &str, retry_at_ms: Option<i64>) {
        self.journal.commit_later(vec![Change::Attempted {
            id: id.to_owned(),
            attempts,
            error: error.to_owned(),
            retry_at_ms,
        }]);
    }

    fn dead(&self, id: &str, error: &str) {
        self.settle(
            id,
            Change::Dead {
                id: id.to_owned(),
                error: error.to_owned(),
            },
        );
    }

    fn released(&self, id: &str, _finished: bool) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.ending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

impl Outbox {
    /// Records the outcome of delivery `id`, and remembers it until a while
    /// after it is committed.
    fn settle(&self, id: &str, change: Change) {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.to_owned(),
                Settled {
                    at_ms: now_ms(),
                    change: change.clone(),
                    submitted: Instant::now(),
                    committed: None,
                },
            );
        self.submit_outcome(id.to_owned(), change);
    }

    /// Submits the outcome of delivery `id`, and notes when it is committed.
    fn submit_outcome(&self, id: String, change: Change) {
        let commit = self.journal.submit(vec![change]);
        let settled = self.settled.clone();
        let note = move || {
            if let Some(s) = settled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&id)
            {
                s.committed = Some(Instant::now());
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if commit.await.is_ok() {
                        note();
                    }
                });
            }
            // Only while a runtime closes: submitted all the same, its result
            // taken on trust.
            Err(_) => note(),
        }
    }

    /// An outbox recording through `journal`.
    pub(crate) fn new(journal: Arc<dyn Journal>) -> Arc<Outbox> {
        Arc::new(Outbox {
            journal,
            in_flight: Mutex::new(HashSet::new()),
            settled: Arc::new(Mutex::new(HashMap::new())),
            ending: Mutex::new(HashSet::new()),
        })
    }

    /// How many deliveries are being carried out by this process.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.lock().map_or(0, |set| set.len())
    }

    /// The ids of the deliveries this process carries out now.
    pub(crate) fn in_flight_ids(&self) -> Vec<String> {
        self.in_flight
            .lock()
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A ticket for delivery `id`, queued now, or `None` when this process
    /// already carries it out (so a poll never starts a second copy).
    pub(crate) fn ticket(self: &Arc<Self>, id: String) -> Option<DeliveryTicket> {
        self.issue(id, 0, now_ms(), None)
    }

    /// A ticket for a stored delivery taken up again, with the attempts it has
    /// had and its queueing time; `None` when this process already carries it.
    pub(crate) fn resumed(self: &Arc<Self>, delivery: &Delivery) -> Option<DeliveryTicket> {
        self.issue(
            delivery.id.clone(),
            delivery.attempts,
            delivery.created_ms,
            delivery.retry_at_ms,
        )
    }

    fn issue(
        self: &Arc<Self>,
        id: String,
        attempts: u32,
        queued_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Option<DeliveryTicket> {
        if self
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return None;
        }
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        let ledger: Arc<dyn DeliveryLedger> = self.clone();
        fresh.then(|| DeliveryTicket::new(id, attempts, queued_ms, ledger).due_at(retry_at_ms))
    }

    /// Resumes every delivery of `pending` (the store's) that this process is not
    /// carrying out: after a restart, and after `outbox retry`. A start whose
    /// claim is gone is done (the assistant's time has passed); a delivery whose
    /// trigger or action no longer exists stays queued and is logged.
    ///
    /// `find` names the action of a stored delivery from its trigger and kind
    /// (the rules in force); `claims` gives a resumed start its claim back.
    /// Stored webhooks are read with `options`, the server's (its default
    /// subdomain).
    pub(crate) fn resume(
        self: &Arc<Self>,
        pending: Vec<Delivery>,
        find: FindAction<'_>,
        claims: &Arc<Claims>,
        options: &ParseOptions,
    ) {
        // A settled delivery is forgotten a while after its outcome is
        // committed. One listed as queued after it settled was made pending
        // again by `outbox retry`: it is carried out anew. An outcome whose
        // commit failed (the store was unavailable) is submitted again.
        {
            let listed: HashMap<&str, i64> = pending
                .iter()
                .map(|d| (d.id.as_str(), d.created_ms))
                .collect();
            let mut again = Vec::new();
            let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
            settled.retain(|id, s| {
                let retried = listed
                    .get(id.as_str())
                    .is_some_and(|queued| *queued > s.at_ms);
                let forgotten = s.committed.is_some_and(|at| at.elapsed() >= FORGET_AFTER);
                if !retried && s.committed.is_none() && s.submitted.elapsed() >= SETTLE_WINDOW {
                    s.submitted = Instant::now();
                    again.push((id.clone(), s.change.clone()));
                }
                !retried && !forgotten
            });
            drop(settled);
            for (id, change) in again {
                self.submit_outcome(id, change);
            }
        }
        let now = Instant::now();
        for delivery in pending {
            if delivery.status != DeliveryStatus::Pending {
                continue;
            }
            let Some(ticket) = self.resumed(&delivery) else {
                continue;
            };
            let action = match find(&delivery.trigger, &delivery.kind) {
                Ok(action) => action,
                Err(Missing::Trigger) => {
                    tracing::warn!(id = %delivery.id, trigger = %delivery.trigger, room = %delivery.room_url, "a pending delivery's trigger is not configured; it stays queued");
                    continue;
                }
                Err(Missing::Action) => {
                    tracing::warn!(id = %delivery.id, trigger = %delivery.trigger, kind = %delivery.kind, room = %delivery.room_url, "a pending delivery's action is not configured; it stays queued");
                    continue;
                }
            };
            // Counted like a fresh call's (a resume is rare: the lookup is fine).
            let trigger: Arc<str> = Arc::from(delivery.trigger.as_str());
            let stats = crate::metrics::metrics()
                .trigger(&trigger)
                .action(action.kind());
            let ticket = ticket.counted(Some(stats));
            let Some(event) = rebuild(&delivery, claims, options, now, Some(ticket.clone())) else {
                tracing::error!(id = %delivery.id, trigger = %delivery.trigger, room = %delivery.room_url, "a pending delivery cannot be read back; marked dead");
                ticket.dead("the stored delivery cannot be read back");
                continue;
            };
            if event.action == ActionKind::Start
                && event.claim.is_none()
                && !delivery.claim.is_empty()
                && delivery.kind == "run"
            {
                tracing::info!(id = %delivery.id, trigger = %delivery.trigger, room = %event.room_label(), "the claim of a pending start has ended; not restarted");
                ticket.done();
                continue;
            }
            tracing::info!(id = %delivery.id, trigger = %delivery.trigger, kind = %delivery.kind, room = %event.room_label(), attempts = delivery.attempts, "resuming a pending delivery");
            let event = Arc::new(event);
            match event.action {
                ActionKind::Start => action.start(event),
                ActionKind::Stop => action.stop(event),
            }
            if !action.tracks_delivery() {
                ticket.done();
            }
        }
    }
}

impl Outbox {
    /// Stops the assistant of `delivery`, a start this server carries out
    /// whose claim ended at another server (a stop received there): its
    /// action is told to stop in the room, as a stop event here would. The
    /// start's own delivery is settled by the action as the assistant ends.
    pub(crate) fn stop_ended(
        &self,
        delivery: &Delivery,
        find: FindAction<'_>,
        options: &ParseOptions,
    ) {
        let first = self
            .ending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(delivery.id.clone());
        if !first {
            return;
        }
        let Ok(action) = find(&delivery.trigger, &delivery.kind) else {
            return;
        };
        let claims = Claims::new();
        let Some(mut event) = rebuild(delivery, &claims, options, Instant::now(), None) else {
            return;
        };
        event.action = ActionKind::Stop;
        tracing::info!(id = %delivery.id, trigger = %delivery.trigger, room = %event.room_label(), "the claim ended at another server: stopping its assistant here");
        action.stop(Arc::new(event));
    }
}

/// A stored webhook, parsed again. One without `data.subdomain` was read by
/// its receiver with a default subdomain that this process may lack (a worker
/// started without the receivers' `--subdomain`); the room URL stored beside it
/// holds that subdomain, so it is read with it rather than given up.
pub(crate) fn read_back(
    raw: &[u8],
    room_url: &str,
    options: &ParseOptions,
) -> Option<whereby_webhook::WebhookEvent> {
    match whereby_webhook::parse_with(raw, options) {
        Ok(parsed) => Some(parsed.event),
        Err(_) if options.default_subdomain().is_none() => {
            let host = room_url.strip_prefix("https://")?;
            let subdomain = host.split_once('.')?.0;
            let options = options.clone().with_default_subdomain(subdomain).ok()?;
            whereby_webhook::parse_with(raw, &options)
                .ok()
                .map(|parsed| parsed.event)
        }
        Err(_) => None,
    }
}

/// The action event of a stored delivery.
fn rebuild(
    delivery: &Delivery,
    claims: &Arc<Claims>,
    options: &ParseOptions,
    now: Instant,
    ticket: Option<DeliveryTicket>,
) -> Option<ActionEvent> {
    let raw = Bytes::from(delivery.webhook.clone().into_bytes());
    let webhook = read_back(&raw, &delivery.room_url, options)?;
    let room = webhook.in_room().map(RoomKey::of);
    let action = match delivery.action.as_str() {
        "start" => ActionKind::Start,
        "stop" => ActionKind::Stop,
        _ => return None,
    };
    let claim = ClaimKey::parse(&delivery.claim).and_then(|key| claims.handle(&key, now));
    Some(ActionEvent {
        action,
        trigger: Arc::from(delivery.trigger.as_str()),
        room_url: (!delivery.room_url.is_empty()).then(|| delivery.room_url.clone()),
        room,
        // A room state that cannot be read back is left out, not the delivery.
        state: delivery
            .room
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok()),
        webhook,
        raw,
        claim,
        delivery: ticket,
    })
}

/// The stored form of an action call about to be made.
pub(crate) fn delivery_of(event: &ActionEvent, kind: &str, id: String) -> Delivery {
    Delivery {
        id,
        trigger: event.trigger.to_string(),
        kind: kind.to_owned(),
        action: event.action.as_str().to_owned(),
        claim: event
            .claim
            .as_ref()
            .map(|c| c.key().to_string())
            .unwrap_or_default(),
        room_url: event.room_url.clone().unwrap_or_default(),
        room: event
            .state
            .as_ref()
            .and_then(|state| serde_json::to_string(state).ok()),
        webhook: String::from_utf8_lossy(&event.raw).into_owned(),
        attempts: 0,
        created_ms: now_ms(),
        status: DeliveryStatus::Pending,
        last_error: None,
        retry_at_ms: None,
        node: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Committer, MemoryStore, Retention};

    /// An action that records the room of every start.
    #[derive(Default)]
    struct Rooms(Mutex<Vec<String>>);

    impl Action for Rooms {
        fn kind(&self) -> &'static str {
            "rooms"
        }
        fn start(&self, event: Arc<ActionEvent>) {
            self.0.lock().unwrap().push(event.room_label());
        }
        fn stop(&self, _: Arc<ActionEvent>) {}
    }

    fn outbox() -> Arc<Outbox> {
        let retention = Retention {
            id_max_age_ms: 60_000,
            room_idle_ms: 60_000,
        };
        Outbox::new(Arc::new(Committer::start(Arc::new(MemoryStore), retention)))
    }

    /// A queued start of a webhook as Whereby sent it before 2025: no subdomain.
    fn stored_start() -> Delivery {
        let mut webhook: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample("assistant.requested").unwrap())
                .unwrap();
        webhook["data"].as_object_mut().unwrap().remove("subdomain");
        Delivery {
            id: "t:e1:rooms".into(),
            trigger: "t".into(),
            kind: "rooms".into(),
            action: "start".into(),
            claim: String::new(),
            room_url: "https://acme.whereby.com/standup-3f9a2c".into(),
            room: None,
            webhook: webhook.to_string(),
            attempts: 0,
            created_ms: now_ms(),
            status: DeliveryStatus::Pending,
            last_error: None,
            retry_at_ms: None,
            node: String::new(),
        }
    }

    #[tokio::test]
    async fn a_stored_webhook_without_subdomain_is_read_back_with_the_default() {
        let rooms = Arc::new(Rooms::default());
        let action: Arc<dyn Action> = rooms.clone();
        let find = |trigger: &str, kind: &str| match (trigger, kind) {
            ("t", "rooms") => Ok(action.clone()),
            ("t", _) => Err(Missing::Action),
            _ => Err(Missing::Trigger),
        };
        let claims = Claims::new();

        // Read back as the server read it: resumed in its room.
        let options = ParseOptions::new().with_default_subdomain("acme").unwrap();
        outbox().resume(vec![stored_start()], &find, &claims, &options);
        assert_eq!(*rooms.0.lock().unwrap(), ["acme/standup-3f9a2c"]);

        // Without it (a worker started without the receivers' --subdomain):
        // read back with the subdomain of the room URL its receiver stored.
        outbox().resume(vec![stored_start()], &find, &claims, &ParseOptions::new());
        assert_eq!(
            *rooms.0.lock().unwrap(),
            ["acme/standup-3f9a2c", "acme/standup-3f9a2c"]
        );

        // With neither, it cannot be read back, and is not started.
        let mut roomless = stored_start();
        roomless.room_url = String::new();
        outbox().resume(vec![roomless], &find, &claims, &ParseOptions::new());
        assert_eq!(rooms.0.lock().unwrap().len(), 2);
    }
}
