//! One assistant per room: `once_per` claims.
//!
//! When a trigger fires it claims a key; while the key is claimed, further
//! matching events for it do not fire. A claim ends when its holder releases it
//! (the `run` process exited), when a `stop_on` event releases the trigger's
//! claims in the room, or when its lease runs out.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

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

/// A claimed key: trigger + room (+ session or event).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimKey {
    /// The trigger's name.
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

#[derive(Debug, Clone, Copy)]
struct Claim {
    expires: Instant,
    /// Tells this claim from a later one of the same key, so that a process that
    /// outlived its claim cannot release its successor's.
    generation: u64,
}

/// Called with every claim released by its holder (an assistant ended), so the
/// release can be recorded.
pub(crate) type ReleaseHook = Box<dyn Fn(&ClaimKey) + Send + Sync>;

/// The claims currently held.
#[derive(Default)]
pub struct Claims {
    held: Mutex<HashMap<ClaimKey, Claim>>,
    next_generation: AtomicU64,
    on_release: std::sync::OnceLock<ReleaseHook>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("held", &self.lock().len())
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
            .lock()
            .get(&self.key)
            .is_some_and(|c| c.generation == self.generation && c.expires > now)
    }
}

impl Claims {
    /// No claims.
    pub fn new() -> Arc<Self> {
        Arc::new(Claims::default())
    }

    /// Claims `key` for `lease` unless a live claim holds it.
    pub fn try_claim(
        self: &Arc<Self>,
        key: ClaimKey,
        lease: Duration,
        now: Instant,
    ) -> Option<ClaimHandle> {
        let mut held = self.lock();
        if held.get(&key).is_some_and(|claim| claim.expires > now) {
            return None;
        }
        // Expired claims are dropped whenever a new one is taken, so the map holds
        // live claims plus at most those that expired since the last claim.
        held.retain(|_, claim| claim.expires > now);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        held.insert(
            key.clone(),
            Claim {
                expires: now + lease,
                generation,
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
        self.lock().get(key).is_some_and(|c| c.expires > now)
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
        let current = held.get(key).is_some_and(|c| c.generation == generation);
        if current {
            held.remove(key);
        }
        current
    }

    /// Sets the hook told of every claim its holder releases (once; later calls
    /// are ignored).
    pub(crate) fn set_release_hook(&self, hook: ReleaseHook) {
        let _ = self.on_release.set(hook);
    }

    /// Holds `key` until `expires` without a holder's handle: a claim read back
    /// from the store, or one a failed commit must put back.
    pub fn restore(self: &Arc<Self>, key: ClaimKey, expires: Instant) -> ClaimHandle {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key.clone(),
            Claim {
                expires,
                generation,
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
        let held = self.lock();
        let claim = held.get(key).filter(|c| c.expires > now)?;
        Some(ClaimHandle {
            claims: self.clone(),
            key: key.clone(),
            generation: claim.generation,
        })
    }

    /// When `key` expires, if held.
    pub fn expiry(&self, key: &ClaimKey) -> Option<Instant> {
        self.lock().get(key).map(|c| c.expires)
    }

    /// Releases every claim of `trigger` in `room` (a `stop_on` event) and
    /// returns those that were live at `now`, with when they would have expired.
    pub fn release_room(
        &self,
        trigger: &str,
        room: &RoomKey,
        now: Instant,
    ) -> Vec<(ClaimKey, Instant)> {
        let mut held = self.lock();
        let mut released = Vec::new();
        held.retain(|key, claim| {
            let hit = &*key.trigger == trigger && &key.room == room;
            if hit && claim.expires > now {
                released.push((key.clone(), claim.expires));
            }
            !hit
        });
        released
    }

    /// How many claims are live at `now`.
    pub fn live(&self, now: Instant) -> usize {
        self.lock().values().filter(|c| c.expires > now).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClaimKey, Claim>> {
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
