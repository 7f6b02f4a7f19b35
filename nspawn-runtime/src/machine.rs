//! [`Machine`]: one ephemeral, systemd-booted container, and its [`MachineBuilder`].

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::wire::{RecvError, Request, Response};
use crate::agent::Agent;
use crate::backend::{self, Bind, BootSpec};
use crate::chroot;
use crate::console;
use crate::error::{Error, Result};
use crate::events;
use crate::exec::Command;
use crate::keep;
use crate::pidfd::PidFd;
use crate::privs;
use crate::registry;
use crate::sharing;
use crate::slots;
use crate::state::Record;
use crate::storage::{self, Storage};
use crate::sweep;
use crate::watchdog;

const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a free machine slot (see [`crate::slots`]).
const SLOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A running, ephemeral copy of a master chroot, booted with systemd.
///
/// Changes made inside are thrown away when it stops: it runs on a btrfs snapshot or on a
/// tmpfs overlay of the master chroot, which is never modified.
///
/// ```no_run
/// use nspawn_runtime::Machine;
///
/// let machine = Machine::start("bookworm")?;
/// machine.write("/etc/motd", "hello\n")?;
/// assert_eq!(machine.sh("cat /etc/motd")?, "hello\n");
/// machine.stop()?;
/// # Ok::<(), nspawn_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Machine {
    name: String,
    chroot: String,
    storage: Storage,
    log: PathBuf,
    leader: PidFd,
    running: registry::Handle,
    agent: Mutex<Option<Arc<Agent>>>,
    slot: Mutex<Option<slots::Slot>>,
    stop_timeout: Duration,
    span: tracing::Span,
}

/// Options for booting a [`Machine`].
///
/// ```no_run
/// use std::time::Duration;
/// use nspawn_runtime::Machine;
///
/// let machine = Machine::builder("bookworm")
///     .private_network(true)
///     .bind_ro("/usr/share/doc", "/mnt/doc")
///     .boot_timeout(Duration::from_secs(30))
///     .wait_until_running(true)
///     .start()?;
/// # Ok::<(), nspawn_runtime::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use]
pub struct MachineBuilder {
    chroot: String,
    boot_timeout: Duration,
    stop_timeout: Duration,
    private_network: bool,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    env: Vec<(String, String)>,
    args: Vec<OsString>,
    wait_until_running: bool,
    workspace: Option<PathBuf>,
    suppress_sync: bool,
    properties: Vec<String>,
}

impl MachineBuilder {
    fn new(chroot: &str) -> MachineBuilder {
        MachineBuilder {
            chroot: chroot.into(),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            private_network: false,
            binds: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            wait_until_running: false,
            workspace: None,
            suppress_sync: false,
            properties: Vec::new(),
        }
    }

    /// `--suppress-sync=yes`: the machine's `fsync`s become no-ops, which speeds up package
    /// installs. Probed: ignored, with a warning, on nspawn older than systemd 250.
    pub fn suppress_sync(mut self, suppress: bool) -> Self {
        self.suppress_sync = suppress;
        self
    }

    /// A unit property for the machine's unit on the systemd backend, e.g. `"MemoryMax=512M"`
    /// or `"CPUWeight=50"`, on top of the defaults (`KillMode=mixed`, `Type=notify`,
    /// `Slice=machine.slice`, `Delegate=yes`, `TasksMax=16384`, `WatchdogSec=3min`, ...).
    /// Properties the host's systemd is too old for are left out with a warning. The direct
    /// backend has no unit and ignores them.
    pub fn property(mut self, property: &str) -> Self {
        self.properties.push(property.into());
        self
    }

    /// Where to find the chroots: a directory of the Cargo workspace that holds
    /// `test_chroots/` (default: found from `CARGO_MANIFEST_DIR` or the current directory).
    pub fn workspace(mut self, dir: impl AsRef<Path>) -> Self {
        self.workspace = Some(dir.as_ref().into());
        self
    }

    /// How long to wait for the machine to boot (default 60 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// How long to wait for the machine to stop (default 10 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// A private network namespace (only loopback) instead of the host's network.
    pub fn private_network(mut self, private: bool) -> Self {
        self.private_network = private;
        self
    }

    /// Binds a host path into the machine, read-write.
    ///
    /// The machine's root then writes there as root: files it creates are root's. So when test
    /// code runs as the invoking user (under sudo), a path that user cannot write is refused at
    /// [`start`](Self::start), and a read-only bind needs a path the user can read.
    pub fn bind(mut self, host: impl AsRef<Path>, guest: impl AsRef<Path>) -> Self {
        self.binds
            .push((host.as_ref().into(), guest.as_ref().into(), false));
        self
    }

    /// Binds a host path into the machine, read-only.
    pub fn bind_ro(mut self, host: impl AsRef<Path>, guest: impl AsRef<Path>) -> Self {
        self.binds
            .push((host.as_ref().into(), guest.as_ref().into(), true));
        self
    }

    /// Sets an environment variable for the machine's init (`--setenv`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds an argument to the `systemd-nspawn` command line, e.g. `--capability=all`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// Adds arguments to the `systemd-nspawn` command line.
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// After boot, also wait for `systemctl is-system-running --wait`, for tests that need
    /// every unit up. A degraded system is then a boot error listing the failed units.
    pub fn wait_until_running(mut self, wait: bool) -> Self {
        self.wait_until_running = wait;
        self
    }

    /// The chroot this builder boots.
    pub fn chroot(&self) -> &str {
        &self.chroot
    }

    /// Boots the machine.
    pub fn start(self) -> Result<Machine> {
        crate::settings::get()?;
        privs::require_root("booting a machine")?;
        self.check_binds()?;
        let dir = chroot::locate(&self.chroot, self.workspace.as_deref())?;
        sweep::at_startup(dir.parent());
        watchdog::ensure_started();
        let slot = slots::acquire(SLOT_TIMEOUT, &sharing::evict_idle)?;
        let name = format!(
            "nspawn-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let span = tracing::info_span!("machine", name = %name, chroot = %self.chroot);
        let started = Instant::now();
        let (log, log_file) = console::create_log(&name)?;
        let spec = self.spec(dir);
        span.in_scope(
            || tracing::debug!(storage = %spec.storage, log = %log.display(), "starting"),
        );
        let running = backend::boot(&spec, &name, &log, log_file)?;
        if let Err(e) = running.record(&name, &spec.dir).save() {
            tracing::warn!(machine = %name, "no ownership record, a crash would leave it to `cargo xtask gc`: {e}");
        }
        let leader = running.leader().try_clone();
        let handle: registry::Handle = Arc::new(Mutex::new(Some(running)));
        registry::register(&name, handle.clone());
        let machine = Machine {
            leader: leader.map_err(|e| Error::io("duplicating the leader pidfd", e))?,
            name,
            chroot: self.chroot.clone(),
            storage: spec.storage,
            log,
            running: handle,
            agent: Mutex::new(None),
            slot: Mutex::new(Some(slot)),
            stop_timeout: self.stop_timeout,
            span,
        };
        if self.wait_until_running {
            machine.wait_running(self.boot_timeout.saturating_sub(started.elapsed()))?;
        }
        let boot_ms = (started.elapsed().as_secs_f64() * 1e3).round();
        registry::count_boot(boot_ms);
        machine
            .span
            .in_scope(|| tracing::info!(boot_ms, leader = machine.leader_pid(), "ready"));
        events::event(&format!(
            "ready {} {} {boot_ms}",
            machine.name, machine.chroot
        ));
        Ok(machine)
    }

    /// Test code running as the invoking user gets no host path through a bind that the user
    /// could not reach: checked with the user's own credentials (this thread's).
    fn check_binds(&self) -> Result<()> {
        use nix::unistd::{access, AccessFlags};
        if privs::dropped_user().is_none() || nix::unistd::Uid::effective().is_root() {
            return Ok(());
        }
        for (host, _, read_only) in &self.binds {
            let (mode, needs) = if *read_only {
                (AccessFlags::R_OK, "read")
            } else {
                (AccessFlags::R_OK | AccessFlags::W_OK, "write")
            };
            if let Err(e) = access(host.as_path(), mode) {
                return Err(Error::BindRefused {
                    host: host.clone(),
                    reason: format!(
                        "the test's user cannot {needs} it ({e}), and the machine's root would"
                    ),
                });
            }
        }
        Ok(())
    }

    fn spec(&self, dir: PathBuf) -> BootSpec {
        BootSpec {
            chroot: self.chroot.clone(),
            storage: storage::storage_of(&dir),
            dir,
            tied_to_process: keep::mode() == keep::Keep::Never,
            boot_timeout: self.boot_timeout,
            private_network: self.private_network,
            binds: self
                .binds
                .iter()
                .map(|(host, guest, read_only)| Bind {
                    host: host.clone(),
                    guest: guest.clone(),
                    read_only: *read_only,
                })
                .collect(),
            env: self.env.clone(),
            extra_args: self.args.clone(),
            suppress_sync: self.suppress_sync,
            properties: self.properties.clone(),
        }
    }
}

impl Machine {
    /// Boots a machine from the master chroot `chroot` (a name under the chroots directory,
    /// or a path) with default options.
    pub fn start(chroot: &str) -> Result<Machine> {
        Machine::builder(chroot).start()
    }

    /// Options for booting a machine from `chroot`.
    pub fn builder(chroot: &str) -> MachineBuilder {
        MachineBuilder::new(chroot)
    }

    /// The machine's name, unique on the host, and its hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chroot it was booted from.
    pub fn chroot(&self) -> &str {
        &self.chroot
    }

    /// How the master chroot is stored, and so how this machine was made from it.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The container's PID 1, as seen from the host.
    pub fn leader_pid(&self) -> u32 {
        self.leader.pid()
    }

    /// The console log of the machine.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the machine is still up.
    pub fn is_running(&self) -> bool {
        self.leader.is_alive()
    }

    pub(crate) fn leader(&self) -> Result<&PidFd> {
        if self.leader.is_alive() {
            Ok(&self.leader)
        } else {
            Err(Error::NotRunning {
                machine: self.name.clone(),
                reason: format!(
                    "it was stopped or its container exited (console log: {})",
                    self.log.display()
                ),
            })
        }
    }

    /// A program to run inside the machine.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command<'_> {
        Command::new(self, program.as_ref())
    }

    /// Runs `argv` inside the machine; an error unless it exits with 0.
    ///
    /// ```no_run
    /// # fn f(machine: &nspawn_runtime::Machine) -> nspawn_runtime::Result<()> {
    /// machine.run(["systemctl", "is-active", "dbus"])?;
    /// # Ok(()) }
    /// ```
    pub fn run(&self, argv: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Result<Output> {
        let mut argv = argv.into_iter();
        let program = argv.next().ok_or_else(|| {
            Error::io(
                "run() needs a program",
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
        let mut cmd = self.command(program);
        cmd.args(argv);
        let output = cmd.output()?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(Error::Exec {
                machine: self.name.clone(),
                command: cmd.command_line(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Runs `/bin/sh -c script` and returns its standard output; an error unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.run(["/bin/sh", "-c", script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The machine's agent, started on first use, and again if it died.
    pub(crate) fn agent(&self) -> Result<Arc<Agent>> {
        let mut slot = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(agent) = slot.as_ref().filter(|a| a.is_alive()) {
            return Ok(agent.clone());
        }
        let leader = self.leader()?;
        let started = Instant::now();
        let agent = Agent::start(&self.name, leader).map_err(|e| Error::Agent {
            machine: self.name.clone(),
            during: "to start".into(),
            reason: e.to_string(),
        })?;
        self.span.in_scope(|| {
            tracing::debug!(
                pid = agent.pid(),
                start_ms = started.elapsed().as_secs_f64() * 1e3,
                "agent ready"
            )
        });
        let agent = Arc::new(agent);
        *slot = Some(agent.clone());
        Ok(agent)
    }

    /// The agent's PID on the host, starting it if needed: for tests of the runtime.
    #[doc(hidden)]
    pub fn agent_pid(&self) -> Result<u32> {
        self.agent().map(|a| a.pid())
    }

    /// One request to the agent, for `op` (what the caller was doing, for messages).
    pub(crate) fn ask(&self, request: &Request, op: &str) -> Result<(Response, Vec<OwnedFd>)> {
        let agent = self.agent()?;
        agent
            .call(request)
            .map_err(|e| self.agent_lost(&agent, op, e))
    }

    /// The error for a call the agent did not answer.
    pub(crate) fn agent_lost(&self, agent: &Agent, during: &str, e: RecvError) -> Error {
        if let Err(stopped) = self.leader() {
            return stopped;
        }
        let reason = match e {
            RecvError::Closed => agent.exit_description(),
            RecvError::TimedOut => format!(
                "it did not answer in time (agent pid {}, stopped or stuck?)",
                agent.pid()
            ),
            RecvError::Io(e) => e.to_string(),
        };
        Error::Agent {
            machine: self.name.clone(),
            during: during.into(),
            reason,
        }
    }

    /// The error for an answer that does not fit the question.
    pub(crate) fn agent_confused(&self, during: &str, answer: &Response) -> Error {
        Error::Agent {
            machine: self.name.clone(),
            during: during.into(),
            reason: format!("unexpected answer {answer:?}"),
        }
    }

    pub(crate) fn guest_error(
        &self,
        op: &'static str,
        path: &Path,
        source: std::io::Error,
    ) -> Error {
        Error::Guest {
            op,
            path: path.into(),
            machine: self.name.clone(),
            source,
        }
    }

    fn wait_running(&self, timeout: Duration) -> Result<()> {
        let out = self
            .command("systemctl")
            .args(["is-system-running", "--wait"])
            .timeout(timeout.max(Duration::from_secs(1)))
            .output()?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "running" {
            return Ok(());
        }
        let failed = self
            .sh("systemctl --failed --no-legend --plain")
            .unwrap_or_default();
        Err(Error::Boot {
            machine: self.name.clone(),
            chroot: self.chroot.clone(),
            reason: format!("the system is {state:?}, not \"running\"; failed units:\n{failed}"),
            log: self.log.clone(),
            tail: console::tail(&self.log, 20).into(),
        })
    }

    /// Leaves the machine running after the test process ends, for debugging, and says how
    /// to get in. `cargo xtask gc --kept` removes it.
    pub(crate) fn keep(&self, why: &str) {
        let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        registry::unregister(&self.name);
        let mut record = Record::all()
            .into_iter()
            .find(|r| r.name == self.name)
            .unwrap_or_else(|| running.record(&self.name, Path::new("")));
        record.kept = true;
        let _ = record.save();
        drop(running);
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        events::event(&format!("kept {}", self.name));
        events::announce(&format!(
            "kept machine {} ({why}). Get in with: sudo nsenter -t {} -a /bin/bash -l   \
             Remove it with: cargo xtask gc --kept",
            self.name,
            self.leader_pid()
        ));
    }

    /// Stops the machine: its container is killed and nspawn removes the snapshot or overlay.
    pub fn stop(self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the machine through a shared reference; later calls do nothing.
    pub(crate) fn shutdown(&self) -> Result<()> {
        let Some(mut running) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        registry::unregister(&self.name);
        self.agent.lock().unwrap_or_else(|p| p.into_inner()).take();
        let started = Instant::now();
        let result = running.stop(self.stop_timeout);
        self.span.in_scope(|| {
            tracing::info!(
                stop_ms = (started.elapsed().as_secs_f64() * 1e3).round(),
                nspawn = running.nspawn_pid(),
                ok = result.is_ok(),
                "stopped"
            )
        });
        events::event(&format!("stopped {}", self.name));
        if result.is_ok() {
            Record::remove(&self.name);
        }
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        result
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(machine = %self.name, "stopping on drop failed: {e}");
        }
    }
}
