//! `send --scenario`: a whole meeting as a sequence of webhooks, and the order
//! they are delivered in.
//!
//! Building the webhooks is pure (the clock and the randomness come in as
//! numbers), so the unit tests below can check every payload; sending them is
//! `send.rs`'s job.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::ValueEnum;
use serde_json::{Map, Value, json};
use whereby_trigger::webhook::sample;
use whereby_trigger::webhook::time::format_rfc3339_millis;

/// A scenario `send --scenario` can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// A host joins, a visitor knocks and joins, the session starts, an assistant
    /// is requested, the visitor and the host leave, the session ends.
    Meeting,
}

impl Scenario {
    /// The steps of the scenario, in the order they happen.
    fn steps(self) -> &'static [Step] {
        match self {
            Scenario::Meeting => &MEETING,
        }
    }

    /// How many webhooks [`build`] makes for this scenario.
    pub(crate) fn event_count(self) -> usize {
        self.steps().len()
    }
}

/// What varies between runs of a scenario. Everything that would otherwise come
/// from the clock or from randomness is here, so a build is reproducible.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `data.subdomain` of every event; `None`: the samples' (`acme`).
    pub(crate) subdomain: Option<String>,
    /// `data.roomName` of every event; `None`: the samples' (`/standup-3f9a2c`).
    pub(crate) room_name: Option<String>,
    /// `createdAt` of the first event, in milliseconds since the Unix epoch.
    pub(crate) start_millis: u64,
    /// How much later each event is than the one before it, in milliseconds.
    /// Raised to 1 so timestamps always strictly increase.
    pub(crate) step_millis: u64,
    /// Seeds the event ids, the session id and the participant ids. A fresh
    /// nonce per run keeps a second run from looking like duplicates.
    pub(crate) nonce: u64,
}

/// One webhook of a scenario, ready to be signed and sent.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    /// The event type, e.g. `room.client.joined`.
    pub(crate) event_type: &'static str,
    /// The event id (the same for every copy of a duplicated delivery).
    pub(crate) id: String,
    /// The compact JSON body.
    pub(crate) body: Vec<u8>,
}

/// The people of the meeting. Their names and attributes come from the samples,
/// so the scenario looks like the documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Person {
    Host,
    Visitor,
}

impl Person {
    fn display_name(self) -> &'static str {
        match self {
            Person::Host => "Ada Lovelace",
            Person::Visitor => "Grace Hopper",
        }
    }

    fn role_name(self) -> &'static str {
        match self {
            Person::Host => "host",
            Person::Visitor => "visitor",
        }
    }

    fn metadata(self) -> Value {
        match self {
            Person::Host => Value::Null,
            Person::Visitor => json!("team=platform"),
        }
    }

    fn external_id(self) -> Value {
        match self {
            Person::Host => json!("user-42"),
            Person::Visitor => Value::Null,
        }
    }
}

/// One moment of a scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    Knock(Person),
    Join(Person),
    Leave(Person),
    SessionStarted,
    AssistantRequested,
    SessionEnded,
}

impl Step {
    fn event_type(self) -> &'static str {
        match self {
            Step::Knock(_) => "room.client.knocked",
            Step::Join(_) => "room.client.joined",
            Step::Leave(_) => "room.client.left",
            Step::SessionStarted => "room.session.started",
            Step::AssistantRequested => "assistant.requested",
            Step::SessionEnded => "room.session.ended",
        }
    }
}

/// The meeting, in the order Whereby would create the events.
const MEETING: [Step; 8] = [
    Step::Join(Person::Host),
    Step::Knock(Person::Visitor),
    Step::Join(Person::Visitor),
    Step::SessionStarted,
    Step::AssistantRequested,
    Step::Leave(Person::Visitor),
    Step::Leave(Person::Host),
    Step::SessionEnded,
];

/// The webhooks of `scenario`, in the order they happen: ids fresh and unique,
/// `createdAt` strictly increasing, room fields shared, participant fields and
/// client counts consistent with who is in the room.
///
/// # Errors
/// Only if a built-in sample is missing or not an object, which is a bug.
pub(crate) fn build(scenario: Scenario, settings: &Settings) -> anyhow::Result<Vec<Webhook>> {
    let steps = scenario.steps();
    let mut ids = SplitMix64::new(settings.nonce);
    // Room defaults come from one sample and are written into every event, so
    // the events share them even if the fixtures ever disagreed.
    let room = sample_json("room.client.joined")?;
    let subdomain = settings
        .subdomain
        .clone()
        .map_or_else(|| room["data"]["subdomain"].clone(), Value::String);
    let room_name = settings
        .room_name
        .clone()
        .map_or_else(|| room["data"]["roomName"].clone(), Value::String);
    let host_id = uuid(&mut ids);
    let visitor_id = uuid(&mut ids);
    let participant_id = |person| match person {
        Person::Host => host_id.clone(),
        Person::Visitor => visitor_id.clone(),
    };
    let step_millis = settings.step_millis.max(1);

    // Who is in the room, by role: the counts every join/leave reports.
    let mut present: BTreeMap<&'static str, u32> = BTreeMap::new();
    // Whereby has no session before two people are in the room: earlier events
    // carry a null roomSessionId, every event of the session the same fresh one.
    let mut session: Option<String> = None;
    let mut webhooks = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let event_type = step.event_type();
        if let Step::SessionStarted = step {
            session = Some(uuid(&mut ids));
        }
        let mut webhook = sample_json(event_type)?;
        let id = hex_id(&mut ids);
        let created_at = settings.start_millis + step_millis * index as u64;
        webhook["id"] = json!(id);
        webhook["createdAt"] = json!(format_rfc3339_millis(
            i64::try_from(created_at).unwrap_or(i64::MAX),
        ));
        let data = webhook["data"]
            .as_object_mut()
            .with_context(|| format!("the {event_type} sample has no data object"))?;
        data.insert("subdomain".into(), subdomain.clone());
        data.insert("roomName".into(), room_name.clone());
        data.insert("roomSessionId".into(), json!(session));
        match *step {
            Step::Knock(person) => set_person(data, person, participant_id(person)),
            Step::Join(person) => {
                *present.entry(person.role_name()).or_default() += 1;
                set_person(data, person, participant_id(person));
                set_counts(data, &present);
            }
            Step::Leave(person) => {
                if let Some(n) = present.get_mut(person.role_name()) {
                    *n -= 1;
                    if *n == 0 {
                        present.remove(person.role_name());
                    }
                }
                set_person(data, person, participant_id(person));
                set_counts(data, &present);
            }
            Step::SessionStarted | Step::AssistantRequested => {}
            Step::SessionEnded => session = None,
        }
        webhooks.push(Webhook {
            event_type,
            id,
            body: serde_json::to_vec(&webhook)?,
        });
    }
    Ok(webhooks)
}

/// The order to deliver `count` webhooks in, as indexes into them: each one
/// followed by `duplicate` copies, the whole list shuffled when a seed is given.
/// Shuffling the copies too means a copy can arrive before its original's
/// neighbours, as Whereby's retries can.
pub(crate) fn delivery_order(
    count: usize,
    duplicate: u32,
    shuffle_seed: Option<u64>,
) -> Vec<usize> {
    let copies = duplicate as usize + 1;
    let mut order: Vec<usize> = (0..count)
        .flat_map(|index| std::iter::repeat_n(index, copies))
        .collect();
    if let Some(seed) = shuffle_seed {
        SplitMix64::new(seed).shuffle(&mut order);
    }
    order
}

fn sample_json(event_type: &str) -> anyhow::Result<Value> {
    let text = sample::sample(event_type).with_context(|| format!("no sample for {event_type}"))?;
    let value: Value = serde_json::from_str(text)
        .with_context(|| format!("the {event_type} sample is not JSON"))?;
    anyhow::ensure!(
        value.is_object(),
        "the {event_type} sample is not an object"
    );
    Ok(value)
}

fn set_person(data: &mut Map<String, Value>, person: Person, participant_id: String) {
    data.insert("displayName".into(), json!(person.display_name()));
    data.insert("participantId".into(), json!(participant_id));
    data.insert("metadata".into(), person.metadata());
    data.insert("externalId".into(), person.external_id());
    // A knock comes before the room has given the person a role.
    if data.contains_key("roleName") || data.contains_key("numClients") {
        data.insert("roleName".into(), json!(person.role_name()));
    }
}

fn set_counts(data: &mut Map<String, Value>, present: &BTreeMap<&'static str, u32>) {
    data.insert("numClients".into(), json!(present.values().sum::<u32>()));
    data.insert("numClientsByRoleName".into(), json!(present));
}

/// 64 hex digits, like Whereby's event ids.
fn hex_id(rng: &mut SplitMix64) -> String {
    (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect()
}

/// A version 4 UUID, like Whereby's session and participant ids.
fn uuid(rng: &mut SplitMix64) -> String {
    let (hi, lo) = (rng.next_u64(), rng.next_u64());
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Sebastiano Vigna's SplitMix64: a tiny, well-mixed generator. Enough for
/// test ids and a reproducible shuffle, which is all it is used for; a seed is
/// the whole state, so printing the seed is enough to repeat a run.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose whole future is determined by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`, `n > 0`. Rejects the few values that would make a
    /// plain `% n` favour small results.
    fn below(&mut self, n: u64) -> u64 {
        // 2^64 mod n: values under it are the incomplete last round.
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            if x >= threshold {
                return x % n;
            }
        }
    }

    /// Fisher–Yates: every permutation equally likely.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
#[path = "scenario_tests.rs"]
mod tests;
