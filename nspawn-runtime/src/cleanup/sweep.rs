//! Sweeping what crashed runs left behind: machines whose owner is dead, snapshots no nspawn
//! holds, propagate directories and cgroups of machines that are gone.
//!
//! A sweep never touches the machines of a run that is still alive: records name their owner by
//! PID and start time ([`ProcessId`]), live nspawn processes hold a lock on their snapshot, and
//! live machines have a process whose command line names them.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::chroot::storage;
use crate::cleanup::records::{ProcessId, Record};
use crate::host::cgroup;
use crate::host::privs::ThreadRoot;

const PROPAGATE: &str = "/run/systemd/nspawn/propagate";
/// A snapshot younger than this may belong to an nspawn that has not taken its lock yet.
const SNAPSHOT_GRACE: Duration = Duration::from_secs(30);

/// What to sweep.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directories holding master chroots, whose `.#machine.*` snapshots are checked.
    pub chroot_dirs: Vec<PathBuf>,
    /// Also remove machines kept for debugging (`NSPAWN_KEEP`).
    pub kept: bool,
}

/// Removes every leftover of dead runs and returns a line for each thing removed. Needs root.
pub fn sweep(options: &Options) -> crate::Result<Vec<String>> {
    let _root = ThreadRoot::acquire()?;
    let mut removed = Vec::new();
    let scan = Record::scan();
    let records = scan.records;
    let mut chroot_dirs = options.chroot_dirs.clone();
    for record in &records {
        if let Some(parent) = record.chroot.parent() {
            chroot_dirs.push(parent.into());
        }
        let owned = !record.kept && record.owner.is_alive();
        if !owned && (!record.kept || options.kept) {
            removed.extend(end_machine(record));
        }
    }
    chroot_dirs.sort();
    chroot_dirs.dedup();
    for dir in &chroot_dirs {
        removed.extend(stale_snapshots(dir));
    }
    // After the machines that booted from them.
    removed.extend(crate::chroot::layer::sweep());
    removed.extend(stale_registrations(&records));
    removed.extend(stale_processes(&records));
    let live = live_machine_names();
    removed.extend(stale_propagate_dirs(&live));
    removed.extend(stale_cgroups(&live));
    removed.extend(stale_notify_sockets(&live));
    removed.extend(unreadable_records(scan.unreadable, &live));
    removed.extend(stale_shares());
    removed.extend(stale_warm_keepers());
    // After the machines: a dead run's zone is taken down once nothing of it runs.
    removed.extend(crate::network::sweep());
    Ok(removed)
}

/// Sweeps once per process, before its first machine boots.
pub(crate) fn at_startup(chroot_dir: Option<&Path>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let options = Options {
            chroot_dirs: chroot_dir.map(Path::to_path_buf).into_iter().collect(),
            kept: false,
        };
        match sweep(&options) {
            Ok(removed) if !removed.is_empty() => crate::report::announce(&format!(
                "removed {} leftover(s) of earlier runs: {}",
                removed.len(),
                removed.join("; ")
            )),
            Ok(_) => {}
            Err(e) => crate::report::warning(None, format_args!("sweeping leftovers failed: {e}")),
        }
    });
}

/// Ends a machine whose owner is gone, then removes whatever is still there. The record goes
/// last, once its cgroups are empty: until then, the next sweep tries again.
fn end_machine(r: &Record) -> Vec<String> {
    let mut removed = Vec::new();
    // Read while nspawn lives: a record saved early does not name the snapshot yet.
    let snapshot = r.snapshot.clone().or_else(|| {
        r.nspawn
            .is_alive()
            .then(|| crate::cleanup::records::snapshot_of(r.nspawn.pid))
            .flatten()
    });
    if r.nspawn.is_alive() {
        stop_nspawn(r);
        removed.push(format!("machine {} (nspawn {})", r.name, r.nspawn.pid));
    }
    if let Some(unit) = r
        .unit
        .as_deref()
        .filter(|_| crate::host::probe::systemd_unit_loaded(&r.name))
    {
        let _ = std::process::Command::new("systemctl")
            .args(["stop", unit])
            .output();
        removed.push(format!("unit {unit}"));
    }
    // What nspawn did not take down (it was killed first, or before it could): the container
    // still runs, in the machine's cgroups.
    if r.leader.is_alive() {
        let _ = kill(Pid::from_raw(r.leader.pid as i32), Signal::SIGKILL);
    }
    let cgroups: Vec<PathBuf> = r.cgroups.iter().filter(|d| d.exists()).cloned().collect();
    if cgroups.iter().any(|d| cgroup::is_populated_dir(d)) {
        removed.push(format!("processes of {}", r.name));
    }
    if !cgroup::empty(&cgroups, cgroup::EMPTY_TIMEOUT) {
        crate::report::warning(
            Some(&r.name),
            format_args!("processes survive SIGKILL in {cgroups:?}"),
        );
        return removed;
    }
    if let Some(snapshot) = snapshot.as_deref().filter(|s| s.exists()) {
        if storage::remove_tree(snapshot).is_ok() {
            let _ = std::fs::remove_file(crate::cleanup::records::lock_of(snapshot));
            removed.push(format!("snapshot {}", snapshot.display()));
        }
    }
    let propagate = Path::new(PROPAGATE).join(&r.name);
    if propagate.exists() && storage::remove_tree(&propagate).is_ok() {
        removed.push(format!("{}", propagate.display()));
    }
    if !cgroup::destroy(&cgroups, cgroup::EMPTY_TIMEOUT) {
        return removed;
    }
    Record::remove(&r.name);
    removed.push(format!("record of {}", r.name));
    removed
}

/// Stops a machine's nspawn.
///
/// With the leader known, SIGKILL to it makes nspawn exit in 50-90 ms and remove the snapshot
/// itself. Without one, nspawn is still setting the container up, and may sit on a SIGTERM for
/// seconds: then everything in the machine's cgroups goes at once, nspawn included (it runs
/// in them), and the sweep removes the snapshot.
fn stop_nspawn(r: &Record) {
    if r.leader.is_alive() {
        let _ = kill(Pid::from_raw(r.leader.pid as i32), Signal::SIGKILL);
        if wait_gone(&r.nspawn, Duration::from_secs(3)) {
            return;
        }
    }
    let cgroups: Vec<PathBuf> = r.cgroups.iter().filter(|d| d.exists()).cloned().collect();
    cgroup::empty(&cgroups, cgroup::EMPTY_TIMEOUT);
    if r.nspawn.is_alive() {
        let _ = kill(Pid::from_raw(r.nspawn.pid as i32), Signal::SIGKILL);
        wait_gone(&r.nspawn, Duration::from_secs(5));
    }
}

fn wait_gone(process: &ProcessId, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while process.is_alive() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// `.#machine.*` snapshots in `dir` whose lock no nspawn holds.
fn stale_snapshots(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(".#machine.") || name.ends_with(".lck") {
            continue;
        }
        let lock = crate::cleanup::records::lock_of(&entry.path());
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < SNAPSHOT_GRACE);
        if is_locked(&lock) || (young && !lock.exists()) {
            continue;
        }
        if storage::remove_tree(&entry.path()).is_ok() {
            let _ = std::fs::remove_file(&lock);
            removed.push(format!("snapshot {}", entry.path().display()));
        }
    }
    removed
}

/// Whether some process holds a lock on `path` (nspawn takes an OFD write lock).
fn is_locked(path: &Path) -> bool {
    let Ok(file) = std::fs::File::options().read(true).write(true).open(path) else {
        return false;
    };
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_GETLK with a valid flock struct on an open fd.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    ret == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
}

/// Names of machines some process is running (`--machine=<name>` on a command line).
pub(crate) fn live_machine_names() -> Vec<String> {
    live_machines().into_iter().map(|(name, _)| name).collect()
}

/// Machines some process is running, with that process's PID.
fn live_machines() -> Vec<(String, u32)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)))
        .filter_map(|(pid, cmdline)| {
            let name = cmdline
                .split(|b| *b == 0)
                .find_map(|arg| arg.strip_prefix(b"--machine="))?;
            Some((String::from_utf8_lossy(name).into_owned(), pid))
        })
        .collect()
}

/// nspawn processes of ours with no record whose owner is dead (a record can be lost, e.g.
/// overwritten): asked to stop with SIGTERM, which lets nspawn remove its snapshot.
fn stale_processes(records: &[Record]) -> Vec<String> {
    let mut removed = Vec::new();
    for (name, pid) in live_machines() {
        let recorded = records.iter().any(|r| r.name == name) || recorded_elsewhere(pid, &name);
        if recorded || !is_orphan(&name, &[]) {
            continue;
        }
        let Some(process) = ProcessId::of(pid) else {
            continue;
        };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if !wait_gone(&process, Duration::from_secs(5)) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        removed.push(format!("machine {name} (nspawn {pid}, no record)"));
    }
    removed
}

/// Machines machined knows (systemd backend) that are ours, have no record and whose owner,
/// by the PID in their name, is gone.
fn stale_registrations(records: &[Record]) -> Vec<String> {
    if crate::host::probe::systemd_available().is_err() {
        return Vec::new();
    }
    let elsewhere: Vec<String> = live_machines()
        .into_iter()
        .filter(|(name, pid)| recorded_elsewhere(*pid, name))
        .map(|(name, _)| name)
        .collect();
    let Ok(out) = std::process::Command::new("machinectl")
        .args(["list", "--no-legend"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| is_orphan(name, &[]) && !records.iter().any(|r| r.name == *name))
        .filter(|name| !elsewhere.iter().any(|e| e == name))
        .filter(|name| {
            std::process::Command::new("machinectl")
                .args(["terminate", name])
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|name| format!("machine {name} (machined)"))
        .collect()
}

/// Whether nspawn `pid`, running machine `name`, belongs to a run under another run
/// directory that still holds its record (a machine kept there, say): that directory's own
/// sweep and `gc` decide about it, not one that cannot see its record.
fn recorded_elsewhere(pid: u32, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let prefix = format!("{}=", crate::host::run_dir::RUN_DIR_ENV);
    let Some(dir) = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
    else {
        return false;
    };
    let dir = Path::new(std::ffi::OsStr::from_bytes(dir));
    dir != crate::cleanup::records::run_dir()
        && dir.join("machines").join(format!("{name}.toml")).exists()
}

fn is_ours(name: &str) -> bool {
    name.starts_with("nspawn-")
}

/// Whether a machine name (`nspawn-<owner pid>-<id>`) is ours, not running, and its owner gone.
/// The owner check matters: a live run creates a machine's cgroup and propagate directory
/// before its nspawn has started, and those must not be swept from under it.
fn is_orphan(name: &str, live: &[String]) -> bool {
    let owner = name.split('-').nth(1).unwrap_or_default();
    // A zombie is dead: its parent may take its time to reap it.
    let owner_alive = owner
        .parse::<u32>()
        .ok()
        .and_then(ProcessId::of)
        .is_some_and(|p| p.is_alive());
    is_ours(name) && !owner_alive && !live.iter().any(|l| l == name)
}

fn stale_propagate_dirs(live: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(PROPAGATE) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| is_orphan(&e.file_name().to_string_lossy(), live))
        .filter(|e| storage::remove_tree(&e.path()).is_ok())
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Files in the records directory that are no record, of runs that were killed.
fn unreadable_records(files: Vec<(String, PathBuf)>, live: &[String]) -> Vec<String> {
    files
        .into_iter()
        .filter(|(machine, _)| is_orphan(machine, live))
        .filter(|(_, path)| std::fs::remove_file(path).is_ok())
        .map(|(_, path)| path.display().to_string())
        .collect()
}

/// Notify sockets (`<run dir>/notify/<machine>.notify`) of runs that were killed.
fn stale_notify_sockets(live: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(crate::cleanup::records::run_dir().join("notify")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".notify")
                .is_some_and(|machine| is_orphan(machine, live))
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Cgroups of machines whose owner is dead and that no nspawn runs, record or not: what is
/// still in one (a container whose nspawn was killed) is killed before it is removed.
fn stale_cgroups(live: &[String]) -> Vec<String> {
    let mut removed = Vec::new();
    for base in cgroup::own_in_every_hierarchy() {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(machine) = name.strip_prefix("nspawn-") else {
                continue;
            };
            let dir = entry.path();
            if !is_orphan(machine, live) {
                continue;
            }
            let populated = cgroup::is_populated_dir(&dir);
            if cgroup::destroy(std::slice::from_ref(&dir), cgroup::EMPTY_TIMEOUT) {
                let what = if populated { " and its processes" } else { "" };
                removed.push(format!("{}{what}", dir.display()));
            }
        }
    }
    removed
}

/// The files of warm keepers (`harness::warm`) that are gone: a keeper ended by a signal
/// leaves its share, which names it, and its log. A share whose keeper file is missing or
/// unreadable has no keeper to wait for, and goes too (without a word: nothing ran).
fn stale_warm_keepers() -> Vec<String> {
    let dir = crate::host::run_dir::run_dir().join("warm");
    let keeper = |key: &str| {
        std::fs::read_to_string(dir.join(format!("{key}.keeper")))
            .ok()
            .and_then(|text| toml::from_str::<ProcessId>(&text).ok())
    };
    let sets = FileSets {
        dir: &dir,
        exts: &["toml", "claims", "keeper", "log", "lock"],
        ownerless_are_stale: true,
    };
    sets.remove_stale(keeper, |key| {
        format!("warm machines' share {key} of a keeper that is gone")
    })
}

/// The files of machines shared across a nextest run's processes (`harness::nextest`) whose
/// run is over: each share's lock file names the run's process. A lock that names none is
/// being written, and is left.
fn stale_shares() -> Vec<String> {
    let dir = crate::host::run_dir::run_dir().join("shared");
    let run = |id: &str| {
        std::fs::read_to_string(dir.join(format!("{id}.lock")))
            .ok()
            .and_then(|text| text.parse::<ProcessId>().ok())
    };
    let sets = FileSets {
        dir: &dir,
        exts: &["toml", "users", "log", "tmp", "done", "lock"],
        ownerless_are_stale: false,
    };
    sets.remove_stale(run, |id| format!("nextest share {id} of a finished run"))
}

/// Sets of files `KEY.EXT` in a run directory, one per `KEY.lock`, each owned by a process.
struct FileSets<'a> {
    dir: &'a Path,
    /// Every extension of a set; `lock` last, so that a set is whole until its lock goes.
    exts: &'a [&'a str],
    /// Whether a set whose owner cannot be read is removed too.
    ownerless_are_stale: bool,
}

impl FileSets<'_> {
    /// Removes each set whose owner (`owner(KEY)`) is gone; returns `what(KEY)` for each
    /// removed set that had one.
    fn remove_stale(
        &self,
        owner: impl Fn(&str) -> Option<ProcessId>,
        what: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut removed = Vec::new();
        for lock in std::fs::read_dir(self.dir).into_iter().flatten().flatten() {
            let name = lock.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".lock") else {
                continue;
            };
            let owner = owner(key);
            let stale = match &owner {
                Some(process) => !process.is_alive(),
                None => self.ownerless_are_stale,
            };
            if !stale {
                continue;
            }
            for ext in self.exts {
                let _ = std::fs::remove_file(self.dir.join(format!("{key}.{ext}")));
            }
            if owner.is_some() {
                removed.push(what(key));
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `alive`, `dead` and `unowned`, each with a `.lock` and a `.log`, and a stray file.
    fn sets(dir: &Path) {
        for key in ["alive", "dead", "unowned"] {
            for ext in ["lock", "log"] {
                std::fs::write(dir.join(format!("{key}.{ext}")), "").unwrap();
            }
        }
        std::fs::write(dir.join("stray.log"), "").unwrap();
    }

    fn owner(key: &str) -> Option<ProcessId> {
        let me = ProcessId::current().unwrap();
        match key {
            "alive" => Some(me),
            // This PID with another start time: a process that is gone, its PID reused.
            "dead" => Some(ProcessId { start: 0, ..me }),
            _ => None,
        }
    }

    fn left(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_sets_of_owners_that_are_gone_are_removed_and_told() {
        for ownerless_are_stale in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            sets(dir.path());
            let sets = FileSets {
                dir: dir.path(),
                exts: &["log", "lock"],
                ownerless_are_stale,
            };
            let told = sets.remove_stale(owner, |key| format!("set {key}"));
            assert_eq!(told, ["set dead"]);
            let mut expected = vec!["alive.lock", "alive.log", "stray.log"];
            if !ownerless_are_stale {
                expected.extend(["unowned.lock", "unowned.log"]);
            }
            expected.sort();
            assert_eq!(
                left(dir.path()),
                expected,
                "ownerless_are_stale: {ownerless_are_stale}"
            );
        }
    }
}
