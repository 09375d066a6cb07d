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
