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
    /// Deliveries finished here whose `Done`/`Dead` may not be committed yet: a
    /// poll must not take them for forgotten ones. Emptied by the poll once the
    /// store no longer lists them as pending.
    settled: Mutex<HashMap<String, Instant>>,
    /// Starts told to stop because their claim ended elsewhere, until their
    /// assistant has ended: told once, not at every poll.
    ending: Mutex<HashSet<String>>,
}

/// A settled delivery still listed as pending after this long was made pending
/// again (`outbox retry`), not left behind by a slow commit.
const SETTLE_WINDOW: Duration = Duration::from_secs(3);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl DeliveryLedger for Outbox {
    fn done(&self, id: &str) {
        self.journal
            .commit_later(vec![Change::Done { id: id.to_owned() }]);
    }

    fn attempted(&self, id: &str, attempts: u32, error: &str) {
        self.journal.commit_later(vec![Change::Attempted {
            id: id.to_owned(),
            attempts,
            error: error.to_owned(),
        }]);
    }

    fn dead(&self, id: &str, error: &str) {
        self.journal.commit_later(vec![Change::Dead {
            id: id.to_owned(),
            error: error.to_owned(),
        }]);
    }

    fn released(&self, id: &str, finished: bool) {
        if finished {
            self.settled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_owned(), Instant::now());
        }
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
    /// An outbox recording through `journal`.
    pub(crate) fn new(journal: Arc<dyn Journal>) -> Arc<Outbox> {
        Arc::new(Outbox {
            journal,
            in_flight: Mutex::new(HashSet::new()),
            settled: Mutex::new(HashMap::new()),
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
        self.issue(id, 0, now_ms())
    }

    /// A ticket for a stored delivery taken up again, with the attempts it has
    /// had and its queueing time; `None` when this process already carries it.
    pub(crate) fn resumed(self: &Arc<Self>, delivery: &Delivery) -> Option<DeliveryTicket> {
        self.issue(delivery.id.clone(), delivery.attempts, delivery.created_ms)
    }

    fn issue(
        self: &Arc<Self>,
        id: String,
        attempts: u32,
        queued_ms: i64,
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
        fresh.then(|| DeliveryTicket::new(id, attempts, queued_ms, ledger))
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
        // A settled delivery that the store no longer lists as pending has had its
        // fate committed; one still listed is either not yet committed or was
        // made pending again by `outbox retry` after it was committed dead.
        {
            let listed: HashSet<&str> = pending.iter().map(|d| d.id.as_str()).collect();
            let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
            settled.retain(|id, at| listed.contains(id.as_str()) && at.elapsed() < SETTLE_WINDOW);
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

/// The action event of a stored delivery.
fn rebuild(
    delivery: &Delivery,
    claims: &Arc<Claims>,
    options: &ParseOptions,
    now: Instant,
    ticket: Option<DeliveryTicket>,
) -> Option<ActionEvent> {
    let raw = Bytes::from(delivery.webhook.clone().into_bytes());
    let webhook = whereby_webhook::parse_with(&raw, options).ok()?.event;
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

        // Without the server's default it could not be read back at all.
        outbox().resume(vec![stored_start()], &find, &claims, &ParseOptions::new());
        assert_eq!(rooms.0.lock().unwrap().len(), 1);
    }
}
