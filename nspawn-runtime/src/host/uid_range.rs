//! Host uid ranges for user-namespaced machines: 65536 ids per machine, never shared with
//! another machine that runs at the same time.
//!
//! A range is taken the way `systemd-nspawn --private-users=pick` takes one, so that ours and
//! nspawn's own picks (another tool's containers on the same host) never collide: a lock file
//! `/run/systemd/nspawn-uid/<base>` held with `flock` for as long as the machine runs, a base
//! that is a multiple of 65536 between 0x80000 and 0x6FFF0000 (the container range of
//! systemd's uid allocation), and no user or group of the host's databases inside it. A lock
//! dies with its holder's descriptor, so a run that is killed outright frees its ranges; the
//! file it leaves (as does a run that ends without dropping its machines one by one) is
//! unlinked by the next pick, once it can lock it ([`sweep_stale`]). A lock is not the only
//! sign of a range in use: a machine kept with `NSPAWN_KEEP` outlives the run that held its
//! lock, so a range in which any process of the host runs is taken too ([`HostIds`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{HostError, Result};
use crate::host::privs::ThreadRoot;

/// Ids per machine: the 16-bit range a Debian system uses.
pub(crate) const SIZE: u32 = 0x10000;
const PICK_MIN: u32 = 0x0008_0000;
const PICK_MAX: u32 = 0x6FFF_0000;
const LOCK_DIR: &str = "/run/systemd/nspawn-uid";
const TRIES: usize = 100;

/// A range held for one machine; released when dropped.
#[derive(Debug)]
pub(crate) struct UidRange {
    base: u32,
    lock: Option<File>,
    path: PathBuf,
}

impl UidRange {
    /// Takes a free range (as root).
    pub(crate) fn pick() -> Result<UidRange, HostError> {
        let _root = ThreadRoot::acquire()?;
        std::fs::create_dir_all(LOCK_DIR)
            .map_err(|e| HostError::io(format!("creating {LOCK_DIR}"), e))?;
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_stale);
        let taken = HostIds::read();
        for _ in 0..TRIES {
            let base = candidate();
            if taken.overlaps(base) {
                continue;
            }
            if let Some(range) = try_lock(base)? {
                return Ok(range);
            }
        }
        Err(HostError::io(
            format!("picking a uid range for a machine's user namespace ({TRIES} tries)"),
            std::io::Error::other(format!(
                "every range tried is held under {LOCK_DIR} or used by a host user or group"
            )),
        ))
    }

    /// The first host uid (and gid) of the range: the machine's root.
    pub(crate) fn base(&self) -> u32 {
        self.base
    }
}

impl Drop for UidRange {
    fn drop(&mut self) {
        // Unlinked while still locked, as nspawn does: a taker that opened the old file sees
        // it unlinked after its own lock and tries again.
        if let Ok(_root) = ThreadRoot::acquire() {
            let _ = std::fs::remove_file(&self.path);
        }
        self.lock.take();
    }
}

/// Unlinks the lock files nobody holds: locked by us for the moment, as a taker's own check
/// (the file still at its path after its lock) then sees. Only names that are numbers, ours
/// or nspawn's; a file another holder has locked stays.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(LOCK_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(entry.path()) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A random multiple of [`SIZE`] in the pick range.
fn candidate() -> u32 {
    let random = uuid::Uuid::new_v4().as_u128() as u32;
    let slots = (PICK_MAX - PICK_MIN) / SIZE;
    PICK_MIN + (random % slots) * SIZE
}

/// Locks `base`'s file; `None` when another holder has it.
fn try_lock(base: u32) -> Result<Option<UidRange>, HostError> {
    let path = Path::new(LOCK_DIR).join(base.to_string());
    // Root's alone: `flock` works on any descriptor another user could open.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| HostError::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    // The holder before us may have unlinked the file between our open and our lock.
    let still_there = match (file.metadata(), std::fs::metadata(&path)) {
        (Ok(ours), Ok(now)) => ours.ino() == now.ino() && ours.dev() == now.dev(),
        _ => false,
    };
    Ok(still_there.then_some(UidRange {
        base,
        lock: Some(file),
        path,
    }))
}

/// The uids and gids the host's user and group databases name, and the uids processes run
/// as (the owner of `/proc/PID`).
struct HostIds(Vec<u32>);

impl HostIds {
    fn read() -> HostIds {
        let mut ids = Vec::new();
        for db in ["/etc/passwd", "/etc/group"] {
            let text = std::fs::read_to_string(db).unwrap_or_default();
            ids.extend(
                text.lines()
                    .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok()),
            );
        }
        let processes = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        ids.extend(processes.filter_map(|entry| {
            entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some(entry.metadata().ok()?.uid())
        }));
        ids.sort_unstable();
        ids.dedup();
        HostIds(ids)
    }

    fn overlaps(&self, base: u32) -> bool {
        self.0.iter().any(|id| (base..base + SIZE).contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_aligned_and_in_the_container_range() {
        for _ in 0..1000 {
            let c = candidate();
            assert_eq!(c % SIZE, 0, "{c:#x}");
            assert!((PICK_MIN..PICK_MAX).contains(&c), "{c:#x}");
        }
    }

    #[test]
    fn a_range_a_process_runs_in_is_taken() {
        use std::os::unix::process::CommandExt;
        let Some(_root) = crate::host::privs::root_for_test("a_range_a_process_runs_in_is_taken")
        else {
            return;
        };
        // A process of no host user stands in for a kept machine's root.
        let base = 0x6FFE_0000;
        assert!(!HostIds::read().overlaps(base));
        let _root = ThreadRoot::acquire().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .uid(base + 5)
            .spawn()
            .unwrap();
        let seen = HostIds::read().overlaps(base);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen);
    }

    #[test]
    fn a_range_with_a_host_id_in_it_overlaps() {
        let ids = HostIds(vec![0, 1000, 0x0009_0005]);
        assert!(ids.overlaps(0x0009_0000));
        assert!(!ids.overlaps(0x000A_0000));
        assert!(!ids.overlaps(0x0008_0000));
    }
}
