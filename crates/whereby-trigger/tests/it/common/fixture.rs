//! Files and processes of the tests: a directory of each test's own, TOML
//! strings for configs, and the assistant scripts the server starts. Built
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

/// Whether `pid` is a live (not zombie) process running `script`, a name its
/// command line contains: a pid reused by an unrelated process does not count.
#[cfg(feature = "cli")]
pub(crate) fn script_alive(pid: u32, script: &str) -> bool {
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
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(script))
        .unwrap_or(false)
}

/// Polls (bounded) until process `pid` of `script` is gone.
#[cfg(feature = "cli")]
pub(crate) fn wait_script_gone(pid: u32, script: &str) {
    poll(&format!("{script} {pid} to be gone"), || {
        (!script_alive(pid, script)).then_some(())
    });
}
