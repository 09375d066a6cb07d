//! Group commit: one writer thread turns every commit waiting at the same moment
//! into one transaction, so 64 concurrent webhooks cost one disk sync, not 64.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Change, Store, StoreError, now_ms};

/// Most changes-lists folded into one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 256;

/// How often expired ids, claims and rooms are pruned from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

struct Job {
    changes: Vec<Change>,
    reply: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// How long things are kept, for pruning.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Answered ids are kept this long (ms).
    pub id_max_age_ms: i64,
    /// Idle rooms are kept this long (ms).
    pub room_idle_ms: i64,
}

/// The handle requests commit through. Cloning is cheap; the writer thread stops
/// when every handle is dropped, after committing what was queued.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<dyn Store>, retention: Retention) -> Committer {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || write_loop(store.as_ref(), &rx, retention))
            .ok();
        if thread.is_none() {
            tracing::error!("cannot start the store's writer thread: every commit will fail");
        }
        Committer {
            tx,
            thread: Arc::new(std::sync::Mutex::new(thread)),
        }
    }

    /// Commits `changes` durably, together with whatever else is waiting.
    ///
    /// # Errors
    /// The store's error; then none of `changes` applies.
    pub async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.submit(changes).await
    }

    /// Queues `changes` for the next group commit at once, and returns the
    /// commit's outcome as a future. The changes are committed (or fail) whether
    /// or not the future is awaited: dropping it only gives up the answer.
    pub fn submit(&self, changes: Vec<Change>) -> PendingCommit {
        if changes.is_empty() {
            return PendingCommit(Waiting::Done(Some(Ok(()))));
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Job {
            changes,
            reply: Some(reply),
        });
        PendingCommit(match sent {
            Ok(()) => Waiting::Answer(answer),
            Err(_) => Waiting::Done(Some(Err(StoreError::Closed))),
        })
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) {
        let (reply, answer) = oneshot::channel();
        if self
            .tx
            .send(Job {
                changes: Vec::new(),
                reply: Some(reply),
            })
            .is_ok()
        {
            let _ = answer.await;
        }
    }

    /// Queues `changes` without waiting: for progress that a crash may lose
    /// without harm (it is redone at-least-once), such as a delivery's attempts.
    pub fn commit_later(&self, changes: Vec<Change>) {
        if !changes.is_empty()
            && self
                .tx
                .send(Job {
                    changes,
                    reply: None,
                })
                .is_err()
        {
            tracing::warn!("the store is closed: a change was not recorded");
        }
    }

    /// Waits for the writer thread to commit everything queued and stop. Only
    /// the last handle's call waits; other handles keep it running.
    pub fn close(self) {
        let Committer { tx, thread } = self;
        drop(tx);
        if Arc::strong_count(&thread) == 1 {
            if let Some(handle) = thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = handle.join();
            }
        }
    }
}

/// The outcome of a [`Committer::submit`]: resolves once the writer thread has
/// committed (or failed to commit) the changes.
#[derive(Debug)]
#[must_use = "the changes are committed anyway; awaiting tells whether they were"]
pub struct PendingCommit(Waiting);

#[derive(Debug)]
enum Waiting {
    Answer(oneshot::Receiver<Result<(), StoreError>>),
    Done(Option<Result<(), StoreError>>),
}

impl PendingCommit {
    /// A commit that can only fail: the store is closed. Stands in for one that
    /// was moved out.
    pub fn closed() -> PendingCommit {
        PendingCommit(Waiting::Done(Some(Err(StoreError::Closed))))
    }
}

impl Future for PendingCommit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            // A writer that went away without answering has stopped.
            Waiting::Answer(answer) => Pin::new(answer)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(StoreError::Closed))),
            Waiting::Done(outcome) => {
                Poll::Ready(outcome.take().unwrap_or(Err(StoreError::Closed)))
            }
        }
    }
}

fn write_loop(store: &dyn Store, rx: &mpsc::Receiver<Job>, retention: Retention) {
    let mut last_prune = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Moved, not copied, into one list; each job keeps its range of it in
        // case the batch has to be redone one job at a time.
        let mut changes = Vec::with_capacity(jobs.iter().map(|j| j.changes.len()).sum());
        let mut ranges = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            let start = changes.len();
            changes.extend(job.changes);
            ranges.push(start..changes.len());
            replies.push(job.reply);
        }
        let result = if changes.is_empty() {
            Ok(())
        } else {
            store.commit(&changes)
        };
        match result {
            Ok(()) => {
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(err) if replies.len() == 1 => {
                tracing::error!(%err, "store commit failed");
                if let Some(reply) = replies.into_iter().next().flatten() {
                    let _ = reply.send(Err(err));
                }
            }
            Err(err) => {
                // One job's failure must not take the others with it (say, a
                // delivery's `Done` batched with a webhook that cannot commit).
                tracing::error!(%err, batch = replies.len(), "store commit failed; committing one by one");
                for (range, reply) in ranges.into_iter().zip(replies) {
                    let result = store.commit(&changes[range]);
                    if let Err(err) = &result {
                        tracing::error!(%err, "store commit failed");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(err) = store.prune(now_ms(), retention.id_max_age_ms, retention.room_idle_ms)
            {
                tracing::warn!(%err, "store prune failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts transactions and can be told to fail.
    #[derive(Default)]
    struct Counting {
        commits: AtomicUsize,
        changes: Mutex<Vec<Change>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Store for Counting {
        fn load(&self, _: i64, _: i64, _: i64) -> Result<super::super::Snapshot, StoreError> {
            Ok(Default::default())
        }
        fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
            // Slow enough that concurrent callers pile up behind the first.
            std::thread::sleep(Duration::from_millis(20));
            self.commits.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Commit("disk full".into()));
            }
            self.changes.lock().unwrap().extend_from_slice(changes);
            Ok(())
        }
    }

    fn id(n: usize) -> Vec<Change> {
        vec![Change::RememberId {
            id: n.to_string(),
            at_ms: 0,
        }]
    }

    const RETENTION: Retention = Retention {
        id_max_age_ms: 1,
        room_idle_ms: 1,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions() {
        let store = Arc::new(Counting::default());
        let committer = Committer::start(store.clone(), RETENTION);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..64 {
            let c = committer.clone();
            tasks.spawn(async move { c.commit(id(n)).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(store.changes.lock().unwrap().len(), 64);
        let commits = store.commits.load(Ordering::SeqCst);
        assert!(commits < 64, "{commits} transactions for 64 commits");
        committer.close();
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_caller_in_its_batch() {
        let store = Arc::new(Counting::default());
        store.fail.store(true, Ordering::SeqCst);
        let committer = Committer::start(store.clone(), RETENTION);
        assert!(matches!(
            committer.commit(id(1)).await,
            Err(StoreError::Commit(_))
        ));
        store.fail.store(false, Ordering::SeqCst);
        assert!(committer.commit(id(2)).await.is_ok());
        committer.close();
    }

    #[tokio::test]
    async fn close_commits_what_was_queued() {
        let store = Arc::new(Counting::default());
        let committer = Committer::start(store.clone(), RETENTION);
        committer.commit_later(id(1));
        committer.commit_later(id(2));
        committer.close();
        assert_eq!(store.changes.lock().unwrap().len(), 2);
    }
}
