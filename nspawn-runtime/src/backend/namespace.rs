//! What both backends make ready before nspawn starts: a user-namespaced machine's uid range,
//! and what the mount namespace nspawn starts in holds (see [`crate::host::mount_ns`]).
//!
//! The same [`Prepared`] serves a machine's next boot on the same disk (a reboot, a start
//! after a power-off or a crash): the test process holds nspawn's mount namespace open, and
//! with it the overlay root and its writable tmpfs, the hosts file, and the uid range. Nothing
//! of it is on disk: it is gone with the machine's handle, or with the test process.

use std::path::PathBuf;

use crate::chroot::storage::Storage;
use crate::error::Result;
use crate::host::idmap::Upper;
use crate::host::mount_ns::{MountSpec, RootSpec};
use crate::host::run_dir::private_dir;
use crate::host::uid_range::UidRange;

use super::spec::{BootSpec, Root};

/// A machine's range and mounts, before nspawn starts.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The range of its user namespace, held while it runs.
    pub range: Option<UidRange>,
    pub mounts: MountSpec,
    root_dir: Option<PathBuf>,
    /// nspawn idmaps the tree itself (a btrfs snapshot).
    map: bool,
    /// nspawn's mount namespace, once it runs.
    held: Option<std::fs::File>,
}

/// Picks the range of a user-namespaced machine and plans its mounts: nspawn's own idmapped
/// snapshot of a btrfs subvolume, or an overlay of ours; and the hosts file of a machine on
/// a zone.
pub(crate) fn prepare(spec: &BootSpec) -> Result<Prepared> {
    let range = spec.userns.as_ref().map(|_| UidRange::pick()).transpose()?;
    let owner = range.as_ref().map_or(0, UidRange::base);
    let hosts = spec
        .hosts
        .as_ref()
        .map(|h| (h.dir.clone(), h.text.clone(), owner));
    let (root, map) = match (&spec.userns, &range) {
        (Some(userns), Some(range)) => {
            let snapshot = spec.storage == Storage::Subvolume
                && userns.upper == Upper::Tmpfs
                && userns.lowers == std::slice::from_ref(&spec.dir);
            let root = (!snapshot)
                .then(|| -> Result<RootSpec> {
                    Ok(RootSpec {
                        uid_base: range.base(),
                        dir: private_dir("roots")?,
                        lowers: userns.lowers.clone(),
                        upper: userns.upper.clone(),
                    })
                })
                .transpose()?;
            (root, snapshot)
        }
        _ => (None, false),
    };
    let mounts = MountSpec {
        hosts,
        root,
        again: None,
    };
    Ok(Prepared {
        range,
        root_dir: mounts.root_dir(),
        mounts,
        map,
        held: None,
    })
}

impl Prepared {
    /// Holds the mount namespace of nspawn `pid`, which made it from this plan: what a next
    /// boot enters. Only a machine whose root is an overlay of ours keeps its disk that way.
    pub(crate) fn hold(&mut self, pid: u32) {
        if self.root_dir.is_none() {
            return;
        }
        let opened = crate::host::privs::ThreadRoot::acquire()
            .map_err(std::io::Error::other)
            .and_then(|_root| std::fs::File::open(format!("/proc/{pid}/ns/mnt")));
        match opened {
            Ok(ns) => self.held = Some(ns),
            Err(e) => crate::report::warning(
                None,
                format_args!("cannot hold nspawn's mount namespace, so no reboot or power_on: {e}"),
            ),
        }
    }

    /// The plan of the next boot on the same disk, or why there is none.
    pub(crate) fn again(self) -> std::result::Result<Prepared, &'static str> {
        let Some(held) = self.held else {
            return Err(match (&self.range, self.map) {
                (None, _) => {
                    "it is privileged (private_users(false)): nspawn's own overlay or snapshot of it was gone with it"
                }
                (Some(_), true) => "its btrfs snapshot was nspawn's, gone with it",
                (Some(_), false) => "its mount namespace could not be held",
            });
        };
        use std::os::fd::AsRawFd;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            held.as_raw_fd()
        ));
        Ok(Prepared {
            mounts: MountSpec {
                again: Some(path),
                ..MountSpec::default()
            },
            held: Some(held),
            ..self
        })
    }

    /// How nspawn is to see the machine's root.
    pub(crate) fn root<'a>(&'a self, spec: &'a BootSpec) -> Root<'a> {
        match &self.range {
            Some(range) => Root::Mapped {
                dir: self.root_dir.as_deref().unwrap_or(&spec.dir),
                base: range.base(),
                map: self.map,
            },
            None => Root::Privileged,
        }
    }
}

/// The trees a user-namespaced machine boots from, as nspawn carries them in its environment
/// ([`crate::chroot::LOWERS_ENV`]) for `chroot::build` to see them busy.
pub(crate) fn lowers_env(spec: &BootSpec) -> Option<String> {
    spec.userns.as_ref().map(|u| lowers_value(&u.lowers))
}

/// The value of [`crate::chroot::LOWERS_ENV`] for `lowers`.
pub(crate) fn lowers_value(lowers: &[PathBuf]) -> String {
    let trees: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    trees.join("\n")
}
