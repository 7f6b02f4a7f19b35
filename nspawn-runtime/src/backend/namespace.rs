//! What both backends make ready before nspawn starts: a user-namespaced machine's uid range,
//! and what the mount namespace nspawn starts in holds (see [`crate::host::mount_ns`]).

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
    let mounts = MountSpec { hosts, root };
    Ok(Prepared {
        range,
        root_dir: mounts.root_dir(),
        mounts,
        map,
    })
}

impl Prepared {
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
