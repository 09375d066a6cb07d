//! One admitted start: the child's command and environment, its supervision
//! (time-out, stop, restart), its stdin and its output lines.

use super::*;

/// One admitted start: owns its slot and its claim until [`Job::finish`], or
/// until it is dropped (an aborted task), which frees both without admitting
/// anyone, since a runtime that drops tasks is closing.
pub(super) struct Job {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
    pub(super) event: Arc<ActionEvent>,
    pub(super) spec: Arc<RunSpec>,
    pub(super) stop: oneshot::Receiver<StopReason>,
    pub(super) finished: bool,
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
pub(super) enum Settle {
    /// The assistant ended for good: delivered.
    Done,
    /// It could not run: a dead letter.
    Dead(&'static str),
    /// The server is shutting down: the delivery stays pending.
    Keep,
}

/// Log tags of one child.
#[derive(Clone)]
pub(super) struct Tags {
    trigger: Arc<str>,
    room: String,
    pid: u32,
}

impl Job {
    pub(super) async fn run(mut self) {
        let trigger = self.inner.trigger.clone();
        let room = self.event.room_label();
        if let Ok(reason) = self.stop.try_recv() {
            tracing::info!(%trigger, %room, "not started: {reason}");
            return self.settle(if reason.keeps_delivery() {
                Settle::Keep
            } else {
                Settle::Done
            });
        }
        let mut restarts = 0;
        loop {
            let (status, stopped) = match self.run_once(&trigger, &room, restarts).await {
                Some(outcome) => outcome,
                None => {
                    // It could not even start: retrying the same command is futile.
                    self.settle(Settle::Dead("the command could not be started"));
                    return;
                }
            };
            if stopped.is_some_and(StopReason::keeps_delivery) {
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
            crate::metrics::metrics().trigger(&trigger).restarted();
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
                    return self.settle(if reason.is_ok_and(StopReason::keeps_delivery) { Settle::Keep } else { Settle::Done });
                }
            }
        }
    }

    /// Spawns the child once and supervises it to its end; `None` when it could
    /// not be started.
    async fn run_once(
        &mut self,
        trigger: &Arc<str>,
        room: &str,
        restarts: u32,
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
            room: room.to_owned(),
            pid: child.id().unwrap_or_default(),
        };
        tracing::info!(trigger = %tags.trigger, room = %tags.room, pid = tags.pid,
            program = %program, id = self.event.event_id(), "started");
        // Listed on the status page and counted running until it is reaped.
        let _alive = crate::metrics::metrics().assistant_started(crate::metrics::Assistant {
            trigger: trigger.clone(),
            room: room.to_owned(),
            pid: tags.pid,
            started_ms: crate::util::now_ms(),
            restarts,
        });

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
                self.inner.fate(&self.event).done();
                self.finish();
            }
            Settle::Dead(why) => {
                self.inner.fate(&self.event).dead(|| why.to_owned());
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
pub(super) fn command(
    spec: &RunSpec,
    event: &ActionEvent,
) -> Result<(String, Command), RunSpecError> {
    if event.room_url.is_none() && spec.command.iter().any(Template::uses_room_url) {
        return Err(RunSpecError::NoRoomUrl {
            event_type: event.webhook.type_name().to_owned(),
        });
    }
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
pub(super) fn webhook_data(event: &ActionEvent) -> Option<Value> {
    match serde_json::from_slice::<Value>(&event.raw) {
        Ok(mut body) => body.get_mut("data").map(Value::take),
        Err(error) => {
            tracing::warn!(trigger = %event.trigger, room = %event.room_label(), %error,
                "webhook body is not JSON: {{data.*}} placeholders render empty");
            None
        }
    }
}

/// The `WHEREBY_*` variables a child gets on top of the server's environment.
pub(super) fn environment(event: &ActionEvent) -> [(&'static str, String); 7] {
    let session = event
        .webhook
        .in_room()
        .and_then(|room| room.room_session_id())
        .unwrap_or_default();
    [
        (
            "WHEREBY_ROOM_URL",
            event.room_url.clone().unwrap_or_default(),
        ),
        ("WHEREBY_EVENT_ID", event.webhook.id().to_owned()),
        ("WHEREBY_EVENT_TYPE", event.webhook.type_name().to_owned()),
        ("WHEREBY_TRIGGER", event.trigger.to_string()),
        (
            "WHEREBY_SUBDOMAIN",
            event
                .room
                .as_ref()
                .map(|r| r.subdomain.to_string())
                .unwrap_or_default(),
        ),
        (
            "WHEREBY_ROOM_NAME",
            event
                .room
                .as_ref()
                .map(|r| r.room_name.to_string())
                .unwrap_or_default(),
        ),
        ("WHEREBY_ROOM_SESSION_ID", session.to_owned()),
    ]
}

/// Waits for the child, stopping it past its timeout or when told to. Returns its
/// exit status and, if it was stopped, why.
pub(super) async fn supervise(
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

pub(super) fn log_exit(tags: &Tags, status: io::Result<ExitStatus>, stopped: Option<StopReason>) {
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
pub(super) fn signal_name(signal: i32) -> String {
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
pub(super) async fn write_event(mut stdin: ChildStdin, mut json: Vec<u8>, tags: Tags) {
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
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// Logs `reader` line by line until end of file: stdout at info, stderr at warn.
pub(super) async fn log_lines<R: AsyncRead + Unpin>(reader: R, stream: Stream, tags: Tags) {
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
pub(super) async fn for_each_line<R: AsyncRead + Unpin>(
    reader: R,
    mut f: impl FnMut(&str),
) -> io::Result<()> {
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
