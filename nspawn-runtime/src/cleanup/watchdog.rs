//! A watchdog process that outlives the test process, so that not even SIGKILL leaves a
//! machine behind.
//!
//! The test process starts it once, from its own executable with `NSPAWN_WATCHDOG` set, in a
//! session of its own, holding the read end of a pipe whose write end only the test process
//! has. When the test process dies, however it dies, the pipe reports end-of-file and the
//! watchdog sweeps: it kills the leaders of the machines whose owner is dead (nspawn then
//! removes their snapshots in 50-90 ms) and removes their records and cgroups.
//!
//! The watchdog takes over before `main`: `#[nspawn::test]` puts [`crate::harness::init_privileges`]
//! in `.init_array`, and it calls [`run_if_requested`]. Binaries without that hook (plain
//! `Machine::start` in a custom harness) have no watchdog; `PR_SET_PDEATHSIG` still asks their
//! nspawn processes to shut down, and the next run sweeps.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use crate::cleanup::records::ProcessId;
use crate::host::helper;

pub(crate) use crate::host::helper::WATCHDOG as ENV;
/// How long a dying owner may take to be dead (a core dump of a big process takes a while).
const OWNER_EXIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Set by the pre-`main` hook: re-running this executable reaches [`run_if_requested`].
static HOOKED: AtomicBool = AtomicBool::new(false);
/// The write end of the pipe; never closed while the process lives.
static PIPE: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Called before `main`. In a watchdog process, this is where it does its work and exits;
/// elsewhere it notes that the watchdog can be started.
pub fn run_if_requested() {
    if helper::role(ENV).is_none() {
        HOOKED.store(true, Ordering::SeqCst);
        return;
    }
    watch();
    // SAFETY: ending the process without running the test harness.
    unsafe { libc::_exit(0) };
}

fn watch() {
    // Its pipe is its standard input; anything else it inherited is not its to hold.
    helper::close_inherited(&[]);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: ignoring signals.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let owner = std::env::var(ENV)
        .ok()
        .and_then(|pid| pid.parse().ok())
        .and_then(ProcessId::of);
    let mut buf = [0u8; 64];
    // Returns 0 (end-of-file) once every copy of the write end is closed: the owner is dying.
    // SAFETY: reading into a stack buffer.
    while unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) } != 0 {}
    // Its descriptors close before it is dead: until it is, the sweep would count it alive
    // and leave its machines.
    if let Some(owner) = owner {
        let deadline = std::time::Instant::now() + OWNER_EXIT;
        while owner.is_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    // A run directory removed meanwhile (a test's scratch one, once its run ended) holds no
    // record to act on, and sweeping would only make it again, empty, where nobody removes it.
    if !crate::cleanup::records::run_dir().exists() {
        return;
    }
    let options = crate::cleanup::sweep::Options::default();
    if let Ok(removed) = crate::cleanup::sweep::sweep(&options) {
        for line in removed {
            crate::report::event(crate::report::Event::WatchdogRemoved { what: line });
        }
    }
}

/// Starts the watchdog once, if this executable has the pre-`main` hook.
pub(crate) fn ensure_started() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !HOOKED.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = start() {
            crate::report::warning(
                None,
                format_args!(
                    "no watchdog: {e}; a SIGKILLed test process may leave machines to the next run's sweep"
                ),
            );
        }
    });
}

fn start() -> std::io::Result<()> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = helper::command(ENV, std::process::id().to_string(), read);
    let child = cmd.spawn()?;
    tracing::debug!(pid = child.id(), fd = write.as_raw_fd(), "watchdog started");
    *PIPE.lock().unwrap_or_else(|p| p.into_inner()) = Some(write);
    // Not waited for: it must outlive us, and init reaps it.
    std::mem::forget(child);
    Ok(())
}
