//! Sizes for the machine's tmpfs mounts, from its memory limit.
//!
//! nspawn gives `/tmp` and `/dev/shm` a tenth of the host's memory each and `/run` a fifth,
//! whatever the machine's limit. tmpfs pages cannot be reclaimed and are charged to the
//! machine's memory cgroup, so a test that fills one would leave the machine's memory full and
//! its processes to the OOM killer. Sized below the limit, a fill ends in `ENOSPC` instead,
//! and the machine lives on.
//!
//! This is for honest mistakes: the machine's root can remount them bigger (it holds
//! `CAP_SYS_ADMIN` in its own mount namespace, as in any nspawn container), and then the memory
//! limit is the wall. The root of a plain-directory machine (nspawn's `--volatile=overlay`
//! tmpfs) is out of the container's reach and ours, and is bounded by the memory limit only.

use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::statvfs::FsFlags;

/// Mounts sized, each to the machine's memory divided by the share.
const SHARES: [(&str, u64); 3] = [("/tmp", 4), ("/dev/shm", 4), ("/run", 8)];
/// No mount is made smaller than this.
const MIN_SIZE: u64 = 16 << 20;

/// Shrinks each of the machine's tmpfs mounts to its share of `memory`. Best effort: a mount
/// that is not a tmpfs, or is already smaller, is left alone.
pub fn bound(memory: u64) {
    for (path, share) in SHARES {
        let _ = resize(Path::new(path), (memory / share).max(MIN_SIZE));
    }
}

fn resize(path: &Path, size: u64) -> nix::Result<()> {
    let fs = nix::sys::statfs::statfs(path)?;
    let current = fs.blocks().saturating_mul(fs.block_size() as u64);
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC || current <= size {
        return Ok(());
    }
    // A remount sets the mount's flags anew: the ones it has must be passed again.
    let flags = remount_flags(nix::sys::statvfs::statvfs(path)?.flags());
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        flags,
        Some(format!("size={size}").as_str()),
    )
}

fn remount_flags(has: FsFlags) -> MsFlags {
    let kept = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_SYNCHRONOUS, MsFlags::MS_SYNCHRONOUS),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    kept.iter()
        .filter(|(st, _)| has.contains(*st))
        .fold(MsFlags::MS_REMOUNT, |flags, (_, ms)| flags | *ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remount_keeps_the_mount_flags() {
        let flags = remount_flags(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_RELATIME);
        assert_eq!(
            flags,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME
        );
    }
}
