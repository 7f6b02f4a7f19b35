//! Every machine this process runs, so that none outlives it: they are stopped when the
//! process exits (`exit`, the end of `main`, `std::process::exit`) and on SIGINT, SIGTERM and
//! SIGHUP, after which the process dies of that signal.
//!
//! (SIGKILL cannot be caught: `PR_SET_PDEATHSIG` on nspawn covers it, see `backend`.)

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::backend::Running;
use crate::report::{self, Event};

/// A machine's host side, shared between the [`crate::Machine`] and this registry.
pub(crate) type Handle = Arc<Mutex<Option<Running>>>;

static LIVE: Mutex<Vec<(String, Handle)>> = Mutex::new(Vec::new());
static HOOKS: Once = Once::new();
const SIGNALS: [libc::c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Work on other threads that the process waits for before it exits: stops of machines
/// done in the background, and boots ahead of need.
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static LANDED: Condvar = Condvar::new();
/// How long the exit waits for work in flight; a machine still stopping after it is the
/// watchdog's and the sweep's, as after any crash.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

/// A piece of background work the process waits for at exit, for as long as this lives.
pub(crate) struct InFlight(());

impl InFlight {
    /// Counts one more piece of work in flight.
    pub(crate) fn begin() -> InFlight {
        install_hooks_once();
        *IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        LANDED.notify_all();
    }
}

/// Set once the process is going down: no more work is to start in the background.
static CLOSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the process is going down (exiting, or dying of a signal).
pub(crate) fn closing() -> bool {
    CLOSING.load(Ordering::SeqCst)
}

/// Waits until no work is in flight, or `timeout`.
fn wait_in_flight(timeout: Duration) {
    let n = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    let _ = LANDED.wait_timeout_while(n, timeout, |n| *n > 0);
}

/// Installs the exit and signal hooks, once: before anything of a machine exists on the
/// host, so that a signal during a boot is never lost (nor left to an inherited disposition:
/// a run started in the background inherits SIGINT ignored).
pub(crate) fn install_hooks_once() {
    HOOKS.call_once(install_hooks);
}

/// Records a running machine.
pub(crate) fn register(name: &str, handle: Handle) {
    install_hooks_once();
    lock().push((name.to_string(), handle));
}

/// Forgets a machine that has been stopped.
pub(crate) fn unregister(name: &str) {
    lock().retain(|(n, _)| n != name);
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(String, Handle)>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops every machine still running; returns how many there were. Their leaders are all
/// killed first, so the machines go down in parallel.
pub fn stop_all() -> usize {
    let live: Vec<(String, Handle)> = std::mem::take(&mut *lock());
    let mut taken: Vec<(String, Running)> = live
        .into_iter()
        .filter_map(|(name, h)| {
            h.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map(|r| (name, r))
        })
        .collect();
    for (_, running) in &taken {
        running.kill_leader();
    }
    for (name, running) in &mut taken {
        if let Err(e) = running.stop(Duration::from_secs(10)) {
            eprintln!("nspawn: stopping {name} at exit: {e}");
        }
        crate::cleanup::records::Record::remove(name);
        report::event(Event::StoppedAtExit {
            machine: name.clone(),
        });
    }
    // Their zones and set-up layers go with them.
    crate::network::leave_all();
    crate::chroot::layer::release_all();
    taken.len()
}

fn install_hooks() {
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(at_exit) };
    install_signal_watcher();
}

extern "C" fn at_exit() {
    CLOSING.store(true, Ordering::SeqCst);
    wait_in_flight(IN_FLIGHT_WAIT);
    stop_all();
    report::summary();
}

/// A thread takes the signals (signal-hook's handler only wakes it), stops the machines, then
/// lets the process die of the signal as it would have. The thread registers them itself, and
/// this waits until it has: a handler with no thread to act on it would swallow the signal.
fn install_signal_watcher() {
    let (registered, wait) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("nspawn-signals".into())
        .spawn(move || {
            let signals = signal_hook::iterator::Signals::new(SIGNALS);
            let _ = registered.send(());
            if let Some(sig) = signals.ok().and_then(|mut s| s.forever().next()) {
                stop_for(sig);
            }
        });
    if spawned.is_ok() {
        let _ = wait.recv();
    }
}

fn stop_for(sig: libc::c_int) {
    CLOSING.store(true, Ordering::SeqCst);
    // Machines booting ahead register when up, and are then stopped with the rest.
    let n = stop_all();
    wait_in_flight(IN_FLIGHT_WAIT);
    let n = n + stop_all();
    let name = nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str());
    let _ = writeln!(std::io::stderr(), "nspawn: {name}: stopped {n} machine(s)");
    let _ = signal_hook::low_level::emulate_default_handler(sig);
}
