//! The PostgreSQL store as several servers see it: two `PgStore`s (two nodes)
//! on one throw-away database, each promise of the embedded store checked
//! through the database rather than through one process's memory.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use whereby_trigger::store::{
    Change, Delivery, DeliveryStatus, PgStore, PgStoreOptions, Store, StoreError, StoredClaim,
};

use crate::common::postgres::Postgres;

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn node(url: &str, name: &str) -> PgStore {
    PgStore::connect(url, PgStoreOptions::new(name)).expect("connect the store")
}

fn id(id: &str) -> Change {
    Change::RememberId {
        id: id.to_owned(),
        at_ms: now_ms(),
    }
}

fn claim(key: &str, for_ms: i64) -> Change {
    Change::Claim(StoredClaim {
        key: key.to_owned(),
        expires_ms: now_ms() + for_ms,
        holder: "greeter".to_owned(),
        stop: None,
    })
}

fn enqueue(id: &str) -> Change {
    Change::Enqueue(Delivery {
        id: id.to_owned(),
        trigger: "greeter".to_owned(),
        kind: "forward".to_owned(),
        action: "start".to_owned(),
        claim: String::new(),
        room_url: "https://acme.whereby.com/standup".to_owned(),
        room: None,
        webhook: "{}".to_owned(),
        attempts: 0,
        created_ms: now_ms(),
        status: DeliveryStatus::Pending,
        last_error: None,
        retry_at_ms: None,
        node: String::new(),
    })
}

fn ids(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.id.as_str()).collect()
}

#[test]
fn an_event_id_is_recorded_by_one_node_only() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("ids");
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    a.commit(&[id("e1")]).unwrap();
    assert_eq!(
        b.commit(&[id("e2"), id("e1"), enqueue("d1")]),
        Err(StoreError::AlreadyRecorded { id: "e1".into() })
    );
    // Nothing of the refused batch applied: e2 and its delivery are not there.
    b.commit(&[id("e2")]).unwrap();
    assert!(a.deliveries().unwrap().is_empty());
}

#[test]
fn racing_duplicates_at_two_nodes_are_recorded_once() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("race");
    let nodes = [Arc::new(node(&url, "a")), Arc::new(node(&url, "b"))];
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = nodes
        .iter()
        .map(|store| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // The same 200 ids, in batches of 5, in opposite orders.
                let mut accepted = Vec::new();
                for n in 0..40 {
                    let batch: Vec<Change> =
                        (0..5).map(|k| id(&format!("e{}", n * 5 + k))).collect();
                    for change in batch {
                        let Change::RememberId { id, .. } = &change else {
                            unreachable!()
                        };
                        match store.commit(std::slice::from_ref(&change)) {
                            Ok(()) => accepted.push(id.clone()),
                            Err(StoreError::AlreadyRecorded { .. }) => {}
                            Err(err) => panic!("{err}"),
                        }
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    accepted.sort();
    let before = accepted.len();
    accepted.dedup();
    assert_eq!(before, accepted.len(), "an id was accepted twice");
    assert_eq!(accepted.len(), 200, "every id was accepted once");
}

#[test]
fn a_live_claim_is_held_by_its_node_until_it_releases_it() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("claims");
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    a.commit(&[claim("greeter/acme/standup", 60_000)]).unwrap();
    match b.commit(&[id("e9"), claim("greeter/acme/standup", 60_000)]) {
        Err(StoreError::ClaimHeld { key, expires_ms }) => {
            assert_eq!(key, "greeter/acme/standup");
            assert!(expires_ms > now_ms() + 50_000, "a's lease: {expires_ms}");
        }
        other => panic!("expected ClaimHeld, got {other:?}"),
    }
    // The refused batch took its id back with it.
    b.commit(&[id("e9")]).unwrap();
    // A release by a node that does not hold the claim ends nothing.
    b.commit(&[Change::ReleaseClaim {
        key: "greeter/acme/standup".into(),
    }])
    .unwrap();
    assert!(matches!(
        b.commit(&[claim("greeter/acme/standup", 60_000)]),
        Err(StoreError::ClaimHeld { .. })
    ));
    a.commit(&[Change::ReleaseClaim {
        key: "greeter/acme/standup".into(),
    }])
    .unwrap();
    b.commit(&[claim("greeter/acme/standup", 60_000)]).unwrap();
    // An expired claim is free to take.
    b.commit(&[claim("greeter/acme/other", -1)]).unwrap();
    a.commit(&[claim("greeter/acme/other", 60_000)]).unwrap();
    let claims = a.load(now_ms(), 60_000, 60_000).unwrap().claims;
    assert_eq!(claims.len(), 2, "{claims:?}");
}

#[test]
fn room_state_keeps_the_newest_parts_whichever_node_wrote_them() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("rooms");
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    let room = |clients: u32, clients_at: i64, active: bool, session_at: i64| Change::Room {
        key: "acme/standup".into(),
        state: serde_json::json!({
            "view": {"numClients": clients, "numClientsByRoleName": {}, "sessionActive": active},
            "clientsAt": clients_at,
            "sessionAt": session_at,
            "newest": {"room.client.joined": clients_at},
        })
        .to_string(),
        seen_ms: now_ms(),
    };
    a.commit(&[room(3, 300, true, 100)]).unwrap();
    // b saw an older join, but a newer session end.
    b.commit(&[room(2, 200, false, 500)]).unwrap();
    let rooms = a.load(now_ms(), 60_000, 60_000).unwrap().rooms;
    assert_eq!(rooms.len(), 1);
    let state: serde_json::Value = serde_json::from_str(&rooms[0].1).unwrap();
    assert_eq!(state["view"]["numClients"], 3);
    assert_eq!(state["view"]["sessionActive"], false);
    assert_eq!(state["clientsAt"], 300);
    assert_eq!(state["sessionAt"], 500);
}

#[test]
fn a_delivery_stays_with_its_node_while_the_lease_is_renewed() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("leases");
    let lease = Duration::from_secs(2);
    let node = |name: &str| PgStore::connect(&url, PgStoreOptions::new(name).lease(lease)).unwrap();
    let (a, b) = (node("a"), node("b"));
    a.commit(&[id("e1"), enqueue("d1")]).unwrap();
    // a's first attempt failed; the next is due in a minute.
    let retry_at = now_ms() + 60_000;
    a.commit(&[Change::Attempted {
        id: "d1".into(),
        attempts: 1,
        error: "HTTP 503".into(),
        retry_at_ms: Some(retry_at),
    }])
    .unwrap();
    // Queued by a, carried out by a: nobody else takes it …
    assert!(b.take(&[]).unwrap().deliveries.is_empty());
    // … for as long as a renews its lease, longer than one lease.
    let renewing = std::time::Instant::now();
    while renewing.elapsed() < lease + lease / 2 {
        assert!(a.take(&["d1".into()]).unwrap().deliveries.is_empty());
        assert!(
            b.take(&[]).unwrap().deliveries.is_empty(),
            "taken while renewed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // a stops renewing (it died): b takes the delivery once the lease lapses.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let taken = loop {
        let taken = b.take(&[]).unwrap().deliveries;
        if !taken.is_empty() {
            break taken;
        }
        assert!(std::time::Instant::now() < deadline, "d1 was never taken");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ids(&taken), ["d1"]);
    // With its attempts and when the next is due, so that b waits as a would.
    assert_eq!(taken[0].attempts, 1);
    assert_eq!(taken[0].retry_at_ms, Some(retry_at));
    // Now b holds it: a does not get it back.
    assert!(a.take(&[]).unwrap().deliveries.is_empty());
    // `outbox retry` frees a delivery for any node at once.
    assert!(a.retry("d1").unwrap());
    let again = a.take(&[]).unwrap().deliveries;
    assert_eq!(ids(&again), ["d1"]);
    assert_eq!((again[0].attempts, again[0].retry_at_ms), (0, None));
    a.commit(&[Change::Done { id: "d1".into() }]).unwrap();
    assert!(b.pending().unwrap().is_empty());
}

#[test]
fn servers_starting_together_create_the_schema_once() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("schema");
    let barrier = Arc::new(Barrier::new(4));
    let starts: Vec<_> = (0..4)
        .map(|n| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::connect(&url, PgStoreOptions::new(format!("n{n}"))).map(|_| ())
            })
        })
        .collect();
    for start in starts {
        start.join().unwrap().unwrap();
    }
    node(&url, "again").commit(&[id("e1")]).unwrap();
}

#[test]
fn commits_fail_while_the_database_is_down_and_work_again_after() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = pg.database("outage");
    let a = node(&url, "a");
    a.commit(&[id("e1")]).unwrap();
    pg.pause();
    assert!(matches!(a.commit(&[id("e2")]), Err(StoreError::Commit(_))));
    assert!(matches!(a.take(&[]), Err(StoreError::Read(_))));
    pg.resume();
    // The same store, without a restart: it connects again.
    a.commit(&[id("e2")]).unwrap();
    assert_eq!(
        a.commit(&[id("e1")]),
        Err(StoreError::AlreadyRecorded { id: "e1".into() })
    );
}

#[test]
fn an_unreachable_database_is_named_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PgStore::connect(
        &format!("postgres://someone:secret@127.0.0.1:{port}/db"),
        PgStoreOptions::new("a"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("someone@127.0.0.1:{port}/db")),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password is not shown: {err}");
    let err = PgStore::connect("nope://", PgStoreOptions::new("a"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
}

fn run_start(id: &str, claim: &str) -> Change {
    let Change::Enqueue(mut d) = enqueue(id) else {
        unreachable!()
    };
    d.kind = "run".into();
    d.claim = claim.into();
    Change::Enqueue(d)
}

#[test]
fn a_stop_at_one_node_ends_the_claim_whose_assistant_runs_at_another() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("ended");
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    let key = "assistant/acme/standup";
    a.commit(&[id("e1"), claim(key, 60_000), run_start("d1", key)])
        .unwrap();
    // a runs the assistant; b sees the claim, and cannot take the start.
    let seen = b.take(&[]).unwrap();
    assert!(seen.deliveries.is_empty());
    let live = seen.live_claims.expect("a shared store shows every claim");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].key, key);
    assert!(a.take(&["d1".into()]).unwrap().ended.is_empty());
    // b receives the stop: the claim ends, whoever holds it …
    b.commit(&[id("e2"), Change::StopClaim { key: key.into() }])
        .unwrap();
    // … and a learns at its next take that its assistant is to stop.
    let taken = a.take(&["d1".into()]).unwrap();
    assert_eq!(ids(&taken.ended), ["d1"]);
    assert_eq!(taken.live_claims, Some(Vec::new()));
}

#[test]
fn a_start_taken_over_brings_its_claim_with_it() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("takeover");
    let lease = Duration::from_secs(2);
    let node = |name: &str| PgStore::connect(&url, PgStoreOptions::new(name).lease(lease)).unwrap();
    let (a, b) = (node("a"), node("b"));
    let key = "assistant/acme/standup";
    a.commit(&[id("e1"), claim(key, 60_000), run_start("d1", key)])
        .unwrap();
    // a dies: b takes the start once the lease lapses, and the claim with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let taken = loop {
        let taken = b.take(&[]).unwrap();
        if !taken.deliveries.is_empty() {
            break taken;
        }
        assert!(std::time::Instant::now() < deadline, "never taken over");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ids(&taken.deliveries), ["d1"]);
    assert_eq!(taken.claims.len(), 1, "{taken:?}");
    assert_eq!(taken.claims[0].key, key);
    // a's late release (its assistant ended after all) ends nothing now …
    a.commit(&[Change::ReleaseClaim { key: key.into() }])
        .unwrap();
    assert!(b.take(&["d1".into()]).unwrap().ended.is_empty());
    // … b's does.
    b.commit(&[Change::ReleaseClaim { key: key.into() }])
        .unwrap();
    assert_eq!(ids(&b.take(&["d1".into()]).unwrap().ended), ["d1"]);
}

#[test]
fn a_due_stop_is_fired_by_one_node_only_and_not_once_cancelled() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("due");
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    let stop = whereby_trigger::store::StoredStop {
        due_ms: now_ms(),
        rule: "notes".into(),
        cause: "stop_on".into(),
        room_url: "https://acme.whereby.com/standup".into(),
        webhook: "{}".into(),
    };
    let schedule = |key: &str| Change::ScheduleStop {
        key: key.into(),
        stop: stop.clone(),
    };
    let fire = |key: &str| Change::FireStop { key: key.into() };
    a.commit(&[claim("k1", 60_000), schedule("k1")]).unwrap();
    // Both see it due: the first fires it, the second is refused.
    b.commit(&[fire("k1")]).unwrap();
    assert_eq!(
        a.commit(&[fire("k1")]),
        Err(StoreError::StopGone { key: "k1".into() })
    );
    // A stop cancelled at one node is not fired by another that still had it.
    a.commit(&[claim("k2", 60_000), schedule("k2")]).unwrap();
    b.commit(&[Change::CancelStop { key: "k2".into() }])
        .unwrap();
    assert_eq!(
        a.commit(&[fire("k2")]),
        Err(StoreError::StopGone { key: "k2".into() })
    );
    let live = a.take(&[]).unwrap().live_claims.unwrap();
    assert_eq!(live.len(), 1, "k2 is still held: {live:?}");
    assert_eq!(live[0].key, "k2");
    assert_eq!(live[0].stop, None);
}
