//! Group commit: one writer thread turns every commit waiting at the same moment
//! into one transaction, and one sync thread makes every transaction committed
//! meanwhile durable with one disk flush. 64 concurrent webhooks cost one flush,
//! not 64, and the next transaction is written while the last one is flushed.
//! A caller is answered only after the flush that covers its transaction.
//!
//! A flush that fails leaves the store failed for good: every later commit is
//! refused until the process restarts. After a failed fsync the kernel may
//! have dropped the pages it could not write, and the log's frames are
//! checksummed as a chain, so a later flush that succeeds would not make later
//! commits safe: recovery stops at the first lost frame. Refusing (503, which
//! Whereby retries) is the only honest answer; `/healthz` says so too.
//!
//! Why one file: the writer loop, the sync loop and the failed flag they share
//! are one protocol (a caller answered only after the flush that covers it),
//! read together; the last 150 lines are its tests, against a store that
//! counts transactions and flushes and can be told to fail either.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Change, Store, StoreError};
use crate::util::{millis, now_ms};

/// Most changes-lists folded into one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 256;

/// How often expired ids, claims and rooms are pruned from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

type Reply = Option<oneshot::Sender<Result<(), StoreError>>>;

struct Job {
    changes: Vec<Change>,
    reply: Reply,
}

/// How long things are kept, for pruning.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Answered ids are kept this long (ms).
    pub id_max_age_ms: i64,
    /// Idle rooms are kept this long (ms).
    pub room_idle_ms: i64,
}

impl Retention {
    /// Ids kept for `id_max_age` (the duplicate window), rooms for `room_idle`
    /// (at least the longest claim lease, so a claimed room keeps its state).
    pub fn new(id_max_age: std::time::Duration, room_idle: std::time::Duration) -> Retention {
        Retention {
            id_max_age_ms: millis(id_max_age),
            room_idle_ms: millis(room_idle),
        }
    }
}

/// The handle requests commit through. Cloning is cheap; the threads stop when
/// every handle is dropped, after committing and syncing what was queued.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Job>,
    /// The writer, then the sync thread: joined in that order by `close`, which
    /// only tests need (a server flushes, and the threads end with the last
    /// handle).
    #[cfg_attr(not(test), allow(dead_code))]
    threads: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    /// Set for good when a flush fails.
    failed: Arc<AtomicBool>,
    /// Whether the last commit failed (and no later one succeeded): the
    /// store cannot take webhooks now, though it may again.
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the writer and sync threads for `store`.
    pub(crate) fn start(store: Arc<dyn Store>, retention: Retention) -> Committer {
        let (tx, rx) = mpsc::channel::<Job>();
        // A rendezvous: the writer hands a committed transaction over only
        // when the sync thread is ready for it, so it writes at most one
        // transaction per flush, with everything that arrived meanwhile. Handing
        // over at once let it write many small transactions per flush, each
        // paying for its pages in the log, its file locks and a wake-up.
        let (to_sync, synced) = mpsc::sync_channel::<Vec<Reply>>(0);
        let failed = Arc::new(AtomicBool::new(false));
        let syncing = store.clone();
        let sync_failed = failed.clone();
        let sync = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || sync_loop(syncing.as_ref(), &synced, &sync_failed));
        let write_failed = failed.clone();
        let failing = Arc::new(AtomicBool::new(false));
        let write_failing = failing.clone();
        // Without a sync thread nothing can be made durable: the writer then
        // fails every commit rather than answer for changes that are not.
        let sync_started = sync.is_ok();
        let writer = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || {
                if sync_started {
                    let flags = Flags {
                        failed: &write_failed,
                        failing: &write_failing,
                    };
                    write_loop(store.as_ref(), &rx, &to_sync, flags, retention);
                }
            });
        if !sync_started || writer.is_err() {
            tracing::error!("cannot start the store's threads: every commit will fail");
        }
        Committer {
            tx,
            threads: Arc::new(std::sync::Mutex::new(
                [writer.ok(), sync.ok()].into_iter().flatten().collect(),
            )),
            failed,
            failing,
        }
    }

    /// Whether a flush to disk has failed: then every commit is refused until
    /// the process restarts (see the module docs).
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether the store cannot commit now: it has failed for good, or its
    /// last commit failed and no later one succeeded.
    pub(crate) fn is_failing(&self) -> bool {
        self.has_failed() || self.failing.load(Ordering::Acquire)
    }

    /// Commits `changes` durably, together with whatever else is waiting.
    ///
    /// # Errors
    /// The store's error; then none of `changes` applies.
    #[cfg(test)]
    pub(crate) async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.submit(changes).await
    }

    /// Queues `changes` for the next group commit at once, and returns the
    /// commit's outcome as a future. The changes are committed (or fail) whether
    /// or not the future is awaited: dropping it only gives up the answer.
    pub(crate) fn submit(&self, changes: Vec<Change>) -> PendingCommit {
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
    pub(crate) async fn flush(&self) {
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
    pub(crate) fn commit_later(&self, changes: Vec<Change>) {
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

    /// Waits for the threads to commit and sync everything queued and stop. Only
    /// the last handle's call waits; other handles keep them running.
    #[cfg(test)]
    pub(crate) fn close(self) {
        let Committer { tx, threads, .. } = self;
        drop(tx);
        if Arc::strong_count(&threads) == 1 {
            let handles = threads
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            // The writer first: its end closes the sync thread's queue.
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}

/// Where what webhooks change is recorded: the commit of everything one webhook
/// changed, as one unit, and the later changes its deliveries report.
///
/// [`Committer`] is the embedded one (group commit over a [`Store`] on threads
/// of its own); a store shared by several receivers implements the same with
/// its own transactions, answering [`StoreError::AlreadyRecorded`] for an
/// event id another receiver recorded first and [`StoreError::ClaimHeld`] for
/// a claim another receiver holds.
pub(crate) trait Journal: Send + Sync + 'static {
    /// Records `changes` as one unit; the answer says whether they were (and,
    /// once it is `Ok`, that they are durable).
    fn submit(&self, changes: Vec<Change>) -> PendingCommit;
    /// Records `changes` when it can, without waiting for the answer.
    fn commit_later(&self, changes: Vec<Change>);
    /// Waits until everything submitted so far is durable.
    fn flush(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Whether the journal has failed for good (a failed flush): from then on
    /// every commit is refused.
    fn has_failed(&self) -> bool;
    /// Whether the journal cannot commit now: failed for good, or its last
    /// commit failed (a refusal by a shared store is not a failure) and no
    /// later one succeeded.
    fn is_failing(&self) -> bool;
}

impl Journal for Committer {
    fn submit(&self, changes: Vec<Change>) -> PendingCommit {
        Committer::submit(self, changes)
    }

    fn commit_later(&self, changes: Vec<Change>) {
        Committer::commit_later(self, changes);
    }

    fn flush(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Committer::flush(self))
    }

    fn has_failed(&self) -> bool {
        Committer::has_failed(self)
    }

    fn is_failing(&self) -> bool {
        Committer::is_failing(self)
    }
}

/// The outcome of a [`Journal::submit`]: resolves once the changes are
/// committed (or failed to be).
#[derive(Debug)]
#[must_use = "the changes are committed anyway; awaiting tells whether they were"]
pub(crate) struct PendingCommit(Waiting);

#[derive(Debug)]
enum Waiting {
    Answer(oneshot::Receiver<Result<(), StoreError>>),
    Done(Option<Result<(), StoreError>>),
}

impl PendingCommit {
    /// A commit that can only fail: the store is closed. Stands in for one that
    /// was moved out.
    pub(crate) fn closed() -> PendingCommit {
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

/// The committer's state, as the writer sets it.
#[derive(Clone, Copy)]
struct Flags<'a> {
    /// A flush failed: for good.
    failed: &'a AtomicBool,
    /// The last commit failed.
    failing: &'a AtomicBool,
}

impl Flags<'_> {
    /// Notes the result of one commit.
    fn committed(&self, result: &Result<(), StoreError>) {
        let failing = matches!(result, Err(err) if !refused(err));
        self.failing.store(failing, Ordering::Release);
    }
}

fn write_loop(
    store: &dyn Store,
    rx: &mpsc::Receiver<Job>,
    to_sync: &mpsc::SyncSender<Vec<Reply>>,
    flags: Flags<'_>,
    retention: Retention,
) {
    let failed = flags.failed;
    let mut last_prune = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if failed.load(Ordering::Acquire) {
            // Nothing more is written: it could not be made durable.
            answer(
                jobs.into_iter().map(|job| job.reply).collect(),
                &Err(sync_failed()),
            );
            continue;
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
            let started = std::time::Instant::now();
            let result = store.commit(&changes);
            crate::metrics::metrics()
                .commit_duration
                .observe(started.elapsed());
            result
        };
        flags.committed(&result);
        // Committed replies wait for the sync thread; failed ones are answered
        // at once (there is nothing of theirs to sync). A batch of flushes
        // alone goes through the sync thread too, so that a flush waits for the
        // sync of everything queued before it.
        let committed = match result {
            Ok(()) => replies,
            Err(err) if replies.len() == 1 => {
                log_refused(&err);
                answer(replies, &Err(err));
                Vec::new()
            }
            Err(err) => {
                // One job's failure must not take the others with it (say, a
                // delivery's `Done` batched with a webhook that cannot commit).
                if refused(&err) {
                    tracing::debug!(%err, batch = replies.len(), "store commit refused; committing one by one");
                } else {
                    tracing::error!(%err, batch = replies.len(), "store commit failed; committing one by one");
                }
                let mut committed = Vec::with_capacity(replies.len());
                for (range, reply) in ranges.into_iter().zip(replies) {
                    let result = store.commit(&changes[range]);
                    flags.committed(&result);
                    match result {
                        Ok(()) => committed.push(reply),
                        Err(err) => {
                            log_refused(&err);
                            answer(vec![reply], &Err(err));
                        }
                    }
                }
                committed
            }
        };
        if !committed.is_empty()
            && let Err(mpsc::SendError(replies)) = to_sync.send(committed)
        {
            answer(replies, &Err(StoreError::Closed));
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

/// A refused commit is an error, but for a duplicate or a claim another
/// receiver recorded first, which is how a shared store keeps one event to one
/// evaluation and one claim to one holder.
fn log_refused(err: &StoreError) {
    if refused(err) {
        tracing::debug!(%err, "store commit refused");
    } else {
        tracing::error!(%err, "store commit failed");
    }
}

/// Whether `err` is a shared store's refusal rather than a failure.
fn refused(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::AlreadyRecorded { .. }
            | StoreError::ClaimHeld { .. }
            | StoreError::StopGone { .. }
    )
}

/// Syncs, once for everything committed since the last sync, then answers
/// those commits. After a failed sync it only refuses.
fn sync_loop(store: &dyn Store, rx: &mpsc::Receiver<Vec<Reply>>, failed: &AtomicBool) {
    while let Ok(mut replies) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            replies.extend(more);
        }
        if failed.load(Ordering::Acquire) {
            answer(replies, &Err(sync_failed()));
            continue;
        }
        let result = store.sync();
        if let Err(err) = &result {
            failed.store(true, Ordering::Release);
            tracing::error!(%err, "store sync failed: every commit is refused from now on; \
                restart whereby-trigger once the disk is fixed");
        }
        answer(replies, &result);
    }
}

/// The refusal of every commit after a failed flush.
pub(crate) fn sync_failed() -> StoreError {
    StoreError::Sync("an earlier flush to disk failed; restart once the disk is fixed".to_owned())
}

fn answer(replies: Vec<Reply>, result: &Result<(), StoreError>) {
    for reply in replies.into_iter().flatten() {
        let _ = reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Counts transactions and syncs, and can be told to fail either.
    #[derive(Default)]
    struct Counting {
        commits: AtomicUsize,
        syncs: AtomicUsize,
        /// Ids committed and not yet synced.
        committed: Mutex<Vec<String>>,
        /// Ids made durable.
        synced: Mutex<Vec<String>>,
        fail: AtomicBool,
        fail_sync: AtomicBool,
    }

    impl Counting {
        fn synced(&self, n: usize) -> bool {
            self.synced.lock().unwrap().contains(&n.to_string())
        }
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
            let mut committed = self.committed.lock().unwrap();
            for change in changes {
                if let Change::RememberId { id, .. } = change {
                    committed.push(id.clone());
                }
            }
            Ok(())
        }
        fn sync(&self) -> Result<(), StoreError> {
            // Taken first: a commit that ends while the disk is being flushed
            // is not covered by this sync.
            let flushed = std::mem::take(&mut *self.committed.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(StoreError::Sync("I/O error".into()));
            }
            self.synced.lock().unwrap().extend(flushed);
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
    async fn concurrent_commits_share_transactions_and_syncs() {
        let store = Arc::new(Counting::default());
        let committer = Committer::start(store.clone(), RETENTION);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..64 {
            let c = committer.clone();
            let store = store.clone();
            tasks.spawn(async move {
                c.commit(id(n)).await.unwrap();
                // Answered only once durable.
                assert!(store.synced(n), "{n} was answered before its sync");
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
        assert_eq!(store.synced.lock().unwrap().len(), 64);
        let commits = store.commits.load(Ordering::SeqCst);
        let syncs = store.syncs.load(Ordering::SeqCst);
        assert!(commits < 64, "{commits} transactions for 64 commits");
        assert!(syncs <= commits, "{syncs} syncs for {commits} transactions");
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
    async fn a_failed_sync_fails_its_commits_and_every_later_one() {
        let store = Arc::new(Counting::default());
        store.fail_sync.store(true, Ordering::SeqCst);
        let committer = Committer::start(store.clone(), RETENTION);
        assert!(!committer.has_failed());
        assert!(matches!(
            committer.commit(id(1)).await,
            Err(StoreError::Sync(_))
        ));
        assert!(committer.has_failed());
        // The disk works again, but what it lost cannot be known: refused.
        store.fail_sync.store(false, Ordering::SeqCst);
        let commits = store.commits.load(Ordering::SeqCst);
        assert!(matches!(
            committer.commit(id(2)).await,
            Err(StoreError::Sync(_))
        ));
        assert_eq!(
            store.commits.load(Ordering::SeqCst),
            commits,
            "nothing more is written"
        );
        assert!(!store.synced(2));
        committer.close();
    }

    #[tokio::test]
    async fn flush_waits_for_the_sync_of_what_was_queued_before() {
        let store = Arc::new(Counting::default());
        let committer = Committer::start(store.clone(), RETENTION);
        committer.commit_later(id(1));
        committer.flush().await;
        assert!(store.synced(1));
        committer.close();
    }

    #[tokio::test]
    async fn close_commits_and_syncs_what_was_queued() {
        let store = Arc::new(Counting::default());
        let committer = Committer::start(store.clone(), RETENTION);
        committer.commit_later(id(1));
        committer.commit_later(id(2));
        committer.close();
        assert!(store.synced(1) && store.synced(2));
    }
}
