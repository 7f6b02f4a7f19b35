//! What the runtime tells the outside world as it goes: one-line reports on stderr (a boot, a
//! kept machine, the summary at exit), and the event log that tests count boots and stops
//! from.
//!
//! The event log (`NSPAWN_EVENT_LOG`) has one line per [`Event`], written by a `tracing`
//! subscriber of the runtime's own from the events `event` emits, and read back with
//! [`Event::parse`], so the writer and the readers cannot disagree on its format.
//!
//! A leaf module: every layer may report through it, and it depends on nothing of ours but
//! the settings.

mod event_log;

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

/// Something the runtime did, as a line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// nspawn was started for a machine.
    Spawned {
        /// The machine.
        machine: String,
        /// nspawn's PID.
        nspawn: u32,
    },
    /// A machine is booted and ready.
    Ready {
        /// The machine.
        machine: String,
        /// Its chroot.
        chroot: String,
        /// How long the boot took, in milliseconds.
        boot_ms: u64,
    },
    /// A machine was booted for the tests of a module.
    ModuleBoot {
        /// `module_path!()` of the tests.
        module: String,
        /// The chroot.
        chroot: String,
        /// The machine.
        machine: String,
        /// Booted ahead of the module's first test.
        ahead: bool,
    },
    /// The machine of a module's tests could not boot.
    ModuleBootFailed {
        /// `module_path!()` of the tests.
        module: String,
        /// The chroot.
        chroot: String,
    },
    /// A machine was booted for one test alone.
    TestBoot {
        /// The test's name.
        test: String,
        /// The machine.
        machine: String,
    },
    /// A module's set-up ran on a machine.
    Setup {
        /// `module_path!()` of the tests.
        module: String,
        /// The machine.
        machine: String,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A machine was stopped while the tests ran.
    Stopped {
        /// The machine.
        machine: String,
    },
    /// A machine was stopped by the cleanup at exit or on a signal.
    StoppedAtExit {
        /// The machine.
        machine: String,
    },
    /// A machine was left running for debugging (`NSPAWN_KEEP`).
    Kept {
        /// The machine.
        machine: String,
    },
    /// An idle shared machine was stopped to free a slot.
    Evicted {
        /// The machine.
        machine: String,
    },
    /// A test's body ran (on machines it had; its boot not counted).
    Ran {
        /// The test's name.
        test: String,
        /// How long the body took, in microseconds.
        us: u64,
    },
    /// The watchdog removed something a killed test process left.
    WatchdogRemoved {
        /// What, in words.
        what: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Spawned { machine, nspawn } => write!(f, "spawned {machine} {nspawn}"),
            Event::Ready {
                machine,
                chroot,
                boot_ms,
            } => write!(f, "ready {machine} {chroot} {boot_ms}"),
            Event::ModuleBoot {
                module,
                chroot,
                machine,
                ahead,
            } => write!(f, "module-boot {module} {chroot} {machine} {ahead}"),
            Event::ModuleBootFailed { module, chroot } => {
                write!(f, "module-boot-failed {module} {chroot}")
            }
            Event::TestBoot { test, machine } => write!(f, "test-boot {test} {machine}"),
            Event::Setup {
                module,
                machine,
                ok,
            } => write!(f, "setup {module} {machine} {ok}"),
            Event::Stopped { machine } => write!(f, "stopped {machine}"),
            Event::StoppedAtExit { machine } => write!(f, "stopped-at-exit {machine}"),
            Event::Kept { machine } => write!(f, "kept {machine}"),
            Event::Evicted { machine } => write!(f, "evicted {machine}"),
            Event::Ran { test, us } => write!(f, "ran {test} {us}"),
            Event::WatchdogRemoved { what } => write!(f, "watchdog-removed {what}"),
        }
    }
}

impl Event {
    /// Reads a line of the event log back; `None` for a line that is no event.
    pub fn parse(line: &str) -> Option<Event> {
        let (kind, rest) = line.split_once(' ')?;
        let f: Vec<String> = rest.split(' ').map(str::to_string).collect();
        let field = |i: usize| f.get(i).cloned();
        Some(match kind {
            "spawned" => Event::Spawned {
                machine: field(0)?,
                nspawn: field(1)?.parse().ok()?,
            },
            "ready" => Event::Ready {
                machine: field(0)?,
                chroot: field(1)?,
                boot_ms: field(2)?.parse().ok()?,
            },
            "module-boot" => Event::ModuleBoot {
                module: field(0)?,
                chroot: field(1)?,
                machine: field(2)?,
                ahead: field(3)?.parse().ok()?,
            },
            "module-boot-failed" => Event::ModuleBootFailed {
                module: field(0)?,
                chroot: field(1)?,
            },
            "test-boot" => Event::TestBoot {
                test: field(0)?,
                machine: field(1)?,
            },
            "setup" => Event::Setup {
                module: field(0)?,
                machine: field(1)?,
                ok: field(2)?.parse().ok()?,
            },
            "stopped" => Event::Stopped { machine: field(0)? },
            "stopped-at-exit" => Event::StoppedAtExit { machine: field(0)? },
            "kept" => Event::Kept { machine: field(0)? },
            "evicted" => Event::Evicted { machine: field(0)? },
            "ran" => Event::Ran {
                test: field(0)?,
                us: field(1)?.parse().ok()?,
            },
            "watchdog-removed" => Event::WatchdogRemoved {
                what: rest.to_string(),
            },
            _ => return None,
        })
    }
}

pub use event_log::EVENT_TARGET;

/// Whether events go anywhere (`NSPAWN_EVENT_LOG` set, or a subscriber that wants them):
/// spares building one that goes nowhere.
pub(crate) fn logging() -> bool {
    crate::settings::lenient().event_log.is_some()
        || tracing::enabled!(target: EVENT_TARGET, tracing::Level::DEBUG)
}

/// The event log's dispatcher, if `NSPAWN_EVENT_LOG` is set (see [`event_log`]).
static EVENT_LOG: std::sync::LazyLock<Option<tracing::Dispatch>> = std::sync::LazyLock::new(|| {
    let path = crate::settings::lenient().event_log.clone()?;
    Some(tracing::Dispatch::new(event_log::EventLog::new(path)))
});

/// `event` as a `tracing` event (target [`EVENT_TARGET`], level debug, its log line as the
/// message), for the test's subscriber, if any, and for the event log's, if
/// `NSPAWN_EVENT_LOG` is set.
pub(crate) fn event(event: Event) {
    tracing::debug!(target: EVENT_TARGET, "{event}");
    // Made before its callsite is first hit (see `event_log`).
    if let Some(log) = &*EVENT_LOG {
        tracing::dispatcher::with_default(log, || {
            tracing::debug!(target: EVENT_TARGET, "{event}");
        });
    }
}

/// A one-line report on stderr (not captured by the test harness), unless `NSPAWN_QUIET` is
/// set.
pub(crate) fn announce(line: &str) {
    if !crate::settings::lenient().quiet {
        let _ = writeln!(std::io::stderr(), "nspawn: {line}");
    }
}

/// Something the user should know that fails nothing (a machine not stopped, a cleanup step
/// that failed, an option this host lacks): a `tracing` warning or error, and a line on stderr
/// when the process has no subscriber of its own, which is most test binaries, so that it
/// reaches somebody either way.
pub(crate) fn warning(machine: Option<&str>, message: impl fmt::Display) {
    tracing::warn!(machine, "{message}");
    unheard("warning", machine, &message);
}

/// [`warning`], for what went wrong rather than what was left out.
pub(crate) fn error(machine: Option<&str>, message: impl fmt::Display) {
    tracing::error!(machine, "{message}");
    unheard("error", machine, &message);
}

/// The stderr line of an event no subscriber hears, once per process for the same line (a
/// host's lack repeats at every boot). Not silenced by `NSPAWN_QUIET`, which is for progress
/// lines.
fn unheard(level: &str, machine: Option<&str>, message: &dyn fmt::Display) {
    static SAID: Mutex<std::collections::BTreeSet<String>> =
        Mutex::new(std::collections::BTreeSet::new());
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let on = machine.map_or(String::new(), |m| format!("machine {m}: "));
    let line = format!("nspawn: {level}: {on}{message}");
    if SAID
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(line.clone())
    {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// [`announce`], and on the controlling terminal too when a test runner holds this process's
/// stderr until the test ends (nextest shows a passing test's output only with
/// `--no-capture`): for a wait the user would otherwise sit through without a word.
pub(crate) fn announce_on_terminal(line: &str) {
    announce(line);
    let held = std::env::var_os("NEXTEST_RUN_ID").is_some();
    if held && !crate::settings::lenient().quiet {
        let terminal = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/tty");
        if let Ok(mut terminal) = terminal {
            let _ = writeln!(terminal, "nspawn: {line}");
        }
    }
}

/// Machines booted by this process, and their boot time in milliseconds, for the summary.
static BOOTS: Mutex<(usize, f64)> = Mutex::new((0, 0.0));

/// Counts a boot for the summary printed at exit.
pub(crate) fn count_boot(ms: f64) {
    let mut boots = BOOTS.lock().unwrap_or_else(|p| p.into_inner());
    boots.0 += 1;
    boots.1 += ms;
}

/// Machines left running on purpose (`NSPAWN_KEEP`), for the summary.
static KEPT: Mutex<usize> = Mutex::new(0);

/// Counts a machine kept for debugging.
pub(crate) fn count_kept() {
    *KEPT.lock().unwrap_or_else(|p| p.into_inner()) += 1;
}

/// The summary line at exit, when this process booted anything.
pub(crate) fn summary() {
    let (count, ms) = *BOOTS.lock().unwrap_or_else(|p| p.into_inner());
    let kept = *KEPT.lock().unwrap_or_else(|p| p.into_inner());
    let left = match kept {
        0 => "none left running".to_string(),
        n => format!("{n} kept running for debugging (cargo nspawn gc --kept removes them)"),
    };
    if count > 0 {
        announce(&format!(
            "{count} machine(s) booted, {:.2} s on average; {left}",
            ms / count as f64 / 1e3
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_reads_back_as_written() {
        let m = || "nspawn-1-abc".to_string();
        let events = [
            Event::Spawned {
                machine: m(),
                nspawn: 42,
            },
            Event::Ready {
                machine: m(),
                chroot: "bookworm".into(),
                boot_ms: 250,
            },
            Event::ModuleBoot {
                module: "fixture::alpha".into(),
                chroot: "bookworm".into(),
                machine: m(),
                ahead: true,
            },
            Event::ModuleBootFailed {
                module: "fixture::broken".into(),
                chroot: "tests/fixture/no-systemd".into(),
            },
            Event::TestBoot {
                test: "fresh::one".into(),
                machine: m(),
            },
            Event::Setup {
                module: "fixture::prepared".into(),
                machine: m(),
                ok: true,
            },
            Event::Stopped { machine: m() },
            Event::StoppedAtExit { machine: m() },
            Event::Kept { machine: m() },
            Event::Evicted { machine: m() },
            Event::Ran {
                test: "alpha::one".into(),
                us: 1234,
            },
            Event::WatchdogRemoved {
                what: "record of nspawn-1-abc".into(),
            },
        ];
        for event in events {
            assert_eq!(Event::parse(&event.to_string()), Some(event));
        }
        assert_eq!(Event::parse("nonsense here"), None);
    }

    /// Set in the child of `a_held_runner_s_wait_reaches_the_terminal`.
    const TERMINAL_CHILD: &str = "NSPAWN_TEST_TERMINAL_CHILD";

    /// In a child whose controlling terminal is a pty: the line to find there.
    #[test]
    #[ignore = "run by a_held_runner_s_wait_reaches_the_terminal"]
    fn announce_on_the_terminal() {
        if std::env::var_os(TERMINAL_CHILD).is_some() {
            announce_on_terminal("waiting for a slot (terminal test)");
        }
    }

    /// Under nextest, which holds a test's stderr, the line also reaches the controlling
    /// terminal: the child's stdout and stderr go nowhere, so what the pty shows came through
    /// `/dev/tty`.
    #[test]
    fn a_held_runner_s_wait_reaches_the_terminal() {
        use std::io::Read;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;

        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors, which are then owned here.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded; nothing else holds the two descriptors.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let slave_fd = slave.as_raw_fd();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "report::tests::announce_on_the_terminal",
                "--ignored",
            ])
            .env(TERMINAL_CHILD, "1")
            .env("NEXTEST_RUN_ID", "terminal-test")
            .env_remove("NSPAWN_QUIET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            child.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = child.status().unwrap();
        assert!(status.success(), "{status}");
        drop(slave);
        let mut shown = Vec::new();
        // Reading a pty's master ends in EIO once no slave is open.
        let _ = std::fs::File::from(master).read_to_end(&mut shown);
        let shown = String::from_utf8_lossy(&shown);
        assert!(
            shown.contains("nspawn: waiting for a slot (terminal test)"),
            "the terminal showed: {shown:?}"
        );
    }

    /// Set in the child of `a_warning_reaches_stderr_unless_a_subscriber_takes_it`: whether
    /// it installs a subscriber first.
    const WARNING_CHILD: &str = "NSPAWN_TEST_WARNING_CHILD";

    #[test]
    #[ignore = "run by a_warning_reaches_stderr_unless_a_subscriber_takes_it"]
    fn warn_in_a_child() {
        match std::env::var(WARNING_CHILD).as_deref() {
            Ok("subscriber") => {
                let none = tracing::subscriber::NoSubscriber::default();
                tracing::subscriber::set_global_default(none).unwrap();
            }
            Ok(_) => {}
            Err(_) => return,
        }
        warning(Some("m-1"), "left out");
        warning(Some("m-1"), "left out");
    }

    #[test]
    fn a_warning_reaches_stderr_unless_a_subscriber_takes_it() {
        let stderr_of = |mode: &str| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "report::tests::warn_in_a_child", "--ignored"])
                .env(WARNING_CHILD, mode)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let alone = stderr_of("alone");
        assert_eq!(
            alone
                .matches("nspawn: warning: machine m-1: left out\n")
                .count(),
            1,
            "said once: {alone}"
        );
        let taken = stderr_of("subscriber");
        assert!(!taken.contains("left out"), "{taken}");
    }
}
