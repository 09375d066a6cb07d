//! A throw-away PostgreSQL cluster per test: `initdb` into a directory of the
//! test's own, the server on a free loopback port (and a socket in that
//! directory), stopped and deleted when dropped.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to
//! `nobody`. Without PostgreSQL's programs a test is skipped with a message,
//! unless `WHEREBY_TRIGGER_REQUIRE_POSTGRES` is set (`.ci/run` sets it after
//! installing them): then it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::fixture::TempDir;

/// The uid and gid of `nobody`, who runs the cluster when the tests run as root.
const NOBODY: (u32, u32) = (65534, 65534);

/// A running cluster.
pub(crate) struct Postgres {
    bin: PathBuf,
    /// Holds `data/` and the server's socket; removed last.
    dir: TempDir,
    port: u16,
    running: bool,
}

/// Where `initdb`, `pg_ctl` and `postgres` are: on the `PATH`, else in the
/// newest of Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::getuid() == 0
    }
}

/// A free loopback port (free now: the cluster binds it right after) that
/// nothing else will take while a paused cluster leaves it free: below the
/// kernel's range for ports picked by `bind(…:0)` (which every other server
/// of the tests uses), and never given to two clusters of this process.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    // Spread by process, so that two test processes rarely try the same ones.
    let start = 20_000 + (std::process::id() % 1000) * 10;
    (0..10_000u32)
        .map(|n| u16::try_from(20_000 + (start - 20_000 + n * 7) % 10_000).expect("a port"))
        .find(|port| {
            !given.contains(port) && std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok()
        })
        .inspect(|port| given.push(*port))
        .expect("a free port below the ephemeral range")
}

impl Postgres {
    /// Starts a new cluster, or returns `None` (after saying why) when
    /// PostgreSQL is not installed and not required.
    pub(crate) fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("WHEREBY_TRIGGER_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL's programs (initdb, pg_ctl) are not installed, and the tests require them"
            );
            eprintln!("skipped: PostgreSQL's programs (initdb, pg_ctl) are not installed");
            return None;
        };
        let dir = TempDir::new("postgres");
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY.0), Some(NOBODY.1))
                .expect("give the cluster's directory to nobody");
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: free_port(),
            running: false,
        };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.resume();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null()).current_dir(self.dir.path());
        if is_root() {
            use std::os::unix::process::CommandExt;
            command.uid(NOBODY.0).gid(NOBODY.1);
        }
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// Starts the server (again) on its port, waiting until it accepts
    /// connections (`pg_ctl -w`, bounded by `-t`).
    pub(crate) fn resume(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path_str()
        );
        let log = self.dir.join("server.log");
        let out = self.pg_ctl(&[
            "-w",
            "-t",
            "30",
            "-l",
            log.to_str().expect("a UTF-8 path"),
            "-o",
            &options,
            "start",
        ]);
        assert!(
            out.status.success(),
            "the PostgreSQL server did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.dir.read("server.log")
        );
        self.running = true;
    }

    /// Stops the server (`fast`: connections are closed at once).
    pub(crate) fn pause(&mut self) {
        let out = self.pg_ctl(&["-w", "-t", "30", "-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "the PostgreSQL server did not stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// A new, empty database; its URL.
    pub(crate) fn database(&self, name: &str) -> String {
        // On a thread of its own: the blocking client may not run on an
        // async test's runtime.
        let (admin, sql) = (self.url("postgres"), format!("CREATE DATABASE {name}"));
        std::thread::spawn(move || {
            postgres::Client::connect(&admin, postgres::NoTls)
                .expect("connect to the test cluster")
                .batch_execute(&sql)
                .expect("create a database");
        })
        .join()
        .expect("the database was created");
        self.url(name)
    }

    /// The URL of database `name` in this cluster.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The cluster's directory.
    #[allow(dead_code)]
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-w", "-t", "30", "-m", "immediate", "stop"]);
        }
    }
}
