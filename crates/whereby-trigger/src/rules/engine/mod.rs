//! The rule engine: folds room state, evaluates each trigger, takes claims, and
//! says which actions to start or stop.
//!
//! [`Engine::decide`] is synchronous and does no I/O, so the server, `replay`
//! and tests all run exactly the same logic; the server then hands
//! the work to the actions. [`Engine::fire_due`] does the same for stops whose
//! `stop_after` has passed.
//!
//! Why one file: [`Rule`] (whose fields only the engine reads), the verdicts
//! and the [`Decision`] are what `decide_at` works with in one pass (stops
//! first, then each rule's condition, the late-start check, its claim and
//! calls), read top to bottom; the tests are already `tests.rs`.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use whereby_webhook::{AnyEventType, WebhookEvent};

use crate::actions::{Action, ActionEvent, ActionKind, delivery_id};
use crate::metrics::{ActionStats, TriggerResult, TriggerStats};
#[cfg(feature = "cel")]
use crate::rules::cel::{When, WhenInput};
use crate::state::claims::{
    ClaimHandle, ClaimKey, Claims, OncePer, PendingStop, Released, StopCause,
};
use crate::state::room::{RoomKey, RoomView, Rooms};

/// A Rust condition added to a rule, ANDed with its `when`.
pub type RulePredicate = Arc<dyn Fn(&WebhookEvent) -> bool + Send + Sync>;

/// One trigger, ready to evaluate.
#[derive(Clone)]
pub struct Rule {
    name: Arc<str>,
    on: Vec<AnyEventType>,
    #[cfg(feature = "cel")]
    when: Option<Arc<When>>,
    predicate: Option<RulePredicate>,
    once_per: OncePer,
    lease: Duration,
    claim: Arc<str>,
    stop_on: Vec<AnyEventType>,
    #[cfg(feature = "cel")]
    stop_when: Option<Arc<When>>,
    stop_after: Option<Duration>,
    actions: Vec<Arc<dyn Action>>,
    /// Its counters, shared with every rule of this name (made at build, so
    /// that deciding counts without a lock).
    stats: Arc<TriggerStats>,
    /// Each action's counters, beside `actions`.
    action_stats: Vec<Arc<ActionStats>>,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rule");
        d.field("name", &self.name).field("on", &self.on);
        #[cfg(feature = "cel")]
        d.field("when", &self.when.as_ref().map(|w| w.source()));
        d.field("once_per", &self.once_per)
            .field("lease", &self.lease)
            .field("claim", &self.claim)
            .field("stop_on", &self.stop_on);
        #[cfg(feature = "cel")]
        d.field("stop_when", &self.stop_when.as_ref().map(|w| w.source()));
        d.field("stop_after", &self.stop_after)
            .field(
                "actions",
                &self.actions.iter().map(|a| a.kind()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// A rule named `name` that fires on `on` (evaluated types, or any other
    /// type by name), once per event, with the default lease and no action yet.
    pub fn new<T: Into<AnyEventType>>(
        name: impl Into<Arc<str>>,
        on: impl IntoIterator<Item = T>,
    ) -> Rule {
        let name = name.into();
        Rule {
            stats: crate::metrics::metrics().trigger(&name),
            action_stats: Vec::new(),
            claim: name.clone(),
            name,
            on: on.into_iter().map(Into::into).collect(),
            #[cfg(feature = "cel")]
            when: None,
            predicate: None,
            once_per: OncePer::Event,
            lease: crate::state::claims::DEFAULT_LEASE,
            stop_on: Vec::new(),
            #[cfg(feature = "cel")]
            stop_when: None,
            stop_after: None,
            actions: Vec::new(),
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The name its claims are held under: its own, or the one it shares
    /// ([`claim`](Self::claim)).
    pub fn claim_name(&self) -> &Arc<str> {
        &self.claim
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

    /// Holds the rule's claims under `name`, shared with every rule that names
    /// it too: whichever fires first holds the room (or session), and a stop
    /// of any of them releases it.
    pub fn claim(mut self, name: impl Into<Arc<str>>) -> Rule {
        self.claim = name.into();
        self
    }

    /// Sets the event types that stop the assistants holding the rule's claims
    /// in their room.
    pub fn stop_on<T: Into<AnyEventType>>(mut self, types: impl IntoIterator<Item = T>) -> Rule {
        self.stop_on = types.into_iter().map(Into::into).collect();
        self
    }

    /// Sets a CEL condition over the room (and the event) that stops the
    /// assistants holding the rule's claims there, checked after every event
    /// in the room.
    #[cfg(feature = "cel")]
    pub fn stop_when(mut self, when: Arc<When>) -> Rule {
        self.stop_when = Some(when);
        self
    }

    /// Makes a stop wait `after`: it happens only if no later event cancels it
    /// by then (an event after which `stop_when` is false; for a `stop_on`
    /// stop, an event that matches the rule).
    pub fn stop_after(mut self, after: Duration) -> Rule {
        self.stop_after = Some(after);
        self
    }

    /// The rule's actions.
    pub fn actions(&self) -> &[Arc<dyn Action>] {
        &self.actions
    }

    /// Adds an action.
    pub fn action(mut self, action: Arc<dyn Action>) -> Rule {
        self.action_stats.push(self.stats.action(action.kind()));
        self.actions.push(action);
        self
    }

    fn has_stops(&self) -> bool {
        #[cfg(feature = "cel")]
        if self.stop_when.is_some() {
            return true;
        }
        !self.stop_on.is_empty()
    }
}

/// What happened to one rule for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The rule fired and holds `claim` (`None` for a webhook without a room,
    /// which claims nothing).
    Fired {
        /// The rule.
        trigger: Arc<str>,
        /// What it claimed.
        claim: Option<ClaimKey>,
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
    /// The rule's `stop_on` or `stop_when` released its claims in the room
    /// (at once, or when its `stop_after` passed).
    Stopped {
        /// The rule.
        trigger: Arc<str>,
        /// The claims released.
        released: Vec<ClaimKey>,
    },
    /// The rule's `stop_on` or `stop_when` asked for a stop that waits
    /// `after` (its `stop_after`).
    StopScheduled {
        /// The rule.
        trigger: Arc<str>,
        /// The claims that will be released.
        claims: Vec<ClaimKey>,
        /// How long the stop waits.
        after: Duration,
    },
    /// An event cancelled the rule's pending stop.
    StopCancelled {
        /// The rule.
        trigger: Arc<str>,
        /// The claims kept.
        claims: Vec<ClaimKey>,
    },
}

fn keys(keys: &[ClaimKey]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Fired {
                trigger,
                claim: Some(claim),
            } => write!(f, "{trigger}: fired (claimed {claim})"),
            Verdict::Fired {
                trigger,
                claim: None,
            } => write!(f, "{trigger}: fired (no room, nothing claimed)"),
            Verdict::Suppressed { trigger, claim } => {
                write!(f, "{trigger}: suppressed ({claim} is already claimed)")
            }
            Verdict::NotMatched { trigger, reason } => {
                write!(f, "{trigger}: not matched ({reason})")
            }
            Verdict::Stopped { trigger, released } => {
                write!(f, "{trigger}: stopped (released {})", keys(released))
            }
            Verdict::StopScheduled {
                trigger,
                claims,
                after,
            } => write!(
                f,
                "{trigger}: stop in {} unless cancelled ({})",
                crate::units::format_duration(*after),
                keys(claims)
            ),
            Verdict::StopCancelled { trigger, claims } => {
                write!(f, "{trigger}: pending stop cancelled ({})", keys(claims))
            }
        }
    }
}

/// One action call a decision implies.
pub(crate) struct Call {
    pub(crate) action: Arc<dyn Action>,
    pub(crate) event: ActionEvent,
    /// `<trigger>:<event id>[:stop]:<kind>` (`actions::delivery_id`, which
    /// encodes each part): unique per call, stable across restarts, so a
    /// redelivered call is recognised.
    pub(crate) delivery_id: String,
    /// The action's counters, for its delivery ticket.
    pub(crate) stats: Option<Arc<ActionStats>>,
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
    /// Claims this decision took, with their lease and the trigger that took them.
    pub(crate) taken: Vec<(ClaimHandle, Duration, Arc<str>)>,
    /// Claims a stop released.
    pub(crate) released: Vec<Released>,
    /// Stops set on claims, to wait out their `stop_after`.
    pub(crate) scheduled: Vec<(ClaimKey, PendingStop)>,
    /// Pending stops this event cancelled.
    pub(crate) cancelled: Vec<(ClaimKey, PendingStop)>,
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
    /// failed, or it was only a dry run): nothing fired, the claims a stop
    /// released are held again, and pending stops are as they were, so
    /// Whereby's retry finds the state as it was.
    pub fn abandon(self, claims: &Arc<Claims>) {
        for (claim, _, _) in &self.taken {
            claim.give_back();
        }
        for released in self.released {
            claims.put_back(released);
        }
        for (key, _) in &self.scheduled {
            claims.set_stop(key, None);
        }
        for (key, stop) in self.cancelled {
            claims.set_stop(&key, Some(stop));
        }
    }

    /// Starts and stops the actions. Returns at once: actions do slow work on
    /// tasks of their own.
    pub(crate) fn dispatch(self) {
        for Call {
            action,
            event,
            stats,
            ..
        } in self.calls
        {
            let tracked = action.tracks_delivery();
            let ticket = event.delivery.clone();
            let event = Arc::new(event);
            match event.action {
                ActionKind::Start => action.start(event),
                ActionKind::Stop => action.stop(event),
            }
            if !tracked {
                match (ticket, stats) {
                    (Some(ticket), _) => ticket.done(),
                    // Without a store there is no ticket to count it.
                    (None, Some(stats)) => stats.count(crate::metrics::ActionResult::Ok),
                    (None, None) => {}
                }
            }
        }
    }

    /// Adds one call per action of `rule`.
    fn push_calls(
        &mut self,
        kind: ActionKind,
        rule: &Rule,
        claim: Option<ClaimHandle>,
        on: &On<'_>,
    ) {
        let mut seen: Vec<&str> = Vec::new();
        for (i, action) in rule.actions.iter().enumerate() {
            // Two actions of one kind on a rule get distinct delivery ids.
            let n = seen.iter().filter(|k| **k == action.kind()).count();
            seen.push(action.kind());
            self.calls.push(Call {
                action: action.clone(),
                event: ActionEvent {
                    action: kind,
                    trigger: rule.name.clone(),
                    room_url: on.room_url.map(str::to_owned),
                    room: on.room.cloned(),
                    state: on.state.cloned(),
                    webhook: on.event.clone(),
                    raw: on.raw.clone(),
                    claim: claim.clone(),
                    delivery: None,
                },
                delivery_id: delivery_id(&rule.name, on.event.id(), kind, action.kind(), n + 1),
                stats: rule.action_stats.get(i).cloned(),
            });
        }
    }

    /// Stops the assistants of `released` claims: one stop per holder, sent to
    /// its actions, and one verdict for `trigger`, the rule that stopped them.
    fn stop(&mut self, trigger: &Arc<str>, released: Vec<Released>, rules: &[Rule], on: &On<'_>) {
        if released.is_empty() {
            return;
        }
        if let Some(rule) = rules.iter().find(|r| r.name == *trigger) {
            rule.stats.count(TriggerResult::Stopped);
        }
        let mut holders: Vec<&Arc<str>> = Vec::new();
        for claim in &released {
            if holders.contains(&&claim.holder) {
                continue;
            }
            holders.push(&claim.holder);
            match rules.iter().find(|r| r.name == claim.holder) {
                Some(holder) => self.push_calls(ActionKind::Stop, holder, None, on),
                None => {
                    tracing::debug!(holder = %claim.holder, "a released claim's trigger is no longer configured; nothing to stop")
                }
            }
        }
        self.verdicts.push(Verdict::Stopped {
            trigger: trigger.clone(),
            released: released.iter().map(|r| r.key.clone()).collect(),
        });
        self.released.extend(released);
    }
}

/// What action calls are about: the webhook, its room and the room's state.
struct On<'a> {
    event: &'a WebhookEvent,
    raw: &'a Bytes,
    room_url: Option<&'a str>,
    room: Option<&'a RoomKey>,
    state: Option<&'a RoomView>,
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

    /// Decides what `event` (whose body was `raw` and whose room is at
    /// `room_url`, if it has one) starts and stops, taking and releasing
    /// claims as it goes. The event is ordered among its room's by its
    /// `createdAt`, as `replay` does; a server orders by what it can believe
    /// ([`decide_at`](Self::decide_at)).
    pub fn decide(
        &self,
        event: &WebhookEvent,
        raw: &Bytes,
        room_url: Option<&str>,
        now: Instant,
    ) -> Decision {
        self.decide_at(event, raw, room_url, now, event.created_at_millis())
    }

    /// [`decide`](Self::decide), with `event` ordered among its room's events
    /// at `at` (ms since the epoch) rather than at its `createdAt`: what room
    /// state is newer (the counts, the session flag) and whether a start was
    /// delivered late. The server passes the time a webhook was received when
    /// its `createdAt` is too far ahead of its clock to believe
    /// ([`ParsedWebhook::ordered_at`](crate::parse::ParsedWebhook::ordered_at)).
    pub fn decide_at(
        &self,
        event: &WebhookEvent,
        raw: &Bytes,
        room_url: Option<&str>,
        now: Instant,
        at: Option<i64>,
    ) -> Decision {
        let room_key = event.in_room().map(RoomKey::of);
        let view = self.rooms.fold_at(event, at, now);
        let rules = self.rules();
        let mut decision = Decision {
            room: view.clone(),
            room_state: room_key.as_ref().and_then(|k| self.rooms.export(k)),
            room_key: room_key.clone(),
            ..Decision::default()
        };
        let on = On {
            event,
            raw,
            room_url,
            room: room_key.as_ref(),
            state: view.as_ref(),
        };
        let mut input = WhenCache::default();

        // Stops first, so a rule that both stops and starts on one type restarts.
        if let Some(room) = &room_key {
            for rule in rules.iter().filter(|r| r.has_stops()) {
                if !self.claims.held_in(&rule.claim, room, now) {
                    continue;
                }
                self.stops(rule, &rules, &on, room, &mut input, now, &mut decision);
            }
        }

        for rule in rules
            .iter()
            .filter(|r| r.on.iter().any(|t| t.matches(event)))
        {
            let reason = self
                .mismatch(rule, event, raw, view.as_ref(), &mut input)
                .or_else(|| self.stale(rule, at, room_key.as_ref()))
                .or_else(|| {
                    // A late start (a join delivered after the leave that
                    // emptied the room) on which `stop_when` holds would be
                    // stopped at the next event, or never if none comes. Only
                    // a late one: a room not seen yet counts no one, and an
                    // invitation there must still start.
                    let late = match (&room_key, at) {
                        (Some(room), Some(at)) => {
                            self.rooms.state_at(room).is_some_and(|state| at < state)
                        }
                        _ => false,
                    };
                    (late && self.stop_condition(rule, &on, &mut input) == Some(true)).then(|| {
                        "delivered after newer room state, on which `stop_when` holds".to_owned()
                    })
                });
            if let Some(reason) = reason {
                rule.stats.count(TriggerResult::NotMatched);
                decision.verdicts.push(Verdict::NotMatched {
                    trigger: rule.name.clone(),
                    reason,
                });
                continue;
            }
            let Some(room) = &room_key else {
                rule.stats.count(TriggerResult::Fired);
                decision.push_calls(ActionKind::Start, rule, None, &on);
                decision.verdicts.push(Verdict::Fired {
                    trigger: rule.name.clone(),
                    claim: None,
                });
                continue;
            };
            if !rule.stop_on.is_empty() {
                // The rule matched again: its pending `stop_on` stops no longer hold.
                let cancelled =
                    self.claims
                        .cancel_stops(&rule.claim, room, &rule.name, StopCause::StopOn);
                if !cancelled.is_empty() {
                    decision.verdicts.push(Verdict::StopCancelled {
                        trigger: rule.name.clone(),
                        claims: cancelled.iter().map(|(k, _)| k.clone()).collect(),
                    });
                    decision.cancelled.extend(cancelled);
                }
            }
            let key = ClaimKey::new(
                rule.claim.clone(),
                rule.once_per,
                room.clone(),
                event.id(),
                event.in_room().and_then(|r| r.room_session_id()),
            );
            match self
                .claims
                .try_claim_for(key.clone(), rule.name.clone(), rule.lease, now)
            {
                Some(handle) => {
                    rule.stats.count(TriggerResult::Fired);
                    decision
                        .taken
                        .push((handle.clone(), rule.lease, rule.name.clone()));
                    decision.push_calls(ActionKind::Start, rule, Some(handle), &on);
                    decision.verdicts.push(Verdict::Fired {
                        trigger: rule.name.clone(),
                        claim: Some(key),
                    });
                }
                None => {
                    rule.stats.count(TriggerResult::Suppressed);
                    decision.verdicts.push(Verdict::Suppressed {
                        trigger: rule.name.clone(),
                        claim: key,
                    });
                }
            }
        }
        decision
    }

    /// `rule`'s stops for an event in `room`, where its claims are held: at
    /// once, scheduled (`stop_after`), or a pending `stop_when` stop cancelled.
    #[allow(clippy::too_many_arguments)]
    fn stops(
        &self,
        rule: &Rule,
        rules: &[Rule],
        on: &On<'_>,
        room: &RoomKey,
        input: &mut WhenCache,
        now: Instant,
        decision: &mut Decision,
    ) {
        let by_event = rule.stop_on.iter().any(|t| t.matches(on.event));
        let condition = self.stop_condition(rule, on, input);
        let cause = if by_event {
            Some(StopCause::StopOn)
        } else if condition == Some(true) {
            Some(StopCause::StopWhen)
        } else {
            None
        };
        match (cause, rule.stop_after) {
            (Some(_), None) => {
                let released = self.claims.release_room(&rule.claim, room, now);
                decision.stop(&rule.name, released, rules, on);
            }
            (Some(cause), Some(after)) => {
                let stop = PendingStop {
                    due: now + after,
                    rule: rule.name.clone(),
                    cause,
                    webhook: on.event.clone(),
                    raw: on.raw.clone(),
                    room_url: on.room_url.map(str::to_owned),
                };
                let scheduled = self.claims.schedule_stop(&rule.claim, room, &stop, now);
                if !scheduled.is_empty() {
                    decision.verdicts.push(Verdict::StopScheduled {
                        trigger: rule.name.clone(),
                        claims: scheduled.clone(),
                        after,
                    });
                    decision
                        .scheduled
                        .extend(scheduled.into_iter().map(|k| (k, stop.clone())));
                }
            }
            (None, _) if condition == Some(false) => {
                let cancelled =
                    self.claims
                        .cancel_stops(&rule.claim, room, &rule.name, StopCause::StopWhen);
                if !cancelled.is_empty() {
                    decision.verdicts.push(Verdict::StopCancelled {
                        trigger: rule.name.clone(),
                        claims: cancelled.iter().map(|(k, _)| k.clone()).collect(),
                    });
                    decision.cancelled.extend(cancelled);
                }
            }
            (None, _) => {}
        }
    }

    /// Whether `rule`'s `stop_when` holds after `on`; `None` without one. A
    /// failing condition counts as false, logged.
    fn stop_condition(&self, rule: &Rule, on: &On<'_>, input: &mut WhenCache) -> Option<bool> {
        #[cfg(not(feature = "cel"))]
        {
            let _ = (rule, on, input);
            None
        }
        #[cfg(feature = "cel")]
        {
            let when = rule.stop_when.as_ref()?;
            match when.eval(input.get(on.raw, on.state)) {
                Ok(holds) => Some(holds),
                Err(err) => {
                    tracing::warn!(trigger = %rule.name, id = on.event.id(), error = %err, "`stop_when` failed; counted as false");
                    Some(false)
                }
            }
        }
    }

    /// Why a start that matched must not fire because it was delivered late:
    /// an event of the rule's `stop_on` types newer than it was seen in the
    /// room already, so delivered in order its assistant would have been
    /// stopped (and, started now, nothing would stop it).
    fn stale(&self, rule: &Rule, at: Option<i64>, room: Option<&RoomKey>) -> Option<String> {
        if rule.stop_on.is_empty() {
            return None;
        }
        let (room, at) = (room?, at?);
        rule.stop_on.iter().find_map(|stop| {
            let newest = self.rooms.newest(room, stop.as_str())?;
            (at < newest).then(|| {
                format!("delivered after a newer `{stop}` in the room: its assistant would already be stopped")
            })
        })
    }

    /// Releases the claims whose `stop_after` has passed at `now` and stops
    /// their assistants: what [`decide`](Self::decide) does for a stop, when
    /// its time comes.
    pub fn fire_due(&self, now: Instant) -> Decision {
        let due = self.claims.take_due(now);
        let mut decision = Decision::default();
        if due.is_empty() {
            return decision;
        }
        let rules = self.rules();
        // One stop per webhook that asked for it (and rule), as `decide` would
        // have made at once.
        let mut groups: Vec<(Arc<str>, String, Vec<Released>)> = Vec::new();
        for released in due {
            let Some(stop) = &released.stop else { continue };
            let id = stop.webhook.id().to_owned();
            match groups
                .iter_mut()
                .find(|(rule, event, _)| *rule == stop.rule && *event == id)
            {
                Some((_, _, group)) => group.push(released),
                None => groups.push((stop.rule.clone(), id, vec![released])),
            }
        }
        for (rule, _, released) in groups {
            let Some(stop) = released[0].stop.clone() else {
                continue;
            };
            let room = released[0].key.room.clone();
            let state = self.rooms.get(&room);
            let on = On {
                event: &stop.webhook,
                raw: &stop.raw,
                room_url: stop.room_url.as_deref(),
                room: Some(&room),
                state: state.as_ref(),
            };
            decision.stop(&rule, released, &rules, &on);
        }
        decision
    }

    /// When the earliest pending stop is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.claims.next_due()
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
                    rule.stats.count(TriggerResult::Error);
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
            match when.eval(input.get(raw, room)) {
                Ok(true) => None,
                Ok(false) => Some("`when` is false".to_owned()),
                Err(err) => {
                    rule.stats.count(TriggerResult::Error);
                    tracing::warn!(trigger = %rule.name, id = event.id(), error = %err, "`when` failed; counted as false");
                    Some(format!("`when` failed: {err}"))
                }
            }
        }
    }
}

/// What `when` and `stop_when` see of one event: the webhook as JSON is only
/// needed there, so it is converted at most once, for the first rule that
/// has a condition.
#[derive(Default)]
struct WhenCache {
    #[cfg(feature = "cel")]
    input: Option<WhenInput>,
}

#[cfg(feature = "cel")]
impl WhenCache {
    fn get(&mut self, raw: &Bytes, room: Option<&RoomView>) -> &WhenInput {
        self.input.get_or_insert_with(|| {
            let json = serde_json::from_slice(raw).unwrap_or(serde_json::Value::Null);
            WhenInput::new(&json, room)
        })
    }
}

#[cfg(test)]
mod tests;
