//! The systemd-host backend: machines are transient units started with `systemd-run`, with the
//! blog post's properties, and registered with machined, so `machinectl list`,
//! `machinectl shell NAME` and `journalctl -M NAME` work on them while a test runs.
//!
//! Commands and file calls go through the machine's agent, as on the direct backend (see
//! `crate::agent`): measured against `systemd-run -M NAME --wait --pipe` in the benchmark, it
//! is much faster, and it behaves the same on both backends.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cleanup::records::Record;
use crate::error::{Error, Result};
use crate::host::pidfd::PidFd;
use crate::host::privs::{self, ThreadRoot};
use crate::host::probe;
use crate::host::tools;

use super::mount_helper::PlanFile;
use super::namespace::Prepared;
use super::spec::{nspawn_args, BootSpec, Root};
use crate::host::limits::Limits;

/// The unit properties of the blog post's `systemd-run` line, but for its `TasksMax=16384`:
/// the machine's limits come from [`Limits::for_host`], as on the direct backend.
pub(crate) const DEFAULT_PROPERTIES: &[&str] = &[
    "KillMode=mixed",
    "Type=notify",
    "RestartForceExitStatus=133",
    "SuccessExitStatus=133",
    "Slice=machine.slice",
    "Delegate=yes",
    "WatchdogSec=3min",
];

pub(crate) use crate::host::probe::{
    systemd_available as available, systemd_unit_loaded as unit_loaded,
};

/// The `systemd-run` command line that starts machine `name`, its root as `root` says; with
/// a `plan`, through the mount helper (see [`super::mount_helper`]).
pub(crate) fn run_command(
    spec: &BootSpec,
    name: &str,
    log: &Path,
    root: Root,
    plan: Option<(&Path, &Path)>,
) -> Command {
    let mut cmd = Command::new("systemd-run");
    cmd.arg(format!("--unit={name}"))
        .args(["--collect", "--quiet"]);
    let systemd = probe::systemd_version();
    let timeout = format!("TimeoutStartSec={}", spec.boot_timeout.as_secs().max(1));
    let output = [
        format!("StandardOutput=file:{}", log.display()),
        format!("StandardError=file:{}", log.display()),
    ];
    // Before the test's own properties, which may override them.
    let limits = Limits::for_host(crate::cleanup::slots::cap().machines);
    let limits = [
        format!("MemoryMax={}", limits.memory),
        format!("TasksMax={}", limits.tasks),
    ];
    let properties = DEFAULT_PROPERTIES
        .iter()
        .map(|p| p.to_string())
        .chain(limits)
        .chain([timeout])
        .chain(output)
        .chain(spec.properties.iter().cloned());
    for property in properties {
        if probe::property_supported(&property, systemd) {
            cmd.arg(format!("--property={property}"));
        } else {
            crate::report::warning(
                None,
                format_args!(
                    "systemd {systemd:?} does not know the unit property {property}; left out"
                ),
            );
        }
    }
    cmd.arg(format!(
        "--setenv={}={}",
        crate::host::run_dir::RUN_DIR_ENV,
        crate::host::run_dir::run_dir().display()
    ));
    match plan {
        Some((program, plan)) => cmd
            .arg(format!(
                "--setenv={}={}",
                super::mount_helper::MARKER,
                plan.display()
            ))
            .arg(program),
        None => cmd.arg("systemd-nspawn"),
    };
    cmd.args(nspawn_args(spec, name, root));
    cmd
}

/// A machine running as a unit.
#[derive(Debug)]
pub(crate) struct Running {
    name: String,
    /// The container's PID 1.
    pub leader: PidFd,
    nspawn: PidFd,
    /// Its uid range and mount namespace, held while it runs, and for its next boot.
    prepared: Prepared,
}

/// Starts the unit and waits for it to be ready (`Type=notify`: systemd-run returns once
/// nspawn has reported `READY=1`).
pub(crate) fn boot(
    spec: &BootSpec,
    name: &str,
    log: &Path,
    _log_file: std::fs::File,
    again: Option<Prepared>,
) -> Result<Running> {
    let boot_error = |reason: String| spec.boot_error(name, log, reason);
    let prepared = again.map_or_else(|| super::namespace::prepare(spec), Ok)?;
    let plan = if prepared.mounts.is_empty() {
        None
    } else {
        Some((
            super::mount_helper::program()?,
            PlanFile::write(name, &prepared.mounts)?,
        ))
    };
    let plan_paths = plan.as_ref().map(|(p, f)| (p.as_path(), f.path()));
    let mut cmd = run_command(spec, name, log, prepared.root(spec), plan_paths);
    let stop = || {
        let _ = as_root(
            Command::new("systemctl").args(["stop", &format!("{name}.service")]),
            Duration::from_secs(10),
        );
    };
    let out = as_root(
        &mut cmd,
        spec.boot_timeout.saturating_add(Duration::from_secs(10)),
    )
    .map_err(|e| {
        // Killing systemd-run leaves its unit starting: it would run on until the next sweep.
        stop();
        boot_error(format!("could not run systemd-run: {e}"))
    })?;
    if !out.status.success() {
        stop();
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(boot_error(format!(
            "systemd-run failed ({}): {}; see also `journalctl -u {name}.service`",
            out.status,
            stderr.trim()
        )));
    }
    let unit = format!("{name}.service");
    let leader = leader_of(name);
    let main = pid_of(&["systemctl", "show", &unit, "--property=MainPID", "--value"]);
    let (Some(leader), Some(main)) = (leader, main) else {
        return Err(boot_error(
            "the unit started, but machined does not know its leader".into(),
        ));
    };
    let open =
        |p: u32| PidFd::open(p).map_err(|e| boot_error(format!("process {p} vanished: {e}")));
    let mut prepared = prepared;
    prepared.hold(main);
    Ok(Running {
        name: name.into(),
        leader: open(leader)?,
        nspawn: open(main)?,
        prepared,
    })
}

/// A number a command prints, if it does.
fn pid_of(args: &[&str]) -> Option<u32> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The leader machined knows for machine `name`.
fn leader_of(name: &str) -> Option<u32> {
    pid_of(&["machinectl", "show", name, "--property=Leader", "--value"])
}

impl Running {
    /// `machinectl terminate`, then waits until nspawn has exited (removing the snapshot) and
    /// the unit is gone.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Result<()> {
        let out = as_root(
            Command::new("machinectl").args(["terminate", &self.name]),
            timeout,
        )
        .map_err(|e| Error::io(format!("running machinectl terminate {}", self.name), e))?;
        if !out.status.success() {
            if self.leader.is_alive() {
                let _root = ThreadRoot::acquire()?;
                let _ = self.leader.signal(libc::SIGKILL);
            } else if self.nspawn.is_alive() {
                // Between two boots machined knows no machine of the name: the unit is ours.
                self.stop_unit(timeout);
            }
        }
        let started = Instant::now();
        if !self.nspawn.wait(timeout) {
            return Err(Error::Timeout {
                what: format!(
                    "stopping machine {} (unit {}.service)",
                    self.name, self.name
                ),
                after: timeout,
                hint: format!(
                    "see `systemctl status {}.service`; `cargo nspawn gc` removes what is left",
                    self.name
                ),
            });
        }
        // With --collect the unit is unloaded once its main process is gone.
        while unit_loaded(&self.name) && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub(crate) fn record(&self, name: &str, chroot: &Path) -> Record {
        Record {
            unit: Some(format!("{name}.service")),
            ..super::spec::record(name, chroot, Some(&self.nspawn), Some(&self.leader))
        }
    }

    pub(crate) fn nspawn_pid(&self) -> u32 {
        self.nspawn.pid()
    }

    /// After the container's init ended: whether the guest rebooted. Without `--keep-unit`
    /// nspawn boots the container again itself; ours boot from the mount namespace the test
    /// process holds instead, so the new container's init is killed as soon as it registers,
    /// and nspawn exits as after a crash (it unregisters the machine and removes its veth).
    /// `false` once nspawn has exited (a power-off, a crash), or if no new container
    /// registers within `timeout`.
    pub(crate) fn rebooting(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let old = self.leader.pid();
        while self.nspawn.is_alive() && Instant::now() < deadline {
            let new = leader_of(&self.name).filter(|&p| p != old);
            if let Some(leader) = new.and_then(|p| PidFd::open(p).ok()) {
                if let Ok(_root) = ThreadRoot::acquire() {
                    let _ = leader.signal(libc::SIGKILL);
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `systemctl stop` of the machine's unit: nspawn stops its container and exits.
    fn stop_unit(&self, timeout: Duration) {
        let _ = as_root(
            Command::new("systemctl").args([
                "stop",
                "--no-block",
                &format!("{}.service", self.name),
            ]),
            timeout,
        );
    }

    /// What a next boot on the same disk starts from; nspawn must have exited.
    pub(crate) fn into_prepared(self) -> Prepared {
        self.prepared
    }
}

/// Runs a host program as root (regained in the child only), with a timeout.
fn as_root(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    privs::start_as_root(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pidfd = PidFd::open(child.id())?;
    if !pidfd.wait(timeout) {
        let _root = ThreadRoot::acquire();
        let _ = pidfd.signal(libc::SIGKILL);
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "`{}` took more than {:.0} s",
                tools::command_line(cmd),
                timeout.as_secs_f64()
            ),
        ));
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroot::storage::Storage;

    #[test]
    fn the_unit_carries_the_blog_posts_properties() {
        let mut spec = BootSpec::example(Storage::Subvolume);
        spec.properties.push("CPUWeight=50".into());
        let line = tools::command_line(&run_command(
            &spec,
            "nspawn-1-a",
            Path::new("/l/x.log"),
            Root::Privileged,
            None,
        ));
        let limits = Limits::for_host(crate::cleanup::slots::cap().machines);
        let (memory, tasks) = (limits.memory, limits.tasks);
        let run_dir = crate::host::run_dir::run_dir();
        let run_dir = run_dir.display();
        assert!(line.starts_with(&format!("systemd-run --unit=nspawn-1-a --collect --quiet --property=KillMode=mixed --property=Type=notify \
             --property=RestartForceExitStatus=133 --property=SuccessExitStatus=133 --property=Slice=machine.slice \
             --property=Delegate=yes --property=WatchdogSec=3min --property=MemoryMax={memory} --property=TasksMax={tasks} \
             --property=TimeoutStartSec=60 \
             --property=StandardOutput=file:/l/x.log --property=StandardError=file:/l/x.log --property=CPUWeight=50 \
             --setenv=NSPAWN_RS_RUN_DIR={run_dir} systemd-nspawn --quiet --boot --notify-ready=yes --machine=nspawn-1-a --directory=/c/bookworm --ephemeral")), "{line}");
        assert!(!line.contains("--register=no") && !line.contains("--keep-unit"));
    }
}
