//! The counters an operator scrapes (`GET /metrics` on the admin listener).
//!
//! Everything counted on the path of a webhook is an atomic in a slot made
//! before the first request: the (type, outcome) pairs are an array indexed by
//! [`EventType::index`] and the outcome's position in [`OUTCOMES`]; each rule
//! gets its [`TriggerStats`] when it is built (config load or reload), and each
//! of its actions an [`ActionStats`]. So counting takes no lock and allocates
//! nothing; the registry's mutex is taken only when rules are built. Gauges that
//! the store knows (the outbox, the quarantine) are read when scraped.
//!
//! The counters are the process's (one static set), as the state they describe
//! (assistants, the store's directory) is: a test that reads them looks at how
//! they move, not at their absolute values.
//!
//! Why one file: each counter and its exposition (the Prometheus family's
//! name, help and labels, written by `encode`) change together, and a test
//! checks that the text names every family; the last 150 lines are tests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use whereby_webhook::{EventType, WebhookEvent};

/// The `outcome` label of `webhooks_total`: the answer's outcome, or the
/// rejection's `code` (`Rejection::code`). A code not listed (one added later
/// and forgotten here) counts as `other`, the last slot.
pub(crate) const OUTCOMES: [&str; 29] = [
    "triggered",
    "not_matched",
    "ignored",
    "duplicate",
    "unsupported_media_type",
    "payload_too_large",
    "body_unreadable",
    "body_timeout",
    "signature_missing",
    "signature_malformed",
    "signature_stale",
    "signature_mismatch",
    "signature_invalid",
    "invalid_room",
    "invalid_webhook",
    "predicate_timeout",
    "predicate_failed",
    "host_missing",
    "host_invalid",
    "method_not_allowed",
    "not_found",
    "store_unavailable",
    "deadline",
    "internal_error",
    "suppressed",
    "stopped",
    // The client closed the connection before the answer (none was sent).
    "client_gone",
    "not_receiving",
    "other",
];

/// The `type` label: the evaluated types by [`EventType::index`], then every
/// other type, then a request refused before its type was known.
const TYPES: usize = EventType::ALL.len() + 2;
const TYPE_OTHER: usize = EventType::ALL.len();
const TYPE_UNKNOWN: usize = EventType::ALL.len() + 1;

/// The `reason` label of `signature_failures_total`, by the rejection codes
/// that stand for them.
pub(crate) const SIGNATURE_REASONS: [(&str, &str); 5] = [
    ("signature_missing", "missing"),
    ("signature_malformed", "malformed"),
    ("signature_stale", "stale"),
    ("signature_mismatch", "mismatch"),
    ("signature_invalid", "invalid"),
];

/// Histogram bounds, in seconds: from well under a webhook's usual handling
/// (tens of µs in memory, about a ms with the store) to Whereby's 5 s.
const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of durations with fixed bounds: one atomic per bucket (not
/// cumulative: the scrape adds them up), the count and the sum in ns.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `elapsed`.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and the cumulative buckets (`+Inf` last).
    #[cfg(any(test, feature = "metrics"))]
    pub(crate) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BOUNDS.len() + 1);
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            buckets.push((BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, total, buckets)
    }
}

/// What a trigger's verdicts were: the `result` label of `triggers_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TriggerResult {
    Fired,
    Suppressed,
    NotMatched,
    Stopped,
    /// Its `when` failed or its Rust predicate panicked (the verdict is
    /// `not_matched` too, and counted as such).
    Error,
}

impl TriggerResult {
    pub(crate) const ALL: [TriggerResult; 5] = [
        TriggerResult::Fired,
        TriggerResult::Suppressed,
        TriggerResult::NotMatched,
        TriggerResult::Stopped,
        TriggerResult::Error,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            TriggerResult::Fired => "fired",
            TriggerResult::Suppressed => "suppressed",
            TriggerResult::NotMatched => "not_matched",
            TriggerResult::Stopped => "stopped",
            TriggerResult::Error => "error",
        }
    }
}

/// How a delivery went: the `result` label of `actions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionResult {
    Ok,
    Retry,
    Dead,
}

/// One action of one trigger.
#[derive(Debug, Default)]
pub(crate) struct ActionStats {
    results: [AtomicU64; 3],
}

impl ActionStats {
    pub(crate) fn count(&self, result: ActionResult) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, result: ActionResult) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }
}

/// One trigger's counters, shared by every build of a rule of that name, so
/// that a reload does not reset them.
#[derive(Debug, Default)]
pub(crate) struct TriggerStats {
    results: [AtomicU64; TriggerResult::ALL.len()],
    running: AtomicI64,
    restarts: AtomicU64,
    /// Starts its `run` refused: `max_running` reached with `when_full = "drop"`.
    starts_dropped: AtomicU64,
    /// By action kind; only touched when rules are built and when scraped.
    actions: Mutex<Vec<(&'static str, Arc<ActionStats>)>>,
}

impl TriggerStats {
    pub(crate) fn count(&self, result: TriggerResult) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, result: TriggerResult) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }

    /// The counters of this trigger's `kind` action, made on first use.
    pub(crate) fn action(&self, kind: &'static str) -> Arc<ActionStats> {
        let mut actions = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, stats)) = actions.iter().find(|(k, _)| *k == kind) {
            return stats.clone();
        }
        let stats = Arc::new(ActionStats::default());
        actions.push((kind, stats.clone()));
        stats
    }

    /// An assistant of this trigger started (`+1`) or exited (`-1`).
    pub(crate) fn running(&self, delta: i64) {
        self.running.fetch_add(delta, Ordering::Relaxed);
    }

    /// An assistant of this trigger was started again after it exited.
    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn running_now(&self) -> i64 {
        self.running.load(Ordering::Relaxed)
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A start of this trigger's `run` was refused (`when_full = "drop"`).
    pub(crate) fn start_dropped(&self) {
        self.starts_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn starts_dropped(&self) -> u64 {
        self.starts_dropped.load(Ordering::Relaxed)
    }

    /// Whether this trigger has a `run` action, whose refused starts
    /// (`starts_dropped_total`) are listed, zero or not.
    #[cfg(feature = "metrics")]
    pub(crate) fn runs(&self) -> bool {
        self.actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(kind, _)| *kind == "run")
    }

    /// Its actions' counters, by kind.
    pub(crate) fn actions(&self) -> Vec<(&'static str, Arc<ActionStats>)> {
        self.actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The process's counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    webhooks: [[AtomicU64; OUTCOMES.len()]; TYPES],
    signature_failures: [AtomicU64; SIGNATURE_REASONS.len()],
    pub(crate) request_duration: Histogram,
    pub(crate) commit_duration: Histogram,
    /// By trigger name; only touched when rules are built and when scraped.
    triggers: Mutex<Vec<(Arc<str>, Arc<TriggerStats>)>>,
    /// The `run` children alive now, by a number of their own; touched when one
    /// starts or exits, and by the status page.
    assistants: Mutex<(u64, Vec<(u64, Assistant)>)>,
    /// The last webhooks answered, for the status page.
    pub(crate) recent: Recent,
}

/// How many webhooks the status page lists.
pub(crate) const RECENT: usize = 100;
/// Bytes of a room kept per webhook; a longer room is cut (at a character).
const ROOM_BYTES: usize = 96;
const ROOM_WORDS: usize = ROOM_BYTES / 8;

/// A room or a display name from a webhook, copied into a fixed buffer (no
/// allocation), cut at a character when longer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShortText {
    bytes: [u8; ROOM_BYTES],
    len: usize,
}

impl ShortText {
    pub(crate) const NONE: ShortText = ShortText {
        bytes: [0; ROOM_BYTES],
        len: 0,
    };

    /// `subdomain` and `room_name` one after the other (the room's key spells
    /// a room so), cut to fit.
    pub(crate) fn of(subdomain: &str, room_name: &str) -> ShortText {
        let mut room = ShortText::NONE;
        for part in [subdomain, room_name] {
            let room_left = ROOM_BYTES - room.len;
            let mut take = part.len().min(room_left);
            while !part.is_char_boundary(take) {
                take -= 1;
            }
            room.bytes[room.len..room.len + take].copy_from_slice(&part.as_bytes()[..take]);
            room.len += take;
        }
        room
    }

    fn as_str(&self) -> &str {
        // Written from whole characters of `&str`s, so always UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// One answered webhook in the ring. A writer makes `seq` odd while it writes
/// and even after, so that a reader can tell a torn entry and skip it: no
/// lock on either side, and nothing allocated.
#[derive(Debug, Default)]
struct Slot {
    seq: AtomicU64,
    at_ms: AtomicI64,
    /// The type's slot, the outcome's index in `OUTCOMES`, and the lengths
    /// of the room, the participant and the type's name.
    what: AtomicU64,
    latency_us: AtomicU64,
    room: [AtomicU64; ROOM_WORDS],
    who: [AtomicU64; ROOM_WORDS],
    /// The `type` as sent, for a type not evaluated (the others' is their slot).
    name: [AtomicU64; ROOM_WORDS],
}

/// The last [`RECENT`] webhooks answered: slots written in turn.
#[derive(Debug)]
pub(crate) struct Recent {
    next: AtomicU64,
    slots: [Slot; RECENT],
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            next: AtomicU64::new(0),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

/// A webhook as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RecentWebhook {
    /// When it was answered, in ms since the Unix epoch.
    pub(crate) at_ms: i64,
    /// The `type` as sent (`unknown` when refused before it was parsed).
    pub(crate) r#type: String,
    pub(crate) room: String,
    /// The participant's display name, for a join or a leave that has one.
    pub(crate) who: String,
    pub(crate) outcome: &'static str,
    pub(crate) latency_ms: f64,
}

impl Recent {
    fn push(&self, ty: &TypeSlot, outcome: usize, [room, who]: [&ShortText; 2], latency: Duration) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[(n % RECENT as u64) as usize];
        let seq = slot.seq.fetch_add(1, Ordering::Acquire) + 1;
        slot.at_ms.store(crate::util::now_ms(), Ordering::Relaxed);
        let name = &ty.name;
        let what = (ty.slot as u64)
            | ((outcome as u64) << 8)
            | ((room.len as u64) << 16)
            | ((who.len as u64) << 24)
            | ((name.len as u64) << 32);
        slot.what.store(what, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        slot.latency_us.store(us, Ordering::Relaxed);
        for (text, words) in [(room, &slot.room), (who, &slot.who), (name, &slot.name)] {
            // Only the words the text fills: a reader reads no further.
            for (i, word) in words.iter().enumerate().take(text.len.div_ceil(8)) {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&text.bytes[i * 8..i * 8 + 8]);
                word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
            }
        }
        // Even again: readers may take it. (Two writers on one slot, 100
        // webhooks apart, leave it odd until the later one ends.)
        slot.seq.store(seq + 1, Ordering::Release);
    }

    /// The webhooks in the ring, newest first; one being written is left out.
    pub(crate) fn list(&self) -> Vec<RecentWebhook> {
        let next = self.next.load(Ordering::Acquire);
        let count = next.min(RECENT as u64);
        let mut out = Vec::with_capacity(count as usize);
        for back in 1..=count {
            let slot = &self.slots[((next - back) % RECENT as u64) as usize];
            let before = slot.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                continue;
            }
            let at_ms = slot.at_ms.load(Ordering::Relaxed);
            let what = slot.what.load(Ordering::Relaxed);
            let latency_us = slot.latency_us.load(Ordering::Relaxed);
            let [mut room, mut who, mut name] = [ShortText::NONE; 3];
            room.len = (((what >> 16) & 0xff) as usize).min(ROOM_BYTES);
            who.len = (((what >> 24) & 0xff) as usize).min(ROOM_BYTES);
            name.len = (((what >> 32) & 0xff) as usize).min(ROOM_BYTES);
            for (text, words) in [
                (&mut room, &slot.room),
                (&mut who, &slot.who),
                (&mut name, &slot.name),
            ] {
                for (i, word) in words.iter().enumerate().take(text.len.div_ceil(8)) {
                    text.bytes[i * 8..i * 8 + 8]
                        .copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
                }
            }
            std::sync::atomic::fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            let type_slot = (what & 0xff) as usize;
            out.push(RecentWebhook {
                at_ms,
                r#type: if type_slot == TYPE_OTHER && name.len > 0 {
                    name.as_str().to_owned()
                } else {
                    type_name(type_slot).to_owned()
                },
                room: room.as_str().to_owned(),
                who: who.as_str().to_owned(),
                outcome: OUTCOMES
                    .get(((what >> 8) & 0xff) as usize)
                    .copied()
                    .unwrap_or("other"),
                latency_ms: latency_us as f64 / 1000.0,
            });
        }
        out
    }
}

/// A `run` child alive now, as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Assistant {
    #[serde(serialize_with = "str_of")]
    pub(crate) trigger: Arc<str>,
    pub(crate) room: String,
    pub(crate) pid: u32,
    /// When it started, in ms since the Unix epoch.
    pub(crate) started_ms: i64,
    /// Times its supervision started it again before this one.
    pub(crate) restarts: u32,
}

fn str_of<S: serde::Serializer>(s: &Arc<str>, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(s)
}

/// Keeps an [`Assistant`] listed (and counted in `assistants_running`) until dropped.
#[derive(Debug)]
pub(crate) struct Alive {
    id: u64,
    stats: Arc<TriggerStats>,
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.stats.running(-1);
        let mut table = metrics()
            .assistants
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        table.1.retain(|(id, _)| *id != self.id);
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    webhooks: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
    signature_failures: Default::default(),
    request_duration: Histogram::default(),
    commit_duration: Histogram::default(),
    triggers: Mutex::new(Vec::new()),
    assistants: Mutex::new((0, Vec::new())),
    recent: Recent::default(),
});

/// The process's counters.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// The `type` of a webhook as counted: its slot in `webhooks_total` (one per
/// evaluated type, `other`, `unknown`) and, for a type not evaluated, the
/// `type` as sent, which the status page shows. Copied into a fixed buffer:
/// nothing allocated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TypeSlot {
    slot: usize,
    name: ShortText,
}

/// The `type` of `event`: `None` when refused before it was parsed.
pub(crate) fn type_slot(event: Option<&WebhookEvent>) -> TypeSlot {
    match event.map(|e| (e.event_type(), e)) {
        Some((Some(t), _)) => TypeSlot {
            slot: t.index(),
            name: ShortText::NONE,
        },
        Some((None, other)) => TypeSlot {
            slot: TYPE_OTHER,
            name: ShortText::of("", other.type_name()),
        },
        None => TypeSlot {
            slot: TYPE_UNKNOWN,
            name: ShortText::NONE,
        },
    }
}

#[cfg(any(test, feature = "metrics"))]
fn type_label(slot: usize) -> &'static str {
    type_name(slot)
}

fn type_name(slot: usize) -> &'static str {
    match EventType::ALL.get(slot) {
        Some(t) => t.as_str(),
        None if slot == TYPE_OTHER => "other",
        None => "unknown",
    }
}

impl Metrics {
    /// Counts one answered webhook of type `ty` ([`type_slot`]) whose
    /// outcome or rejection code is `outcome`.
    pub(crate) fn webhook(
        &self,
        ty: TypeSlot,
        outcome: &str,
        texts: [&ShortText; 2],
        latency: Duration,
    ) {
        let slot = OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        if let Some(row) = self.webhooks.get(ty.slot) {
            row[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.request_duration.observe(latency);
        self.recent.push(&ty, slot, texts, latency);
        if outcome.starts_with("signature_")
            && let Some(i) = SIGNATURE_REASONS.iter().position(|(c, _)| *c == outcome)
        {
            self.signature_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many webhooks of `ty` (a type name, `other` or `unknown`) had `outcome`.
    #[cfg(test)]
    pub(crate) fn webhooks(&self, ty: &str, outcome: &str) -> u64 {
        let Some(o) = OUTCOMES.iter().position(|x| *x == outcome) else {
            return 0;
        };
        (0..TYPES)
            .find(|slot| type_label(*slot) == ty)
            .map_or(0, |slot| self.webhooks[slot][o].load(Ordering::Relaxed))
    }

    /// The counters of trigger `name`, made on first use (when its rule is built).
    pub(crate) fn trigger(&self, name: &Arc<str>) -> Arc<TriggerStats> {
        let mut triggers = self.triggers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, stats)) = triggers.iter().find(|(n, _)| n == name) {
            return stats.clone();
        }
        let stats = Arc::new(TriggerStats::default());
        triggers.push((name.clone(), stats.clone()));
        stats
    }

    /// Lists `assistant` as alive, and counts it running, until the guard drops.
    pub(crate) fn assistant_started(&self, assistant: Assistant) -> Alive {
        let stats = self.trigger(&assistant.trigger);
        stats.running(1);
        let mut table = self.assistants.lock().unwrap_or_else(|p| p.into_inner());
        table.0 += 1;
        let id = table.0;
        table.1.push((id, assistant));
        Alive { id, stats }
    }

    /// The `run` children alive now, oldest first.
    pub(crate) fn assistants(&self) -> Vec<Assistant> {
        let table = self.assistants.lock().unwrap_or_else(|p| p.into_inner());
        table.1.iter().map(|(_, a)| a.clone()).collect()
    }

    #[cfg(feature = "metrics")]
    fn triggers(&self) -> Vec<(Arc<str>, Arc<TriggerStats>)> {
        self.triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What only the server knows when scraped: its engine's and store's state.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Gauges {
    pub(crate) claims_held: u64,
    pub(crate) rooms_tracked: u64,
    pub(crate) outbox_pending: u64,
    pub(crate) outbox_dead: u64,
    pub(crate) outbox_oldest_pending_age_seconds: f64,
    pub(crate) quarantined: u64,
    /// This server's name among those sharing a store, if it shares one.
    pub(crate) node: Option<String>,
}

/// The Prometheus text exposition (version 0.0.4) of the counters and `gauges`.
#[cfg(feature = "metrics")]
pub(crate) fn encode(gauges: &Gauges) -> Result<String, std::fmt::Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collector(gauges.clone())));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The content type of [`encode`]'s text.
#[cfg(feature = "metrics")]
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Collector(Gauges);

#[cfg(feature = "metrics")]
impl prometheus_client::collector::Collector for Collector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::NoLabelSet;
        use prometheus_client::metrics::MetricType;
        let m = metrics();
        // Counters are named without `_total`: the encoder appends it.
        let no_exemplar: Option<&prometheus_client::metrics::exemplar::Exemplar<NoLabelSet, u64>> =
            None;

        let mut family = encoder.encode_descriptor(
            "whereby_trigger_webhooks",
            "Answered webhooks, by type and outcome (the answer's outcome or the rejection's code).",
            None,
            MetricType::Counter,
        )?;
        for (ty, row) in m.webhooks.iter().enumerate() {
            for (o, count) in row.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                // Only pairs seen: the full grid would be 189 lines of zeros.
                if n == 0 {
                    continue;
                }
                let labels = [("type", type_label(ty)), ("outcome", OUTCOMES[o])];
                family
                    .encode_family(&labels)?
                    .encode_counter(&n, no_exemplar)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "whereby_trigger_signature_failures",
            "Webhooks refused for their signature, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (i, (_, reason)) in SIGNATURE_REASONS.iter().enumerate() {
            let n = m.signature_failures[i].load(Ordering::Relaxed);
            family
                .encode_family(&[("reason", *reason)])?
                .encode_counter(&n, no_exemplar)?;
        }

        for (name, help, histogram) in [
            (
                "whereby_trigger_request_duration_seconds",
                "Time from receiving a webhook to its answer.",
                &m.request_duration,
            ),
            (
                "whereby_trigger_store_commit_duration_seconds",
                "Time one group commit of the store takes.",
                &m.commit_duration,
            ),
        ] {
            let (sum, count, buckets) = histogram.snapshot();
            encoder
                .encode_descriptor(name, help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let triggers = m.triggers();
        let mut family = encoder.encode_descriptor(
            "whereby_trigger_triggers",
            "Verdicts of the config's triggers, by trigger and result.",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in &triggers {
            for result in TriggerResult::ALL {
                let labels = [("trigger", &**name), ("result", result.label())];
                family
                    .encode_family(&labels)?
                    .encode_counter(&stats.get(result), no_exemplar)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "whereby_trigger_actions",
            "Deliveries of actions, by trigger, action and result: ok, retry (a failed attempt that another follows), dead (given up).",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in &triggers {
            for (kind, action) in stats.actions() {
                for (result, label) in [
                    (ActionResult::Ok, "ok"),
                    (ActionResult::Retry, "retry"),
                    (ActionResult::Dead, "dead"),
                ] {
                    let labels = [("trigger", &**name), ("action", kind), ("result", label)];
                    family
                        .encode_family(&labels)?
                        .encode_counter(&action.get(result), no_exemplar)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "whereby_trigger_assistants_running",
            "Assistants (`run` processes) running now, by trigger.",
            None,
            MetricType::Gauge,
        )?;
        for (name, stats) in &triggers {
            family
                .encode_family(&[("trigger", &**name)])?
                .encode_gauge(&stats.running_now())?;
        }
        let mut family = encoder.encode_descriptor(
            "whereby_trigger_assistant_restarts",
            "Assistants started again after they exited, by trigger.",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in &triggers {
            family
                .encode_family(&[("trigger", &**name)])?
                .encode_counter(&stats.restarts(), no_exemplar)?;
        }
        let mut family = encoder.encode_descriptor(
            "whereby_trigger_starts_dropped",
            "Starts refused because `max_running` assistants ran and `when_full` is `drop`, by trigger (those with a `run` action).",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in triggers.iter().filter(|(_, stats)| stats.runs()) {
            family
                .encode_family(&[("trigger", &**name)])?
                .encode_counter(&stats.starts_dropped(), no_exemplar)?;
        }

        let g = &self.0;
        for (name, help, value) in [
            (
                "whereby_trigger_claims_held",
                "Claims (`once_per`) held now.",
                g.claims_held as f64,
            ),
            (
                "whereby_trigger_rooms_tracked",
                "Rooms whose state is kept in memory.",
                g.rooms_tracked as f64,
            ),
            (
                "whereby_trigger_outbox_pending",
                "Deliveries queued in the store and not yet done.",
                g.outbox_pending as f64,
            ),
            (
                "whereby_trigger_outbox_dead",
                "Deliveries given up (dead letters).",
                g.outbox_dead as f64,
            ),
            (
                "whereby_trigger_outbox_oldest_pending_age_seconds",
                "Age of the oldest pending delivery (0 when none).",
                g.outbox_oldest_pending_age_seconds,
            ),
            (
                "whereby_trigger_quarantined",
                "Signed webhooks refused 400 and kept in the store.",
                g.quarantined as f64,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }

        encoder
            .encode_descriptor(
                "whereby_trigger_build_info",
                "Always 1; the version as a label.",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("node", self.0.node.as_deref().unwrap_or("")),
            ])?
            .encode_gauge(&1_i64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 10.00305).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3)));
        let at_5ms = buckets.iter().find(|(b, _)| *b == 0.005).map(|(_, n)| *n);
        assert_eq!(at_5ms, Some(2));
    }

    #[test]
    fn webhooks_count_by_type_and_outcome() {
        let m = metrics();
        let before = m.webhooks("room.client.joined", "signature_stale");
        let joined = parse("room.client.joined");
        m.webhook(
            type_slot(Some(&joined)),
            "signature_stale",
            [&ShortText::of("acme", "/room"), &ShortText::NONE],
            Duration::from_millis(1),
        );
        assert_eq!(
            m.webhooks("room.client.joined", "signature_stale"),
            before + 1
        );
        let other = m.webhooks("unknown", "other");
        m.webhook(
            type_slot(None),
            "a code nobody listed",
            [&ShortText::NONE, &ShortText::NONE],
            Duration::ZERO,
        );
        assert_eq!(m.webhooks("unknown", "other"), other + 1);
    }

    fn parse(event_type: &str) -> WebhookEvent {
        let raw = whereby_webhook::sample::sample(event_type).expect("a sample");
        whereby_webhook::parse(raw.as_bytes()).expect("the sample parses")
    }

    #[test]
    fn the_ring_keeps_the_last_webhooks_newest_first() {
        let ring = Recent::default();
        let joined = type_slot(Some(&parse("room.client.joined")));
        for i in 0..(RECENT + 5) {
            let room = ShortText::of("acme", &format!("/room-{i}"));
            let who = ShortText::of("", "<b>Ann</b>");
            ring.push(&joined, 0, [&room, &who], Duration::from_micros(i as u64));
        }
        let list = ring.list();
        assert_eq!(list.len(), RECENT);
        assert_eq!(list[0].room, format!("acme/room-{}", RECENT + 4));
        assert_eq!(list[RECENT - 1].room, "acme/room-5");
        assert_eq!(list[0].outcome, "triggered");
        assert_eq!(list[0].who, "<b>Ann</b>");
        assert_eq!(list[0].r#type, "room.client.joined");
    }

    #[test]
    fn the_ring_shows_the_type_of_a_webhook_not_evaluated_as_sent() {
        let ring = Recent::default();
        let knocked = parse("room.client.knocked");
        let none = [&ShortText::NONE, &ShortText::NONE];
        ring.push(&type_slot(Some(&knocked)), 0, none, Duration::ZERO);
        ring.push(&type_slot(None), 0, none, Duration::ZERO);
        ring.push(
            &type_slot(Some(&parse("room.session.ended"))),
            0,
            none,
            Duration::ZERO,
        );
        let types: Vec<String> = ring.list().into_iter().map(|w| w.r#type).collect();
        assert_eq!(
            types,
            ["room.session.ended", "unknown", "room.client.knocked"]
        );
        // The counters keep one `other` slot for all of them.
        assert_eq!(type_slot(Some(&knocked)).slot, TYPE_OTHER);
    }

    #[test]
    fn a_long_room_is_cut_at_a_character() {
        let long = "é".repeat(ROOM_BYTES);
        let room = ShortText::of("acme", &long);
        assert!(room.as_str().starts_with("acmeé"));
        assert!(room.len <= ROOM_BYTES);
    }

    #[test]
    fn every_rejection_code_has_its_slot() {
        // The codes `Rejection::code` gives, as far as they can be listed here.
        for code in OUTCOMES {
            assert!(
                OUTCOMES.iter().filter(|o| **o == code).count() == 1,
                "{code}"
            );
        }
        assert_eq!(OUTCOMES.last(), Some(&"other"));
    }

    #[test]
    fn trigger_stats_survive_a_second_build() {
        let name: Arc<str> = Arc::from("metrics-unit-test-trigger");
        let first = metrics().trigger(&name);
        first.count(TriggerResult::Fired);
        let again = metrics().trigger(&name);
        assert_eq!(again.get(TriggerResult::Fired), 1);
        let a = again.action("run");
        a.count(ActionResult::Retry);
        assert_eq!(first.action("run").get(ActionResult::Retry), 1);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn the_text_names_every_family() {
        let name: Arc<str> = Arc::from("metrics-unit-test-encode");
        metrics().trigger(&name).action("forward");
        let runs: Arc<str> = Arc::from("metrics-unit-test-encode-run");
        metrics().trigger(&runs).action("run");
        let text = encode(&Gauges::default()).unwrap_or_default();
        for family in [
            "whereby_trigger_signature_failures_total{reason=\"stale\"}",
            "whereby_trigger_request_duration_seconds_bucket{le=\"+Inf\"}",
            "whereby_trigger_store_commit_duration_seconds_count",
            "whereby_trigger_triggers_total{trigger=\"metrics-unit-test-encode\",result=\"fired\"}",
            "whereby_trigger_actions_total{trigger=\"metrics-unit-test-encode\",action=\"forward\",result=\"ok\"}",
            "whereby_trigger_assistants_running{trigger=\"metrics-unit-test-encode\"}",
            "whereby_trigger_assistant_restarts_total{trigger=\"metrics-unit-test-encode\"}",
            // Listed, at 0, for a trigger with a `run` only.
            "whereby_trigger_starts_dropped_total{trigger=\"metrics-unit-test-encode-run\"} 0",
            "whereby_trigger_claims_held 0",
            "whereby_trigger_rooms_tracked",
            "whereby_trigger_outbox_pending",
            "whereby_trigger_outbox_dead",
            "whereby_trigger_outbox_oldest_pending_age_seconds",
            "whereby_trigger_quarantined",
            "whereby_trigger_build_info{version=\"",
            "# TYPE whereby_trigger_webhooks_total counter",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
        assert!(
            !text.contains(
                "whereby_trigger_starts_dropped_total{trigger=\"metrics-unit-test-encode\"}"
            ),
            "{text}"
        );
    }
}
