//! Helper processes re-executed from the test binary itself: a machine's agent, the watchdog
//! and on-demand chroot builds. Hooks that run before `main` recognise each by its environment marker, so the
//! test harness never starts in them.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::host::privs;

/// The marker of a machine's agent; its value is the leader's PID.
pub(crate) const AGENT: &str = "NSPAWN_AGENT";
/// The marker of the watchdog; its value is the test process's PID.
pub(crate) const WATCHDOG: &str = "NSPAWN_WATCHDOG";
/// The marker of an on-demand chroot build; its value is the chroot's name.
pub(crate) const BUILD: &str = "NSPAWN_BUILD";
/// Every marker; a helper gets its own and none of the others.
const MARKERS: [&str; 3] = [AGENT, WATCHDOG, BUILD];

/// Puts `$run` in `.init_array`, so that it runs before `main` in every binary that links
/// the module invoking this. Invoke it in the module whose code starts the helper: the static
/// then sits beside that code, and the linker cannot leave it out while the code is in.
macro_rules! pre_main_hook {
    ($run:path) => {
        #[used]
        #[link_section = ".init_array"]
        static HOOK: extern "C" fn() = {
            extern "C" fn hook() {
                $run()
            }
            hook
        };
    };
}
pub(crate) use pre_main_hook;

/// This executable (`/proc/self/exe`, which still works if cargo rebuilt the file) with
/// `marker=value`, `stdin` as its standard input and no output. It starts as root, and in a
/// session of its own, so that a Ctrl-C reaches the test process only.
pub(crate) fn command(marker: &str, value: String, stdin: OwnedFd) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    for other in MARKERS {
        cmd.env_remove(other);
    }
    // Root from start to end: with these, a helper would drop to the user as test binaries
    // do, and find root's host state (locks, records, cgroups) out of its reach.
    for var in ["SUDO_UID", "SUDO_GID", "SUDO_USER", "NSPAWN_USER"] {
        cmd.env_remove(var);
    }
    cmd.env(marker, value)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let regain = privs::child_needs_root();
    // SAFETY: raw system calls only.
    unsafe {
        cmd.pre_exec(move || {
            privs::regain_in_child(regain)?;
            libc::setsid();
            Ok(())
        });
    }
    cmd
}

/// Closes every descriptor from 3 up, except those in `keep`: a test runner, make's jobserver
/// or `flock dir cargo test` may have handed the test process descriptors that must never
/// reach the machine (a directory descriptor is a way out of any chroot).
pub(crate) fn close_inherited(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd > 2)
        .map(|fd| *fd as u32)
        .collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1);
    }
}

/// `close_range(2)`, or, on kernels before 5.9, each open descriptor in the range.
fn close_range(first: u32, last: u32) {
    // SAFETY: closing descriptors that nothing in this process owns yet (start-up).
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } == 0 {
        return;
    }
    let open: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open.into_iter().filter(|fd| (first..=last).contains(fd)) {
        // SAFETY: as above; the listing's own descriptor is closed already (EBADF).
        unsafe { libc::close(fd as RawFd) };
    }
}
