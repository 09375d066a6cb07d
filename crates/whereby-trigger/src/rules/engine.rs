//! The rule engine: folds room state, evaluates each trigger, takes claims, and
//! says which actions to start or stop.
//!
//! [`Engine::decide`] is synchronous and does no I/O, so the server, `replay`
//! and tests all run exactly the same logic; [`Decision::dispatch`] then hands
//! the work to the actions.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use whereby_webhook::{EventType, WebhookEvent};

use crate::actions::{Action, ActionEvent, ActionKind};
#[cfg(feature = "cel")]
use crate::rules::cel::{When, WhenInput};
use crate::state::claims::{ClaimHandle, ClaimKey, Claims, OncePer};
use crate::state::room::{RoomKey, RoomView, Rooms};
use crate::util::now_ms;

/// A Rust condition added to a rule, ANDed with its `when`.
pub type RulePredicate = Arc<dyn Fn(&WebhookEvent) -> bool + Send + Sync>;

/// One trigger, ready to evaluate.
#[derive(Clone)]
pub struct Rule {
    name: Arc<str>,
    on: Vec<EventType>,
    #[cfg(feature = "cel")]
    when: Option<Arc<When>>,
    predicate: Option<RulePredicate>,
    once_per: OncePer,
    lease: Duration,
    stop_on: Vec<EventType>,
    actions: Vec<Arc<dyn Action>>,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rule");
        d.field("name", &self.name).field("on", &self.on);
        #[cfg(feature = "cel")]
        d.field("when", &self.when.as_ref().map(|w| w.source()));
        d.field("once_per", &self.once_per)
            .field("lease", &self.lease)
            .field("stop_on", &self.stop_on)
            .field(
                "actions",
                &self.actions.iter().map(|a| a.kind()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// A rule named `name` that fires on `on`, once per event, with the default
    /// lease and no action yet.
    pub fn new(name: impl Into<Arc<str>>, on: impl IntoIterator<Item = EventType>) -> Rule {
        Rule {
            name: name.into(),
            on: on.into_iter().collect(),
            #[cfg(feature = "cel")]
            when: None,
            predicate: None,
            once_per: OncePer::Event,
            lease: crate::state::claims::DEFAULT_LEASE,
            stop_on: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Sets the CEL condition.
    #[cfg(feature = "cel")]
    pub fn when(mut self, when: When) -> Rule {
        self.when = Some(Arc::new(when));
        self
    }

    /// Sets a CEL condition shared with other rules (e.g. across reloads).
    #[cfg(feature = "cel")]
    pub fn when_shared(mut self, when: Arc<When>) -> Rule {
        self.when = Some(when);
        self
    }

    /// Adds a Rust condition, ANDed with `when`.
    pub fn predicate(
        mut self,
        predicate: impl Fn(&WebhookEvent) -> bool + Send + Sync + 'static,
    ) -> Rule {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Sets what one firing claims.
    pub fn once_per(mut self, once_per: OncePer) -> Rule {
        self.once_per = once_per;
        self
    }

    /// Sets the longest a claim is held.
    pub fn lease(mut self, lease: Duration) -> Rule {
        self.lease = lease;
        self
    }

    /// Sets the event types that stop the rule's assistants in their room.
    pub fn stop_on(mut self, types: impl IntoIterator<Item = EventType>) -> Rule {
        self.stop_on = types.into_iter().collect();
        self
    }

    /// Adds an action.
    pub fn action(mut self, action: Arc<dyn Action>) -> Rule {
        self.actions.push(action);
        self
    }

    /// The rule's actions.
    pub fn actions(&self) -> &[Arc<dyn Action>] {
        &self.actions
    }
}

/// What happened to one rule for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The rule fired and holds `claim`.
    Fired {
        /// The rule.
        trigger: Arc<str>,
        /// What it claimed.
        claim: ClaimKey,
    },
    /// The rule matched, but `claim` is already held: no second assistant.
    Suppressed {
        /// The rule.
        trigger: Arc<str>,
        /// The claim that is held.
        claim: ClaimKey,
    },
    /// The rule did not match.
    NotMatched {
        /// The rule.
        trigger: Arc<str>,
        /// Why.
        reason: String,
    },
    /// A `stop_on` event released the rule's claims in the room.
    Stopped {
        /// The rule.
        trigger: Arc<str>,
        /// The claims released.
        released: Vec<ClaimKey>,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Fired { trigger, claim } => write!(f, "{trigger}: fired (claimed {claim})"),
            Verdict::Suppressed { trigger, claim } => {
                write!(f, "{trigger}: suppressed ({claim} is already claimed)")
            }
            Verdict::NotMatched { trigger, reason } => {
                write!(f, "{trigger}: not matched ({reason})")
            }
            Verdict::Stopped { trigger, released } => {
                let keys: Vec<String> = released.iter().map(ToString::to_string).collect();
                write!(f, "{trigger}: stopped (released {})", keys.join(", "))
            }
        }
    }
}

/// One action call a decision implies.
pub(crate) struct Call {
    pub(crate) action: Arc<dyn Action>,
    pub(crate) event: ActionEvent,
    /// `<trigger>:<event id>[:stop]:<kind>`: unique per call, stable across
    /// restarts, so a redelivered call is recognised.
    pub(crate) delivery_id: String,
}

/// The engine's answer for one event, with the action calls it implies.
#[derive(Default)]
pub struct Decision {
    /// One verdict per rule concerned, in rule order (stops first).
    pub verdicts: Vec<Verdict>,
    /// The room's state after the event.
    pub room: Option<RoomView>,
    pub(crate) room_key: Option<RoomKey>,
    /// The room's state as the store keeps it.
    pub(crate) room_state: Option<String>,
    /// Claims this decision took, with their expiry (ms since the epoch).
    pub(crate) taken: Vec<(ClaimKey, i64)>,
    /// Claims a `stop_on` released, with when they would have expired.
    pub(crate) released: Vec<(ClaimKey, Instant)>,
    pub(crate) calls: Vec<Call>,
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("verdicts", &self.verdicts)
            .field("room", &self.room)
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl Decision {
    /// Whether any rule fired.
    pub fn fired(&self) -> bool {
        self.verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Fired { .. }))
    }

    /// Undoes the claims of a decision whose commit failed: nothing fired, and
    /// the claims a stop released are held again, so Whereby's retry finds the
    /// state as it was.
    pub fn abandon(self, claims: &Arc<Claims>) {
        for call in &self.calls {
            if let Some(claim) = &call.event.claim {
                claim.release();
            }
        }
        for (key, expires) in self.released {
            claims.restore(key, expires);
        }
    }

    /// Starts and stops the actions. Returns at once: actions do slow work on
    /// tasks of their own.
    pub fn dispatch(self) {
        for Call { action, event, .. } in self.calls {
            let tracked = action.tracks_delivery();
            let ticket = event.delivery.clone();
            let event = Arc::new(event);
            match event.action {
                ActionKind::Start => action.start(event),
                ActionKind::Stop => action.stop(event),
            }
            if !tracked && let Some(ticket) = ticket {
                ticket.done();
            }
        }
    }
}

/// Rules, room state and claims. Rules can be replaced while running (config
/// reload); claims and room state survive the replacement.
pub struct Engine {
    rules: RwLock<Arc<[Rule]>>,
    rooms: Rooms,
    claims: Arc<Claims>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with `rules`, forgetting rooms idle for longer than the longest lease.
    pub fn new(rules: Vec<Rule>) -> Engine {
        let idle = rules
            .iter()
            .map(|r| r.lease)
            .max()
            .unwrap_or(crate::state::claims::DEFAULT_LEASE);
        Engine {
            rules: RwLock::new(rules.into()),
            rooms: Rooms::new(idle),
            claims: Claims::new(),
        }
    }

    /// The current rules.
    pub fn rules(&self) -> Arc<[Rule]> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the rules; events already being decided finish with the old ones.
    pub fn replace_rules(&self, rules: Vec<Rule>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules.into();
    }

    /// The claims, for inspection.
    pub fn claims(&self) -> &Arc<Claims> {
        &self.claims
    }

    /// The room states, e.g. to restore them from a store.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// The state of `room`, if known.
    pub fn room(&self, room: &RoomKey) -> Option<RoomView> {
        self.rooms.get(room)
    }

    /// Decides what `event` (whose body was `raw` and whose room is `room_url`)
    /// starts and stops, taking and releasing claims as it goes.
    pub fn decide(
        &self,
        event: &WebhookEvent,
        raw: &Bytes,
        room_url: &str,
        now: Instant,
    ) -> Decision {
        let Some(event_type) = event.event_type() else {
            return Decision::default();
        };
        let Some(in_room) = event.in_room() else {
            return Decision::default();
        };
        let room_key = RoomKey::of(in_room);
        let view = self.rooms.fold(event, now);
        let rules = self.rules();
        let mut decision = Decision {
            room: view.clone(),
            room_state: self.rooms.export(&room_key),
            room_key: Some(room_key.clone()),
            ..Decision::default()
        };
        let calls =
            |decision: &mut Decision, kind: ActionKind, rule: &Rule, claim: Option<ClaimHandle>| {
                let mut seen: Vec<&str> = Vec::new();
                for action in &rule.actions {
                    // Two actions of one kind on a rule get distinct delivery ids.
                    let n = seen.iter().filter(|k| **k == action.kind()).count();
                    seen.push(action.kind());
                    let stop = if kind == ActionKind::Stop {
                        ":stop"
                    } else {
                        ""
                    };
                    let suffix = if n == 0 {
                        String::new()
                    } else {
                        format!("#{}", n + 1)
                    };
                    decision.calls.push(Call {
                        action: action.clone(),
                        event: ActionEvent {
                            action: kind,
                            trigger: rule.name.clone(),
                            room_url: room_url.to_owned(),
                            room: room_key.clone(),
                            webhook: event.clone(),
                            raw: raw.clone(),
                            claim: claim.clone(),
                            delivery: None,
                        },
                        delivery_id: format!(
                            "{}:{}{stop}:{}{suffix}",
                            rule.name,
                            event.id(),
                            action.kind()
                        ),
                    });
                }
            };

        // Stops first, so a rule that both stops and starts on one type restarts.
        for rule in rules.iter().filter(|r| r.stop_on.contains(&event_type)) {
            let released = self.claims.release_room(&rule.name, &room_key, now);
            if released.is_empty() {
                continue;
            }
            calls(&mut decision, ActionKind::Stop, rule, None);
            decision.verdicts.push(Verdict::Stopped {
                trigger: rule.name.clone(),
                released: released.iter().map(|(k, _)| k.clone()).collect(),
            });
            decision.released.extend(released);
        }

        let mut input = WhenCache::default();
        for rule in rules.iter().filter(|r| r.on.contains(&event_type)) {
            if let Some(reason) = self.mismatch(rule, event, raw, view.as_ref(), &mut input) {
                decision.verdicts.push(Verdict::NotMatched {
                    trigger: rule.name.clone(),
                    reason,
                });
                continue;
            }
            let key = ClaimKey::new(
                rule.name.clone(),
                rule.once_per,
                room_key.clone(),
                event.id(),
                in_room.room_session_id(),
            );
            match self.claims.try_claim(key.clone(), rule.lease, now) {
                Some(handle) => {
                    let lease_ms = i64::try_from(rule.lease.as_millis()).unwrap_or(i64::MAX);
                    decision
                        .taken
                        .push((key.clone(), now_ms().saturating_add(lease_ms)));
                    calls(&mut decision, ActionKind::Start, rule, Some(handle));
                    decision.verdicts.push(Verdict::Fired {
                        trigger: rule.name.clone(),
                        claim: key,
                    });
                }
                None => decision.verdicts.push(Verdict::Suppressed {
                    trigger: rule.name.clone(),
                    claim: key,
                }),
            }
        }
        decision
    }

    /// Why `rule` does not match, or `None` when it does.
    fn mismatch(
        &self,
        rule: &Rule,
        event: &WebhookEvent,
        raw: &Bytes,
        room: Option<&RoomView>,
        input: &mut WhenCache,
    ) -> Option<String> {
        if let Some(predicate) = &rule.predicate {
            let matched =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| predicate(event)));
            match matched {
                Ok(true) => {}
                Ok(false) => return Some("the Rust predicate returned false".to_owned()),
                Err(_) => {
                    tracing::error!(trigger = %rule.name, id = event.id(), "the rule's Rust predicate panicked; counted as false");
                    return Some("the Rust predicate panicked".to_owned());
                }
            }
        }
        #[cfg(not(feature = "cel"))]
        {
            let _ = (raw, room, input);
            None
        }
        #[cfg(feature = "cel")]
        {
            let when = rule.when.as_ref()?;
            let input = input.input.get_or_insert_with(|| {
                let json = serde_json::from_slice(raw).unwrap_or(serde_json::Value::Null);
                WhenInput::new(&json, room)
            });
            match when.eval(input) {
                Ok(true) => None,
                Ok(false) => Some("`when` is false".to_owned()),
                Err(err) => {
                    tracing::warn!(trigger = %rule.name, id = event.id(), error = %err, "`when` failed; counted as false");
                    Some(format!("`when` failed: {err}"))
                }
            }
        }
    }
}

/// What `when` sees of one event: the webhook as JSON is only needed there, so
/// it is converted at most once, for the first rule that has a `when`.
#[derive(Default)]
struct WhenCache {
    #[cfg(feature = "cel")]
    input: Option<WhenInput>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// An action that records what it is asked to do.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(ActionKind, String, String)>>);

    impl Action for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        fn start(&self, event: Arc<ActionEvent>) {
            self.0.lock().unwrap().push((
                ActionKind::Start,
                event.trigger.to_string(),
                event.event_id().to_owned(),
            ));
        }
        fn stop(&self, event: Arc<ActionEvent>) {
            self.0.lock().unwrap().push((
                ActionKind::Stop,
                event.trigger.to_string(),
                event.event_id().to_owned(),
            ));
        }
    }

    fn webhook(
        event_type: &str,
        id: &str,
        at: &str,
        data: serde_json::Value,
    ) -> (WebhookEvent, Bytes) {
        let mut v: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample(event_type).unwrap()).unwrap();
        v["id"] = json!(id);
        v["createdAt"] = json!(at);
        for (k, val) in data.as_object().unwrap() {
            v["data"][k] = val.clone();
        }
        let raw = Bytes::from(v.to_string());
        (whereby_webhook::parse(&raw).unwrap(), raw)
    }

    fn decide(engine: &Engine, e: &(WebhookEvent, Bytes)) -> Decision {
        engine.decide(
            &e.0,
            &e.1,
            "https://acme.whereby.com/standup-3f9a2c",
            Instant::now(),
        )
    }

    fn names(d: &Decision) -> Vec<String> {
        d.verdicts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn once_per_session_fires_once_and_stop_on_releases() {
        let recorder = Arc::new(Recorder::default());
        let rule = Rule::new(
            "note-taker",
            [EventType::RoomSessionStarted, EventType::AssistantRequested],
        )
        .once_per(OncePer::Session)
        .stop_on([EventType::RoomSessionEnded])
        .action(recorder.clone());
        let engine = Engine::new(vec![rule]);
        let started = webhook(
            "room.session.started",
            "e1",
            "2026-11-02T09:00:00Z",
            json!({}),
        );
        let requested = webhook(
            "assistant.requested",
            "e2",
            "2026-11-02T09:01:00Z",
            json!({}),
        );
        let ended = webhook(
            "room.session.ended",
            "e3",
            "2026-11-02T10:00:00Z",
            json!({}),
        );

        let d = decide(&engine, &started);
        assert!(d.fired());
        d.dispatch();
        let d = decide(&engine, &requested);
        assert!(!d.fired());
        assert!(names(&d)[0].contains("suppressed"), "{:?}", names(&d));
        d.dispatch();
        let d = decide(&engine, &ended);
        assert!(matches!(&d.verdicts[0], Verdict::Stopped { released, .. } if released.len() == 1));
        d.dispatch();
        // A new session fires again.
        let again = webhook(
            "room.session.started",
            "e4",
            "2026-11-02T11:00:00Z",
            json!({"roomSessionId": "s2"}),
        );
        assert!(decide(&engine, &again).fired());

        let calls = recorder.0.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                (ActionKind::Start, "note-taker".into(), "e1".into()),
                (ActionKind::Stop, "note-taker".into(), "e3".into()),
            ]
        );
    }

    #[cfg(feature = "cel")]
    #[test]
    fn when_sees_the_folded_room_and_failures_are_false() {
        let rule = Rule::new("second-joiner", [EventType::RoomClientJoined])
            .when(When::compile("room.numClients >= 2 && data.roleName == 'visitor'").unwrap())
            .action(Arc::new(Recorder::default()));
        let broken = Rule::new("broken", [EventType::RoomClientJoined])
            .when(When::compile("data.nope > 1").unwrap())
            .action(Arc::new(Recorder::default()));
        let engine = Engine::new(vec![rule, broken]);
        let host = webhook(
            "room.client.joined",
            "j1",
            "2026-11-02T09:00:00Z",
            json!({"numClients": 1}),
        );
        let d = decide(&engine, &host);
        assert!(!d.fired());
        assert!(names(&d)[0].contains("`when` is false"));
        assert!(names(&d)[1].contains("`when` failed"));
        let visitor = webhook(
            "room.client.joined",
            "j2",
            "2026-11-02T09:00:05Z",
            json!({"numClients": 2, "roleName": "visitor", "numClientsByRoleName": {"host": 1, "visitor": 1}}),
        );
        let d = decide(&engine, &visitor);
        assert!(d.fired(), "{:?}", names(&d));
        assert_eq!(d.room.as_ref().unwrap().num_clients, 2);
    }

    #[test]
    fn once_per_room_and_event() {
        let per_room = Rule::new("room", [EventType::RoomClientJoined]).once_per(OncePer::Room);
        let per_event = Rule::new("event", [EventType::RoomClientJoined]);
        let engine = Engine::new(vec![per_room, per_event]);
        let a = webhook("room.client.joined", "a", "2026-11-02T09:00:00Z", json!({}));
        let b = webhook("room.client.joined", "b", "2026-11-02T09:00:01Z", json!({}));
        let other_room = webhook(
            "room.client.joined",
            "c",
            "2026-11-02T09:00:01Z",
            json!({"roomName": "/other"}),
        );
        assert_eq!(
            decide(&engine, &a)
                .verdicts
                .iter()
                .filter(|v| matches!(v, Verdict::Fired { .. }))
                .count(),
            2
        );
        let d = decide(&engine, &b);
        assert!(matches!(d.verdicts[0], Verdict::Suppressed { .. }));
        assert!(matches!(d.verdicts[1], Verdict::Fired { .. }));
        assert!(matches!(
            decide(&engine, &other_room).verdicts[0],
            Verdict::Fired { .. }
        ));
    }

    #[test]
    fn a_released_claim_lets_the_rule_fire_again() {
        let engine = Engine::new(vec![
            Rule::new("r", [EventType::AssistantRequested]).once_per(OncePer::Room),
        ]);
        let a = webhook(
            "assistant.requested",
            "a",
            "2026-11-02T09:00:00Z",
            json!({}),
        );
        let b = webhook(
            "assistant.requested",
            "b",
            "2026-11-02T09:00:01Z",
            json!({}),
        );
        let d = decide(&engine, &a);
        assert!(d.fired());
        // The assistant ended: its action releases the claim.
        let key = match &d.verdicts[0] {
            Verdict::Fired { claim, .. } => claim.clone(),
            other => panic!("{other:?}"),
        };
        assert!(!decide(&engine, &b).fired());
        let _ = engine.claims().release_room("r", &key.room, Instant::now());
        assert!(decide(&engine, &b).fired());
    }

    #[test]
    fn rust_predicates_gate_rules_and_panics_count_as_false() {
        let engine = Engine::new(vec![
            Rule::new("gated", [EventType::RoomSessionStarted])
                .predicate(|e| e.in_room().is_some_and(|r| r.subdomain() == "globex")),
            Rule::new("panicky", [EventType::RoomSessionStarted]).predicate(|_| panic!("bug")),
        ]);
        let e = webhook(
            "room.session.started",
            "a",
            "2026-11-02T09:00:00Z",
            json!({}),
        );
        let d = decide(&engine, &e);
        assert!(!d.fired());
        assert!(names(&d)[1].contains("panicked"));
        let g = webhook(
            "room.session.started",
            "b",
            "2026-11-02T09:00:00Z",
            json!({"subdomain": "globex"}),
        );
        assert!(decide(&engine, &g).fired());
    }

    #[test]
    fn replacing_rules_keeps_claims() {
        let engine = Engine::new(vec![
            Rule::new("r", [EventType::AssistantRequested]).once_per(OncePer::Room),
        ]);
        let a = webhook(
            "assistant.requested",
            "a",
            "2026-11-02T09:00:00Z",
            json!({}),
        );
        assert!(decide(&engine, &a).fired());
        engine.replace_rules(vec![
            Rule::new("r", [EventType::AssistantRequested]).once_per(OncePer::Room),
        ]);
        let b = webhook(
            "assistant.requested",
            "b",
            "2026-11-02T09:00:01Z",
            json!({}),
        );
        assert!(
            !decide(&engine, &b).fired(),
            "the claim survived the reload"
        );
    }
}
