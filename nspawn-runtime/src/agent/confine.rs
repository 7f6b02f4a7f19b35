//! The walls of the agent and of everything it starts: those of the container's own
//! processes, taken from its PID 1.
//!
//! A process that systemd starts inside the machine has the container's capability bounding
//! set, nspawn's system call filter, and a cgroup inside the machine. The agent, started from
//! the host as root, has none of these by birth, so before it serves anything it:
//!
//! 1. closes every descriptor it inherited but the two it works with
//!    ([`crate::host::helper::close_inherited`]);
//! 2. joins the leader's cgroup in every hierarchy, so the machine's limits, accounting and
//!    `cgroup.kill` cover it and its commands;
//! 3. after entering the machine, drops every capability outside the leader's bounding set
//!    from its own bounding, permitted, effective and inheritable sets, and clears the ambient
//!    set: a command run as root gets exactly the container's capabilities;
//! 4. installs nspawn's system call filter ([`super::seccomp`]), which every command inherits.
//!
//! Once inside, and before it drops anything, it also sizes the machine's tmpfs mounts to its
//! memory limit ([`super::tmpfs`]).
//!
//! The leader's settings are read from the host's `/proc` while the leader is alive; the guest
//! controls them, but a process can only narrow its own bounding set and move within the
//! cgroup subtree it was given, so whatever it did, copying it never widens our walls.

use std::path::PathBuf;

use crate::host::cgroup;
use crate::host::pidfd::PidFd;

/// What the container's PID 1 is confined by.
#[derive(Debug)]
pub struct Walls {
    /// The capability bounding set, as a bit mask.
    pub bounding: u64,
    /// Its cgroup directories on the host, one per hierarchy.
    pub cgroups: Vec<PathBuf>,
    /// The memory limit of its cgroup, if it has one.
    pub memory: Option<u64>,
}

impl Walls {
    /// Reads the walls of `leader`, which must still be alive afterwards (so that the PID was
    /// not reused meanwhile).
    pub fn of(leader: &PidFd) -> std::io::Result<Walls> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", leader.pid()))?;
        let bounding = cap_field(&status, "CapBnd:")
            .ok_or_else(|| std::io::Error::other("no CapBnd in the leader's status"))?;
        let cgroups = cgroup::of_process(leader.pid())?;
        let memory = cgroups.iter().find_map(|d| memory_limit(d));
        leader.signal(0)?;
        Ok(Walls {
            bounding,
            cgroups,
            memory,
        })
    }

    /// Moves this process into the leader's cgroups.
    pub fn join_cgroups(&self) -> std::io::Result<()> {
        for dir in &self.cgroups {
            match std::fs::write(dir.join("cgroup.procs"), b"0\n") {
                // A hierarchy mounted read-only here (the controllers inside a container)
                // could not have been given to the machine either: it shares ours there.
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Narrows this process's capabilities to the bounding set. Only while it has one thread:
    /// capabilities belong to threads.
    pub fn drop_capabilities(&self) -> std::io::Result<()> {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(63)
            .min(63);
        for cap in (0..=last).filter(|c| self.bounding & (1u64 << c) == 0) {
            // SAFETY: a plain prctl.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let kept: caps::CapsHashSet = caps::all()
            .into_iter()
            .filter(|c| self.bounding & c.bitmask() != 0)
            .collect();
        let err = |e: caps::errors::CapsError| std::io::Error::other(e.to_string());
        caps::clear(None, caps::CapSet::Ambient).map_err(err)?;
        for set in [
            caps::CapSet::Inheritable,
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
        ] {
            let now = caps::read(None, set).map_err(err)?;
            let narrowed = now.intersection(&kept).copied().collect();
            caps::set(None, set, &narrowed).map_err(err)?;
        }
        Ok(())
    }
}

/// The memory limit of a cgroup (v1 `memory.limit_in_bytes`, v2 `memory.max`); none when the
/// directory has no such file or the limit is "unlimited".
fn memory_limit(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(dir.join("memory.max")))
        .ok()?;
    // v1 says "unlimited" with a number near 2^63.
    text.trim().parse::<u64>().ok().filter(|n| *n < 1 << 60)
}

/// A `Cap*:` line of `/proc/PID/status`, in hex.
fn cap_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    u64::from_str_radix(line[key.len()..].trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_masks_are_read_from_status() {
        let status = "Name:\tsystemd\nCapInh:\t0000000000000000\nCapBnd:\t00000000fcecafff\n";
        assert_eq!(cap_field(status, "CapBnd:"), Some(0xfcecafff));
        assert_eq!(cap_field(status, "CapAmb:"), None);
    }
}
