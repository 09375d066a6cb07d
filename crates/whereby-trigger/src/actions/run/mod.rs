//! `run`: start the assistant as a child process, one per start.
//!
//! The command is spawned directly, without a shell: each argument is a
//! [`Template`] rendered on its own, so a value from the webhook can never split
//! an argument or be interpreted. The child gets `WHEREBY_*` variables on top of
//! the server's environment and, with `stdin = "event"`, the [`ActionEvent`] as
//! one JSON document on stdin. Its stdout and stderr go to the log line by line,
//! tagged with trigger, room and pid.
//!
//! # Lifetime of a child
//!
//! - At most `max_running` children of a trigger run at once. Further starts
//!   wait in order, in a queue (`when_full = "wait"`, the default), or are
//!   dropped at once (`"drop"`): claim released, delivery done, counted by
//!   [`RunAction::dropped`] and in `whereby_trigger_starts_dropped_total`. A
//!   dropped start never runs, not even after a restart of the server.
//! - Past `timeout`, on a `stop_on` event for its room ([`Action::stop`]), or on
//!   [`RunAction::shutdown`], the child's process group gets SIGTERM, then
//!   SIGKILL after `stop_grace`. A group of its own, so that a wrapper script
//!   and what it started go together, and so that a Ctrl-C meant for the server
//!   reaches the children only as the server's orderly shutdown.
//! - Whenever it ends (or fails to start), the start's once-per claim is released.
//! - It dies with the server, even when the server is killed with SIGKILL: on
//!   Linux the child asks the kernel for `PR_SET_PDEATHSIG(SIGKILL)` before it
//!   executes the command. That covers the child only: processes it starts
//!   itself need the same of their own. Elsewhere, children are killed when
//!   their supervising task is dropped, which a crash does not do.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
//! the process. `tokio::process` forks on the thread that calls `spawn`, so the
//! spawn happens inside the task that supervises the child, polled by a runtime
//! worker thread (or the single thread of a current-thread runtime), which lives
//! as long as the runtime. Never move the spawn to `spawn_blocking`: blocking-pool
//! threads retire after a few idle seconds and would take the child with them.
//! (For the same reason a worker thread must not be retired early: nothing in
//! this crate calls `block_in_place`.)

mod job;
mod signal;
mod spec;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};

use crate::actions::delivery::Fate;
use crate::actions::template::Template;
use crate::actions::{Action, ActionEvent};
use crate::metrics::{ActionStats, TriggerStats};
use crate::state::claims::ClaimHandle;
use crate::state::room::RoomKey;
use job::*;
use signal::*;
pub use spec::*;

/// The `run` action of one trigger.
///
/// [`RunAction::new`] returns an `Arc`: the same action is shared by dispatch
/// (as `Arc<dyn Action>`) and by whoever reloads the config and stops the server
/// ([`reconfigure`](RunAction::reconfigure), [`shutdown`](RunAction::shutdown)).
/// Keep one action per trigger across reloads, so that its running children, its
/// queue, its `max_running` and its count of dropped starts carry over. The
/// children are supervised by tasks that keep what they need alive, so dropping
/// the action does not stop them; [`shutdown`](RunAction::shutdown) does.
///
/// [`Action::start`] must be called within a Tokio runtime (it spawns the task
/// that supervises the child); outside one, the start is refused and logged.
pub struct RunAction {
    inner: Arc<Inner>,
}

impl fmt::Debug for RunAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunAction")
            .field("trigger", &self.inner.trigger)
            .field("running", &self.running())
            .field("waiting", &self.waiting())
            .field("dropped", &self.dropped())
            .finish()
    }
}

struct Inner {
    trigger: Arc<str>,
    state: Mutex<State>,
    /// Pinged whenever a slot frees, so that `shutdown` can wait for the last.
    freed: watch::Sender<()>,
    /// Starts refused by `when_full = "drop"`, since the action was made.
    dropped: AtomicU64,
    /// The trigger's counters (`starts_dropped_total`), and its `run`
    /// deliveries' (`actions_total`), which count a call without a delivery
    /// ticket (a Trigger without a store). Taken when the action is made.
    stats: Arc<TriggerStats>,
    deliveries: Arc<ActionStats>,
}

struct State {
    /// The spec new children start with.
    spec: Arc<RunSpec>,
    /// Starts waiting for a slot, oldest first.
    queue: VecDeque<Arc<ActionEvent>>,
    /// Starts holding a slot (being spawned, running or being stopped), by id.
    active: HashMap<u64, Active>,
    next_id: u64,
    /// `shutdown` was called: nothing starts any more.
    closed: bool,
}

struct Active {
    room: Option<RoomKey>,
    /// Taken when a stop is sent, so that a child is told at most once.
    stop: Option<oneshot::Sender<StopReason>>,
}

/// Why a child is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    StopEvent,
    Shutdown,
    /// A config reload removed the trigger (or its `run`).
    Removed,
    /// This server lost the shared store that says it may run the assistant:
    /// another server takes it over.
    Fenced,
}

impl StopReason {
    /// Whether the assistant's delivery and claim outlive the stop: it is the
    /// server that goes away (or is cut off), not the meeting.
    fn keeps_delivery(self) -> bool {
        matches!(self, StopReason::Shutdown | StopReason::Fenced)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Timeout => "timeout",
            StopReason::StopEvent => "stop event",
            StopReason::Shutdown => "server shutdown",
            StopReason::Removed => "trigger removed from the config",
            StopReason::Fenced => "this server is cut off from the shared store",
        })
    }
}

/// Longest log line; longer output is logged in pieces of this size, so that a
/// child printing without newlines cannot grow the server's memory.
const MAX_LINE: usize = 16 * 1024;

/// How long the last output of an exited child may take to reach the log
/// before its exit is logged. Output only stays open past the exit when the
/// child left processes of its own behind; their output is still logged, later.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

impl RunAction {
    /// The `run` action of `trigger`, starting children as `spec` says.
    pub fn new(trigger: Arc<str>, spec: RunSpec) -> Arc<Self> {
        let (freed, _) = watch::channel(());
        let stats = crate::metrics::metrics().trigger(&trigger);
        let deliveries = stats.action("run");
        Arc::new(RunAction {
            inner: Arc::new(Inner {
                trigger,
                state: Mutex::new(State {
                    spec: Arc::new(spec),
                    queue: VecDeque::new(),
                    active: HashMap::new(),
                    next_id: 0,
                    closed: false,
                }),
                freed,
                dropped: AtomicU64::new(0),
                stats,
                deliveries,
            }),
        })
    }

    /// Applies a reloaded config. Children that are running keep the spec they
    /// started with; starts still waiting have not started and use the new one.
    /// A higher `max_running` starts waiting ones at once; a lower one applies as
    /// running children end. A changed `when_full` applies to later starts:
    /// those already waiting keep their place.
    pub fn reconfigure(&self, spec: RunSpec) {
        let jobs = {
            let mut state = self.inner.lock();
            state.spec = Arc::new(spec);
            self.inner.admit(&mut state)
        };
        launch(jobs);
    }

    /// Starts holding a slot: children running, being spawned or being stopped.
    pub fn running(&self) -> usize {
        self.inner.lock().active.len()
    }

    /// Starts waiting for a slot (behind `max_running`).
    pub fn waiting(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Starts refused because `max_running` children held a slot and
    /// `when_full` was `drop`, since the action was made.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Stops everything for a server that is stopping: waiting starts are
    /// dropped (their claims released), every child gets SIGTERM and, after its
    /// `stop_grace`, SIGKILL. Returns when the last child has been reaped. Later
    /// starts are refused.
    pub async fn shutdown(&self) {
        // Subscribed before looking, so that a slot freed in between is not missed.
        let mut freed = self.inner.freed.subscribe();
        let (cancelled, _) = self.inner.stop_rooms(None, StopReason::Shutdown, true);
        // Their deliveries stay pending: the next start runs them.
        for event in cancelled {
            self.inner.cancel_waiting(&event, "server shutdown");
        }
        loop {
            let running = self.running();
            if running == 0 {
                break;
            }
            tracing::debug!(trigger = %self.inner.trigger, running, "waiting for children to exit");
            if freed.changed().await.is_err() {
                break;
            }
        }
    }
}

impl RunAction {
    /// Ends this action for a trigger that a config reload removed: as if a
    /// stop event had come for every room, every child gets SIGTERM (then
    /// SIGKILL after its grace), waiting starts are dropped, claims are released
    /// and deliveries are done. Later starts are refused. Returns at once; the
    /// children end on their own tasks, and [`RunAction::shutdown`] still waits
    /// for them.
    pub fn retire(&self) {
        let (cancelled, stopped) = self.inner.stop_rooms(None, StopReason::Removed, true);
        tracing::warn!(trigger = %self.inner.trigger, stopped, cancelled = cancelled.len(),
            "trigger removed from the config: its assistants are stopped");
        self.inner
            .drop_waiting(cancelled, "trigger removed from the config");
    }
}

impl Action for RunAction {
    fn kind(&self) -> &'static str {
        "run"
    }

    /// A start's delivery is done when its assistant has ended for good, or at
    /// once when `when_full = "drop"` refuses it; one stopped by the server's
    /// shutdown stays pending, so that the next start of the server starts it
    /// again while its claim holds.
    fn tracks_delivery(&self) -> bool {
        true
    }

    fn start(&self, event: Arc<ActionEvent>) {
        if let Err(error) = tokio::runtime::Handle::try_current() {
            tracing::error!(trigger = %self.inner.trigger, room = %event.room_label(), %error,
                "cannot run: not called within a Tokio runtime");
            release(&event);
            return;
        }
        let jobs = {
            let mut state = self.inner.lock();
            if state.closed {
                drop(state);
                self.inner.cancel_waiting(&event, "server shutting down");
                return;
            }
            let limit = state.spec.max_running.max(1);
            if state.spec.when_full == WhenFull::Drop && state.active.len() >= limit {
                let running = state.active.len();
                drop(state);
                self.inner.drop_full(&event, running, limit);
                return;
            }
            state.queue.push_back(event.clone());
            let jobs = self.inner.admit(&mut state);
            if state.queue.back().is_some_and(|e| Arc::ptr_eq(e, &event)) {
                tracing::info!(trigger = %self.inner.trigger, room = %event.room_label(),
                    running = state.active.len(), waiting = state.queue.len(),
                    "max_running reached: start waits for a slot");
            }
            jobs
        };
        launch(jobs);
    }

    /// Every child gets SIGTERM (SIGKILL after its grace) and waiting starts
    /// are dropped, their deliveries and claims kept for the server that takes
    /// them over. Later starts run (once this server can take them again).
    fn fence(&self) {
        let (waiting, stopped) = self.inner.stop_rooms(None, StopReason::Fenced, false);
        if stopped > 0 || !waiting.is_empty() {
            tracing::warn!(trigger = %self.inner.trigger, stopped, waiting = waiting.len(),
                "cut off from the shared store: assistants stopped, so that the server taking them over does not run a second");
        }
        // Dropped without a release: the deliveries stay pending.
        drop(waiting);
    }

    fn stop(&self, event: Arc<ActionEvent>) {
        // A stop always names a room (only claims in a room are stopped); one
        // without has nothing to stop.
        let (cancelled, stopped) = match &event.room {
            Some(room) => self
                .inner
                .stop_rooms(Some(room), StopReason::StopEvent, false),
            None => (VecDeque::new(), 0),
        };
        tracing::info!(trigger = %self.inner.trigger, room = %event.room_label(), stopped,
            cancelled = cancelled.len(), id = event.event_id(), "stop event");
        self.inner.drop_waiting(cancelled, "stop event");
        // The stop itself is carried out once the children are told.
        self.inner.fate(&event).done();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every running child in `room` (in every room when `None`) to stop
    /// for `reason`, and takes that room's starts out of the queue; `close`
    /// refuses later starts. Returns the starts taken and how many children
    /// were told (a child whose task just finished needs no telling).
    fn stop_rooms(
        &self,
        room: Option<&RoomKey>,
        reason: StopReason,
        close: bool,
    ) -> (VecDeque<Arc<ActionEvent>>, usize) {
        let mut state = self.lock();
        state.closed |= close;
        let in_room = |r: &Option<RoomKey>| room.is_none_or(|room| r.as_ref() == Some(room));
        let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut state.queue)
            .into_iter()
            .partition(|waiting| in_room(&waiting.room));
        state.queue = kept;
        let mut stopped = 0_usize;
        for active in state.active.values_mut() {
            if in_room(&active.room)
                && let Some(stop) = active.stop.take()
            {
                let _ = stop.send(reason);
                stopped += 1;
            }
        }
        (taken, stopped)
    }

    /// Drops starts that never ran for good: claims released, deliveries done
    /// (they are not to be resumed).
    fn drop_waiting(&self, waiting: VecDeque<Arc<ActionEvent>>, why: &str) {
        for event in waiting {
            self.cancel_waiting(&event, why);
            self.fate(&event).done();
        }
    }

    /// Takes waiting starts into free slots. The jobs are launched by the caller
    /// once the lock is released, because a job dropped by a closing runtime
    /// frees its slot, which locks.
    fn admit(self: &Arc<Self>, state: &mut State) -> Vec<Job> {
        let limit = state.spec.max_running.max(1);
        let mut jobs = Vec::new();
        while !state.closed && state.active.len() < limit {
            let Some(event) = state.queue.pop_front() else {
                break;
            };
            let id = state.next_id;
            state.next_id += 1;
            let (stop_tx, stop_rx) = oneshot::channel();
            state.active.insert(
                id,
                Active {
                    room: event.room.clone(),
                    stop: Some(stop_tx),
                },
            );
            jobs.push(Job {
                inner: self.clone(),
                id,
                event,
                spec: state.spec.clone(),
                stop: stop_rx,
                finished: false,
            });
        }
        jobs
    }

    /// Frees slot `id`; `admit` says whether waiting starts may take it.
    fn free_slot(self: &Arc<Self>, id: u64, admit: bool) {
        let jobs = {
            let mut state = self.lock();
            state.active.remove(&id);
            if admit {
                self.admit(&mut state)
            } else {
                Vec::new()
            }
        };
        self.freed.send_replace(());
        launch(jobs);
    }

    /// Refuses a start for `when_full = "drop"`. Its delivery is done, not
    /// dead: dropping it was the decision, and a restart must not undo it.
    fn drop_full(&self, event: &ActionEvent, running: usize, max_running: usize) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.stats.start_dropped();
        tracing::warn!(trigger = %self.trigger, room = %event.room_label(), id = event.event_id(),
            running, max_running, "max_running reached: start dropped (when_full = \"drop\")");
        release(event);
        self.fate(event).done();
    }

    /// Where the fate of `event`'s delivery is reported.
    fn fate<'a>(&'a self, event: &'a ActionEvent) -> Fate<'a> {
        Fate::of(event, &self.deliveries)
    }

    fn cancel_waiting(&self, event: &ActionEvent, why: &str) {
        tracing::info!(trigger = %self.trigger, room = %event.room_label(), id = event.event_id(),
            "start cancelled before it ran: {why}");
        release(event);
    }
}

fn release(event: &ActionEvent) {
    event.claim.as_ref().map(ClaimHandle::release);
}

/// Spawns a task per job. Without a runtime (only while one is closing) the job
/// is dropped, which frees its slot and releases its claim.
fn launch(jobs: Vec<Job>) {
    for job in jobs {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(job.run())),
            Err(error) => {
                tracing::error!(trigger = %job.inner.trigger, room = %job.event.room_label(), %error,
                    "cannot run: no Tokio runtime");
            }
        }
    }
}

#[cfg(test)]
mod tests;
