//! What both backends boot from: the [`BootSpec`], the nspawn arguments they share, and the
//! ownership record of a machine.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::chroot::storage::Storage;
use crate::cleanup::records::Record;
use crate::error::Error;
use crate::host::idmap::Upper;
use crate::host::pidfd::PidFd;
use crate::host::probe;

/// A bind mount into the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
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
    /// Boot the tree itself, writable (a set-up layer's template: see `chroot::layer`).
    pub writable: bool,
    /// A user namespace of its own, and the layers of its root (see [`crate::host::idmap`]).
    pub userns: Option<Userns>,
    /// The `/etc/hosts` of a machine on a zone (see [`crate::host::mount_ns`]).
    pub hosts: Option<HostsFile>,
}

/// A machine's own hosts file: the directory its tmpfs covers, and its first text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostsFile {
    pub dir: PathBuf,
    pub text: String,
}

/// The root of a user-namespaced machine: read-only layers, top first, and the writable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Userns {
    pub lowers: Vec<PathBuf>,
    pub upper: Upper,
}

/// How nspawn is to see the machine's root.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Root<'a> {
    /// The spec's tree, privileged.
    Privileged,
    /// `dir`, in a user namespace whose root is host uid `base`; `map` when nspawn is to
    /// idmap the tree itself (a btrfs snapshot), else the tree already shows the range's ids.
    Mapped { dir: &'a Path, base: u32, map: bool },
}

impl BootSpec {
    /// A boot failure of machine `name`, with the console tail.
    pub(crate) fn boot_error(&self, name: &str, log: &Path, reason: String) -> Error {
        Error::Boot {
            machine: name.into(),
            chroot: self.chroot.clone(),
            reason,
            log: log.into(),
            tail: crate::host::console::tail(log, 20).into(),
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
            writable: false,
            userns: None,
            hosts: None,
        }
    }
}

/// The ownership record of a machine (see [`crate::cleanup::records`]); `leader` is unknown while it
/// boots.
pub(crate) fn record(
    name: &str,
    chroot: &Path,
    nspawn: Option<&PidFd>,
    leader: Option<&PidFd>,
) -> Record {
    use crate::cleanup::records::ProcessId;
    let id = |pid: u32| ProcessId::of(pid).unwrap_or(ProcessId { pid, start: 0 });
    // A process not started yet: PID 0 is never alive.
    let id_of = |p: Option<&PidFd>| p.map_or(ProcessId { pid: 0, start: 0 }, |p| id(p.pid()));
    let snapshot = nspawn.and_then(|nspawn| {
        let _root = crate::host::privs::ThreadRoot::acquire().ok()?;
        crate::cleanup::records::snapshot_of(nspawn.pid())
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
pub(crate) fn nspawn_args(spec: &BootSpec, name: &str, root: Root) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--quiet", "--boot", "--notify-ready=yes"]
        .map(OsString::from)
        .to_vec();
    args.push(format!("--machine={name}").into());
    match root {
        Root::Privileged => {
            args.push(format!("--directory={}", spec.dir.display()).into());
            match spec.storage {
                // A set-up layer's own overlay: the changes are what it is for.
                _ if spec.writable => {}
                Storage::Subvolume => args.push("--ephemeral".into()),
                // --volatile=overlay alone locks the tree: parallel boots of one chroot would hang.
                Storage::Directory => {
                    args.extend(["--volatile=overlay".into(), "--read-only".into()])
                }
            }
        }
        Root::Mapped { dir, base, map } => {
            args.push(format!("--directory={}", dir.display()).into());
            if map {
                args.push("--ephemeral".into());
            }
            args.push(format!("--private-users={base}:{}", crate::host::uid_range::SIZE).into());
            let ownership = if map { "map" } else { "off" };
            args.push(format!("--private-users-ownership={ownership}").into());
        }
    }
    // Host files keep their owners inside (root's are root's), not `nobody`.
    let idmap = if matches!(root, Root::Mapped { .. }) {
        ":idmap"
    } else {
        ""
    };
    if spec.private_network {
        args.push("--private-network".into());
    }
    for b in &spec.binds {
        let flag = if b.read_only { "--bind-ro" } else { "--bind" };
        args.push(format!("{flag}={}:{}{idmap}", b.host.display(), b.guest.display()).into());
    }
    if let Some(hosts) = &spec.hosts {
        let file = crate::host::mount_ns::hosts_path(&hosts.dir);
        args.push(format!("--bind-ro={}:/etc/hosts", file.display()).into());
    }
    for (k, v) in &spec.env {
        args.push(format!("--setenv={k}={v}").into());
    }
    if spec.suppress_sync {
        if probe::nspawn_has_suppress_sync() {
            args.push("--suppress-sync=yes".into());
        } else {
            crate::report::warning(
                None,
                "this systemd-nspawn has no --suppress-sync (systemd 250 or later has it); ignored",
            );
        }
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}
