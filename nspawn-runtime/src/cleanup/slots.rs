//! A host-wide cap on machines running at once, across processes (parallel `cargo test` runs,
//! nextest's process per test): each machine holds a `flock` on one of `cap` slot files, which
//! the kernel releases however its process ends.
//!
//! The default cap comes from `fs.inotify.max_user_instances` (a booted container takes about
//! ten; 128, a common default, is exhausted by about twelve and boots then stall) and from
//! memory. `NSPAWN_MAX_MACHINES` overrides it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::host::privs::ThreadRoot;

/// Inotify instances a booted container takes, roughly (measured: 128 allow about 12).
const INOTIFY_PER_MACHINE: u64 = 10;
/// Instances left for everything else root runs.
const INOTIFY_RESERVE: u64 = 20;
/// Memory to allow per machine (a booted minbase container uses about 10 MB; tests add more).
const MEMORY_PER_MACHINE: u64 = 256 << 20;

/// How a cap was decided, for `cargo nspawn doctor` and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// The number of machines allowed at once.
    pub machines: usize,
    /// Where the number comes from.
    pub reason: String,
}

/// The cap in force.
pub fn cap() -> Cap {
    if let Some(n) = crate::settings::lenient().max_machines {
        return Cap {
            machines: n,
            reason: "NSPAWN_MAX_MACHINES".into(),
        };
    }
    let inotify = read_u64("/proc/sys/fs/inotify/max_user_instances").unwrap_or(128);
    let by_inotify = inotify.saturating_sub(INOTIFY_RESERVE) / INOTIFY_PER_MACHINE;
    let by_memory = mem_available().map_or(u64::MAX, |m| m / MEMORY_PER_MACHINE);
    let machines = by_inotify.min(by_memory).max(1) as usize;
    let reason = if by_inotify <= by_memory {
        format!(
            "fs.inotify.max_user_instances = {inotify}, about {INOTIFY_PER_MACHINE} per machine"
        )
    } else {
        "available memory, 256 MiB per machine".into()
    };
    Cap { machines, reason }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn mem_available() -> Option<u64> {
    crate::host::limits::meminfo("MemAvailable:")
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    _lock: Flock<File>,
}

/// What frees a slot of this process when all are taken, if anything can: the test harness
/// sets it (it stops an idle machine it shares), so this layer needs to know nothing of it.
static MAKE_ROOM: OnceLock<fn() -> bool> = OnceLock::new();

/// Sets what [`acquire`] calls while it waits, to free a slot. The first setting stays.
pub(crate) fn set_room_maker(make_room: fn() -> bool) {
    let _ = MAKE_ROOM.set(make_room);
}

fn make_room() -> bool {
    MAKE_ROOM.get().is_some_and(|make_room| make_room())
}

/// Takes a free slot, waiting for one up to `timeout`, and freeing one with the room maker
/// (set by the test harness) if there is one.
pub(crate) fn acquire(timeout: Duration) -> Result<Slot> {
    let cap = cap();
    let dir = slots_dir()?;
    let started = Instant::now();
    let mut announced = false;
    loop {
        if let Some(slot) = try_slots(&dir, cap.machines)? {
            return Ok(slot);
        }
        if make_room() {
            continue;
        }
        if started.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("waiting for one of the {} machine slots", cap.machines),
                after: timeout,
                hint: format!(
                    "the cap comes from {}; other runs hold the slots. Set NSPAWN_MAX_MACHINES, or wait for them",
                    cap.reason
                ),
            });
        }
        if !announced && started.elapsed() > Duration::from_secs(2) {
            crate::report::announce_on_terminal(&format!(
                "waiting for a machine slot: all {} are in use ({}); machines of other runs, \
                 or of modules whose later tests are still to come, hold them",
                cap.machines, cap.reason
            ));
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes a free slot if there is one, without waiting or freeing one: for a machine booted
/// ahead of need, which must never take the place of one a test waits for. Only while half
/// the cap stays free after it and the `reserved` slots this process's boots are about to
/// take, to leave room for other runs.
pub(crate) fn try_acquire_spare(reserved: usize) -> Result<Option<Slot>> {
    let cap = cap().machines;
    let free = free_slots(cap)?;
    match free.len().checked_sub(1 + reserved) {
        Some(left) if left * 2 >= cap => {}
        _ => return Ok(None),
    }
    Ok(free.into_iter().next())
}

/// Whether less than half the cap is free: what machines held ahead of need (warm ones) give
/// their slots back for.
pub(crate) fn under_pressure() -> Result<bool> {
    let cap = cap().machines;
    Ok(free_slots(cap)?.len() * 2 < cap)
}

/// The free slots, each locked until dropped.
fn free_slots(cap: usize) -> Result<Vec<Slot>> {
    let dir = slots_dir()?;
    let _root = ThreadRoot::acquire()?;
    // Locking a free slot and letting it go tells it from a taken one (ours included: two
    // opens of a file are two locks).
    let mut free = Vec::new();
    for index in 0..cap {
        if let Some(slot) = try_slot(&dir, index)? {
            free.push(slot);
        }
    }
    Ok(free)
}

fn slots_dir() -> Result<PathBuf> {
    Ok(crate::cleanup::records::private_dir("slots")?)
}

/// Locks the first free one of slots `0..count`, as root (once for the pass): slot files are
/// root's, 0600, in a directory only root enters.
fn try_slots(dir: &std::path::Path, count: usize) -> Result<Option<Slot>> {
    let _root = ThreadRoot::acquire()?;
    for index in 0..count {
        if let Some(slot) = try_slot(dir, index)? {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

fn try_slot(dir: &std::path::Path, index: usize) -> Result<Option<Slot>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("{index}.lock"));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(Slot { _lock: lock })),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_follows_inotify_and_memory() {
        let cap = cap();
        assert!(cap.machines >= 1);
        if crate::settings::lenient().max_machines.is_none() {
            let inotify = read_u64("/proc/sys/fs/inotify/max_user_instances").unwrap();
            assert!(
                cap.machines as u64 <= inotify / INOTIFY_PER_MACHINE,
                "{cap:?}"
            );
        }
    }
}
