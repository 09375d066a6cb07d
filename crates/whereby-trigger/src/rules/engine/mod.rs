//! The rule engine: folds room state, evaluates each trigger, takes claims, and
//! says which actions to start or stop.
//!
//! [`Engine::decide`] is synchronous and does no I/O, so the server, `replay`
//! and tests all run exactly the same logic; the server then hands
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
#[non_exhaustive]
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
    /// Claims this decision took, with their lease.
    pub(crate) taken: Vec<(ClaimHandle, Duration)>,
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

    /// Undoes the claims of a decision that will not be carried out (its commit
    /// failed, or it was only a dry run): nothing fired, and the claims a stop
    /// released are held again, so Whereby's retry finds the state as it was.
    pub fn abandon(self, claims: &Arc<Claims>) {
        for (claim, _) in &self.taken {
            claim.give_back();
        }
        for (key, expires) in self.released {
            claims.restore(key, expires);
        }
    }

    /// Starts and stops the actions. Returns at once: actions do slow work on
    /// tasks of their own.
    pub(crate) fn dispatch(self) {
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
    pub(crate) fn rooms(&self) -> &Rooms {
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
                    decision.taken.push((handle.clone(), rule.lease));
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
mod tests;
