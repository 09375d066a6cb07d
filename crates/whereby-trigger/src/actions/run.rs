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
//! - At most `max_running` children of a trigger run at once; further starts wait
//!   in order, in a queue.
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};

use crate::actions::template::Template;
use crate::actions::{Action, ActionEvent};
use crate::state::claims::ClaimHandle;
use crate::state::room::RoomKey;

/// What the child gets on stdin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdinMode {
    /// The [`ActionEvent`] as one JSON document and a newline, then end of file.
    #[default]
    Event,
    /// Nothing: stdin is `/dev/null`.
    None,
}

/// When an assistant process that ended on its own is started again, as
/// systemd's `Restart=` and container runtimes do. Never after a stop event, a
/// timeout or the server's shutdown, and only while its claim is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    No,
    /// After a non-zero exit status or a death by signal (the default).
    #[default]
    OnFailure,
    /// After any exit.
    Always,
}

/// Default `run.max_restarts`.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;

/// First wait before a restart; doubles each time up to [`MAX_RESTART_BACKOFF`].
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Longest wait before a restart.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

/// How a trigger's `run` action starts and stops its children.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The program (first element) and its arguments, rendered per start.
    pub command: Vec<Template>,
    /// What the child gets on stdin.
    pub stdin: StdinMode,
    /// Longest a child may run before it is stopped.
    pub timeout: Duration,
    /// How long a child has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Most children of this trigger running at once. `0` is rejected by
    /// [`RunSpec::validate`] and treated as `1` at run time, so that a queue can
    /// never be stuck for good.
    pub max_running: usize,
    /// When a child that ended on its own is started again.
    pub restart: RestartPolicy,
    /// Most restarts of one start; past it the claim is released and the
    /// failure logged.
    pub max_restarts: u32,
}

/// Why a [`RunSpec`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunSpecError {
    /// `command` has no program.
    #[error("`command` is empty: it needs at least the program to run")]
    EmptyCommand,
    /// `max_running` is zero: nothing would ever start.
    #[error("`max_running` must be at least 1")]
    ZeroMaxRunning,
}

impl RunSpec {
    /// Checks what the type cannot: a program to run and room for one child.
    ///
    /// # Errors
    /// The first [`RunSpecError`] found.
    pub fn validate(&self) -> Result<(), RunSpecError> {
        if self.command.is_empty() {
            return Err(RunSpecError::EmptyCommand);
        }
        if self.max_running == 0 {
            return Err(RunSpecError::ZeroMaxRunning);
        }
        Ok(())
    }
}

/// The `run` action of one trigger.
///
/// [`RunAction::new`] returns an `Arc`: the same action is shared by dispatch
/// (as `Arc<dyn Action>`) and by whoever reloads the config and stops the server
/// ([`reconfigure`](RunAction::reconfigure), [`shutdown`](RunAction::shutdown)).
/// Keep one action per trigger across reloads, so that its running children, its
/// queue and its `max_running` carry over. The children are supervised by tasks
/// that keep what they need alive, so dropping the action does not stop them;
/// [`shutdown`](RunAction::shutdown) does.
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
            .finish()
    }
}

struct Inner {
    trigger: Arc<str>,
    state: Mutex<State>,
    /// Pinged whenever a slot frees, so that `shutdown` can wait for the last.
    freed: watch::Sender<()>,
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
    room: RoomKey,
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
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Timeout => "timeout",
            StopReason::StopEvent => "stop event",
            StopReason::Shutdown => "server shutdown",
            StopReason::Removed => "trigger removed from the config",
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
            }),
        })
    }

    /// Applies a reloaded config. Children that are running keep the spec they
    /// started with; starts still waiting have not started and use the new one.
    /// A higher `max_running` starts waiting ones at once; a lower one applies as
    /// running children end.
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

    /// A start's delivery is done when its assistant has ended for good; one
    /// stopped by the server's shutdown stays pending, so that the next start of
    /// the server starts it again while its claim holds.
    fn tracks_delivery(&self) -> bool {
        true
    }

    fn start(&self, event: Arc<ActionEvent>) {
        if let Err(error) = tokio::runtime::Handle::try_current() {
            tracing::error!(trigger = %self.inner.trigger, room = %event.room, %error,
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
            state.queue.push_back(event.clone());
            let jobs = self.inner.admit(&mut state);
            if state.queue.back().is_some_and(|e| Arc::ptr_eq(e, &event)) {
                tracing::info!(trigger = %self.inner.trigger, room = %event.room,
                    running = state.active.len(), waiting = state.queue.len(),
                    "max_running reached: start waits for a slot");
            }
            jobs
        };
        launch(jobs);
    }

    fn stop(&self, event: Arc<ActionEvent>) {
        let (cancelled, stopped) =
            self.inner
                .stop_rooms(Some(&event.room), StopReason::StopEvent, false);
        tracing::info!(trigger = %self.inner.trigger, room = %event.room, stopped,
            cancelled = cancelled.len(), id = event.event_id(), "stop event");
        self.inner.drop_waiting(cancelled, "stop event");
        // The stop itself is carried out once the children are told.
        if let Some(ticket) = &event.delivery {
            ticket.done();
        }
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
        let in_room = |r: &RoomKey| room.is_none_or(|room| room == r);
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
            if let Some(ticket) = &event.delivery {
                ticket.done();
            }
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

    fn cancel_waiting(&self, event: &ActionEvent, why: &str) {
        tracing::info!(trigger = %self.trigger, room = %event.room, id = event.event_id(),
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
                tracing::error!(trigger = %job.inner.trigger, room = %job.event.room, %error,
                    "cannot run: no Tokio runtime");
            }
        }
    }
}

/// One admitted start: owns its slot and its claim until [`Job::finish`], or
/// until it is dropped (an aborted task), which frees both without admitting
/// anyone, since a runtime that drops tasks is closing.
struct Job {
    inner: Arc<Inner>,
    id: u64,
    event: Arc<ActionEvent>,
    spec: Arc<RunSpec>,
    stop: oneshot::Receiver<StopReason>,
    finished: bool,
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.finished {
            release(&self.event);
            self.inner.free_slot(self.id, false);
        }
    }
}

/// How a supervision ends for its delivery.
enum Settle {
    /// The assistant ended for good: delivered.
    Done,
    /// It could not run: a dead letter.
    Dead(&'static str),
    /// The server is shutting down: the delivery stays pending.
    Keep,
}

/// Log tags of one child.
#[derive(Clone)]
struct Tags {
    trigger: Arc<str>,
    room: RoomKey,
    pid: u32,
}

impl Job {
    async fn run(mut self) {
        let trigger = self.inner.trigger.clone();
        let room = self.event.room.clone();
        if let Ok(reason) = self.stop.try_recv() {
            tracing::info!(%trigger, %room, "not started: {reason}");
            return self.settle(if reason == StopReason::Shutdown {
                Settle::Keep
            } else {
                Settle::Done
            });
        }
        let mut restarts = 0;
        loop {
            let (status, stopped) = match self.run_once(&trigger, &room).await {
                Some(outcome) => outcome,
                None => {
                    // It could not even start: retrying the same command is futile.
                    self.settle(Settle::Dead("the command could not be started"));
                    return;
                }
            };
            if stopped == Some(StopReason::Shutdown) {
                // The server is going away, not the meeting: keep the claim and
                // the delivery, so that the next start runs the assistant again.
                return self.settle(Settle::Keep);
            }
            let failed = !matches!(&status, Ok(status) if status.success());
            let wanted = stopped.is_none()
                && match self.spec.restart {
                    RestartPolicy::No => false,
                    RestartPolicy::OnFailure => failed,
                    RestartPolicy::Always => true,
                }
                && self
                    .event
                    .claim
                    .as_ref()
                    .is_none_or(|claim| claim.is_held(std::time::Instant::now()));
            if !wanted {
                return self.settle(Settle::Done);
            }
            if restarts >= self.spec.max_restarts {
                tracing::error!(%trigger, %room, restarts, id = self.event.event_id(),
                    "gave up restarting the assistant; its claim is released");
                return self.settle(Settle::Dead("the assistant kept failing"));
            }
            restarts += 1;
            let backoff = RESTART_BACKOFF
                .saturating_mul(1 << (restarts - 1).min(16))
                .min(MAX_RESTART_BACKOFF);
            tracing::warn!(%trigger, %room, restart = restarts, max_restarts = self.spec.max_restarts,
                backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "the assistant ended; restarting it");
            // A stop during the backoff ends the supervision at once.
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                reason = &mut self.stop => {
                    tracing::info!(%trigger, %room, "not restarted: {}", reason.as_ref().map_or_else(|_| "stopped".to_owned(), ToString::to_string));
                    return self.settle(if reason == Ok(StopReason::Shutdown) { Settle::Keep } else { Settle::Done });
                }
            }
        }
    }

    /// Spawns the child once and supervises it to its end; `None` when it could
    /// not be started.
    async fn run_once(
        &mut self,
        trigger: &Arc<str>,
        room: &RoomKey,
    ) -> Option<(io::Result<ExitStatus>, Option<StopReason>)> {
        let (program, mut command) = match command(&self.spec, &self.event) {
            Ok(command) => command,
            Err(error) => {
                tracing::error!(%trigger, %room, %error, "cannot run");
                return None;
            }
        };
        // The fork happens here, on this runtime thread: see the module docs.
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%trigger, %room, program = %program, %error, "could not start the command");
                return None;
            }
        };
        let tags = Tags {
            trigger: trigger.clone(),
            room: room.clone(),
            pid: child.id().unwrap_or_default(),
        };
        tracing::info!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid,
            program = %program, id = self.event.event_id(), "started");

        let stdin = child
            .stdin
            .take()
            .map(|stdin| tokio::spawn(write_event(stdin, self.event.to_json(), tags.clone())));
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            output.push(tokio::spawn(log_lines(
                stdout,
                Stream::Stdout,
                tags.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            output.push(tokio::spawn(log_lines(
                stderr,
                Stream::Stderr,
                tags.clone(),
            )));
        }

        let (status, stopped) = supervise(&mut child, &self.spec, &mut self.stop, &tags).await;

        // A child that never read its stdin leaves the writer blocked on a full
        // pipe that someone else may still hold open.
        if let Some(stdin) = stdin {
            stdin.abort();
        }
        let drained = tokio::time::timeout(OUTPUT_DRAIN, async {
            for reader in &mut output {
                let _ = reader.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid,
                "output still open after exit (the child left processes behind)");
        }
        // `log_exit` takes the status; the caller needs it too.
        let kept: io::Result<ExitStatus> = match &status {
            Ok(s) => Ok(*s),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        log_exit(&tags, status, stopped);
        Some((kept, stopped))
    }

    /// Ends the supervision: the slot is freed, and unless `Keep`, the claim is
    /// released and the delivery settled.
    fn settle(&mut self, how: Settle) {
        match how {
            Settle::Keep => {
                self.finished = true;
                self.inner.free_slot(self.id, true);
            }
            Settle::Done => {
                if let Some(ticket) = &self.event.delivery {
                    ticket.done();
                }
                self.finish();
            }
            Settle::Dead(why) => {
                if let Some(ticket) = &self.event.delivery {
                    ticket.dead(why);
                }
                self.finish();
            }
        }
    }

    /// The child is gone: release the claim and let the next start in.
    fn finish(&mut self) {
        self.finished = true;
        release(&self.event);
        self.inner.free_slot(self.id, true);
    }
}

/// The command for one start: arguments rendered, environment set, stdio piped,
/// and tied to the server's life.
fn command(spec: &RunSpec, event: &ActionEvent) -> Result<(String, Command), RunSpecError> {
    let data = webhook_data(event);
    let mut args = spec
        .command
        .iter()
        .map(|template| template.render(event, data.as_ref()));
    let program = args.next().ok_or(RunSpecError::EmptyCommand)?;
    let mut command = Command::new(&program);
    command
        .args(args)
        .envs(environment(event))
        .stdin(match spec.stdin {
            StdinMode::Event => Stdio::piped(),
            StdinMode::None => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Covers a supervising task dropped by a closing runtime.
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(target_os = "linux")]
    die_with_parent(&mut command);
    Ok((program, command))
}

/// The webhook's `data`, for `{data.FIELD}`. The raw body was parsed once already
/// into typed fields; templates need it untyped, unknown fields included.
fn webhook_data(event: &ActionEvent) -> Option<Value> {
    match serde_json::from_slice::<Value>(&event.raw) {
        Ok(mut body) => body.get_mut("data").map(Value::take),
        Err(error) => {
            tracing::warn!(trigger = %event.trigger, room = %event.room, %error,
                "webhook body is not JSON: {{data.*}} placeholders render empty");
            None
        }
    }
}

/// The `WHEREBY_*` variables a child gets on top of the server's environment.
fn environment(event: &ActionEvent) -> [(&'static str, String); 7] {
    let session = event
        .webhook
        .in_room()
        .and_then(|room| room.room_session_id())
        .unwrap_or_default();
    [
        ("WHEREBY_ROOM_URL", event.room_url.clone()),
        ("WHEREBY_EVENT_ID", event.webhook.id().to_owned()),
        ("WHEREBY_EVENT_TYPE", event.webhook.type_name().to_owned()),
        ("WHEREBY_TRIGGER", event.trigger.to_string()),
        ("WHEREBY_SUBDOMAIN", event.room.subdomain.to_string()),
        ("WHEREBY_ROOM_NAME", event.room.room_name.to_string()),
        ("WHEREBY_ROOM_SESSION_ID", session.to_owned()),
    ]
}

/// Waits for the child, stopping it past its timeout or when told to. Returns its
/// exit status and, if it was stopped, why.
async fn supervise(
    child: &mut Child,
    spec: &RunSpec,
    stop: &mut oneshot::Receiver<StopReason>,
    tags: &Tags,
) -> (io::Result<ExitStatus>, Option<StopReason>) {
    let told = async {
        match stop.await {
            Ok(reason) => reason,
            // The sender only goes away with the slot, which this task holds.
            Err(_) => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        status = child.wait() => return (status, None),
        () = tokio::time::sleep(spec.timeout) => StopReason::Timeout,
        reason = told => reason,
    };
    tracing::info!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid,
        grace = ?spec.stop_grace, "stopping ({reason}): SIGTERM");
    if let Err(error) = terminate(child) {
        tracing::warn!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid, %error,
            "could not send SIGTERM");
    }
    if let Ok(status) = tokio::time::timeout(spec.stop_grace, child.wait()).await {
        return (status, Some(reason));
    }
    tracing::warn!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid,
        grace = ?spec.stop_grace, "still running after stop_grace: SIGKILL");
    if let Err(error) = kill(child) {
        tracing::warn!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid, %error,
            "could not send SIGKILL");
    }
    (child.wait().await, Some(reason))
}

fn log_exit(tags: &Tags, status: io::Result<ExitStatus>, stopped: Option<StopReason>) {
    let (trigger, room, pid) = (&tags.trigger, &tags.room, tags.pid);
    let stopped = stopped.map(|reason| reason.to_string());
    let stopped = stopped.as_deref();
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            tracing::error!(%trigger, %room, pid, %error, "could not wait for the child");
            return;
        }
    };
    if let Some(code) = status.code() {
        if code == 0 {
            tracing::info!(%trigger, %room, pid, code, stopped, "exited");
        } else {
            tracing::warn!(%trigger, %room, pid, code, stopped, "exited with an error");
        }
        return;
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        let name = signal_name(signal);
        if stopped.is_some() {
            tracing::info!(%trigger, %room, pid, signal, stopped, "killed by {name}");
        } else {
            tracing::warn!(%trigger, %room, pid, signal, "killed by {name}");
        }
        return;
    }
    tracing::warn!(%trigger, %room, pid, %status, stopped, "ended");
}

#[cfg(unix)]
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGKILL => "SIGKILL".to_owned(),
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        libc::SIGSEGV => "SIGSEGV".to_owned(),
        libc::SIGABRT => "SIGABRT".to_owned(),
        libc::SIGPIPE => "SIGPIPE".to_owned(),
        other => format!("signal {other}"),
    }
}

/// Writes the event and closes stdin. A child that does not read its stdin is
/// fine: it closing the pipe (EPIPE) is not an error.
async fn write_event(mut stdin: ChildStdin, mut json: Vec<u8>, tags: Tags) {
    json.push(b'\n');
    let written = async {
        stdin.write_all(&json).await?;
        stdin.shutdown().await
    }
    .await;
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
            tracing::debug!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid,
                "the child closed stdin before reading the event");
        }
        Err(error) => {
            tracing::warn!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid, %error,
                "could not write the event to stdin");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Logs `reader` line by line until end of file: stdout at info, stderr at warn.
async fn log_lines<R: AsyncRead + Unpin>(reader: R, stream: Stream, tags: Tags) {
    let result = for_each_line(reader, |line| match stream {
        Stream::Stdout => tracing::info!(trigger = %tags.trigger, room = %tags.room,
            pid = tags.pid, stream = "stdout", "{line}"),
        Stream::Stderr => tracing::warn!(trigger = %tags.trigger, room = %tags.room,
            pid = tags.pid, stream = "stderr", "{line}"),
    })
    .await;
    if let Err(error) = result {
        tracing::warn!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid, %error,
            "could not read the child's {stream:?}");
    }
}

/// Calls `f` with each line of `reader`, without its line ending, decoded
/// lossily; a line longer than [`MAX_LINE`] comes in pieces.
async fn for_each_line<R: AsyncRead + Unpin>(reader: R, mut f: impl FnMut(&str)) -> io::Result<()> {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        f(&String::from_utf8_lossy(text));
    }
}

/// Asks the child to stop: SIGTERM to its process group.
#[cfg(unix)]
fn terminate(child: &mut Child) -> io::Result<()> {
    signal_group(child, libc::SIGTERM)
}

/// Without signals, stopping and killing are the same.
#[cfg(not(unix))]
fn terminate(child: &mut Child) -> io::Result<()> {
    child.start_kill()
}

/// Stops the child for good: SIGKILL to its process group (or, failing that, to
/// the child alone).
#[cfg(unix)]
fn kill(child: &mut Child) -> io::Result<()> {
    signal_group(child, libc::SIGKILL).or_else(|_| child.start_kill())
}

#[cfg(not(unix))]
fn kill(child: &mut Child) -> io::Result<()> {
    child.start_kill()
}

/// Signals the child's process group, or the child alone if it left the group.
/// The child is not reaped yet (`id()` is `None` once it is), so its pid, and the
/// group named after it, cannot belong to another process.
#[cfg(unix)]
fn signal_group(child: &Child, signal: libc::c_int) -> io::Result<()> {
    let Some(pid) = child.id() else {
        return Ok(());
    };
    let pid = libc::pid_t::try_from(pid)
        .ok()
        // 0, -1 and 1 would mean "our own group", "everyone" and init.
        .filter(|pid| *pid > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a child's pid"))?;
    match send_signal(-pid, signal) {
        Err(error) if error.raw_os_error() == Some(libc::ESRCH) => send_signal(pid, signal),
        other => other,
    }
}

/// `kill(2)`. Callers pass a child's pid or `-pid` for its group, never 0 or ±1.
#[cfg(unix)]
#[allow(unsafe_code)]
fn send_signal(target: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and reads or writes no memory of ours;
    // any values are sound. Which process gets the signal is the caller's
    // concern (see `signal_group`), not a memory-safety one.
    let result = unsafe { libc::kill(target, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the kernel SIGKILL the child when the thread that forked it exits, so
/// that no child outlives the server, even one killed with SIGKILL.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called. It calls prctl(2) and
    // getppid(2), both plain system calls, and builds `io::Error`s from error
    // codes, which does not allocate. It takes no lock and touches only `parent`,
    // a copied integer.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The server may have died before the request above took effect; the
            // child would then have been adopted and never get the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::ActionKind;
    use bytes::Bytes;

    fn event(edit: impl FnOnce(&mut Value)) -> ActionEvent {
        let mut v: Value =
            serde_json::from_str(whereby_webhook::sample::sample("room.client.joined").unwrap())
                .unwrap();
        edit(&mut v);
        let raw = Bytes::from(v.to_string());
        let webhook = whereby_webhook::parse(&raw).unwrap();
        ActionEvent {
            action: ActionKind::Start,
            trigger: "note-taker".into(),
            room_url: "https://acme.whereby.com/standup-3f9a2c".into(),
            room: RoomKey::of(webhook.in_room().unwrap()),
            webhook,
            raw,
            claim: None,
            delivery: None,
        }
    }

    fn spec(command: &[&str]) -> RunSpec {
        RunSpec {
            command: command
                .iter()
                .map(|arg| Template::compile(arg).unwrap())
                .collect(),
            stdin: StdinMode::Event,
            timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(1),
            max_running: 1,
            restart: RestartPolicy::No,
            max_restarts: 0,
        }
    }

    #[test]
    fn stdin_mode_reads_lowercase_and_defaults_to_event() {
        assert_eq!(
            serde_json::from_str::<StdinMode>(r#""none""#).unwrap(),
            StdinMode::None
        );
        assert_eq!(
            serde_json::from_str::<StdinMode>(r#""event""#).unwrap(),
            StdinMode::Event
        );
        assert!(serde_json::from_str::<StdinMode>(r#""None""#).is_err());
        assert_eq!(StdinMode::default(), StdinMode::Event);
    }

    #[test]
    fn validate_wants_a_program_and_a_slot() {
        assert_eq!(spec(&[]).validate(), Err(RunSpecError::EmptyCommand));
        let mut zero = spec(&["true"]);
        zero.max_running = 0;
        assert_eq!(zero.validate(), Err(RunSpecError::ZeroMaxRunning));
        assert_eq!(spec(&["true"]).validate(), Ok(()));
    }

    #[test]
    fn environment_names_the_event_and_room() {
        let env: HashMap<_, _> = environment(&event(|_| {})).into_iter().collect();
        assert_eq!(
            env["WHEREBY_ROOM_URL"],
            "https://acme.whereby.com/standup-3f9a2c"
        );
        assert_eq!(env["WHEREBY_EVENT_TYPE"], "room.client.joined");
        assert_eq!(env["WHEREBY_EVENT_ID"].len(), 64);
        assert_eq!(env["WHEREBY_TRIGGER"], "note-taker");
        assert_eq!(env["WHEREBY_SUBDOMAIN"], "acme");
        assert_eq!(env["WHEREBY_ROOM_NAME"], "/standup-3f9a2c");
        assert_eq!(
            env["WHEREBY_ROOM_SESSION_ID"],
            "c1b5e7a0-8d2f-4b6e-9a41-2f7d3e5c9b10"
        );
        let no_session = event(|v| v["data"]["roomSessionId"] = Value::Null);
        let env: HashMap<_, _> = environment(&no_session).into_iter().collect();
        assert_eq!(env["WHEREBY_ROOM_SESSION_ID"], "");
    }

    #[test]
    fn command_renders_each_argument_whole() {
        let tricky = r#"Ada "the countess" O'Lovelace; $(id)"#;
        let e = event(|v| v["data"]["displayName"] = Value::String(tricky.into()));
        let (program, command) = command(
            &spec(&["{data.subdomain}-bin", "--name={data.displayName}"]),
            &e,
        )
        .unwrap();
        assert_eq!(program, "acme-bin");
        let args: Vec<_> = command.as_std().get_args().collect();
        assert_eq!(args, [format!("--name={tricky}").as_str()]);
        assert!(matches!(
            super::command(&spec(&[]), &e),
            Err(RunSpecError::EmptyCommand)
        ));
    }

    #[test]
    fn data_is_empty_when_the_body_is_not_json() {
        let mut e = event(|_| {});
        assert_eq!(webhook_data(&e).unwrap()["subdomain"], "acme");
        e.raw = Bytes::from_static(b"not json");
        assert!(webhook_data(&e).is_none());
    }

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(input, |line| out.push(line.to_owned()))
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn output_is_split_into_lines() {
        assert_eq!(lines(b"a\nb\r\n\nlast").await, ["a", "b", "", "last"]);
        assert!(lines(b"").await.is_empty());
        assert_eq!(lines(b"caf\xc3\xa9 \xff\n").await, ["café \u{fffd}"]);
        let long = vec![b'x'; MAX_LINE * 2 + 3];
        let pieces = lines(&long).await;
        assert_eq!(
            pieces.iter().map(String::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 3]
        );
    }

    #[cfg(unix)]
    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[tokio::test]
    async fn a_stop_before_the_spawn_cancels_it_and_the_waiting_starts() {
        let claims = crate::state::claims::Claims::new();
        let mut e = event(|_| {});
        let key = crate::state::claims::ClaimKey::new(
            "t".into(),
            crate::state::claims::OncePer::Room,
            e.room.clone(),
            "id",
            None,
        );
        let lease = Duration::from_secs(60);
        let now = std::time::Instant::now();
        let claim = claims.try_claim(key, lease, now).unwrap();
        e.claim = Some(claim.clone());
        let e = Arc::new(e);
        let action = RunAction::new("t".into(), spec(&["/nonexistent/never-run"]));
        let job = {
            // Admitted by hand so that the job is not launched yet.
            let mut state = action.inner.lock();
            state.queue.push_back(e.clone());
            state.queue.push_back(e.clone());
            let mut jobs = action.inner.admit(&mut state);
            assert_eq!((jobs.len(), state.queue.len()), (1, 1));
            jobs.remove(0)
        };
        action.stop(e.clone());
        assert_eq!((action.running(), action.waiting()), (1, 0));
        job.run().await;
        assert_eq!(action.running(), 0);
        assert!(!claim.is_held(now));
    }
}
