//! Replay: recorded (or hand-written) webhooks through the rules, without
//! running any action, to test rules before going live.
//!
//! Events go through the same steps as on the server — parse, room URL,
//! duplicate suppression, room state, `when`, `once_per` claims, `stop_on` —
//! in file order. Time is the events' own: leases run on `createdAt`, not on
//! the wall clock, so a day of recorded meetings replays in a blink with the
//! same outcome.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crate::parse::Parser;

use crate::deduplicate::{DedupLimits, Deduplicate, MemoryDedup, Reservation};
use crate::rules::engine::{Engine, Rule};

/// What a replay saw, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Lines read (blank lines and `#` comments excepted).
    pub events: usize,
    /// Rule firings.
    pub fired: usize,
    /// Matches suppressed by a held claim.
    pub suppressed: usize,
    /// Deliveries skipped as duplicates.
    pub duplicates: usize,
    /// Lines that are not usable webhooks.
    pub invalid: usize,
}

/// Replays the webhooks in `input` (one JSON document per line) through `rules`,
/// writing one line per event to `out`.
///
/// # Errors
/// Only I/O errors of `input` or `out`; a bad line is reported and skipped.
pub fn replay(
    rules: Vec<Rule>,
    parser: &Parser,
    input: impl BufRead,
    mut out: impl Write,
) -> std::io::Result<ReplaySummary> {
    let engine = Engine::new(rules);
    let dedup = MemoryDedup::new(DedupLimits {
        max_ids: usize::MAX / 2,
        max_age: Duration::MAX,
    });
    let start = Instant::now();
    let mut first_ms: Option<i64> = None;
    let mut latest = Duration::ZERO;
    let mut summary = ReplaySummary::default();
    // Lines are read as bytes: one that is not UTF-8 is a bad webhook (the
    // parser says so, as the server answers it 400), not the end of the file.
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let text = line.trim_ascii();
        if text.is_empty() || text.starts_with(b"#") {
            continue;
        }
        summary.events += 1;
        let n = index + 1;
        let event = match whereby_webhook::parse_with(text, parser.options()) {
            Ok(parsed) => {
                for note in &parsed.notes {
                    writeln!(out, "line {n}: note: {note}")?;
                }
                parsed.event
            }
            Err(err) => {
                summary.invalid += 1;
                writeln!(out, "line {n}: invalid webhook: {err}")?;
                continue;
            }
        };
        let head = format!("line {n}: {} {}", event.type_name(), short(event.id()));
        // As on the server: the room URL is checked first (an invalid delivery is
        // not remembered), then duplicates are suppressed by id whatever the type.
        let room_url = match event
            .in_room()
            .map(|room| room.room_url(parser.base_domain()))
        {
            // As on the server, only an evaluated type is refused for its room.
            Some(Err(err)) if event.event_type().is_some() => {
                summary.invalid += 1;
                writeln!(out, "{head}: invalid webhook: {err}")?;
                continue;
            }
            Some(Ok(url)) => Some(url),
            _ => None,
        };
        // The replay clock: the latest createdAt seen, so it never runs backwards
        // when events arrive out of order.
        if let Some(ms) = event.created_at_millis() {
            let first = *first_ms.get_or_insert(ms);
            let offset = Duration::from_millis(u64::try_from(ms - first).unwrap_or(0));
            latest = latest.max(offset);
        }
        let now = start + latest;
        // Stops whose `stop_after` passed before this event, as the server's
        // timer would have made them.
        for verdict in engine.fire_due(now).verdicts {
            writeln!(out, "{head}: before it, {verdict}")?;
        }
        if dedup.reserve(event.id(), now) == Reservation::Duplicate {
            summary.duplicates += 1;
            writeln!(out, "{head}: duplicate id, skipped")?;
            continue;
        }
        dedup.remember(event.id(), now);
        let raw = bytes::Bytes::copy_from_slice(text);
        let decision = engine.decide(&event, &raw, room_url.as_deref(), now);
        let at = room_url.as_deref().unwrap_or("(no room)");
        if decision.verdicts.is_empty() {
            writeln!(out, "{head} {at}: ignored, no trigger listens for it")?;
            continue;
        }
        let verdicts: Vec<String> = decision.verdicts.iter().map(ToString::to_string).collect();
        for verdict in &decision.verdicts {
            match verdict {
                crate::rules::engine::Verdict::Fired { .. } => summary.fired += 1,
                crate::rules::engine::Verdict::Suppressed { .. } => summary.suppressed += 1,
                _ => {}
            }
        }
        writeln!(out, "{head} {at}: {}", verdicts.join("; "))?;
    }
    writeln!(
        out,
        "{} event(s): {} fired, {} suppressed by a claim, {} duplicate(s), {} invalid",
        summary.events, summary.fired, summary.suppressed, summary.duplicates, summary.invalid
    )?;
    Ok(summary)
}

/// The first 12 characters of an id: enough to tell events apart in a listing.
fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(at, _)| &id[..at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::claims::OncePer;
    use whereby_webhook::{BaseDomain, EventType, ParseOptions};

    fn parser() -> Parser {
        Parser::new(BaseDomain::default(), ParseOptions::new())
    }

    fn line(event_type: &str, id: &str, at: &str, session: &str) -> String {
        let mut v: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample(event_type).unwrap()).unwrap();
        v["id"] = id.into();
        v["createdAt"] = at.into();
        v["data"]["roomSessionId"] = session.into();
        v.to_string()
    }

    #[test]
    fn fired_suppressed_duplicate_and_invalid_are_reported() {
        let rules = vec![
            Rule::new(
                "note-taker",
                [EventType::RoomSessionStarted, EventType::AssistantRequested],
            )
            .once_per(OncePer::Session)
            .stop_on([EventType::RoomSessionEnded]),
        ];
        let input = [
            line("room.session.started", "a1", "2026-11-02T09:00:00Z", "s1"),
            line("assistant.requested", "a2", "2026-11-02T09:05:00Z", "s1"),
            line("assistant.requested", "a2", "2026-11-02T09:05:00Z", "s1"),
            "not json".to_owned(),
            line("room.client.knocked", "a3", "2026-11-02T09:06:00Z", "s1"),
            line("room.session.ended", "a4", "2026-11-02T10:00:00Z", "s1"),
            line("room.session.started", "a5", "2026-11-02T11:00:00Z", "s2"),
            "# a comment".to_owned(),
        ]
        .join("\n");
        let mut out = Vec::new();
        let summary = replay(rules, &parser(), input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains("note-taker: fired"), "{out}");
        assert!(lines[1].contains("suppressed"), "{out}");
        assert!(lines[2].contains("duplicate"), "{out}");
        assert!(lines[3].starts_with("line 4: invalid webhook"), "{out}");
        assert!(lines[4].contains("ignored"), "{out}");
        assert!(lines[5].contains("stopped"), "{out}");
        assert!(lines[6].contains("fired"), "{out}");
        assert_eq!(
            summary,
            ReplaySummary {
                events: 7,
                fired: 2,
                suppressed: 1,
                duplicates: 1,
                invalid: 1
            }
        );
    }

    #[test]
    fn a_stop_after_fires_on_event_time_before_the_next_event() {
        let rules = vec![
            Rule::new("r", [EventType::RoomSessionStarted])
                .once_per(OncePer::Room)
                .stop_on([EventType::RoomSessionEnded])
                .stop_after(Duration::from_secs(300)),
        ];
        let input = [
            line("room.session.started", "a", "2026-11-02T09:00:00Z", "s1"),
            line("room.session.ended", "b", "2026-11-02T10:00:00Z", "s1"),
            line("room.session.started", "c", "2026-11-02T10:06:00Z", "s2"),
        ]
        .join("\n");
        let mut out = Vec::new();
        let summary = replay(rules, &parser(), input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].contains("r: stop in 5m unless cancelled"), "{out}");
        assert!(
            lines[2].contains("before it, r: stopped (released r:acme/standup-3f9a2c)"),
            "{out}"
        );
        assert!(lines[3].contains("r: fired"), "{out}");
        assert_eq!(summary.fired, 2, "{out}");
    }

    /// Replay has no receive clock: events are ordered by their own
    /// `createdAt`, however far ahead of the wall clock it is (the server's
    /// clamp for future times is not for recordings).
    #[test]
    fn events_are_ordered_by_created_at_even_far_ahead() {
        let rules = vec![
            Rule::new("r", [EventType::RoomClientJoined])
                .once_per(OncePer::Room)
                .stop_on([EventType::RoomClientLeft]),
        ];
        let input = [
            line("room.client.left", "a", "9999-12-31T10:00:10Z", "s"),
            line("room.client.joined", "b", "9999-12-31T10:00:00Z", "s"),
            line("room.client.joined", "c", "9999-12-31T10:00:20Z", "s"),
        ]
        .join("\n");
        let mut out = Vec::new();
        let summary = replay(rules, &parser(), input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("r: not matched (delivered after a newer"),
            "{out}"
        );
        assert!(lines[2].contains("r: fired"), "{out}");
        assert_eq!(summary.fired, 1, "{out}");
    }

    #[test]
    fn leases_run_on_event_time() {
        let rules = vec![
            Rule::new("r", [EventType::AssistantRequested])
                .once_per(OncePer::Room)
                .lease(Duration::from_secs(3600)),
        ];
        let input = [
            line("assistant.requested", "a", "2026-11-02T09:00:00Z", "s"),
            line("assistant.requested", "b", "2026-11-02T09:59:59Z", "s"),
            line("assistant.requested", "c", "2026-11-02T10:00:00Z", "s"),
        ]
        .join("\n");
        let mut out = Vec::new();
        let summary = replay(rules, &parser(), input.as_bytes(), &mut out).unwrap();
        assert_eq!(
            (summary.fired, summary.suppressed),
            (2, 1),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_invalid_and_the_replay_goes_on() {
        let rules = vec![Rule::new("r", [EventType::RoomSessionStarted])];
        let good = line("room.session.started", "a", "2026-11-02T09:00:00Z", "s");
        let mut bad = line("room.session.started", "b", "2026-11-02T09:01:00Z", "t").into_bytes();
        let at = bad.iter().position(|&b| b == b'b').unwrap();
        bad[at] = 0xff;
        let mut input = bad;
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(good.as_bytes());

        let mut out = Vec::new();
        let summary = replay(rules, &parser(), &input[..], &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            (summary.events, summary.invalid, summary.fired),
            (2, 1, 1),
            "{out}"
        );
        assert!(out.contains("line 1: invalid webhook"), "{out}");
    }

    #[test]
    fn a_webhook_without_subdomain_takes_the_default() {
        let rules = || vec![Rule::new("r", [EventType::RoomSessionStarted])];
        let mut v: serde_json::Value = serde_json::from_str(&line(
            "room.session.started",
            "a",
            "2026-11-02T09:00:00Z",
            "s",
        ))
        .unwrap();
        v["data"].as_object_mut().unwrap().remove("subdomain");
        v["data"]["meetingId"] = 134.into();
        let input = v.to_string();

        let mut out = Vec::new();
        let summary = replay(rules(), &parser(), input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(summary.invalid, 1, "{out}");
        assert!(out.contains("data.subdomain"), "{out}");

        let options = ParseOptions::new()
            .with_default_subdomain("globex")
            .unwrap();
        let parser = Parser::new(BaseDomain::default(), options);
        let mut out = Vec::new();
        let summary = replay(rules(), &parser, input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(summary.fired, 1, "{out}");
        assert!(
            out.contains("https://globex.whereby.com/standup-3f9a2c: r: fired"),
            "{out}"
        );
        assert!(
            out.starts_with("line 1: note: `data.meetingId` came as a number"),
            "{out}"
        );
    }
}
