//! The durable store through the library: nothing fires unless it is recorded,
//! and what was recorded survives a restart.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common::fixture::TempDir;
use crate::common::{SECRET, builder, client, post_signed, send};
use whereby_trigger::TriggerHandle;
use whereby_trigger::actions::{Action, ActionEvent};
use whereby_trigger::limits::DEFAULT_REQUEST_DEADLINE;
use whereby_trigger::rules::engine::{Engine, Rule};
use whereby_trigger::state::claims::OncePer;
use whereby_trigger::store::{
    Change, MemoryStore, Retention, Snapshot, SqliteStore, Store, StoreError,
};
use whereby_trigger::webhook::{EventType, RoomSessionStarted, sample};

const RETENTION: Retention = Retention {
    id_max_age_ms: 3_600_000,
    room_idle_ms: 3_600_000,
};
const WAIT: Duration = Duration::from_secs(10);

/// A store whose commits fail while `fail` is set, and whose syncs fail while
/// `fail_sync` is.
#[derive(Default)]
struct Switchable {
    fail: AtomicBool,
    fail_sync: AtomicBool,
}

impl Store for Switchable {
    fn load(&self, _: i64, _: i64, _: i64) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Commit("disk full".into()))
        } else {
            MemoryStore.commit(changes)
        }
    }
    fn sync(&self) -> Result<(), StoreError> {
        if self.fail_sync.load(Ordering::SeqCst) {
            Err(StoreError::Sync("I/O error".into()))
        } else {
            Ok(())
        }
    }
}

/// A store shared with another receiver, which has recorded the events whose
/// id starts with `elsewhere-`.
struct Shared;

impl Store for Shared {
    fn load(&self, _: i64, _: i64, _: i64) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        for change in changes {
            if let Change::RememberId { id, .. } = change
                && id.starts_with("elsewhere-")
            {
                return Err(StoreError::AlreadyRecorded { id: id.clone() });
            }
        }
        MemoryStore.commit(changes)
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store shared with another receiver, which holds every `note-taker` claim
/// for an hour; it records what it was asked to commit.
#[derive(Default)]
struct ClaimedElsewhere {
    committed: Mutex<Vec<Change>>,
    refused: AtomicUsize,
}

impl Store for ClaimedElsewhere {
    fn load(&self, _: i64, _: i64, _: i64) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        for change in changes {
            if let Change::Claim(claim) = change
                && claim.key.starts_with("note-taker:")
            {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::ClaimHeld {
                    key: claim.key.clone(),
                    expires_ms: claim.expires_ms + 3_600_000,
                });
            }
        }
        self.committed.lock().unwrap().extend_from_slice(changes);
        Ok(())
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store whose commits wait while the gate is shut.
#[derive(Default)]
struct Gated {
    shut: Mutex<bool>,
    opened: Condvar,
}

impl Gated {
    fn set(&self, shut: bool) {
        *self.shut.lock().unwrap() = shut;
        self.opened.notify_all();
    }
}

impl Store for Gated {
    fn load(&self, _: i64, _: i64, _: i64) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let shut = self.shut.lock().unwrap();
        let (shut, waited) = self
            .opened
            .wait_timeout_while(shut, WAIT, |shut| *shut)
            .unwrap();
        drop(shut);
        if waited.timed_out() {
            return Err(StoreError::Commit("the gate stayed shut".into()));
        }
        MemoryStore.commit(changes)
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An action that records the events it starts.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Action for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }
    fn start(&self, event: Arc<ActionEvent>) {
        self.0.lock().unwrap().push(event.event_id().to_owned());
    }
    fn stop(&self, _: Arc<ActionEvent>) {}
}

fn session_started(id: &str, session: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(sample::sample("room.session.started").unwrap()).unwrap();
    v["id"] = id.into();
    v["data"]["roomSessionId"] = session.into();
    v.to_string()
}

async fn start(store: Arc<dyn Store>, recorder: Arc<Recorder>) -> TriggerHandle {
    start_with(store, recorder, DEFAULT_REQUEST_DEADLINE).await
}

async fn start_with(
    store: Arc<dyn Store>,
    recorder: Arc<Recorder>,
    deadline: Duration,
) -> TriggerHandle {
    let engine = Arc::new(Engine::new(vec![
        Rule::new("note-taker", [EventType::RoomSessionStarted])
            .once_per(OncePer::Room)
            .action(recorder),
    ]));
    builder()
        .secret(SECRET)
        .rules(engine)
        .on(|_: &RoomSessionStarted| true)
        .store(store, RETENTION)
        .request_deadline(deadline)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// POSTs `body`, signed; the status and the body of the answer.
async fn post(handle: &TriggerHandle, body: &str) -> (u16, String) {
    let reply = post_signed(handle.local_addr(), SECRET, body).await;
    (reply.status.as_u16(), reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_503_and_nothing_fires() {
    let store = Arc::new(Switchable::default());
    let recorder = Arc::new(Recorder::default());
    let handle = start(store.clone(), recorder.clone()).await;
    let mut events = handle.subscribe();
    let body = session_started("s1", "sess-1");

    store.fail.store(true, Ordering::SeqCst);
    let (status, answer) = post(&handle, &body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("store_unavailable"), "{answer}");
    assert!(recorder.0.lock().unwrap().is_empty(), "no action ran");
    assert!(events.try_recv().is_none(), "no trigger event");

    // Whereby's retry, once the store is back: evaluated afresh, fires once; the
    // claim the failed attempt took was given back.
    store.fail.store(false, Ordering::SeqCst);
    let (status, answer) = post(&handle, &body).await;
    assert_eq!(
        (status, answer.as_str()),
        (200, r#"{"outcome":"triggered"}"#)
    );
    assert_eq!(recorder.0.lock().unwrap().as_slice(), ["s1"]);
    assert!(events.try_recv().is_some());
    let (_, again) = post(&handle, &body).await;
    assert_eq!(again, r#"{"outcome":"duplicate"}"#);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_another_receiver_recorded_is_a_duplicate_here() {
    let recorder = Arc::new(Recorder::default());
    let handle = start(Arc::new(Shared), recorder.clone()).await;
    let mut events = handle.subscribe();

    let theirs = session_started("elsewhere-1", "sess-1");
    assert_eq!(
        post(&handle, &theirs).await,
        (200, r#"{"outcome":"duplicate"}"#.to_owned())
    );
    assert!(recorder.0.lock().unwrap().is_empty(), "no action ran here");
    assert!(events.try_recv().is_none(), "no trigger event here");

    // The room's claim was given back: the next event in it fires here.
    let ours = session_started("here-1", "sess-2");
    assert_eq!(
        post(&handle, &ours).await,
        (200, r#"{"outcome":"triggered"}"#.to_owned())
    );
    assert_eq!(recorder.0.lock().unwrap().as_slice(), ["here-1"]);

    // And the id is known here from now on.
    assert_eq!(post(&handle, &theirs).await.1, r#"{"outcome":"duplicate"}"#);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_another_receiver_holds_suppresses_the_rule_here_and_the_rest_fires() {
    let store = Arc::new(ClaimedElsewhere::default());
    let (note_taker, greeter) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let engine = Arc::new(Engine::new(vec![
        Rule::new("note-taker", [EventType::RoomSessionStarted])
            .once_per(OncePer::Room)
            .action(note_taker.clone()),
        Rule::new("greeter", [EventType::RoomSessionStarted]).action(greeter.clone()),
    ]));
    let handle = builder()
        .secret(SECRET)
        .rules(engine)
        .store(store.clone(), RETENTION)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    // The store refuses the note-taker's claim; decided again, the rule is
    // suppressed and the greeter still fires, in one answer.
    let first = session_started("s1", "sess-1");
    assert_eq!(
        post(&handle, &first).await,
        (200, r#"{"outcome":"triggered"}"#.to_owned())
    );
    assert!(
        note_taker.0.lock().unwrap().is_empty(),
        "no second assistant"
    );
    assert_eq!(greeter.0.lock().unwrap().as_slice(), ["s1"]);
    assert_eq!(store.refused.load(Ordering::SeqCst), 1);
    let committed = store.committed.lock().unwrap().clone();
    assert!(
        committed
            .iter()
            .any(|c| matches!(c, Change::RememberId { id, .. } if id == "s1")),
        "the id was committed on the second round"
    );
    assert!(
        !committed
            .iter()
            .any(|c| matches!(c, Change::ReleaseClaim { .. } | Change::StopClaim { .. })),
        "nothing releases the other receiver's claim: {committed:?}"
    );

    // The claim is now known to be held: the next event in the room does not
    // even ask the store for it.
    let second = session_started("s2", "sess-2");
    assert_eq!(post(&handle, &second).await.1, r#"{"outcome":"triggered"}"#);
    assert_eq!(store.refused.load(Ordering::SeqCst), 1);
    assert!(note_taker.0.lock().unwrap().is_empty());
    assert_eq!(greeter.0.lock().unwrap().as_slice(), ["s1", "s2"]);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_claims_survive_a_restart() {
    let temp = TempDir::new("durable-restart");
    let dir = temp.join("store");

    let recorder = Arc::new(Recorder::default());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).unwrap());
    let handle = start(store, recorder.clone()).await;
    let first = session_started("r1", "sess-1");
    assert_eq!(post(&handle, &first).await.1, r#"{"outcome":"triggered"}"#);
    // Shutting down flushes the store.
    handle.shutdown().await.unwrap();

    // A new process on the same directory.
    let recorder = Arc::new(Recorder::default());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).unwrap());
    let handle = start(store, recorder.clone()).await;
    assert_eq!(post(&handle, &first).await.1, r#"{"outcome":"duplicate"}"#);
    // Another event in the same room: the room is still claimed.
    let second = session_started("r2", "sess-2");
    assert_eq!(post(&handle, &second).await.1, r#"{"outcome":"triggered"}"#);
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "the claimed room gets no second assistant"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_after_its_request_gave_up_still_fires() {
    let store = Arc::new(Gated::default());
    let recorder = Arc::new(Recorder::default());
    let handle = start_with(store.clone(), recorder.clone(), Duration::from_millis(300)).await;
    let mut events = handle.subscribe();
    let body = session_started("late", "sess-late");

    // The commit outlasts the request's deadline: the request is answered 503
    // and its handler dropped while the changes are still on their way.
    store.set(true);
    let (status, answer) = post(&handle, &body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(recorder.0.lock().unwrap().is_empty());

    // The commit then succeeds: what it recorded must happen, exactly once.
    store.set(false);
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the trigger event came in time")
        .expect("the stream is open");
    let deadline = tokio::time::Instant::now() + WAIT;
    while recorder.0.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the action never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(recorder.0.lock().unwrap().as_slice(), ["late"]);
    // Whereby's retry of the 503 is a duplicate: the id was remembered.
    let (status, again) = post(&handle, &body).await;
    assert_eq!(
        (status, again.as_str()),
        (200, r#"{"outcome":"duplicate"}"#)
    );
    assert_eq!(recorder.0.lock().unwrap().len(), 1);
    handle.shutdown().await.unwrap();
}

/// `GET path` on `handle`: status and body.
async fn probe(handle: &TriggerHandle, path: &str) -> (u16, String) {
    let reply = send(client().get(format!("http://{}{path}", handle.local_addr()))).await;
    (reply.status.as_u16(), reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_commits_fail_and_200_once_the_store_commits_again() {
    let store = Arc::new(Switchable::default());
    let recorder = Arc::new(Recorder::default());
    let handle = start(store.clone(), recorder.clone()).await;
    assert_eq!(probe(&handle, "/readyz").await.0, 200);

    // The commit fails (before any flush): webhooks are 503, and the server
    // is not ready, though alive.
    store.fail.store(true, Ordering::SeqCst);
    let (status, answer) = post(&handle, &session_started("r1", "sess-r1")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, body) = probe(&handle, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    assert_eq!(probe(&handle, "/healthz").await.0, 200);
    // Still failing: the probe's own commit fails too.
    assert_eq!(probe(&handle, "/readyz").await.0, 503);

    // The store is back: without a webhook to tell, the probe's own commit does.
    store.fail.store(false, Ordering::SeqCst);
    assert_eq!(probe(&handle, "/readyz").await.0, 200);
    let (status, answer) = post(&handle, &session_started("r1", "sess-r1")).await;
    assert_eq!(
        (status, answer.as_str()),
        (200, r#"{"outcome":"triggered"}"#)
    );
    assert_eq!(probe(&handle, "/readyz").await.0, 200);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_flush_every_webhook_is_503_and_healthz_says_so() {
    let store = Arc::new(Switchable::default());
    let recorder = Arc::new(Recorder::default());
    let handle = start(store.clone(), recorder.clone()).await;
    let health = |handle: &TriggerHandle| {
        let url = format!("http://{}/healthz", handle.local_addr());
        async move {
            let reply = send(client().get(url)).await;
            (reply.status.as_u16(), reply.body)
        }
    };
    assert_eq!(health(&handle).await.0, 200);

    store.fail_sync.store(true, Ordering::SeqCst);
    let (status, answer) = post(&handle, &session_started("f1", "sess-f1")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("store_unavailable"), "{answer}");

    // The disk answers again, but what the failed flush lost is unknown: the
    // server refuses until it is restarted, and its health check says so.
    store.fail_sync.store(false, Ordering::SeqCst);
    let (status, answer) = post(&handle, &session_started("f2", "sess-f2")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, body) = health(&handle).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    assert_eq!(probe(&handle, "/readyz").await.0, 503);
    assert!(recorder.0.lock().unwrap().is_empty(), "nothing fired");
    handle.shutdown().await.unwrap();
}
