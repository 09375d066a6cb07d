//! Opening a durable Trigger: read the store back into memory, then record
//! every change through one committer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use whereby_webhook::ParseOptions;

use super::{Change, Committer, Retention, Store, StoreError, now_ms};
use crate::deduplicate::{Deduplicate, MemoryDedup};
use crate::outbox::{Outbox, POLL_EVERY};
use crate::rules::claims::ClaimKey;
use crate::rules::engine::Engine;
use crate::rules::room::RoomKey;

/// The durable half of a Trigger: where changes are committed before a webhook
/// is answered, and the queue of action deliveries.
#[derive(Clone, Debug)]
pub struct Durable {
    /// Group commit into the store.
    pub committer: Committer,
    /// The deliveries being carried out.
    pub outbox: Arc<Outbox>,
}

/// What a restart found in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Remembered event ids.
    pub ids: usize,
    /// Claims still held.
    pub claims: usize,
    /// Rooms with state.
    pub rooms: usize,
    /// Deliveries still pending.
    pub pending: usize,
    /// Dead letters.
    pub dead: usize,
}

impl Durable {
    /// Reads `store` back — remembered ids into `dedup`, claims and room state
    /// into `engine` — and starts recording through it. Claims released by their
    /// holders (an assistant ended) are recorded from now on.
    ///
    /// Pending deliveries are not resumed here: call [`Durable::spawn_poller`]
    /// once the Trigger serves, so that resumed actions find their rules.
    ///
    /// # Errors
    /// [`StoreError::Read`] when the store cannot be read.
    pub fn open(
        store: Arc<dyn Store>,
        dedup: &MemoryDedup,
        engine: &Engine,
        retention: Retention,
    ) -> Result<(Durable, Restored), StoreError> {
        let now_ms = now_ms();
        let now = Instant::now();
        let snapshot = store.load(now_ms, retention.id_max_age_ms, retention.room_idle_ms)?;
        let ago = |at_ms: i64| Duration::from_millis(u64::try_from(now_ms - at_ms).unwrap_or(0));
        let mut restored = Restored::default();
        for (id, at_ms) in &snapshot.ids {
            // Reserve, then remember at the original time, so that ages carry on.
            dedup.reserve(id, now);
            dedup.remember(id, now.checked_sub(ago(*at_ms)).unwrap_or(now));
            restored.ids += 1;
        }
        for claim in &snapshot.claims {
            let Some(key) = ClaimKey::parse(&claim.key) else {
                tracing::warn!(key = %claim.key, "an unreadable claim in the store is ignored");
                continue;
            };
            let left = Duration::from_millis(u64::try_from(claim.expires_ms - now_ms).unwrap_or(0));
            let _ = engine.claims().restore(key, now + left);
            restored.claims += 1;
        }
        for (key, state, seen_ms) in &snapshot.rooms {
            if let Some(room) = RoomKey::parse(key)
                && engine.rooms().import(room, state, ago(*seen_ms), now)
            {
                restored.rooms += 1;
            }
        }
        restored.pending = snapshot
            .deliveries
            .iter()
            .filter(|d| d.status == super::DeliveryStatus::Pending)
            .count();
        restored.dead = snapshot.deliveries.len() - restored.pending;

        let committer = Committer::start(store, retention);
        let recorder = committer.clone();
        engine.claims().set_release_hook(Box::new(move |key| {
            recorder.commit_later(vec![Change::ReleaseClaim {
                key: key.to_string(),
            }]);
        }));
        let outbox = Outbox::new(committer.clone());
        Ok((Durable { committer, outbox }, restored))
    }

    /// Resumes pending deliveries now, then every second picks up those that
    /// `outbox retry` made pending again. Stops when the task is aborted.
    /// Stored webhooks are read with `options`, those the server parses with.
    pub fn spawn_poller(
        &self,
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        options: ParseOptions,
    ) -> JoinHandle<()> {
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            loop {
                // The read blocks on SQLite: off the async workers.
                let reader = store.clone();
                match tokio::task::spawn_blocking(move || reader.pending()).await {
                    Ok(Ok(pending)) => outbox.resume(pending, &engine, &options),
                    Ok(Err(err)) => tracing::warn!(%err, "cannot read pending deliveries"),
                    Err(err) => tracing::warn!(%err, "the pending-deliveries read failed"),
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        })
    }
}
