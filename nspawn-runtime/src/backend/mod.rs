//! How machines are run. Two backends, chosen automatically:
//!
//! - `systemd`: on hosts where PID 1 is systemd and machined answers, machines are units
//!   started with `systemd-run` under `machine.slice` and registered with machined, as the blog
//!   post this project grew from does it (`machinectl list`, `machinectl shell`,
//!   `journalctl -M` work on them);
//! - `direct`: elsewhere (CI containers, hosts without systemd), `systemd-nspawn` is a child
//!   of the test process.
//!
//! `NSPAWN_BACKEND=direct|systemd` forces one. Everything else (exec, files, sharing, exit
//! cleanup, sweeping, privileges) is the same for both.

pub(crate) mod direct;
pub(crate) mod systemd;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pidfd::PidFd;
use crate::probe;
use crate::state::Record;
use crate::storage::Storage;

/// A bind mount into the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Path on the host.
    pub host: PathBuf,
    /// Path in the machine.
    pub guest: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// Everything needed to boot one machine.
#[derive(Debug, Clone)]
pub(crate) struct BootSpec {
    pub chroot: String,
    pub dir: PathBuf,
    pub storage: Storage,
    /// nspawn shuts down when the test process dies (not for machines kept for debugging).
    pub tied_to_process: bool,
    pub boot_timeout: Duration,
    pub private_network: bool,
    pub binds: Vec<Bind>,
    pub env: Vec<(String, String)>,
    pub extra_args: Vec<OsString>,
    /// `--suppress-sync=yes`, when this nspawn has it.
    pub suppress_sync: bool,
    /// Unit properties (systemd backend), on top of the defaults.
    pub properties: Vec<String>,
}

impl BootSpec {
    /// A boot failure of machine `name`, with the console tail.
    pub(crate) fn boot_error(&self, name: &str, log: &Path, reason: String) -> Error {
        Error::Boot {
            machine: name.into(),
            chroot: self.chroot.clone(),
            reason,
            log: log.into(),
            tail: crate::console::tail(log, 20).into(),
        }
    }
}

#[cfg(test)]
impl BootSpec {
    /// A spec for command-line tests: bookworm at `/c/bookworm`, default options.
    pub(crate) fn example(storage: Storage) -> BootSpec {
        BootSpec {
            chroot: "bookworm".into(),
            dir: "/c/bookworm".into(),
            storage,
            tied_to_process: true,
            boot_timeout: Duration::from_secs(60),
            private_network: false,
            binds: vec![],
            env: vec![],
            extra_args: vec![],
            suppress_sync: false,
            properties: vec![],
        }
    }
}

/// The ownership record of a machine (see [`crate::state`]); `leader` is unknown while it
/// boots.
pub(crate) fn record(
    name: &str,
    chroot: &Path,
    nspawn: Option<&PidFd>,
    leader: Option<&PidFd>,
) -> Record {
    use crate::state::ProcessId;
    let id = |pid: u32| ProcessId::of(pid).unwrap_or(ProcessId { pid, start: 0 });
    // A process not started yet: PID 0 is never alive.
    let id_of = |p: Option<&PidFd>| p.map_or(ProcessId { pid: 0, start: 0 }, |p| id(p.pid()));
    let snapshot = nspawn.and_then(|nspawn| {
        let _root = crate::privs::ThreadRoot::acquire().ok()?;
        crate::state::snapshot_of(nspawn.pid())
    });
    Record {
        name: name.into(),
        owner: id(std::process::id()),
        nspawn: id_of(nspawn),
        leader: id_of(leader),
        chroot: chroot.into(),
        snapshot,
        cgroups: Vec::new(),
        unit: None,
        kept: false,
    }
}

/// The nspawn arguments both backends share.
pub(crate) fn nspawn_args(spec: &BootSpec, name: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--quiet", "--boot", "--notify-ready=yes"]
        .map(OsString::from)
        .to_vec();
    args.push(format!("--machine={name}").into());
    args.push(format!("--directory={}", spec.dir.display()).into());
    match spec.storage {
        Storage::Subvolume => args.push("--ephemeral".into()),
        // --volatile=overlay alone locks the tree: parallel boots of one chroot would hang.
        Storage::Directory => args.extend(["--volatile=overlay".into(), "--read-only".into()]),
    }
    if spec.private_network {
        args.push("--private-network".into());
    }
    for b in &spec.binds {
        let flag = if b.read_only { "--bind-ro" } else { "--bind" };
        args.push(format!("{flag}={}:{}", b.host.display(), b.guest.display()).into());
    }
    for (k, v) in &spec.env {
        args.push(format!("--setenv={k}={v}").into());
    }
    if spec.suppress_sync {
        if probe::nspawn_has_suppress_sync() {
            args.push("--suppress-sync=yes".into());
        } else {
            tracing::warn!(
                "this systemd-nspawn has no --suppress-sync (systemd 250 or later has it); ignored"
            );
        }
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// Which backend runs machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `systemd-nspawn` as a child process.
    Direct,
    /// `systemd-run` units registered with machined.
    Systemd,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Direct => "direct",
            Kind::Systemd => "systemd",
        })
    }
}

/// The backend in force, and why.
pub fn selected() -> Result<(Kind, String)> {
    static CHOICE: OnceLock<std::result::Result<(Kind, String), (String, String)>> =
        OnceLock::new();
    CHOICE
        .get_or_init(choose)
        .clone()
        .map_err(|(backend, reason)| Error::BackendUnavailable { backend, reason })
}

fn choose() -> std::result::Result<(Kind, String), (String, String)> {
    use crate::settings::BackendChoice;
    match crate::settings::lenient().backend {
        BackendChoice::Direct => Ok((Kind::Direct, "forced by NSPAWN_BACKEND=direct".into())),
        BackendChoice::Systemd => systemd::available()
            .map(|()| (Kind::Systemd, "forced by NSPAWN_BACKEND=systemd".into()))
            .map_err(|why| ("systemd".into(), why)),
        BackendChoice::Auto => Ok(match systemd::available() {
            Ok(()) => (
                Kind::Systemd,
                "PID 1 is systemd and machined answers".into(),
            ),
            Err(why) => (
                Kind::Direct,
                format!("the systemd backend is unavailable: {why}"),
            ),
        }),
    }
}

/// A booted machine, on either backend.
#[derive(Debug)]
pub(crate) enum Running {
    Direct(direct::Running),
    Systemd(systemd::Running),
}

/// Boots a machine called `name` on the selected backend.
pub(crate) fn boot(
    spec: &BootSpec,
    name: &str,
    log: &Path,
    log_file: std::fs::File,
) -> Result<Running> {
    match selected()?.0 {
        Kind::Direct => direct::boot(spec, name, log, log_file).map(Running::Direct),
        Kind::Systemd => systemd::boot(spec, name, log, log_file).map(Running::Systemd),
    }
}

impl Running {
    /// The container's PID 1.
    pub(crate) fn leader(&self) -> &PidFd {
        match self {
            Running::Direct(r) => &r.leader,
            Running::Systemd(r) => &r.leader,
        }
    }

    /// Stops the machine and waits until nspawn has removed its snapshot and exited.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Result<()> {
        match self {
            Running::Direct(r) => r.stop(timeout),
            Running::Systemd(r) => r.stop(timeout),
        }
    }

    /// Kills the container's init without waiting, to stop many machines in parallel.
    pub(crate) fn kill_leader(&self) {
        if let Ok(_root) = crate::privs::ThreadRoot::acquire() {
            let _ = self.leader().signal(libc::SIGKILL);
        }
    }

    /// The ownership record of this machine (see [`crate::state`]).
    pub(crate) fn record(&self, name: &str, chroot: &Path) -> Record {
        match self {
            Running::Direct(r) => r.record(name, chroot),
            Running::Systemd(r) => r.record(name, chroot),
        }
    }

    /// nspawn's PID.
    pub(crate) fn nspawn_pid(&self) -> u32 {
        match self {
            Running::Direct(r) => r.nspawn_pid(),
            Running::Systemd(r) => r.nspawn_pid(),
        }
    }
}
