//! Deduplicate: remember event ids so each event fires at most once.
//!
//! Whereby may deliver an event more than once, and retries of one event carry the
//! same `id`. An id is *reserved* while its delivery is being evaluated (a racing
//! delivery of the same id is a duplicate), *remembered* once it has been answered
//! 2xx, and *released* when its evaluation failed so that Whereby's retry is
//! evaluated afresh.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// Default number of answered ids remembered.
pub const DEFAULT_MAX_IDS: usize = 100_000;

/// Default time an answered id is remembered: far beyond Whereby's retry window
/// (two retries with a short backoff), so late redeliveries are caught too.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// What [`Deduplicate::reserve`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reservation {
    /// The id is new and now reserved by the caller.
    Fresh,
    /// The id was answered before, or is being evaluated right now.
    Duplicate,
}

/// Where an id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdStatus {
    /// Neither reserved nor remembered.
    Absent,
    /// Being evaluated (or recorded) right now.
    Reserved,
    /// Answered 2xx.
    Remembered,
}

/// Where event ids are remembered. Held as `Arc<dyn Deduplicate>` so a shared
/// store can replace the in-memory one without touching the request path.
pub trait Deduplicate: Send + Sync + 'static {
    /// Reserves `id` unless it is already reserved or remembered.
    fn reserve(&self, id: &str, now: Instant) -> Reservation;
    /// Turns a reservation into a remembered id: its delivery was answered 2xx.
    fn remember(&self, id: &str, now: Instant);
    /// Drops a reservation whose evaluation failed; a retry is then fresh.
    fn release(&self, id: &str);
    /// Where `id` stands now.
    fn status(&self, id: &str) -> IdStatus;
}

/// Bounds of the in-memory id store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupLimits {
    /// At most this many answered ids are remembered; the oldest go first.
    pub max_ids: usize,
    /// An answered id is forgotten after this long.
    pub max_age: Duration,
}

impl Default for DedupLimits {
    fn default() -> Self {
        DedupLimits {
            max_ids: DEFAULT_MAX_IDS,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Shards keep concurrent deliveries of different ids from contending on one lock.
const SHARDS: usize = 16;

/// The hash of ids: foldhash, several times cheaper than the standard
/// library's SipHash on an id's few dozen bytes, and hashed up to six times per
/// webhook. SipHash's point is that nobody can choose keys that collide; here
/// the ids reach the map only after their signature is checked (a sender
/// without the secret cannot choose them), and the seed is still random per
/// process, so an unsigned server for tests is no easy target either.
type IdHasher = foldhash::fast::RandomState;

/// The in-memory [`Deduplicate`]: sharded maps with a per-shard age-ordered queue.
#[derive(Debug)]
pub struct MemoryDedup {
    shards: Box<[Mutex<Shard>]>,
    hasher: IdHasher,
    max_per_shard: usize,
    max_age: Duration,
}

#[derive(Debug, Default)]
struct Shard {
    /// `true` once answered; `false` while reserved.
    ids: HashMap<Arc<str>, bool, IdHasher>,
    /// Answered ids, oldest first. Reserved ids are not here: they leave by
    /// `remember` or `release`, never by age.
    answered: VecDeque<(Instant, Arc<str>)>,
}

impl MemoryDedup {
    /// A store with the given bounds. `max_ids` is spread over the shards, so the
    /// bound holds to within the shard count.
    pub fn new(limits: DedupLimits) -> Self {
        MemoryDedup {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: IdHasher::default(),
            max_per_shard: limits.max_ids.div_ceil(SHARDS).max(1),
            max_age: limits.max_age,
        }
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(id) as usize) % SHARDS;
        // A panic while holding the lock cannot leave a shard inconsistent in a way
        // that matters (each operation is a single insert/remove), so recover.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many ids are held (answered and reserved), for tests and metrics.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.ids.len()))
            .sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryDedup {
    fn default() -> Self {
        MemoryDedup::new(DedupLimits::default())
    }
}

impl Shard {
    fn expire(&mut self, now: Instant, max_age: Duration) {
        while let Some((at, _)) = self.answered.front() {
            if now.saturating_duration_since(*at) < max_age {
                break;
            }
            if let Some((_, id)) = self.answered.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

impl Deduplicate for MemoryDedup {
    fn reserve(&self, id: &str, now: Instant) -> Reservation {
        let mut shard = self.shard(id);
        shard.expire(now, self.max_age);
        if shard.ids.contains_key(id) {
            return Reservation::Duplicate;
        }
        shard.ids.insert(Arc::from(id), false);
        Reservation::Fresh
    }

    fn remember(&self, id: &str, now: Instant) {
        let mut shard = self.shard(id);
        let Some((key, answered)) = shard.ids.get_key_value(id) else {
            // Not reserved (already expired by a bound): remember it anew.
            let key: Arc<str> = Arc::from(id);
            shard.ids.insert(key.clone(), true);
            shard.answered.push_back((now, key));
            return self.trim(&mut shard, now);
        };
        if *answered {
            return;
        }
        let key = key.clone();
        shard.ids.insert(key.clone(), true);
        shard.answered.push_back((now, key));
        self.trim(&mut shard, now);
    }

    fn release(&self, id: &str) {
        let mut shard = self.shard(id);
        if shard.ids.get(id) == Some(&false) {
            shard.ids.remove(id);
        }
    }

    fn status(&self, id: &str) -> IdStatus {
        match self.shard(id).ids.get(id) {
            None => IdStatus::Absent,
            Some(false) => IdStatus::Reserved,
            Some(true) => IdStatus::Remembered,
        }
    }
}

impl MemoryDedup {
    fn trim(&self, shard: &mut Shard, now: Instant) {
        shard.expire(now, self.max_age);
        while shard.answered.len() > self.max_per_shard {
            if let Some((_, old)) = shard.answered.pop_front() {
                shard.ids.remove(&old);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The deduplicate step of a request
// ---------------------------------------------------------------------------

/// Reserves `id` for this delivery: `Ok(Some(_))` to evaluate it, `Ok(None)`
/// when it is a duplicate. With a durable store (`durable`), a delivery whose
/// id another one holds waits until that one is recorded or abandoned, so that
/// a 2xx `duplicate` never stands for an event that is lost.
///
/// # Errors
/// [`StoreError::Commit`] when the earlier delivery is still being recorded
/// after [`SETTLE_WAIT`] (Whereby retries the 503).
pub(crate) async fn reserve(
    dedup: &Arc<dyn Deduplicate>,
    id: &str,
    durable: bool,
) -> Result<Option<Reserved>, StoreError> {
    while dedup.reserve(id, Instant::now()) == Reservation::Duplicate {
        if !durable {
            return Ok(None);
        }
        match settled(dedup.as_ref(), id).await {
            IdStatus::Remembered => return Ok(None),
            // The first attempt failed: evaluate this one afresh.
            IdStatus::Absent => continue,
            IdStatus::Reserved => {
                return Err(StoreError::Commit(
                    "an earlier delivery of this event is still being recorded".to_owned(),
                ));
            }
        }
    }
    Ok(Some(Reserved {
        dedup: dedup.clone(),
        id: id.to_owned(),
        remembered: false,
    }))
}

/// How long a delivery waits for an earlier one of the same id to be recorded
/// or abandoned: below the request deadline.
const SETTLE_WAIT: Duration = Duration::from_secs(4);

/// Waits (bounded by [`SETTLE_WAIT`]) until `id` is no longer reserved.
async fn settled(dedup: &dyn Deduplicate, id: &str) -> IdStatus {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let status = dedup.status(id);
        if status != IdStatus::Reserved || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A reserved id, released unless remembered.
pub(crate) struct Reserved {
    dedup: Arc<dyn Deduplicate>,
    id: String,
    remembered: bool,
}

impl Reserved {
    pub(crate) fn remember(&mut self) {
        self.dedup.remember(&self.id, Instant::now());
        self.remembered = true;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if !self.remembered {
            self.dedup.release(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_remember_duplicate() {
        let d = MemoryDedup::default();
        let now = Instant::now();
        assert_eq!(d.status("a"), IdStatus::Absent);
        assert_eq!(d.reserve("a", now), Reservation::Fresh);
        assert_eq!(d.status("a"), IdStatus::Reserved);
        // A racing delivery while "a" is evaluated.
        assert_eq!(d.reserve("a", now), Reservation::Duplicate);
        d.remember("a", now);
        assert_eq!(d.status("a"), IdStatus::Remembered);
        assert_eq!(d.reserve("a", now), Reservation::Duplicate);
        assert_eq!(d.reserve("b", now), Reservation::Fresh);
    }

    #[test]
    fn released_ids_are_fresh_again() {
        let d = MemoryDedup::default();
        let now = Instant::now();
        assert_eq!(d.reserve("a", now), Reservation::Fresh);
        d.release("a");
        assert_eq!(d.reserve("a", now), Reservation::Fresh);
        // Releasing an answered id does not forget it.
        d.remember("a", now);
        d.release("a");
        assert_eq!(d.reserve("a", now), Reservation::Duplicate);
    }

    #[test]
    fn ids_are_forgotten_after_max_age() {
        let d = MemoryDedup::new(DedupLimits {
            max_ids: 1000,
            max_age: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        d.reserve("a", t0);
        d.remember("a", t0);
        assert_eq!(
            d.reserve("a", t0 + Duration::from_secs(59)),
            Reservation::Duplicate
        );
        assert_eq!(
            d.reserve("a", t0 + Duration::from_secs(60)),
            Reservation::Fresh
        );
    }

    #[test]
    fn reserved_ids_do_not_age_out() {
        let d = MemoryDedup::new(DedupLimits {
            max_ids: 1000,
            max_age: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        d.reserve("slow", t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(d.reserve("slow", later), Reservation::Duplicate);
    }

    #[test]
    fn count_is_bounded() {
        let max_ids = 320;
        let d = MemoryDedup::new(DedupLimits {
            max_ids,
            max_age: DEFAULT_MAX_AGE,
        });
        let now = Instant::now();
        for i in 0..10_000 {
            let id = format!("id-{i}");
            assert_eq!(d.reserve(&id, now), Reservation::Fresh);
            d.remember(&id, now);
        }
        assert!(d.len() <= max_ids, "{} ids held", d.len());
        assert!(d.len() >= max_ids - SHARDS, "{} ids held", d.len());
        // The newest are the ones kept.
        assert_eq!(d.reserve("id-9999", now), Reservation::Duplicate);
        assert_eq!(d.reserve("id-0", now), Reservation::Fresh);
    }
}
