//! Room state, folded from the webhooks of each room.
//!
//! Whereby may deliver out of order, so each part of the state remembers the
//! `createdAt` of the event it came from, and an older event never overwrites a
//! newer one.
//!
//! Why one file: the fold and a room's stored form (export, import, and the
//! merge of two stored states that a shared store does) follow that one
//! ordering rule and are kept together; the last 260 lines are tests, property
//! tests of [`RoomKey`] among them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use whereby_webhook::{InRoom, WebhookEvent};

/// A room: the organisation's subdomain and the room's path.
///
/// One room, one key, one URL: the key is spelt as
/// [`room_url`](whereby_webhook::room_url()) writes the room (the subdomain in
/// lower case, the room name with its leading `/`), and `room_url` refuses
/// every other spelling of a path (`/./a`, `/a/`, `/%61` …), so two keys
/// differ exactly when the URLs do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// `data.subdomain`, in lower case.
    pub subdomain: Arc<str>,
    /// `data.roomName`, starting with `/`.
    pub room_name: Arc<str>,
}

impl RoomKey {
    /// The room of an in-room event.
    pub fn of(room: &dyn InRoom) -> RoomKey {
        let name = room.room_name();
        // One spelling per room, as in its URL: `standup` and `/standup` are the
        // same room.
        let room_name: Arc<str> = if name.starts_with('/') {
            Arc::from(name)
        } else {
            Arc::from(format!("/{name}"))
        };
        // The parser gives subdomains in lower case already; an `InRoom` built
        // by hand may not, and `ACME` is `acme` (DNS names are case-insensitive).
        let subdomain = room.subdomain();
        let subdomain: Arc<str> = if subdomain.bytes().any(|b| b.is_ascii_uppercase()) {
            Arc::from(subdomain.to_ascii_lowercase())
        } else {
            Arc::from(subdomain)
        };
        RoomKey {
            subdomain,
            room_name,
        }
    }

    /// Reads back the [`Display`](fmt::Display) form, `subdomain/roomName`.
    pub fn parse(text: &str) -> Option<RoomKey> {
        let slash = text.find('/')?;
        let (subdomain, room_name) = text.split_at(slash);
        (!subdomain.is_empty()).then(|| RoomKey {
            subdomain: Arc::from(subdomain),
            room_name: Arc::from(room_name),
        })
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.subdomain, self.room_name)
    }
}

/// What the rules see as `room`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    /// Clients in the room, from the newest join/leave event that counts them
    /// (`numClients`, else the sum of `numClientsByRoleName`).
    pub num_clients: u32,
    /// Clients per role, from the newest join/leave event that has
    /// `numClientsByRoleName` (emptied by one that counts no clients).
    pub num_clients_by_role_name: BTreeMap<String, u32>,
    /// A session started and no later session end was seen.
    pub session_active: bool,
}

impl RoomView {
    /// Clients who are people: those whose role is not `assistant`, `recorder`,
    /// `streamer` or `captioner`. Counted from `numClientsByRoleName` when the
    /// events carry it; from `numClients` when they do not (Whereby's oldest
    /// payloads), where no client can be told to be a machine.
    ///
    /// ```
    /// use whereby_trigger::state::room::RoomView;
    ///
    /// let mut room = RoomView::default();
    /// room.num_clients = 3;
    /// assert_eq!(room.num_humans(), 3);
    /// room.num_clients_by_role_name = [("host".into(), 1), ("assistant".into(), 1), ("recorder".into(), 1)].into();
    /// assert_eq!(room.num_humans(), 1);
    /// ```
    pub fn num_humans(&self) -> u32 {
        if self.num_clients_by_role_name.is_empty() {
            return self.num_clients;
        }
        self.num_clients_by_role_name
            .iter()
            .filter(|(role, _)| !whereby_webhook::RoleName::from(role.as_str()).is_machine())
            .map(|(_, n)| *n)
            .sum()
    }
}

#[derive(Debug, Clone)]
struct RoomState {
    view: RoomView,
    /// `createdAt` (ms) of the join/leave event the counts come from.
    clients_at: Option<i64>,
    /// `createdAt` (ms) of the session start/end the flag comes from.
    session_at: Option<i64>,
    /// The newest `createdAt` (ms) seen per event type, so that a start
    /// delivered after a newer stop event can be told (see [`Rooms::newest`]).
    newest: BTreeMap<String, i64>,
    last_seen: Instant,
}

/// A room's state as the store keeps it: the view and the times that order it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRoom {
    view: RoomView,
    clients_at: Option<i64>,
    session_at: Option<i64>,
    /// Absent in rooms stored before it existed.
    #[serde(default)]
    newest: BTreeMap<String, i64>,
}

/// The state of every room seen recently. Rooms idle for longer than `idle` are
/// forgotten.
#[derive(Debug)]
pub(crate) struct Rooms {
    inner: Mutex<Inner>,
    idle: Duration,
}

#[derive(Debug)]
struct Inner {
    rooms: HashMap<RoomKey, RoomState>,
    /// When idle rooms were last swept out.
    swept: Instant,
}

/// How often idle rooms are swept out: often enough to bound memory, rarely
/// enough that the sweep costs nothing per event.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl Rooms {
    /// An empty set of rooms that forgets a room after `idle` without events.
    pub(crate) fn new(idle: Duration) -> Self {
        Rooms {
            inner: Mutex::new(Inner {
                rooms: HashMap::new(),
                swept: Instant::now(),
            }),
            idle,
        }
    }

    /// Folds `event`, ordered at `at` (ms since the epoch: its `createdAt`, or
    /// the time it was received when that is not to be believed), into its
    /// room's state and returns the state after it. Returns `None` for events
    /// that are not about a room.
    pub(crate) fn fold_at(
        &self,
        event: &WebhookEvent,
        at: Option<i64>,
        now: Instant,
    ) -> Option<RoomView> {
        let room = event.in_room()?;
        let key = RoomKey::of(room);
        let mut inner = self.lock();
        if now.saturating_duration_since(inner.swept) >= SWEEP_EVERY {
            let idle = self.idle;
            inner
                .rooms
                .retain(|_, state| now.saturating_duration_since(state.last_seen) < idle);
            inner.swept = now;
        }
        let state = inner.rooms.entry(key).or_insert_with(|| RoomState {
            view: RoomView::default(),
            clients_at: None,
            session_at: None,
            newest: BTreeMap::new(),
            last_seen: now,
        });
        state.last_seen = now;
        if let Some(at) = at {
            // Looked up before inserting, so that the common case allocates nothing.
            match state.newest.get_mut(event.type_name()) {
                Some(newest) => *newest = (*newest).max(at),
                None => {
                    state.newest.insert(event.type_name().to_owned(), at);
                }
            }
        }
        let newer = |seen: Option<i64>| match (at, seen) {
            (Some(at), Some(seen)) => at >= seen,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        let clients = match event {
            WebhookEvent::RoomClientJoined(w) => Some(&w.data),
            WebhookEvent::RoomClientLeft(w) => Some(&w.data),
            _ => None,
        };
        // A payload without counts (older shapes) tells nothing about them.
        let counted = clients
            .filter(|data| data.num_clients.is_some() || data.num_clients_by_role_name.is_some());
        if let Some(data) = counted.filter(|_| newer(state.clients_at)) {
            match &data.num_clients_by_role_name {
                Some(by_role) => {
                    state.view.num_clients_by_role_name = by_role
                        .iter()
                        .map(|(role, n)| (role.as_str().to_owned(), *n))
                        .collect();
                    state.view.num_clients = data
                        .num_clients
                        .unwrap_or_else(|| by_role.values().fold(0, |a, n| a.saturating_add(*n)));
                }
                None => {
                    // Without the roles, the old ones stand unless nobody is left.
                    let num_clients = data.num_clients.unwrap_or_default();
                    if num_clients == 0 {
                        state.view.num_clients_by_role_name.clear();
                    }
                    state.view.num_clients = num_clients;
                }
            }
            state.clients_at = at;
        }
        let session = match event {
            WebhookEvent::RoomSessionStarted(_) => Some(true),
            WebhookEvent::RoomSessionEnded(_) => Some(false),
            _ => None,
        };
        if let Some(active) = session.filter(|_| newer(state.session_at)) {
            state.view.session_active = active;
            state.session_at = at;
        }
        Some(state.view.clone())
    }

    /// The state of `room` as JSON, for the store.
    pub(crate) fn export(&self, room: &RoomKey) -> Option<String> {
        let inner = self.lock();
        let state = inner.rooms.get(room)?;
        serde_json::to_string(&StoredRoom {
            view: state.view.clone(),
            clients_at: state.clients_at,
            session_at: state.session_at,
            newest: state.newest.clone(),
        })
        .ok()
    }

    /// Two stored states of one room folded into one, as if one server had
    /// seen the events of both: the counts of the newer join/leave, the flag
    /// of the newer session event, the newest `createdAt` per type of either.
    /// That is how a store shared by several receivers keeps a room whose
    /// events were received by different ones. `new` alone when `old` cannot
    /// be read (and `old` when `new` cannot); `None` when neither can.
    #[cfg(any(test, feature = "postgres"))]
    pub(crate) fn merge_stored(old: &str, new: &str) -> Option<String> {
        let parse = |json: &str| serde_json::from_str::<StoredRoom>(json).ok();
        let merged = match (parse(old), parse(new)) {
            (None, None) => return None,
            (Some(_), None) => return Some(old.to_owned()),
            (None, Some(_)) => return Some(new.to_owned()),
            (Some(old), Some(new)) => {
                // `None` is older than any time, as in `fold_at`; a tie goes to
                // the later write.
                let clients = if old.clients_at > new.clients_at {
                    &old
                } else {
                    &new
                };
                let session = if old.session_at > new.session_at {
                    &old
                } else {
                    &new
                };
                let mut newest = old.newest.clone();
                for (kind, at) in &new.newest {
                    let entry = newest.entry(kind.clone()).or_insert(*at);
                    *entry = (*entry).max(*at);
                }
                StoredRoom {
                    view: RoomView {
                        num_clients: clients.view.num_clients,
                        num_clients_by_role_name: clients.view.num_clients_by_role_name.clone(),
                        session_active: session.view.session_active,
                    },
                    clients_at: clients.clients_at,
                    session_at: session.session_at,
                    newest,
                }
            }
        };
        serde_json::to_string(&merged).ok()
    }

    /// Puts back a room read from the store, last seen `idle_for` ago. Returns
    /// `false` (and changes nothing) when `json` is not a stored room.
    pub(crate) fn import(
        &self,
        room: RoomKey,
        json: &str,
        idle_for: Duration,
        now: Instant,
    ) -> bool {
        let Ok(stored) = serde_json::from_str::<StoredRoom>(json) else {
            return false;
        };
        self.lock().rooms.insert(
            room,
            RoomState {
                view: stored.view,
                clients_at: stored.clients_at,
                session_at: stored.session_at,
                newest: stored.newest,
                last_seen: now.checked_sub(idle_for).unwrap_or(now),
            },
        );
        true
    }

    /// The current state of `room`, if it is known.
    pub(crate) fn get(&self, room: &RoomKey) -> Option<RoomView> {
        self.lock().rooms.get(room).map(|state| state.view.clone())
    }

    /// The newest `createdAt` (ms since the epoch) of an event of type
    /// `event_type` seen in `room`, if any.
    pub(crate) fn newest(&self, room: &RoomKey, event_type: &str) -> Option<i64> {
        self.lock().rooms.get(room)?.newest.get(event_type).copied()
    }

    /// The `createdAt` (ms) of the newest event `room`'s counts or session flag
    /// come from, if any: an event older than that was delivered late.
    pub(crate) fn state_at(&self, room: &RoomKey) -> Option<i64> {
        let inner = self.lock();
        let state = inner.rooms.get(room)?;
        state.clients_at.max(state.session_at)
    }

    /// Every room remembered, with its state and how long ago its last event
    /// came (for the status page).
    pub(crate) fn list(&self, now: Instant) -> Vec<(RoomKey, RoomView, Duration)> {
        self.lock()
            .rooms
            .iter()
            .map(|(key, state)| {
                let age = now.saturating_duration_since(state.last_seen);
                (key.clone(), state.view.clone(), age)
            })
            .collect()
    }

    /// How many rooms are remembered.
    pub(crate) fn len(&self) -> usize {
        self.lock().rooms.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    impl Rooms {
        /// Folds `event` ordered by its own `createdAt`.
        fn fold(&self, event: &WebhookEvent, now: Instant) -> Option<RoomView> {
            self.fold_at(event, event.created_at_millis(), now)
        }
    }

    fn event(event_type: &str, created_at: &str, data: serde_json::Value) -> WebhookEvent {
        let mut v: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample(event_type).unwrap()).unwrap();
        v["createdAt"] = json!(created_at);
        for (k, val) in data.as_object().unwrap() {
            v["data"][k] = val.clone();
        }
        whereby_webhook::parse(v.to_string().as_bytes()).unwrap()
    }

    fn joined(at: &str, n: u32) -> WebhookEvent {
        event(
            "room.client.joined",
            at,
            json!({"numClients": n, "numClientsByRoleName": {"host": 1, "visitor": n - 1}}),
        )
    }

    #[test]
    fn counts_come_from_the_newest_event() {
        let rooms = Rooms::new(Duration::from_secs(3600));
        let now = Instant::now();
        let v = rooms.fold(&joined("2026-11-02T09:00:01Z", 1), now).unwrap();
        assert_eq!(v.num_clients, 1);
        let v = rooms.fold(&joined("2026-11-02T09:00:03Z", 3), now).unwrap();
        assert_eq!(v.num_clients, 3);
        assert_eq!(v.num_clients_by_role_name.get("visitor"), Some(&2));
        // Delivered late: an older event does not overwrite.
        let v = rooms.fold(&joined("2026-11-02T09:00:02Z", 2), now).unwrap();
        assert_eq!(v.num_clients, 3);
        let left = event(
            "room.client.left",
            "2026-11-02T09:00:04Z",
            json!({"numClients": 2, "numClientsByRoleName": {"host": 1, "visitor": 1}}),
        );
        assert_eq!(rooms.fold(&left, now).unwrap().num_clients, 2);
    }

    #[test]
    fn a_payload_without_counts_leaves_them_be() {
        let rooms = Rooms::new(Duration::from_secs(3600));
        let now = Instant::now();
        rooms.fold(&joined("2026-11-02T09:00:01Z", 2), now).unwrap();
        // Older shapes: no counts at all, or only one of the two.
        let mut bare = event("room.client.joined", "2026-11-02T09:00:02Z", json!({}));
        if let WebhookEvent::RoomClientJoined(w) = &mut bare {
            w.data.num_clients = None;
            w.data.num_clients_by_role_name = None;
        }
        let v = rooms.fold(&bare, now).unwrap();
        assert_eq!(v.num_clients, 2);
        assert_eq!(v.num_clients_by_role_name.get("visitor"), Some(&1));
        let by_role_only = event(
            "room.client.joined",
            "2026-11-02T09:00:03Z",
            json!({"numClients": null, "numClientsByRoleName": {"host": 1, "visitor": 3}}),
        );
        assert_eq!(rooms.fold(&by_role_only, now).unwrap().num_clients, 4);
        let number_only = event(
            "room.client.left",
            "2026-11-02T09:00:04Z",
            json!({"numClients": 3, "numClientsByRoleName": null}),
        );
        let v = rooms.fold(&number_only, now).unwrap();
        assert_eq!(v.num_clients, 3);
        assert_eq!(v.num_clients_by_role_name.get("visitor"), Some(&3));
        let empty = event(
            "room.client.left",
            "2026-11-02T09:00:05Z",
            json!({"numClients": 0, "numClientsByRoleName": null}),
        );
        let v = rooms.fold(&empty, now).unwrap();
        assert_eq!((v.num_clients, v.num_clients_by_role_name.len()), (0, 0));
    }

    #[test]
    fn session_flag_follows_start_and_end_in_time_order() {
        let rooms = Rooms::new(Duration::from_secs(3600));
        let now = Instant::now();
        let start = event("room.session.started", "2026-11-02T09:00:00Z", json!({}));
        let end = event("room.session.ended", "2026-11-02T10:00:00Z", json!({}));
        // The end arrives before the start: the session is over all the same.
        assert!(!rooms.fold(&end, now).unwrap().session_active);
        assert!(!rooms.fold(&start, now).unwrap().session_active);
        let restart = event("room.session.started", "2026-11-02T11:00:00Z", json!({}));
        assert!(rooms.fold(&restart, now).unwrap().session_active);
    }

    #[test]
    fn rooms_are_separate_and_idle_ones_forgotten() {
        let rooms = Rooms::new(Duration::from_secs(60));
        let t0 = Instant::now();
        rooms.fold(&joined("2026-11-02T09:00:01Z", 1), t0);
        let other = event(
            "room.client.joined",
            "2026-11-02T09:00:01Z",
            json!({"roomName": "/other", "numClients": 5}),
        );
        assert_eq!(rooms.fold(&other, t0).unwrap().num_clients, 5);
        assert_eq!(rooms.len(), 2);
        let later = t0 + Duration::from_secs(120);
        let third = event(
            "room.session.started",
            "2026-11-02T09:00:01Z",
            json!({"roomName": "/third"}),
        );
        rooms.fold(&third, later);
        assert_eq!(rooms.len(), 1, "the two idle rooms are forgotten");
    }

    #[test]
    fn other_types_have_no_room() {
        let rooms = Rooms::new(Duration::from_secs(60));
        let knocked = whereby_webhook::parse(
            whereby_webhook::sample::sample("recording.finished")
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        assert!(rooms.fold(&knocked, Instant::now()).is_none());
    }

    /// One room, one key, one URL: for any room `room_url` accepts, the key
    /// spells the URL's host and path, so keys are equal exactly when URLs are.
    mod one_room {
        use super::*;
        use proptest::prelude::*;
        use whereby_webhook::{BaseDomain, room_url};

        struct Room(String, String);

        impl InRoom for Room {
            fn subdomain(&self) -> &str {
                &self.0
            }
            fn room_name(&self) -> &str {
                &self.1
            }
            fn room_session_id(&self) -> Option<&str> {
                None
            }
            fn meeting_id(&self) -> Option<&str> {
                None
            }
        }

        fn key_and_url(sub: &str, name: &str) -> Option<(RoomKey, String)> {
            let url = room_url(sub, name, &BaseDomain::default()).ok()?;
            Some((RoomKey::of(&Room(sub.to_owned(), name.to_owned())), url))
        }

        #[test]
        fn spellings_of_one_room_share_a_key() {
            let (key, url) = key_and_url("ACME", "Standup").unwrap();
            assert_eq!(key.to_string(), "acme/Standup");
            assert_eq!(url, "https://acme.whereby.com/Standup");
            assert_eq!(key_and_url("acme", "/Standup").unwrap(), (key, url));
            assert!(key_and_url("acme", "/./Standup").is_none());
        }

        proptest! {
            #[test]
            fn keys_agree_with_urls(
                a in ("[aA][cC]?[mM]?", "/?[a-zA-Z0-9.%/]{1,6}"),
                b in ("[aA][cC]?[mM]?", "/?[a-zA-Z0-9.%/]{1,6}"),
            ) {
                if let (Some((key_a, url_a)), Some((key_b, url_b))) =
                    (key_and_url(&a.0, &a.1), key_and_url(&b.0, &b.1))
                {
                    prop_assert_eq!(
                        format!("https://{}.whereby.com{}", key_a.subdomain, key_a.room_name),
                        url_a.clone()
                    );
                    prop_assert_eq!(key_a == key_b, url_a == url_b);
                }
            }
        }
    }

    /// An event is ordered at the time it is given: one ordered at the time
    /// it was received instead of its far-future `createdAt` does not pin the
    /// room, and later events update it.
    #[test]
    fn events_are_ordered_at_the_time_given() {
        let rooms = Rooms::new(Duration::from_secs(3600));
        let now = Instant::now();
        let far = joined("9999-12-31T23:59:59.999Z", 5);
        let received = whereby_webhook::time::parse_rfc3339_millis("2026-11-02T09:00:00Z");
        assert_eq!(rooms.fold_at(&far, received, now).unwrap().num_clients, 5);
        let key = RoomKey::parse("acme/standup-3f9a2c").unwrap();
        assert_eq!(rooms.state_at(&key), received);
        assert_eq!(rooms.newest(&key, "room.client.joined"), received);
        let v = rooms.fold(&joined("2026-11-02T09:00:01Z", 1), now).unwrap();
        assert_eq!(v.num_clients, 1);
    }

    #[test]
    fn merged_states_keep_the_newest_of_each_part() {
        let now = Instant::now();
        let key = RoomKey::parse("acme/standup-3f9a2c").unwrap();
        // One receiver saw the session start and a later join of 3 …
        let a = Rooms::new(Duration::from_secs(3600));
        a.fold(
            &event("room.session.started", "2026-11-02T09:00:00Z", json!({})),
            now,
        );
        a.fold(&joined("2026-11-02T09:00:03Z", 3), now);
        // … another an older join of 2 and the session's end.
        let b = Rooms::new(Duration::from_secs(3600));
        b.fold(&joined("2026-11-02T09:00:02Z", 2), now);
        b.fold(
            &event("room.session.ended", "2026-11-02T09:00:05Z", json!({})),
            now,
        );
        let (a, b) = (a.export(&key).unwrap(), b.export(&key).unwrap());
        for merged in [
            Rooms::merge_stored(&a, &b).unwrap(),
            Rooms::merge_stored(&b, &a).unwrap(),
        ] {
            let rooms = Rooms::new(Duration::from_secs(3600));
            assert!(rooms.import(key.clone(), &merged, Duration::ZERO, now));
            let view = rooms.get(&key).unwrap();
            assert_eq!(view.num_clients, 3, "the newer join's count");
            assert!(!view.session_active, "the newer session event's flag");
            assert_eq!(
                rooms.newest(&key, "room.client.joined"),
                Some(1_793_610_003_000)
            );
            assert_eq!(
                rooms.newest(&key, "room.session.ended"),
                Some(1_793_610_005_000)
            );
        }
        assert_eq!(Rooms::merge_stored("nope", &a).as_deref(), Some(a.as_str()));
        assert_eq!(Rooms::merge_stored(&a, "nope").as_deref(), Some(a.as_str()));
        assert_eq!(Rooms::merge_stored("nope", "nope"), None);
    }

    #[test]
    fn export_and_import_keep_the_ordering() {
        let rooms = Rooms::new(Duration::from_secs(3600));
        let now = Instant::now();
        rooms.fold(&joined("2026-11-02T09:00:03Z", 3), now);
        let key = RoomKey::parse("acme/standup-3f9a2c").unwrap();
        let json = rooms.export(&key).unwrap();
        let restored = Rooms::new(Duration::from_secs(3600));
        assert!(restored.import(key.clone(), &json, Duration::ZERO, now));
        assert!(!restored.import(key.clone(), "nope", Duration::ZERO, now));
        // An older event still does not overwrite after the restart.
        let v = restored
            .fold(&joined("2026-11-02T09:00:02Z", 2), now)
            .unwrap();
        assert_eq!(v.num_clients, 3);
    }
}
