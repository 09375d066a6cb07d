//! Files and processes of the tests: a directory of each test's own, TOML
//! strings for configs, and the assistant scripts of `tests/scripts/` that
//! the `run` action starts. Built
//! whatever the features; what only the end-to-end tests use needs `cli`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(feature = "cli")]
use super::binary::poll;

/// A directory of the test's own, removed when dropped (which also ends any
/// assistant script still waiting for it to go).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory named after the test binary, the process and `tag`.
    pub(crate) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "whereby-trigger-{}-{}-{tag}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The path as a UTF-8 string, for a command line.
    pub(crate) fn path_str(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp dir")
    }

    /// Whether `name` exists in the directory.
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.0.join(name).exists()
    }

    /// The text of `name`, or "" if it does not exist (yet).
    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }

    /// A new, empty subdirectory.
    #[cfg(feature = "cli")]
    pub(crate) fn sub(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(&path).expect("create a subdirectory");
        path
    }

    /// Writes `text` to `name` (via a rename, so a reader never sees half).
    #[cfg(feature = "cli")]
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write a file");
        std::fs::rename(&tmp, &path).expect("rename a file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TOML basic string holding `s` (JSON string escapes are valid TOML ones).
#[cfg(feature = "cli")]
pub(crate) fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("a string serialises")
}

/// An assistant script of `tests/scripts/`, by its file name: its path, and
/// whether a process that runs it is alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Script(&'static str);

impl Script {
    pub(crate) const fn new(name: &'static str) -> Script {
        Script(name)
    }

    /// The script's full path, for a command line.
    pub(crate) fn path(self) -> String {
        format!("{}/tests/scripts/{}", env!("CARGO_MANIFEST_DIR"), self.0)
    }

    /// Whether `pid` is a live (not zombie) process running the script (its
    /// command line names it): a pid reused by an unrelated process does not
    /// count.
    pub(crate) fn alive(self, pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            return false;
        }
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(self.0))
            .unwrap_or(false)
    }

    /// Polls (bounded) until process `pid` of the script is gone.
    #[cfg(feature = "cli")]
    pub(crate) fn wait_gone(self, pid: u32) {
        poll(&format!("{} {pid} to be gone", self.0), || {
            (!self.alive(pid)).then_some(())
        });
    }

    /// Waits (bounded) for process `pid` of the script to record in `procs`
    /// the SIGTERM it got ([`term_marker`]), then to be gone.
    #[cfg(feature = "cli")]
    pub(crate) fn wait_terminated(self, procs: &Path, pid: u32) {
        poll(&format!("the SIGTERM marker of {} {pid}", self.0), || {
            term_marker(procs, pid).exists().then_some(())
        });
        self.wait_gone(pid);
    }
}

/// `procs/term-PID`: where the end-to-end tests' assistants record a SIGTERM.
#[cfg(feature = "cli")]
pub(crate) fn term_marker(procs: &Path, pid: u32) -> PathBuf {
    procs.join(format!("term-{pid}"))
}

// ---------------------------------------------------------------------------
// The end-to-end tests' assistant: `tests/scripts/e2e_assistant.py`, started
// by the binary's `run` action, recording what it got into a directory.

/// The assistant script of the end-to-end tests of the binary.
#[cfg(feature = "cli")]
pub(crate) const E2E_ASSISTANT: Script = Script::new("e2e_assistant.py");

/// The real interpreter behind `python3`, so that the child the server spawns
/// is the Python process itself, not a version manager's wrapper.
#[cfg(feature = "cli")]
pub(crate) fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("these tests need python3 on PATH");
        let exe = String::from_utf8(out.stdout).expect("a UTF-8 path");
        let exe = exe.trim();
        assert!(!exe.is_empty(), "python3 did not name its executable");
        exe.to_owned()
    })
}

/// A `run = { ... }` table starting [`E2E_ASSISTANT`], which records into
/// `procs`; `mode` is `term` or `ignore`; `extra` adds keys (`, stop_grace = "1s"`).
/// The assistant's arguments are `--room {roomUrl} --session
/// {data.roomSessionId} {trigger}/{type}`.
#[cfg(feature = "cli")]
pub(crate) fn run_table(procs: &Path, mode: &str, extra: &str) -> String {
    run_table_with(
        procs,
        mode,
        &[
            "--room",
            "{roomUrl}",
            "--session",
            "{data.roomSessionId}",
            "{trigger}/{type}",
        ],
        extra,
    )
}

/// Like [`run_table`], with the assistant's arguments `args` (templates).
#[cfg(feature = "cli")]
pub(crate) fn run_table_with(procs: &Path, mode: &str, args: &[&str], extra: &str) -> String {
    let command = [
        toml_str(python()),
        toml_str(E2E_ASSISTANT.path()),
        toml_str(procs.to_str().expect("a UTF-8 path")),
        toml_str(mode),
    ]
    .into_iter()
    .chain(args.iter().map(toml_str))
    .collect::<Vec<_>>()
    .join(", ");
    format!("run = {{ command = [{command}]{extra} }}")
}

/// One assistant as [`E2E_ASSISTANT`] recorded it.
#[cfg(feature = "cli")]
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub(crate) pid: u32,
    pub(crate) argv: Vec<String>,
    pub(crate) env: std::collections::BTreeMap<String, String>,
    pub(crate) stdin: String,
}

/// The assistants that started and recorded into `procs`, by pid.
#[cfg(feature = "cli")]
pub(crate) fn started_in(procs: &Path) -> Vec<Started> {
    let mut started: Vec<Started> = std::fs::read_dir(procs)
        .expect("read the procs dir")
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("started-") && name.ends_with(".json")
        })
        .map(|entry| {
            let text = std::fs::read_to_string(entry.path()).expect("read a started file");
            let v: serde_json::Value = serde_json::from_str(&text).expect("a started file is JSON");
            Started {
                pid: u32::try_from(v["pid"].as_u64().expect("pid")).expect("a pid"),
                argv: v["argv"]
                    .as_array()
                    .expect("argv")
                    .iter()
                    .map(|a| a.as_str().expect("a string").to_owned())
                    .collect(),
                env: v["env"]
                    .as_object()
                    .expect("env")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                stdin: v["stdin"].as_str().expect("stdin").to_owned(),
            }
        })
        .collect();
    started.sort_by_key(|s| s.pid);
    started
}

/// Polls (bounded) until at least `n` assistants have started; returns them all.
#[cfg(feature = "cli")]
pub(crate) fn wait_started(procs: &Path, n: usize) -> Vec<Started> {
    poll(
        &format!("{n} assistant(s) to start in {}", procs.display()),
        || {
            let started = started_in(procs);
            (started.len() >= n).then_some(started)
        },
    )
}

/// A `run` spec for `command` (each argument a template): the event on stdin,
/// a minute's timeout, no restarts (tests of restarts set their own).
pub(crate) fn run_spec(command: &[&str]) -> whereby_trigger::actions::run::RunSpec {
    use whereby_trigger::actions::run::{RestartPolicy, RunSpec, StdinMode, WhenFull};
    RunSpec {
        command: command
            .iter()
            .map(|arg| {
                whereby_trigger::actions::template::Template::compile(arg)
                    .expect("a valid template")
            })
            .collect(),
        stdin: StdinMode::Event,
        timeout: std::time::Duration::from_secs(60),
        stop_grace: std::time::Duration::from_secs(5),
        max_running: 8,
        when_full: WhenFull::Wait,
        restart: RestartPolicy::No,
        max_restarts: 0,
    }
}
