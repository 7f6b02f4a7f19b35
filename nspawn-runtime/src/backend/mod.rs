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
mod mount_helper;
mod namespace;
pub mod private_users;
mod spec;
pub(crate) mod systemd;

pub(crate) use namespace::Prepared;
pub(crate) use spec::Bind;
pub(crate) use spec::BootSpec;
pub(crate) use spec::HostsFile;
pub(crate) use spec::Userns;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cleanup::records::Record;
use crate::error::{Error, Result};
use crate::host::pidfd::PidFd;

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

/// Boots a machine called `name` on the selected backend; `again` for its next boot on the
/// same disk (see [`namespace::Prepared::again`]).
pub(crate) fn boot(
    spec: &BootSpec,
    name: &str,
    log: &Path,
    log_file: std::fs::File,
    again: Option<Prepared>,
) -> Result<Running> {
    match selected()?.0 {
        Kind::Direct => direct::boot(spec, name, log, log_file, again).map(Running::Direct),
        Kind::Systemd => systemd::boot(spec, name, log, log_file, again).map(Running::Systemd),
    }
}

/// What became of a machine whose container's init has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The guest rebooted: its caller boots it again, on the same disk.
    RebootAsked,
    /// It powered off, crashed or was killed.
    Down,
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
        if let Ok(_root) = crate::host::privs::ThreadRoot::acquire() {
            let _ = self.leader().signal(libc::SIGKILL);
        }
    }

    /// The ownership record of this machine (see [`crate::cleanup::records`]).
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

    /// After the leader ended: what became of the machine, waiting up to `timeout` for nspawn
    /// to exit or to boot the container again. Its nspawn is gone either way, or being stopped
    /// ([`Running::stop`] waits for it).
    pub(crate) fn after_leader(&mut self, timeout: Duration) -> Ended {
        match self {
            Running::Direct(r) => match r.exit_code(timeout) {
                Some(133) => Ended::RebootAsked,
                _ => Ended::Down,
            },
            // nspawn boots the container again in place, but a machine of ours boots from
            // the namespace we hold, the same way on both backends: its unit is stopped.
            Running::Systemd(r) => match r.rebooting(timeout) {
                true => Ended::RebootAsked,
                false => Ended::Down,
            },
        }
    }

    /// What its next boot on the same disk starts from; nspawn must have exited.
    pub(crate) fn into_prepared(self) -> Prepared {
        match self {
            Running::Direct(r) => r.into_prepared(),
            Running::Systemd(r) => r.into_prepared(),
        }
    }
}
