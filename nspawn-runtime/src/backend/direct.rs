//! The direct backend: `systemd-nspawn` as a child of the test process, for hosts where PID 1
//! is not systemd (CI containers, our own machines).
//!
//! nspawn runs with `--register=no --keep-unit` in a cgroup of its own ([`MachineCgroup`]),
//! tells us the leader PID and readiness through our [`NotifySocket`], and writes the console
//! to a log file. It is spawned from one long-lived thread with `PR_SET_PDEATHSIG`, so that it
//! is told to shut down when the test process dies, however it dies.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cleanup::records::Record;
use crate::error::{Error, Result};
use crate::host::cgroup::MachineCgroup;
use crate::host::console;
use crate::host::limits::Limits;
use crate::host::mount_ns::NsPlan;
use crate::host::notify::{Message, NotifySocket};
use crate::host::pidfd::PidFd;
use crate::host::privs::{self, ThreadRoot};
use crate::report::{self, Event};

use super::namespace::Prepared;
use super::spec::{nspawn_args, BootSpec, Root};

/// The `systemd-nspawn` command line for `spec`: not registered with machined, in the
/// caller's unit (there is none), readiness reported to us.
pub(crate) fn nspawn_command(spec: &BootSpec, name: &str, root: Root) -> Command {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args(["--register=no", "--keep-unit"]);
    cmd.args(nspawn_args(spec, name, root));
    cmd
}

/// The host side of a machine: nspawn, its cgroup and its notify socket.
#[derive(Debug)]
struct Proc {
    child: Child,
    nspawn: PidFd,
    cgroup: MachineCgroup,
    notify: NotifySocket,
    /// Its uid range and mount namespace, held while it runs, and for its next boot.
    prepared: Prepared,
}

/// A booted machine.
#[derive(Debug)]
pub(crate) struct Running {
    proc: Proc,
    /// The container's PID 1.
    pub leader: PidFd,
}

/// Boots a machine called `name` and waits for `READY=1`; `again` for a next boot on the
/// same disk.
pub(crate) fn boot(
    spec: &BootSpec,
    name: &str,
    log: &Path,
    log_file: std::fs::File,
    again: Option<Prepared>,
) -> Result<Running> {
    let boot_error = |reason: String| spec.boot_error(name, log, reason);
    let limits = Limits::for_host(crate::cleanup::slots::cap().machines)
        .with_properties(&spec.properties)
        .map_err(&boot_error)?;
    let notify = {
        let dir = crate::cleanup::records::private_dir("notify")?;
        let _root = ThreadRoot::acquire()?;
        NotifySocket::bind(&dir, name)?
    };
    let cgroup = {
        let _root = ThreadRoot::acquire()?;
        MachineCgroup::with_limits(name, limits)
    };
    // Recorded before nspawn starts, so that whatever happens from here on, a sweep finds
    // the machine's cgroups (and what nspawn put in them) by this record.
    let pending = Record {
        cgroups: cgroup.dirs().to_vec(),
        ..super::spec::record(name, &spec.dir, None, None)
    };
    if let Err(e) = pending.save() {
        remove_cgroup(&cgroup);
        return Err(e);
    }
    let prepared = again.map_or_else(|| super::namespace::prepare(spec), Ok);
    let prepared = prepared.and_then(|prepared| {
        let plan = prepared
            .mounts
            .plan()
            .map_err(|e| Error::io("preparing the machine's mount namespace", e))?;
        Ok((prepared, plan))
    });
    let (prepared, plan) = match prepared {
        Ok(pair) => pair,
        Err(e) => {
            remove_cgroup(&cgroup);
            Record::remove(name);
            return Err(e);
        }
    };
    let mut cmd = nspawn_command(spec, name, prepared.root(spec));
    if let Some(lowers) = super::namespace::lowers_env(spec) {
        cmd.env(crate::chroot::LOWERS_ENV, lowers);
    }
    cmd.env(
        crate::host::run_dir::RUN_DIR_ENV,
        crate::host::run_dir::run_dir(),
    )
    .env("NOTIFY_SOCKET", notify.path())
    .stdin(Stdio::null())
    .stderr(
        log_file
            .try_clone()
            .map_err(|e| Error::io("duplicating the log fd", e))?,
    )
    .stdout(log_file);
    let spawned = spawn_supervised(cmd, &cgroup, spec.tied_to_process, plan)
        .and_then(|child| Ok((PidFd::open(child.id())?, child)));
    let (nspawn, child) = match spawned {
        Ok(pair) => pair,
        Err(e) => {
            remove_cgroup(&cgroup);
            Record::remove(name);
            return Err(boot_error(format!("could not start systemd-nspawn: {e}")));
        }
    };
    let mut proc = Proc {
        child,
        nspawn,
        cgroup,
        notify,
        prepared,
    };
    proc.prepared.hold(proc.nspawn.pid());
    let _ = proc.record(name, &spec.dir, None).save();
    report::event(Event::Spawned {
        machine: name.into(),
        nspawn: proc.nspawn.pid(),
    });
    match proc.wait_ready(spec, name, log) {
        Ok(leader) => Ok(Running { proc, leader }),
        Err((leader, failure)) => {
            let _ = proc.stop(leader.as_ref(), Duration::from_secs(10));
            Record::remove(name);
            Err(match failure {
                Failure::Inotify => Error::InotifyExhausted {
                    machine: name.into(),
                    limit: console::inotify_limit(),
                    log: log.into(),
                },
                Failure::Other(reason) => boot_error(reason),
            })
        }
    }
}

enum Failure {
    Inotify,
    Other(String),
}

impl Proc {
    fn record(&self, name: &str, chroot: &Path, leader: Option<&PidFd>) -> Record {
        Record {
            cgroups: self.cgroup.dirs().to_vec(),
            ..super::spec::record(name, chroot, Some(&self.nspawn), leader)
        }
    }

    /// Waits for the leader PID and `READY=1`. On failure, returns the leader if it was known.
    fn wait_ready(
        &mut self,
        spec: &BootSpec,
        name: &str,
        log: &Path,
    ) -> std::result::Result<PidFd, (Option<PidFd>, Failure)> {
        let deadline = crate::deadline::after(spec.boot_timeout);
        let mut leader = None;
        let mut ready = false;
        let mut next_console_check = Instant::now();
        loop {
            for msg in self
                .notify
                .recv(Duration::from_millis(50))
                .unwrap_or_default()
            {
                match msg {
                    Message::LeaderPid(pid) => leader = PidFd::open(pid).ok(),
                    Message::Ready => ready = true,
                    Message::Status(s) => tracing::trace!(machine = name, "nspawn status: {s}"),
                }
            }
            if ready && leader.is_some() {
                // READY=1 alone does not prove a working machine: see `broken_by_inotify`.
                if broken_by_inotify(log) {
                    return Err((leader, Failure::Inotify));
                }
                if let Some(leader) = leader.take() {
                    return Ok(leader);
                }
            }
            if !self.nspawn.is_alive() {
                let status = self
                    .child
                    .wait()
                    .map_or("an unknown status".to_string(), |s| s.to_string());
                let reason = format!(
                    "systemd-nspawn exited ({status}) before the machine was ready. Is {} a Debian tree with systemd? \
                     (`cargo nspawn make-chroots --force {}` rebuilds it)",
                    spec.dir.display(),
                    spec.chroot
                );
                return Err((leader, Failure::Other(reason)));
            }
            if Instant::now() >= next_console_check {
                if console::shows_inotify_exhaustion(log) {
                    return Err((leader, Failure::Inotify));
                }
                next_console_check = Instant::now() + Duration::from_millis(250);
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "no READY=1 within {:.0} s; raise it with Machine::builder(..).boot_timeout(..)",
                    spec.boot_timeout.as_secs_f64()
                );
                return Err((leader, Failure::Other(reason)));
            }
        }
    }

    /// SIGKILL to the leader makes nspawn exit in 50-90 ms and remove the snapshot. SIGKILL to
    /// nspawn itself would leak the snapshot, so it is only the last resort.
    fn stop(&mut self, leader: Option<&PidFd>, timeout: Duration) -> Result<()> {
        let result = self.end(leader, timeout);
        remove_cgroup(&self.cgroup);
        result
    }

    fn end(&mut self, leader: Option<&PidFd>, timeout: Duration) -> Result<()> {
        {
            let _root = ThreadRoot::acquire()?;
            let _ = match leader {
                Some(leader) => leader.signal(libc::SIGKILL),
                None => self.nspawn.signal(libc::SIGTERM),
            };
        }
        if self.nspawn.wait(timeout) {
            let _ = self.child.wait();
            return Ok(());
        }
        {
            let _root = ThreadRoot::acquire()?;
            let _ = self.nspawn.signal(libc::SIGTERM);
            if !self.nspawn.wait(Duration::from_secs(5)) {
                self.cgroup.kill_all();
                let _ = self.nspawn.signal(libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        Err(Error::Timeout {
            what: format!("stopping systemd-nspawn (pid {})", self.nspawn.pid()),
            after: timeout,
            hint:
                "it was terminated; its snapshot may be left behind, `cargo nspawn gc` removes it"
                    .into(),
        })
    }
}

impl Running {
    /// Stops the machine and waits until nspawn has removed its snapshot and exited.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Result<()> {
        self.proc.stop(Some(&self.leader), timeout)
    }

    /// The ownership record of this machine (see [`crate::cleanup::records`]).
    pub(crate) fn record(&self, name: &str, chroot: &Path) -> Record {
        self.proc.record(name, chroot, Some(&self.leader))
    }

    /// nspawn's PID.
    pub(crate) fn nspawn_pid(&self) -> u32 {
        self.proc.nspawn.pid()
    }

    /// nspawn's exit code once it has exited within `grace` (133: the guest rebooted; with
    /// `--keep-unit` nspawn leaves the next boot to its caller), or `None` while it runs.
    pub(crate) fn exit_code(&mut self, grace: Duration) -> Option<i32> {
        if !self.proc.nspawn.wait(grace) {
            return None;
        }
        let status = self.proc.child.wait().ok()?;
        Some(status.code().unwrap_or(-1))
    }

    /// What a next boot on the same disk starts from; nspawn must have exited. Its cgroup goes.
    pub(crate) fn into_prepared(self) -> Prepared {
        remove_cgroup(&self.proc.cgroup);
        self.proc.prepared
    }
}

/// A machine that ran out of inotify instances while booting still reports `READY=1`, with
/// broken units. Checked once at READY, whatever the timing: the console (which may lag) and
/// the kernel's own answer for root.
fn broken_by_inotify(log: &Path) -> bool {
    console::shows_inotify_exhaustion(log) || console::inotify_exhausted_for_root()
}

fn remove_cgroup(cgroup: &MachineCgroup) {
    if let Ok(_root) = ThreadRoot::acquire() {
        cgroup.remove();
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawns nspawn from a thread that lives as long as the process: `PR_SET_PDEATHSIG` fires on
/// the death of the *thread* that forked, and test threads come and go.
fn spawn_supervised(
    mut cmd: Command,
    cgroup: &MachineCgroup,
    tied: bool,
    plan: NsPlan,
) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnJob>>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("nspawn-spawner".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let sender = sender
        .as_ref()
        .ok_or_else(|| std::io::Error::other("could not start the thread that spawns nspawn"))?;
    let regain = privs::child_needs_root();
    let enter_cgroup = cgroup.child_hook();
    let parent = std::process::id() as libc::pid_t;
    // Its own process group: a Ctrl-C on the terminal reaches the test process, which stops
    // the machines itself, and not nspawn directly.
    cmd.process_group(0);
    // SAFETY: the hook only makes raw, async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            privs::regain_in_child(regain)?;
            enter_cgroup();
            if !plan.is_empty() {
                plan.enter()?;
            }
            // After the credential change, which would clear it. SIGTERM, not SIGKILL: nspawn
            // then stops the container and removes the snapshot itself.
            if tied {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    let job: SpawnJob = Box::new(move || {
        let _ = tx.send(cmd.spawn());
    });
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroot::storage::Storage;
    use crate::host::tools::command_line;

    fn spec(storage: Storage) -> BootSpec {
        BootSpec::example(storage)
    }

    #[test]
    fn subvolumes_boot_ephemeral() {
        let line = command_line(&nspawn_command(
            &spec(Storage::Subvolume),
            "nspawn-x",
            Root::Privileged,
        ));
        assert_eq!(
            line,
            "systemd-nspawn --register=no --keep-unit --quiet --boot --notify-ready=yes \
             --machine=nspawn-x --directory=/c/bookworm --ephemeral"
        );
    }

    #[test]
    fn directories_boot_on_a_read_only_overlay_with_options() {
        let mut s = spec(Storage::Directory);
        s.private_network = true;
        s.binds.push(crate::backend::Bind {
            host: "/h".into(),
            guest: "/g".into(),
            read_only: true,
        });
        s.env.push(("A".into(), "b".into()));
        s.extra_args.push("--capability=all".into());
        let line = command_line(&nspawn_command(&s, "n", Root::Privileged));
        assert!(
            line.ends_with(
                "--directory=/c/bookworm --volatile=overlay --read-only --private-network \
             --bind-ro=/h:/g --setenv=A=b --capability=all"
            ),
            "{line}"
        );
        assert!(!line.contains("--ephemeral"));
    }
}
