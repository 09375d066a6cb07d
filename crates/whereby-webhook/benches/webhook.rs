//! Micro-benchmarks of the pure webhook steps (criterion).
//!
//! - `signature`: [`Verifier::verify`] over a typical body (the
//!   `room.client.joined` sample, compact as Whereby sends it) with one secret,
//!   with two secrets during a rotation where the second matches, and with a
//!   signature that matches no secret;
//! - `header`: [`SignatureHeader::parse`] alone, one and two `v1` entries;
//! - `parse`: [`parse`] of every sample webhook type to its typed event;
//! - `room_url`: [`room_url()`] for a typical room, a refused one, and
//!   [`BaseDomain::new`].
//!
//! Throughput is in bytes of body (or header) where that is what the step
//! reads.
//!
//! ```text
//! cargo bench -p whereby-webhook --bench webhook
//! cargo bench -p whereby-webhook --bench webhook -- parse/   # one group
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use whereby_webhook::sample::{SAMPLES, sample};
use whereby_webhook::{BaseDomain, SignatureHeader, SigningSecret, Verifier, parse, room_url};

/// The signed timestamp; verification runs one second later.
const SIGNED_AT: u64 = 1_790_000_000;

/// `body` as Whereby delivers it: compact JSON.
fn compact(body: &str) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_str(body).expect("a sample is JSON");
    serde_json::to_vec(&value).expect("JSON serialises")
}

/// The body every signature benchmark verifies.
fn typical_body() -> Vec<u8> {
    compact(sample("room.client.joined").expect("the sample exists"))
}

fn signature(c: &mut Criterion) {
    let body = typical_body();
    let current = SigningSecret::new("whsec_current_0123456789abcdef");
    let previous = SigningSecret::new("whsec_previous_0123456789abcdef");
    let now = SIGNED_AT + 1;

    let header = current.sign(SIGNED_AT, &body);
    let one = Verifier::new([current.clone()]);
    // During a rotation the old secret comes first and the new one matches.
    let rotation = Verifier::new([previous.clone(), current.clone()]);
    let wrong = previous.sign(SIGNED_AT, &body);
    assert!(one.verify(Some(header.as_bytes()), &body, now).is_ok());
    assert!(rotation.verify(Some(header.as_bytes()), &body, now).is_ok());
    assert!(one.verify(Some(wrong.as_bytes()), &body, now).is_err());

    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (name, verifier, header) in [
        ("verify_one_secret", &one, &header),
        ("verify_rotation_second_matches", &rotation, &header),
        ("verify_mismatch", &one, &wrong),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(verifier).verify(
                    black_box(Some(header.as_bytes())),
                    black_box(&body),
                    black_box(now),
                )
            })
        });
    }
    group.finish();
}

fn header(c: &mut Criterion) {
    let body = typical_body();
    let single = SigningSecret::new("whsec_current").sign(SIGNED_AT, &body);
    // What a sender signing with two secrets at once sends: two `v1` entries.
    let double = format!(
        "{single},v1={}",
        SigningSecret::new("whsec_next")
            .sign(SIGNED_AT, &body)
            .rsplit_once("v1=")
            .expect("a signed header has v1")
            .1
    );
    assert_eq!(
        SignatureHeader::parse(double.as_bytes())
            .expect("valid")
            .signatures()
            .count(),
        2
    );

    let mut group = c.benchmark_group("header");
    for (name, header) in [("parse_one_v1", &single), ("parse_two_v1", &double)] {
        group.throughput(Throughput::Bytes(header.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| SignatureHeader::parse(black_box(header.as_bytes())))
        });
    }
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (event_type, pretty) in SAMPLES {
        let body = compact(pretty);
        let parsed = parse(&body).expect("every sample parses");
        assert_eq!(parsed.type_name(), *event_type);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(event_type), &body, |b, body| {
            b.iter(|| parse(black_box(body)))
        });
    }
    group.finish();
}

fn room_urls(c: &mut Criterion) {
    let base = BaseDomain::default();
    assert_eq!(
        room_url("acme", "/standup-3f9a2c", &base).as_deref(),
        Ok("https://acme.whereby.com/standup-3f9a2c")
    );
    assert!(room_url("acme", "/x?next=//evil.com", &base).is_err());

    let mut group = c.benchmark_group("room_url");
    group.bench_function("build", |b| {
        b.iter(|| {
            room_url(
                black_box("acme"),
                black_box("/standup-3f9a2c"),
                black_box(&base),
            )
        })
    });
    group.bench_function("refuse_room_name", |b| {
        b.iter(|| {
            room_url(
                black_box("acme"),
                black_box("/x?next=//evil.com"),
                black_box(&base),
            )
        })
    });
    group.bench_function("base_domain_new", |b| {
        b.iter(|| BaseDomain::new(black_box("whereby.example.com")))
    });
    group.finish();
}

/// Short runs: each benchmark takes a few hundred nanoseconds to a few
/// microseconds, so 0.5 s of warm-up and 1.5 s of measurement give stable
/// medians and keep the whole file near half a minute on two cores.
/// `--warm-up-time` and `--measurement-time` still override these.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = signature, header, parsing, room_urls
}
criterion_main!(benches);
