use super::*;
use crate::store::Quarantined;

fn delivery(id: &str, created_ms: i64) -> Delivery {
    Delivery {
        id: id.to_owned(),
        trigger: "t".into(),
        kind: "forward".into(),
        action: "start".into(),
        claim: "t:acme/r".into(),
        room_url: "https://acme.whereby.com/r".into(),
        room: None,
        webhook: "{}".into(),
        attempts: 0,
        created_ms,
        status: DeliveryStatus::Pending,
        last_error: None,
        retry_at_ms: None,
        node: String::new(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "whereby-trigger-store-{name}-{}-{}",
        std::process::id(),
        crate::util::now_ms()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn state_survives_reopening() {
    let dir = temp_dir("reopen");
    {
        let store = SqliteStore::open(&dir).unwrap();
        store
            .commit(&[
                Change::RememberId {
                    id: "e1".into(),
                    at_ms: 1_000,
                },
                Change::Claim(StoredClaim {
                    key: "t:acme/r".into(),
                    expires_ms: 10_000,
                    holder: "t".into(),
                    stop: None,
                }),
                Change::Room {
                    key: "acme/r".into(),
                    state: "{\"numClients\":2}".into(),
                    seen_ms: 1_000,
                },
                Change::Enqueue(delivery("d1", 1_000)),
                Change::Enqueue(delivery("d2", 2_000)),
            ])
            .unwrap();
        store
            .commit(&[
                Change::Done { id: "d1".into() },
                Change::Attempted {
                    id: "d2".into(),
                    attempts: 3,
                    error: "HTTP 503".into(),
                    retry_at_ms: Some(61_000),
                },
            ])
            .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let snap = store.load(2_000, 60_000, 60_000).unwrap();
    assert_eq!(snap.ids, [("e1".to_owned(), 1_000)]);
    assert_eq!(snap.claims.len(), 1);
    assert_eq!(snap.rooms.len(), 1);
    assert_eq!(snap.deliveries.len(), 1);
    assert_eq!(snap.deliveries[0].attempts, 3);
    assert_eq!(snap.deliveries[0].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(snap.deliveries[0].retry_at_ms, Some(61_000));
    // Made pending again by hand, it starts afresh: no wait for a retry.
    assert!(store.retry("d2").unwrap());
    assert_eq!(store.deliveries().unwrap()[0].retry_at_ms, None);
    assert!(store.claim_held("t:acme/r", 2_000).unwrap());
    // Expired state is dropped on load.
    let later = store.load(20_000, 5_000, 5_000).unwrap();
    assert!(later.ids.is_empty() && later.claims.is_empty() && later.rooms.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_id_logged_twice_loads_once_with_its_latest_time() {
    let dir = temp_dir("twice");
    let store = SqliteStore::open(&dir).unwrap();
    for at_ms in [1_000, 3_000, 2_000] {
        store
            .commit(&[Change::RememberId {
                id: "e1".into(),
                at_ms,
            }])
            .unwrap();
    }
    store
        .commit(&[Change::RememberId {
            id: "e0".into(),
            at_ms: 1_500,
        }])
        .unwrap();
    let snap = store.load(4_000, 60_000, 60_000).unwrap();
    assert_eq!(
        snap.ids,
        [("e0".to_owned(), 1_500), ("e1".to_owned(), 3_000)]
    );
    // Pruning goes by each row's time.
    let snap = store.load(4_000, 1_500, 60_000).unwrap();
    assert_eq!(snap.ids, [("e1".to_owned(), 3_000)]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_database_of_the_first_schema_is_upgraded_in_place() {
    let dir = temp_dir("upgrade");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let old = Connection::open(dir.join(DB_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE event_ids (id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
             INSERT INTO event_ids VALUES ('late', 2000), ('early', 1000);
             CREATE TABLE claims (key TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);
             INSERT INTO claims VALUES ('t:acme/r', 9000);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let snap = store.load(3_000, 60_000, 60_000).unwrap();
    assert_eq!(
        snap.ids,
        [("early".to_owned(), 1_000), ("late".to_owned(), 2_000)]
    );
    assert_eq!(snap.claims.len(), 1);
    let tables: i64 = store
        .lock()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'event_ids'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old table is gone");
    drop(store);
    // Opening again finds the current version and changes nothing.
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(store.load(3_000, 60_000, 60_000).unwrap().ids.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sync_flushes_the_log_whether_or_not_anything_was_written() {
    let dir = temp_dir("sync");
    let store = SqliteStore::open(&dir).unwrap();
    store.sync().unwrap();
    store
        .commit(&[Change::RememberId {
            id: "e1".into(),
            at_ms: 1_000,
        }])
        .unwrap();
    // The commit is in the log, which the sync flushes.
    assert!(store.wal.exists(), "{}", store.wal.display());
    store.sync().unwrap();
    store.sync().unwrap();
    assert_eq!(store.load(2_000, 60_000, 60_000).unwrap().ids.len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn outbox_management() {
    let dir = temp_dir("outbox");
    let store = SqliteStore::open(&dir).unwrap();
    store
        .commit(&[
            Change::Enqueue(delivery("a", 1)),
            Change::Enqueue(delivery("b", 2)),
            Change::Dead {
                id: "a".into(),
                error: "HTTP 400".into(),
            },
        ])
        .unwrap();
    let listed = store.deliveries().unwrap();
    assert_eq!(listed[0].status, DeliveryStatus::Dead);
    assert_eq!(store.retry_dead().unwrap(), 1);
    assert_eq!(
        store.deliveries().unwrap()[0].status,
        DeliveryStatus::Pending
    );
    assert!(store.drop_delivery("b").unwrap());
    assert!(!store.drop_delivery("b").unwrap());
    assert!(!store.retry("nope").unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_batch_applies_nothing() {
    let dir = temp_dir("atomic");
    let store = SqliteStore::open(&dir).unwrap();
    // Make the table unwritable in a way the second change trips over.
    store
        .lock()
        .execute_batch(
            "CREATE TRIGGER no_rooms BEFORE INSERT ON rooms BEGIN SELECT RAISE(ABORT, 'full'); END;",
        )
        .unwrap();
    let err = store
        .commit(&[
            Change::RememberId {
                id: "e1".into(),
                at_ms: 1,
            },
            Change::Room {
                key: "k".into(),
                state: "{}".into(),
                seen_ms: 1,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::Commit(_)), "{err}");
    assert!(store.load(2, 1_000, 1_000).unwrap().ids.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_claim_keeps_its_holder_and_pending_stop_until_cancelled_or_released() {
    let dir = temp_dir("stops");
    let stop = StoredStop {
        due_ms: 5_000,
        rule: "leave".into(),
        cause: "stop_when".into(),
        room_url: "https://acme.whereby.com/r".into(),
        webhook: r#"{"id":"l1"}"#.into(),
    };
    {
        let store = SqliteStore::open(&dir).unwrap();
        store
            .commit(&[
                Change::Claim(StoredClaim {
                    key: "assistant:acme/r".into(),
                    expires_ms: 10_000,
                    holder: "on-invite".into(),
                    stop: None,
                }),
                Change::ScheduleStop {
                    key: "assistant:acme/r".into(),
                    stop: stop.clone(),
                },
                Change::Enqueue(Delivery {
                    room: Some(r#"{"numClients":2}"#.into()),
                    ..delivery("d1", 1_000)
                }),
            ])
            .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let snap = store.load(2_000, 60_000, 60_000).unwrap();
    assert_eq!(
        snap.claims,
        [StoredClaim {
            key: "assistant:acme/r".into(),
            expires_ms: 10_000,
            holder: "on-invite".into(),
            stop: Some(stop),
        }]
    );
    assert_eq!(
        snap.deliveries[0].room.as_deref(),
        Some(r#"{"numClients":2}"#)
    );
    store
        .commit(&[Change::CancelStop {
            key: "assistant:acme/r".into(),
        }])
        .unwrap();
    assert_eq!(
        store.load(2_000, 60_000, 60_000).unwrap().claims[0].stop,
        None
    );
    store
        .commit(&[Change::ReleaseClaim {
            key: "assistant:acme/r".into(),
        }])
        .unwrap();
    assert!(store.load(2_000, 60_000, 60_000).unwrap().claims.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_database_of_schema_one_gains_holders_stops_and_rooms() {
    let dir = temp_dir("upgrade-v1");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let old = Connection::open(dir.join(DB_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE claims (key TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);
             INSERT INTO claims VALUES ('t:acme/r', 9000);
             CREATE TABLE deliveries (id TEXT PRIMARY KEY, trigger TEXT NOT NULL,
                 kind TEXT NOT NULL, action TEXT NOT NULL, claim TEXT NOT NULL,
                 room_url TEXT NOT NULL, webhook TEXT NOT NULL, attempts INTEGER NOT NULL,
                 created_ms INTEGER NOT NULL, status TEXT NOT NULL, last_error TEXT);
             INSERT INTO deliveries VALUES ('d1', 't', 'run', 'start', '', 'u', '{}', 0, 1000, 'pending', NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let snap = store.load(3_000, 60_000, 60_000).unwrap();
    assert_eq!(
        (snap.claims[0].holder.as_str(), &snap.claims[0].stop),
        ("", &None)
    );
    assert_eq!(snap.deliveries[0].room, None);
    drop(store);
    // Opening it again finds it upgraded already.
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(store.load(3_000, 60_000, 60_000).unwrap().claims.len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_data_directory_is_held_by_one_store_and_freed_with_it() {
    let dir = temp_dir("lock");
    let first = SqliteStore::open(&dir).unwrap();
    match SqliteStore::open(&dir) {
        Err(StoreError::InUse { path, pid }) => {
            assert_eq!(path, dir.display().to_string());
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("a second store opened the directory: {other:?}"),
    }
    // The operator's commands work beside it.
    let shared = SqliteStore::open_shared(&dir).unwrap();
    assert!(shared.deliveries().unwrap().is_empty());
    drop(first);
    let again = SqliteStore::open(&dir).unwrap();
    drop(again);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_database_deleted_or_replaced_under_the_store_fails_its_next_sync() {
    let commit = |store: &SqliteStore| {
        store.commit(&[Change::RememberId {
            id: "e".into(),
            at_ms: 1,
        }])
    };
    // Deleted.
    let dir = temp_dir("deleted");
    let store = SqliteStore::open(&dir).unwrap();
    commit(&store).unwrap();
    store.sync().unwrap();
    std::fs::remove_file(dir.join(DB_FILE)).unwrap();
    let _ = commit(&store);
    match store.sync() {
        Err(StoreError::Sync(why)) => assert!(why.contains("was deleted"), "{why}"),
        other => panic!("{other:?}"),
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);

    // Replaced by another file (a restore from backup, say).
    let dir = temp_dir("replaced");
    let store = SqliteStore::open(&dir).unwrap();
    commit(&store).unwrap();
    store.sync().unwrap();
    let db = dir.join(DB_FILE);
    std::fs::copy(&db, dir.join("copy")).unwrap();
    std::fs::rename(dir.join("copy"), &db).unwrap();
    let _ = commit(&store);
    match store.sync() {
        Err(StoreError::Sync(why)) => assert!(why.contains("was replaced"), "{why}"),
        other => panic!("{other:?}"),
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);

    // Its log deleted.
    let dir = temp_dir("wal-deleted");
    let store = SqliteStore::open(&dir).unwrap();
    commit(&store).unwrap();
    store.sync().unwrap();
    let mut wal = dir.join(DB_FILE).into_os_string();
    wal.push("-wal");
    std::fs::remove_file(&wal).unwrap();
    match store.sync() {
        Err(StoreError::Sync(why)) => assert!(why.contains("was deleted"), "{why}"),
        other => panic!("{other:?}"),
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_lock_file_deleted_or_replaced_under_the_store_fails_its_next_sync() {
    let lost = |store: &SqliteStore, how: &str| match store.sync() {
        Err(StoreError::Sync(why)) => {
            assert!(why.contains(&format!("{LOCK_FILE} was {how}")), "{why}");
        }
        other => panic!("{how}: {other:?}"),
    };
    let dir = temp_dir("lock-lost");
    let store = SqliteStore::open(&dir).unwrap();
    store.sync().unwrap();
    std::fs::remove_file(dir.join(LOCK_FILE)).unwrap();
    lost(&store, "deleted");
    // Without the check, this second server would run beside the first.
    let second = SqliteStore::open(&dir).unwrap();
    lost(&store, "replaced");
    // The one whose lock is the file at the path goes on.
    second.sync().unwrap();
    drop((store, second));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_quarantine_keeps_each_body_once_and_is_bounded_by_count_and_age() {
    let dir = temp_dir("quarantine");
    let store = SqliteStore::open(&dir).unwrap();
    let refused = |n: u32, at_ms: i64| {
        Change::Quarantine(Quarantined::new(
            format!("{{\"n\":{n}}}").as_bytes(),
            "invalid_webhook",
            Some("data.roomName"),
            "no roomName",
            at_ms,
        ))
    };
    store
        .commit(&[refused(0, 1_000), refused(0, 2_000)])
        .unwrap();
    let kept = store.quarantined().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].id.len(), kept[0].at_ms), (16, 1_000));
    assert_eq!(kept[0].body, br#"{"n":0}"#);

    let flood: Vec<Change> = (1..=crate::store::QUARANTINE_MAX)
        .map(|n| refused(n, 1_000 + i64::from(n)))
        .collect();
    store.commit(&flood).unwrap();
    let kept = store.quarantined().unwrap();
    assert_eq!(kept.len(), crate::store::QUARANTINE_MAX as usize);
    assert!(
        !kept.iter().any(|q| q.body == br#"{"n":0}"#),
        "the oldest went first"
    );

    let week = crate::store::QUARANTINE_MAX_AGE_MS;
    store.prune(1_500 + week, 60_000, 60_000).unwrap();
    assert_eq!(
        store.quarantined().unwrap().len(),
        crate::store::QUARANTINE_MAX as usize - 500
    );
    assert!(store.drop_quarantined(&kept.last().unwrap().id).unwrap());
    assert!(!store.drop_quarantined("nope").unwrap());
    let _ = std::fs::remove_dir_all(dir);
}
