//! One assistant per room: `once_per` claims.
//!
//! When a trigger fires it claims a key; while the key is claimed, further
//! matching events for it do not fire. A claim ends when its holder releases it
//! (the `run` process exited), when a `stop_on` event releases the trigger's
//! claims in the room, or when its lease runs out.
//!
//! Why one file: every claim is in one map behind one lock, and each operation
//! on it (take, release, restore, pending stops, following a shared store)
//! keeps the generation rule, by which a holder that outlived its claim cannot
//! release its successor's; split, that rule would be kept in several files.
//! The last 130 lines are tests.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use whereby_webhook::WebhookEvent;

use crate::state::room::RoomKey;

/// Default lease: the longest a room or session stays claimed.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(12 * 3600);

/// What a trigger claims when it fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OncePer {
    /// The event id (duplicates are already suppressed): every matching event fires.
    #[default]
    Event,
    /// The room: one assistant per room while the claim holds.
    Room,
    /// The room session: one assistant per session; a null session id falls back
    /// to the room.
    Session,
}

impl fmt::Display for OncePer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OncePer::Event => "event",
            OncePer::Room => "room",
            OncePer::Session => "session",
        })
    }
}

/// The narrowest part of a claim key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClaimScope {
    /// One event.
    Event(Arc<str>),
    /// The whole room.
    Room,
    /// One session of the room.
    Session(Arc<str>),
}

/// A claimed key: claim name + room (+ session or event).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimKey {
    /// The claim's name: its trigger's name, or the trigger's `claim`, which
    /// several triggers can share.
    pub trigger: Arc<str>,
    /// The room.
    pub room: RoomKey,
    /// What within the room.
    pub scope: ClaimScope,
}

impl ClaimKey {
    /// The key `once_per` gives for an event in `room`.
    pub fn new(
        trigger: Arc<str>,
        once_per: OncePer,
        room: RoomKey,
        event_id: &str,
        session_id: Option<&str>,
    ) -> ClaimKey {
        let scope = match (once_per, session_id) {
            (OncePer::Event, _) => ClaimScope::Event(Arc::from(event_id)),
            (OncePer::Room, _) | (OncePer::Session, None) => ClaimScope::Room,
            (OncePer::Session, Some(session)) => ClaimScope::Session(Arc::from(session)),
        };
        ClaimKey {
            trigger,
            room,
            scope,
        }
    }
}

impl ClaimKey {
    /// Reads back the [`Display`](fmt::Display) form, as the store keeps it.
    pub fn parse(text: &str) -> Option<ClaimKey> {
        let (trigger, rest) = text.split_once(':')?;
        let (room, scope) = match rest.split_once('#') {
            None => (rest, ClaimScope::Room),
            Some((room, scope)) => {
                let scope = if let Some(id) = scope.strip_prefix("event=") {
                    ClaimScope::Event(Arc::from(id))
                } else {
                    ClaimScope::Session(Arc::from(scope.strip_prefix("session=")?))
                };
                (room, scope)
            }
        };
        Some(ClaimKey {
            trigger: Arc::from(trigger),
            room: RoomKey::parse(room)?,
            scope,
        })
    }
}

impl fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.trigger, self.room)?;
        match &self.scope {
            ClaimScope::Event(id) => write!(f, "#event={id}"),
            ClaimScope::Room => Ok(()),
            ClaimScope::Session(id) => write!(f, "#session={id}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Claim {
    expires: Instant,
    /// Tells this claim from a later one of the same key, so that a process that
    /// outlived its claim cannot release its successor's.
    generation: u64,
    /// The trigger that took it: the one whose actions a stop goes to.
    holder: Arc<str>,
    /// A stop waiting out its `stop_after`.
    stop: Option<PendingStop>,
    /// When it was taken or learned here: a claim younger than a shared
    /// store's view of claims may not be in that view yet.
    since: Instant,
}

/// Why a stop is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopCause {
    /// A `stop_on` event arrived; an event of the trigger's `on` types that
    /// matches it cancels the stop.
    StopOn,
    /// `stop_when` became true; an event after which it is false cancels the stop.
    StopWhen,
}

impl StopCause {
    /// `stop_on` or `stop_when`, as stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::StopOn => "stop_on",
            StopCause::StopWhen => "stop_when",
        }
    }

    /// Reads back [`as_str`](Self::as_str).
    pub fn parse(text: &str) -> Option<StopCause> {
        match text {
            "stop_on" => Some(StopCause::StopOn),
            "stop_when" => Some(StopCause::StopWhen),
            _ => None,
        }
    }
}

/// A stop that waits until `due` (a trigger's `stop_after`) and happens then
/// unless a later event cancels it.
#[derive(Debug, Clone)]
pub struct PendingStop {
    /// When the claim is released and its assistant stopped.
    pub due: Instant,
    /// The trigger whose `stop_on`/`stop_when` asked for it.
    pub rule: Arc<str>,
    /// Which of the two.
    pub cause: StopCause,
    /// The webhook that asked for it: the stop's actions get it.
    pub webhook: WebhookEvent,
    /// That webhook's body as received.
    pub raw: Bytes,
    /// Its room URL.
    pub room_url: Option<String>,
}

/// A claim that stopped being held by a stop: enough to undo it, and to
/// tell its holder.
#[derive(Debug, Clone)]
pub struct Released {
    /// The claim.
    pub key: ClaimKey,
    /// When it would have expired.
    pub expires: Instant,
    /// The trigger that held it.
    pub holder: Arc<str>,
    /// The stop that was pending on it, if any.
    pub stop: Option<PendingStop>,
}

/// Called with every claim released by its holder (an assistant ended), so the
/// release can be recorded.
pub(crate) type ReleaseHook = Box<dyn Fn(&ClaimKey) + Send + Sync>;

/// How many claims are taken between two sweeps of expired ones.
const SWEEP_EVERY: u64 = 1024;

/// The claims of one name in one room, by scope.
type InRoom = HashMap<ClaimScope, Claim>;

/// The claims currently held, by claim name and room, so that what a stop
/// looks for (one trigger's claims in one room) is found without a scan.
#[derive(Default)]
pub struct Claims {
    held: Mutex<HashMap<(Arc<str>, RoomKey), InRoom>>,
    next_generation: AtomicU64,
    on_release: std::sync::OnceLock<ReleaseHook>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field(
                "held",
                &self.lock().values().map(HashMap::len).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

/// A held claim, given to the action that owns the assistant so that it can
/// release the claim when the assistant ends.
#[derive(Debug, Clone)]
pub struct ClaimHandle {
    claims: Arc<Claims>,
    key: ClaimKey,
    generation: u64,
}

impl ClaimHandle {
    /// The claimed key.
    pub fn key(&self) -> &ClaimKey {
        &self.key
    }

    /// Releases the claim, if it is still this one.
    pub fn release(&self) {
        self.claims.release(&self.key, self.generation);
    }

    /// Gives back a claim that was never recorded (its commit failed): like
    /// [`release`](Self::release), without telling the release hook, so that
    /// nothing is written about a claim the store never held — in a store
    /// shared with other receivers that could release theirs.
    pub(crate) fn give_back(&self) {
        self.claims.remove(&self.key, self.generation);
    }

    /// Whether the claim is still held (not released, not expired) at `now`.
    pub fn is_held(&self, now: Instant) -> bool {
        self.claims
            .get(&self.key, |c| {
                c.generation == self.generation && c.expires > now
            })
            .unwrap_or(false)
    }
}

impl Claims {
    /// No claims.
    pub fn new() -> Arc<Self> {
        Arc::new(Claims::default())
    }

    /// Claims `key` for `lease` unless a live claim holds it; the holder is
    /// the trigger the key names.
    pub fn try_claim(
        self: &Arc<Self>,
        key: ClaimKey,
        lease: Duration,
        now: Instant,
    ) -> Option<ClaimHandle> {
        let holder = key.trigger.clone();
        self.try_claim_for(key, holder, lease, now)
    }

    /// Claims `key` for `lease` for trigger `holder` (which may share the
    /// claim's name with others) unless a live claim holds it.
    pub(crate) fn try_claim_for(
        self: &Arc<Self>,
        key: ClaimKey,
        holder: Arc<str>,
        lease: Duration,
        now: Instant,
    ) -> Option<ClaimHandle> {
        let mut held = self.lock();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        // Expired claims of a room are dropped whenever one is taken there, and
        // those of every room once every SWEEP_EVERY claims, so the map holds
        // live claims plus a bounded number that expired: memory stays bounded
        // at an amortised constant cost per claim.
        if generation % SWEEP_EVERY == SWEEP_EVERY - 1 {
            held.retain(|_, claims| {
                claims.retain(|_, claim| claim.expires > now);
                !claims.is_empty()
            });
        }
        let room = held
            .entry((key.trigger.clone(), key.room.clone()))
            .or_default();
        if room
            .get(&key.scope)
            .is_some_and(|claim| claim.expires > now)
        {
            return None;
        }
        room.retain(|_, claim| claim.expires > now);
        room.insert(
            key.scope.clone(),
            Claim {
                expires: now + lease,
                generation,
                holder,
                stop: None,
                since: now,
            },
        );
        Some(ClaimHandle {
            claims: self.clone(),
            key,
            generation,
        })
    }

    /// Whether `key` is claimed at `now`.
    pub fn is_claimed(&self, key: &ClaimKey, now: Instant) -> bool {
        self.get(key, |c| c.expires > now).unwrap_or(false)
    }

    fn get<T>(&self, key: &ClaimKey, f: impl FnOnce(&Claim) -> T) -> Option<T> {
        let held = self.lock();
        let room = held.get(&(key.trigger.clone(), key.room.clone()))?;
        room.get(&key.scope).map(f)
    }

    fn release(&self, key: &ClaimKey, generation: u64) {
        if self.remove(key, generation)
            && let Some(hook) = self.on_release.get()
        {
            hook(key);
        }
    }

    /// Removes `key` if it is still claim `generation`; whether it was.
    fn remove(&self, key: &ClaimKey, generation: u64) -> bool {
        let mut held = self.lock();
        let room_key = (key.trigger.clone(), key.room.clone());
        let Some(room) = held.get_mut(&room_key) else {
            return false;
        };
        let current = room
            .get(&key.scope)
            .is_some_and(|c| c.generation == generation);
        if current {
            room.remove(&key.scope);
            if room.is_empty() {
                held.remove(&room_key);
            }
        }
        current
    }

    /// Drops `key`, whatever its generation, without telling the release
    /// hook: a claim another server ended (its due stop fired there).
    pub(crate) fn forget(&self, key: &ClaimKey) {
        let mut held = self.lock();
        let room_key = (key.trigger.clone(), key.room.clone());
        if let Some(room) = held.get_mut(&room_key) {
            room.remove(&key.scope);
            if room.is_empty() {
                held.remove(&room_key);
            }
        }
    }

    /// Sets the hook told of every claim its holder releases (once; later calls
    /// are ignored).
    pub(crate) fn set_release_hook(&self, hook: ReleaseHook) {
        let _ = self.on_release.set(hook);
    }

    /// Holds `key` until `expires` without a holder's handle: a claim read back
    /// from the store, or one a failed commit must put back.
    pub fn restore(self: &Arc<Self>, key: ClaimKey, expires: Instant) -> ClaimHandle {
        let holder = key.trigger.clone();
        self.restore_held(key, holder, expires, None)
    }

    /// [`restore`](Self::restore), with the trigger that holds it and the stop
    /// pending on it.
    pub(crate) fn restore_held(
        self: &Arc<Self>,
        key: ClaimKey,
        holder: Arc<str>,
        expires: Instant,
        stop: Option<PendingStop>,
    ) -> ClaimHandle {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry((key.trigger.clone(), key.room.clone()))
            .or_default()
            .insert(
                key.scope.clone(),
                Claim {
                    expires,
                    generation,
                    holder,
                    stop,
                    since: Instant::now(),
                },
            );
        ClaimHandle {
            claims: self.clone(),
            key,
            generation,
        }
    }

    /// The handle of a live claim, e.g. to give a resumed assistant its claim.
    pub fn handle(self: &Arc<Self>, key: &ClaimKey, now: Instant) -> Option<ClaimHandle> {
        let generation = self.get(key, |c| (c.expires > now).then_some(c.generation))??;
        Some(ClaimHandle {
            claims: self.clone(),
            key: key.clone(),
            generation,
        })
    }

    /// When `key` expires, if held.
    pub fn expiry(&self, key: &ClaimKey) -> Option<Instant> {
        self.get(key, |c| c.expires)
    }

    /// The trigger holding `key` and the stop pending on it, if held.
    pub fn holder(&self, key: &ClaimKey) -> Option<(Arc<str>, Option<PendingStop>)> {
        self.get(key, |c| (c.holder.clone(), c.stop.clone()))
    }

    /// Whether claim `name` is live in `room` at `now`.
    pub fn held_in(&self, name: &Arc<str>, room: &RoomKey, now: Instant) -> bool {
        self.lock()
            .get(&(name.clone(), room.clone()))
            .is_some_and(|r| r.values().any(|c| c.expires > now))
    }

    /// Releases every claim named `name` in `room` (a stop) and returns those
    /// that were live at `now`.
    pub fn release_room(&self, name: &str, room: &RoomKey, now: Instant) -> Vec<Released> {
        let Some(claims) = self.lock().remove(&(Arc::from(name), room.clone())) else {
            return Vec::new();
        };
        claims
            .into_iter()
            .filter(|(_, c)| c.expires > now)
            .map(|(scope, c)| Released {
                key: ClaimKey {
                    trigger: Arc::from(name),
                    room: room.clone(),
                    scope,
                },
                expires: c.expires,
                holder: c.holder,
                stop: c.stop,
            })
            .collect()
    }

    /// Puts back what [`release_room`](Self::release_room) or
    /// [`take_due`](Self::take_due) released, for a decision that will not be
    /// carried out.
    pub(crate) fn put_back(self: &Arc<Self>, released: Released) {
        self.restore_held(
            released.key,
            released.holder,
            released.expires,
            released.stop,
        );
    }

    /// Sets `stop` on every live claim named `name` in `room` that has none
    /// pending; returns the claims it was set on.
    pub(crate) fn schedule_stop(
        &self,
        name: &Arc<str>,
        room: &RoomKey,
        stop: &PendingStop,
        now: Instant,
    ) -> Vec<ClaimKey> {
        let mut held = self.lock();
        let Some(claims) = held.get_mut(&(name.clone(), room.clone())) else {
            return Vec::new();
        };
        let mut scheduled = Vec::new();
        for (scope, claim) in claims.iter_mut() {
            if claim.expires > now && claim.stop.is_none() {
                claim.stop = Some(stop.clone());
                scheduled.push(ClaimKey {
                    trigger: name.clone(),
                    room: room.clone(),
                    scope: scope.clone(),
                });
            }
        }
        scheduled
    }

    /// Cancels the stops `rule` set for `cause` on claims named `name` in
    /// `room`; returns them, with their claim.
    pub(crate) fn cancel_stops(
        &self,
        name: &Arc<str>,
        room: &RoomKey,
        rule: &str,
        cause: StopCause,
    ) -> Vec<(ClaimKey, PendingStop)> {
        let mut held = self.lock();
        let Some(claims) = held.get_mut(&(name.clone(), room.clone())) else {
            return Vec::new();
        };
        let mut cancelled = Vec::new();
        for (scope, claim) in claims.iter_mut() {
            if claim
                .stop
                .as_ref()
                .is_some_and(|s| &*s.rule == rule && s.cause == cause)
                && let Some(stop) = claim.stop.take()
            {
                let key = ClaimKey {
                    trigger: name.clone(),
                    room: room.clone(),
                    scope: scope.clone(),
                };
                cancelled.push((key, stop));
            }
        }
        cancelled
    }

    /// Sets (or, with `None`, clears) the stop pending on `key`, if held: to
    /// undo a schedule or a cancel that will not be carried out.
    pub(crate) fn set_stop(&self, key: &ClaimKey, stop: Option<PendingStop>) {
        if let Some(claim) = self
            .lock()
            .get_mut(&(key.trigger.clone(), key.room.clone()))
            .and_then(|room| room.get_mut(&key.scope))
        {
            claim.stop = stop;
        }
    }

    /// Removes and returns the live claims whose pending stop is due at `now`.
    pub(crate) fn take_due(&self, now: Instant) -> Vec<Released> {
        let mut held = self.lock();
        let mut due = Vec::new();
        held.retain(|(name, room), claims| {
            claims.retain(|scope, c| {
                let fire = c.stop.as_ref().is_some_and(|s| s.due <= now);
                if fire && c.expires > now {
                    due.push(Released {
                        key: ClaimKey {
                            trigger: name.clone(),
                            room: room.clone(),
                            scope: scope.clone(),
                        },
                        expires: c.expires,
                        holder: c.holder.clone(),
                        stop: c.stop.clone(),
                    });
                }
                !fire
            });
            !claims.is_empty()
        });
        due
    }

    /// When the earliest pending stop is due, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lock()
            .values()
            .flat_map(HashMap::values)
            .filter_map(|c| c.stop.as_ref().map(|s| s.due))
            .min()
    }

    /// The claims live at `now`: claim name, room, holding trigger, and how
    /// long until the lease ends (for the status page).
    pub(crate) fn list(&self, now: Instant) -> Vec<(Arc<str>, RoomKey, Arc<str>, Duration)> {
        self.lock()
            .iter()
            .flat_map(|((name, room), claims)| {
                claims.values().filter(|c| c.expires > now).map(move |c| {
                    (
                        name.clone(),
                        room.clone(),
                        c.holder.clone(),
                        c.expires - now,
                    )
                })
            })
            .collect()
    }

    /// How many claims are live at `now`.
    pub fn live(&self, now: Instant) -> usize {
        self.lock()
            .values()
            .flat_map(HashMap::values)
            .filter(|c| c.expires > now)
            .count()
    }

    /// Brings this memory in line with `live`, every live claim of a store
    /// shared by several servers, each with its holder and expiry: a claim
    /// taken elsewhere is held here until it expires (with no handle, so
    /// nothing here releases it) with its pending stop (which whichever server
    /// sees it due first fires: the store refuses the others); one no longer
    /// live there (released elsewhere)
    /// is dropped here without telling the release hook. A claim taken here
    /// less than `settle` before `now` is kept whatever `live` says: its
    /// commit may have landed after the store was read. Returns how many
    /// claims were dropped.
    pub(crate) fn sync_shared(
        &self,
        live: Vec<(ClaimKey, Arc<str>, Instant, Option<PendingStop>)>,
        now: Instant,
        settle: Duration,
    ) -> usize {
        let fresh = now.checked_sub(settle).unwrap_or(now);
        let listed: std::collections::HashSet<ClaimKey> =
            live.iter().map(|(k, ..)| k.clone()).collect();
        let mut held = self.lock();
        let mut dropped = 0;
        held.retain(|(name, room), claims| {
            claims.retain(|scope, claim| {
                let key = ClaimKey {
                    trigger: name.clone(),
                    room: room.clone(),
                    scope: scope.clone(),
                };
                let keep = claim.since > fresh || listed.contains(&key);
                if !keep && claim.expires > now {
                    dropped += 1;
                }
                keep
            });
            !claims.is_empty()
        });
        for (key, holder, expires, stop) in live {
            let room = held
                .entry((key.trigger.clone(), key.room.clone()))
                .or_default();
            match room.get_mut(&key.scope) {
                Some(claim) if claim.expires > now => {
                    claim.expires = claim.expires.max(expires);
                    // A stop scheduled elsewhere is fired here too if that
                    // server is gone; the store lets only one of them fire it.
                    if claim.stop.is_none() {
                        claim.stop = stop;
                    }
                }
                _ => {
                    let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                    room.insert(
                        key.scope.clone(),
                        Claim {
                            expires,
                            generation,
                            holder,
                            stop,
                            since: now,
                        },
                    );
                }
            }
        }
        dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, RoomKey), InRoom>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomKey {
        RoomKey {
            subdomain: "acme".into(),
            room_name: Arc::from(name),
        }
    }

    fn key(once_per: OncePer, room_name: &str, event: &str, session: Option<&str>) -> ClaimKey {
        ClaimKey::new("t".into(), once_per, room(room_name), event, session)
    }

    #[test]
    fn keys_follow_once_per() {
        assert_eq!(
            key(OncePer::Event, "/r", "e1", Some("s")).scope,
            ClaimScope::Event("e1".into())
        );
        assert_eq!(
            key(OncePer::Room, "/r", "e1", Some("s")),
            key(OncePer::Room, "/r", "e2", Some("x"))
        );
        assert_ne!(
            key(OncePer::Room, "/r", "e1", None),
            key(OncePer::Room, "/q", "e1", None)
        );
        assert_eq!(
            key(OncePer::Session, "/r", "e1", Some("s1")),
            key(OncePer::Session, "/r", "e2", Some("s1"))
        );
        assert_ne!(
            key(OncePer::Session, "/r", "e1", Some("s1")),
            key(OncePer::Session, "/r", "e1", Some("s2"))
        );
        // A null session falls back to the room.
        assert_eq!(
            key(OncePer::Session, "/r", "e1", None).scope,
            ClaimScope::Room
        );
        let other_trigger = ClaimKey::new("u".into(), OncePer::Room, room("/r"), "e", None);
        assert_ne!(other_trigger, key(OncePer::Room, "/r", "e", None));
        assert_eq!(
            key(OncePer::Session, "/r", "e", Some("s")).to_string(),
            "t:acme/r#session=s"
        );
    }

    #[test]
    fn a_claim_blocks_until_released_or_expired() {
        let claims = Claims::new();
        let now = Instant::now();
        let lease = Duration::from_secs(60);
        let k = key(OncePer::Room, "/r", "e", None);
        let first = claims.try_claim(k.clone(), lease, now).unwrap();
        assert!(claims.try_claim(k.clone(), lease, now).is_none());
        first.release();
        let second = claims.try_claim(k.clone(), lease, now).unwrap();
        // The first holder releasing again does not free the second claim.
        first.release();
        assert!(claims.is_claimed(&k, now));
        assert!(second.is_held(now));
        // Past the lease the key is free.
        let later = now + lease;
        assert!(!second.is_held(later));
        assert!(claims.try_claim(k, lease, later).is_some());
    }

    #[test]
    fn release_room_frees_only_that_trigger_and_room() {
        let claims = Claims::new();
        let now = Instant::now();
        let lease = Duration::from_secs(60);
        claims
            .try_claim(key(OncePer::Session, "/r", "e", Some("s1")), lease, now)
            .unwrap();
        claims
            .try_claim(key(OncePer::Event, "/r", "e2", None), lease, now)
            .unwrap();
        claims
            .try_claim(key(OncePer::Room, "/q", "e", None), lease, now)
            .unwrap();
        let other = ClaimKey::new("u".into(), OncePer::Room, room("/r"), "e", None);
        claims.try_claim(other.clone(), lease, now).unwrap();
        let released = claims.release_room("t", &room("/r"), now);
        assert!(released.iter().all(|r| &*r.holder == "t"));
        assert_eq!(released.len(), 2);
        assert_eq!(claims.live(now), 2);
        assert!(claims.is_claimed(&other, now));
    }

    #[test]
    fn keys_read_back() {
        for k in [
            key(OncePer::Session, "/r", "e", Some("c1b5-x#y")),
            key(OncePer::Room, "/r/deep", "e", None),
            key(OncePer::Event, "/r", "0f6c:2a", None),
        ] {
            assert_eq!(ClaimKey::parse(&k.to_string()), Some(k.clone()), "{k}");
        }
        assert_eq!(ClaimKey::parse("nocolon"), None);
        assert_eq!(ClaimKey::parse("t:noslash"), None);
    }

    #[test]
    fn holder_releases_reach_the_hook_and_restore_holds() {
        let claims = Claims::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        claims.set_release_hook(Box::new(move |k| sink.lock().unwrap().push(k.to_string())));
        let now = Instant::now();
        let k = key(OncePer::Room, "/r", "e", None);
        let handle = claims
            .try_claim(k.clone(), Duration::from_secs(5), now)
            .unwrap();
        handle.release();
        handle.release();
        assert_eq!(seen.lock().unwrap().as_slice(), ["t:acme/r"]);
        let restored = claims.restore(k.clone(), now + Duration::from_secs(5));
        assert!(
            claims
                .try_claim(k.clone(), Duration::from_secs(5), now)
                .is_none()
        );
        assert!(claims.handle(&k, now).is_some());
        restored.release();
        assert!(claims.handle(&k, now).is_none());
    }
}
