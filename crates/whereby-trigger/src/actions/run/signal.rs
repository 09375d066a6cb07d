//! Stopping a child: signals to its process group, and death with the server.

use super::*;

/// Asks the child to stop: SIGTERM to its process group.
#[cfg(unix)]
pub(super) fn terminate(child: &mut Child) -> io::Result<()> {
    signal_group(child, libc::SIGTERM)
}

/// Without signals, stopping and killing are the same.
#[cfg(not(unix))]
pub(super) fn terminate(child: &mut Child) -> io::Result<()> {
    child.start_kill()
}

/// Stops the child for good: SIGKILL to its process group (or, failing that, to
/// the child alone).
#[cfg(unix)]
pub(super) fn kill(child: &mut Child) -> io::Result<()> {
    signal_group(child, libc::SIGKILL).or_else(|_| child.start_kill())
}

#[cfg(not(unix))]
pub(super) fn kill(child: &mut Child) -> io::Result<()> {
    child.start_kill()
}

/// Signals the child's process group, or the child alone if it left the group.
/// The child is not reaped yet (`id()` is `None` once it is), so its pid, and the
/// group named after it, cannot belong to another process.
#[cfg(unix)]
pub(super) fn signal_group(child: &Child, signal: libc::c_int) -> io::Result<()> {
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
pub(super) fn send_signal(target: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
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
pub(super) fn die_with_parent(command: &mut Command) {
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
