//! What a `run` action is configured with: the command, its stdin, time-out,
//! grace, concurrency (and what a start past it does) and restart policy.

use super::*;

/// What the child gets on stdin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never.
    No,
    /// After a non-zero exit status or a death by signal (the default).
    #[default]
    OnFailure,
    /// After any exit.
    Always,
}

/// What a start does when `max_running` children of its trigger already hold a
/// slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WhenFull {
    /// Waits in the trigger's queue, in order, until a slot frees (the default).
    #[default]
    Wait,
    /// Is refused at once: its claim is released, so that a later event can
    /// start the room's assistant, and its delivery is done, so that a restart
    /// does not start it after all.
    Drop,
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
    /// What a start past `max_running` does.
    pub when_full: WhenFull,
    /// When a child that ended on its own is started again.
    pub restart: RestartPolicy,
    /// Most restarts of one start; past it the claim is released and the
    /// failure logged.
    pub max_restarts: u32,
}

/// Why a [`RunSpec`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunSpecError {
    /// `command` has no program.
    #[error("`command` is empty: it needs at least the program to run")]
    EmptyCommand,
    /// `max_running` is zero: nothing would ever start.
    #[error("`max_running` must be at least 1")]
    ZeroMaxRunning,
    /// The command uses `{roomUrl}` and the webhook has no room (a
    /// `recording.finished`, say): it is not started with an empty URL.
    #[error("the command uses {{roomUrl}}, and this `{event_type}` webhook has no room")]
    NoRoomUrl {
        /// The webhook's type.
        event_type: String,
    },
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
