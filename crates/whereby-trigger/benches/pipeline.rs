//! Micro-benchmarks of the steps one webhook goes through inside the Trigger
//! (criterion). `benches/throughput.rs` measures the whole server under load;
//! this file measures the parts one at a time:
//!
//! - `dedup`: [`MemoryDedup`] `reserve` + `remember` of a fresh event id (the
//!   store at its default bounds, so once it is full every remember also trims);
//! - `cel`: a `when` expression evaluated over a `room.client.joined` webhook,
//!   compiled once ([`When::eval`]), and the conversion of the webhook's JSON
//!   into the expression's input ([`WhenInput::new`]), done once per event;
//! - `engine`: [`Engine::decide`] for a one-trigger config with a `when`,
//!   `once_per = "session"` and a `stdout` action, on a `room.client.joined`
//!   that fires (the claim is free) and on one that is suppressed (the session
//!   is already claimed);
//! - `sqlite_commit`: [`SqliteStore::commit`] of 1, 16 and 64
//!   [`Change::RememberId`] in one transaction (`remember_ids`: the write
//!   alone, to the OS's cache), and the same followed by [`Store::sync`]
//!   (`remember_ids_synced`: what a webhook waits for when it is alone; the
//!   server overlaps the sync of one batch with the commit of the next). The
//!   sync measures the disk's flush latency more than any code: the store lives
//!   in a fresh directory under the system temporary directory (`TMPDIR`),
//!   removed at the end.
//!
//! ```text
//! cargo bench -p whereby-trigger --bench pipeline
//! cargo bench -p whereby-trigger --bench pipeline -- engine/   # one group
//! ```

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use whereby_trigger::actions::stdout::LineSink;
use whereby_trigger::config::Config;
use whereby_trigger::registry::Registry;
use whereby_trigger::rules::cel::{When, WhenInput};
use whereby_trigger::rules::engine::{Engine, Verdict};
use whereby_trigger::state::room::RoomView;
use whereby_trigger::store::{Change, SqliteStore, Store};
use whereby_trigger::webhook::sample::sample;
use whereby_trigger::webhook::{BaseDomain, WebhookEvent, parse};
use whereby_trigger::{DedupLimits, Deduplicate, MemoryDedup, Reservation};

/// The `when` of the CEL and engine benchmarks: true for the sample.
const WHEN: &str = r#"data.subdomain == "acme" && data.roleName == "host" && room.numClients >= 1"#;

/// The engine's config: one trigger, as a config file would have it.
const CONFIG: &str = r#"
[[trigger]]
name = "note-taker"
on = ["room.client.joined"]
when = 'data.subdomain == "acme" && data.roleName == "host" && room.numClients >= 1'
once_per = "session"
stdout = true
"#;

/// The `room.client.joined` sample as Whereby delivers it: compact JSON.
fn joined_body() -> Bytes {
    let value: serde_json::Value =
        serde_json::from_str(sample("room.client.joined").expect("the sample exists"))
            .expect("a sample is JSON");
    Bytes::from(serde_json::to_vec(&value).expect("JSON serialises"))
}

/// A 64-hex-digit event id, like Whereby's, distinct for each `n`.
fn event_id(n: u64) -> String {
    // splitmix64, so that ids look random rather than counting.
    let mut state = n;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        next(),
        next(),
        next(),
        next()
    )
}

fn dedup(c: &mut Criterion) {
    let dedup = MemoryDedup::new(DedupLimits::default());
    let mut next = 0u64;
    let mut group = c.benchmark_group("dedup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("reserve_remember_fresh", |b| {
        // Ids are made outside the timed loop, a chunk at a time, so that the
        // measurement is the store's work, not formatting, and memory stays small.
        const CHUNK: u64 = 4096;
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let ids: Vec<String> = (0..left.min(CHUNK))
                    .map(|_| {
                        next += 1;
                        event_id(next)
                    })
                    .collect();
                left -= ids.len() as u64;
                let now = Instant::now();
                let start = Instant::now();
                let mut fresh = 0usize;
                for id in &ids {
                    let id = black_box(id.as_str());
                    fresh += usize::from(dedup.reserve(id, now) == Reservation::Fresh);
                    dedup.remember(id, now);
                }
                elapsed += start.elapsed();
                assert_eq!(fresh, ids.len(), "every id is fresh");
            }
            elapsed
        })
    });
    group.finish();
}

fn cel(c: &mut Criterion) {
    let raw = joined_body();
    let json: serde_json::Value = serde_json::from_slice(&raw).expect("JSON");
    let room = RoomView {
        num_clients: 1,
        num_clients_by_role_name: [("host".to_owned(), 1)].into(),
        session_active: true,
    };
    let when = When::compile(WHEN).expect("the expression compiles");
    let input = WhenInput::new(&json, Some(&room));
    assert_eq!(when.eval(&input), Ok(true));

    let mut group = c.benchmark_group("cel");
    group.bench_function("when_eval", |b| {
        b.iter(|| black_box(&when).eval(black_box(&input)))
    });
    group.bench_function("when_input", |b| {
        b.iter(|| WhenInput::new(black_box(&json), black_box(Some(&room))))
    });
    group.finish();
}

fn engine(c: &mut Criterion) {
    let config = Config::from_toml(CONFIG, &|_: &str| None).expect("the config is valid");
    // The stdout action is never dispatched here; its sink writes nowhere.
    let actions = Registry::new(LineSink::new(std::io::sink()));
    let engine = Engine::new(actions.rules(&config).expect("the rules build"));
    let raw = joined_body();
    let event: WebhookEvent = parse(&raw).expect("the sample parses");
    let room_url = event
        .in_room()
        .expect("a room event")
        .room_url(&BaseDomain::default())
        .expect("a valid room");

    let mut group = c.benchmark_group("engine");
    group.bench_function("decide_fired", |b| {
        // Each iteration must find the session unclaimed, so the claim it
        // takes is given back after the clock stops: each call is timed alone
        // (the clock's own cost, some tens of ns, is included).
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let now = Instant::now();
                let start = Instant::now();
                let decision = engine.decide(
                    black_box(&event),
                    black_box(&raw),
                    black_box(Some(room_url.as_str())),
                    now,
                );
                elapsed += start.elapsed();
                assert!(decision.fired(), "{decision:?}");
                decision.abandon(engine.claims());
            }
            elapsed
        })
    });

    // A later join in the same session: `when` is true, the claim is held.
    let first = engine.decide(&event, &raw, Some(&room_url), Instant::now());
    assert!(first.fired());
    let again = engine.decide(&event, &raw, Some(&room_url), Instant::now());
    assert!(
        matches!(again.verdicts[..], [Verdict::Suppressed { .. }]),
        "{again:?}"
    );
    group.bench_function("decide_suppressed", |b| {
        b.iter(|| {
            engine.decide(
                black_box(&event),
                black_box(&raw),
                black_box(Some(room_url.as_str())),
                Instant::now(),
            )
        })
    });
    group.finish();
    first.abandon(engine.claims());
}

/// A fresh directory under the system temporary directory, removed (with the
/// database in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "whereby-trigger-bench-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remember_ids(count: usize, next: &mut u64) -> Vec<Change> {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    (0..count)
        .map(|_| {
            *next += 1;
            Change::RememberId {
                id: event_id(*next),
                at_ms,
            }
        })
        .collect()
}

fn sqlite_commit(c: &mut Criterion) {
    let mut next = 0u64;
    let mut group = c.benchmark_group("sqlite_commit");
    // Up to milliseconds per commit (an fsync each, slower while other work
    // writes to the disk): few samples, flat sampling (the same iteration count
    // in every sample, as criterion advises for long benchmarks) and short
    // times keep this group to a few seconds per batch size.
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for count in [1usize, 16, 64] {
        let dir = TempDir::new(&format!("commit-{count}"));
        let store = SqliteStore::open(dir.path()).expect("the store opens");
        group.throughput(Throughput::Elements(count as u64));
        for (name, synced) in [("remember_ids", false), ("remember_ids_synced", true)] {
            group.bench_with_input(BenchmarkId::new(name, count), &count, |b, &count| {
                b.iter_batched_ref(
                    || remember_ids(count, &mut next),
                    |changes| {
                        store
                            .commit(black_box(changes))
                            .expect("the commit succeeds");
                        if synced {
                            store.sync().expect("the sync succeeds");
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        // The database is closed before its directory is removed.
        drop(store);
        drop(dir);
    }
    group.finish();
}

/// Short runs for the in-memory steps (hundreds of ns to tens of µs each):
/// 0.5 s of warm-up and 1.5 s of measurement give stable medians and keep the
/// file under half a minute on two cores. `--warm-up-time` and
/// `--measurement-time` still override these (except for `sqlite_commit`,
/// which sets its own).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = dedup, cel, engine, sqlite_commit
}
criterion_main!(benches);
