//! The integration tests, as one test crate (`cargo test -p whereby-trigger
//! --test it`), so the library and the helpers are built and linked once instead
//! of once per file. Each module was a test binary of its own; `common` holds
//! the helpers they share, and `tests/scripts/` the programs they run.
//!
//! All tests share this one process and run in parallel threads, so none may
//! change process-wide state that another could see: no test sets environment
//! variables or the working directory (children get theirs through their
//! `Command`) or installs a signal handler; every server and receiver binds port
//! 0; temporary directories carry the process id and a test's name or a
//! counter. The one process-wide tracing subscriber is `run_action`'s log
//! capture, which records only events with a `trigger` field (see there); a
//! test that reads its own log sets a subscriber for its thread with
//! `tracing::subscriber::set_default`, as `forward_action` does. `stress` raises
//! the soft limit of open files, which only ever grows and so takes nothing from
//! the others. `run_action` starts this binary again for one of its tests, by
//! its full name.

#[cfg(feature = "metrics")]
mod admin;
mod answers;
mod common;

// Modules that need a cargo feature are built only with it, so that
// `cargo test --no-default-features` runs what the bare library can do.
// `cli` (the binary) brings `sqlite`, `cel` and `forward` with it.
#[cfg(feature = "cli")]
mod assistants_e2e;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "sqlite")]
mod durable;
#[cfg(feature = "cli")]
mod faults;
#[cfg(feature = "forward")]
mod forward_action;
mod http;
#[cfg(feature = "cli")]
mod logs;
#[cfg(all(feature = "cel", feature = "forward"))]
mod readme;
#[cfg(all(feature = "postgres", feature = "cli"))]
mod replicas;
#[cfg(feature = "cli")]
mod rules_e2e;
mod run_action;
#[cfg(feature = "cli")]
mod scenario;
#[cfg(feature = "cli")]
mod server_limits;
#[cfg(feature = "postgres")]
mod shared_store;
#[cfg(feature = "cli")]
mod signed_forward;
mod stress;
