//! A cgroup of its own for every nspawn process.
//!
//! Without systemd on the host, `systemd-nspawn --keep-unit` puts the container under the
//! *caller's* cgroup (`payload/`, `supervisor/`). Two machines of one process would then share
//! `payload/system.slice/...`, and nothing would let us kill one machine completely. So each
//! nspawn child moves itself into `<our cgroup>/nspawn-<name>` in every hierarchy that nspawn
//! uses (the unified one and `name=systemd`) before it execs, and the tree is removed when
//! the machine is gone.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::host::limits::Limits;

/// The cgroup directories of one machine, one per hierarchy.
#[derive(Debug)]
pub struct MachineCgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<CString>,
}

impl MachineCgroup {
    /// Creates `nspawn-<name>` below our own cgroup in each hierarchy. Must run as root; a
    /// hierarchy that refuses is skipped (the machine still works, sharing our cgroup).
    pub fn create(name: &str) -> MachineCgroup {
        Self::build(name, None)
    }

    /// As [`MachineCgroup::create`], plus `nspawn-<name>` in the `memory` and `pids`
    /// hierarchies (cgroup v1) with `limits`; a machine joins them with the rest.
    pub(crate) fn with_limits(name: &str, limits: Limits) -> MachineCgroup {
        Self::build(name, Some(limits))
    }

    fn build(name: &str, limits: Option<Limits>) -> MachineCgroup {
        let mut dirs = limits.map_or_else(Vec::new, |l| limited(name, l));
        let v1_devices = limits.and_then(|_| device_policy(name));
        let devices_by_bpf = limits.is_some() && v1_devices.is_none();
        dirs.extend(v1_devices);
        for base in own_cgroups() {
            let dir = base.join(format!("nspawn-{name}"));
            match make_dir(&dir) {
                Ok(()) => dirs.push(dir),
                Err(e) => tracing::debug!("no cgroup {}: {e}", dir.display()),
            }
        }
        if devices_by_bpf {
            device_program(&dirs);
        }
        let procs = dirs
            .iter()
            .filter_map(|d| {
                CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
            })
            .collect();
        MachineCgroup { dirs, procs }
    }

    /// A hook for a forked child that moves it into the cgroups. It makes only raw system
    /// calls, as it runs between fork and exec.
    pub(crate) fn child_hook(&self) -> impl Fn() + Send + Sync + 'static {
        let procs = self.procs.clone();
        move || enter(&procs)
    }

    /// Has `cmd`'s process move itself into the cgroups between fork and exec (with
    /// [`child_hook`](Self::child_hook)), as the runtime does with nspawn: for tests that
    /// start nspawn or a process of a machine by hand.
    pub fn enter_before_exec(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let enter = self.child_hook();
        // SAFETY: the hook makes only raw system calls, which is what runs between fork and
        // exec may do.
        unsafe {
            cmd.pre_exec(move || {
                enter();
                Ok(())
            });
        }
    }

    /// The unified (cgroup v2) directory, which has `cgroup.kill`.
    pub(crate) fn unified(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.join("cgroup.kill").exists())
            .map(PathBuf::as_path)
    }

    /// Kills every process of the machine (cgroup v2 `cgroup.kill`). Returns false when the
    /// kernel lacks it.
    pub(crate) fn kill_all(&self) -> bool {
        self.unified().is_some_and(kill_v2)
    }

    /// Removes the cgroup trees, deepest first. Only empty cgroups can be removed; a busy one
    /// is left and reported.
    ///
    /// What is still inside (the machine's agent, which exits on its own once the leader has,
    /// or anything that escaped the container's stop) is killed first: the machine is gone, and
    /// a populated cgroup could never be removed.
    pub fn remove(&self) {
        destroy(&self.dirs, EMPTY_TIMEOUT);
    }

    /// The cgroup directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// How long [`empty`] waits for killed processes to leave.
pub(crate) const EMPTY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Kills every process in the cgroups at `dirs` and below, and waits up to `timeout` for them
/// to be gone. Returns whether they are empty.
///
/// `cgroup.kill` where a directory has it: the kernel kills the whole subtree at once, forks
/// in flight included. Elsewhere every member gets SIGKILL, again until none is left, since a
/// process may fork between the read and the kill.
pub(crate) fn empty(dirs: &[PathBuf], timeout: std::time::Duration) -> bool {
    let populated = || dirs.iter().any(|d| is_populated_dir(d));
    let deadline = std::time::Instant::now() + timeout;
    while populated() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        for dir in dirs {
            if !kill_v2(dir) {
                kill_members(dir);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

fn kill_v2(dir: &Path) -> bool {
    let kill = dir.join("cgroup.kill");
    kill.exists() && std::fs::write(kill, "1").is_ok()
}

/// Cgroups `nspawn-<name>` with `limits`, next to ours in the hierarchies that enforce them.
/// Best effort: a hierarchy we cannot write is left out, with a warning.
fn limited(name: &str, limits: Limits) -> Vec<PathBuf> {
    let Ok(ours) = memberships(std::process::id()) else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for (mount, base) in ours {
        let (file, value) = if mount.has("memory") {
            ("memory.limit_in_bytes", limits.memory)
        } else if mount.has("pids") {
            ("pids.max", limits.tasks)
        } else {
            continue;
        };
        let dir = base.join(format!("nspawn-{name}"));
        match make_dir(&dir).and_then(|()| std::fs::write(dir.join(file), value.to_string())) {
            Ok(()) => dirs.push(dir),
            Err(e) => {
                crate::report::warning(None, format_args!("no limits in {}: {e}", dir.display()));
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
    if dirs.len() < 2 {
        unlimited_once();
    }
    dirs
}

/// The devices a machine may use and make, as nspawn asks of systemd for a registered
/// machine (`DevicePolicy=closed` with `/dev/net/tun` and the ptys): the standard pseudo
/// devices, the tty and pty masters, tun, and the ptys themselves (used, never made).
const DEVICES_ALLOWED: &[&str] = &[
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:2 rwm",    // ptmx
    "c 10:200 rwm", // net/tun
    "c 136:* rw",   // pts
];

/// Where there is no `devices` hierarchy (cgroup v2 only), the same policy as a BPF program
/// on the machine's unified cgroup (see [`crate::host::device_bpf`]).
fn device_program(dirs: &[PathBuf]) {
    let Some(unified) = dirs.iter().find(|d| d.join("cgroup.kill").exists()) else {
        return no_device_policy(Path::new("(no cgroup v2 directory)"), "none made");
    };
    if let Err(e) = crate::host::device_bpf::attach(unified, DEVICES_ALLOWED) {
        no_device_policy(unified, &e.to_string());
    }
}

/// Says once per process that machines have no device policy, and why.
fn no_device_policy(dir: &Path, why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::report::announce(&format!(
            "machines run without a device policy here ({}: {why}): a privileged machine's \
             root may make and open any device node",
            dir.display()
        ))
    });
}

/// `nspawn-<name>` in the cgroup v1 `devices` hierarchy, next to ours, with
/// [`DEVICES_ALLOWED`] and nothing else. Without it a privileged machine may make and open
/// any device node, the host's disks included. (Without that hierarchy, see
/// [`device_program`].)
fn device_policy(name: &str) -> Option<PathBuf> {
    let ours = memberships(std::process::id()).ok()?;
    let (_, base) = ours.into_iter().find(|(mount, _)| mount.has("devices"))?;
    let dir = base.join(format!("nspawn-{name}"));
    let applied = make_dir(&dir)
        .and_then(|()| std::fs::write(dir.join("devices.deny"), "a"))
        .and_then(|()| {
            DEVICES_ALLOWED
                .iter()
                .try_for_each(|rule| std::fs::write(dir.join("devices.allow"), rule))
        });
    match applied {
        Ok(()) => Some(dir),
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            no_device_policy(&dir, &e.to_string());
            None
        }
    }
}

/// Says once per process that machines run without their memory or task limit (a host with
/// only cgroup v2, where the controllers are not delegated to us, or hierarchies we cannot
/// write): a runaway test can then take the host's memory.
fn unlimited_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::report::announce(
            "machines run without a memory or task limit here (no writable cgroup v1 memory \
             and pids hierarchies); use the systemd backend for limits",
        )
    });
}

/// Creates a cgroup directory, or finds it there already.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn enter(procs: &[CString]) {
    for procs in procs {
        // SAFETY: open/write/close on a valid C string and a static buffer.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0\n".as_ptr().cast(), 2);
                libc::close(fd);
            }
        }
    }
}

/// SIGKILL to every process in the cgroup at `dir` or below (for hierarchies without
/// `cgroup.kill`).
fn kill_members(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: a plain kill of a member of a machine that is being removed.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        stack.extend(subdirs(&d));
    }
}

/// Whether a process is in the cgroup at `dir` or below.
pub(crate) fn is_populated_dir(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let busy =
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty());
        if busy {
            return true;
        }
        stack.extend(subdirs(&d));
    }
    false
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Empties the cgroups at `dirs` ([`empty`]) and removes them, deepest first, again until
/// they are gone or `timeout` has passed: a process may still join one after it was emptied
/// (an agent that was starting as its machine was killed). Returns whether they are gone; what
/// is left is logged.
pub(crate) fn destroy(dirs: &[PathBuf], timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        empty(
            dirs,
            deadline.saturating_duration_since(std::time::Instant::now()),
        );
        let left: Vec<(&PathBuf, std::io::Error)> = dirs
            .iter()
            .filter_map(|d| remove_tree(d).err().map(|e| (d, e)))
            .collect();
        if left.is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            for (dir, e) in left {
                crate::report::warning(
                    None,
                    format_args!("could not remove cgroup {}: {e}", dir.display()),
                );
            }
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Removes a cgroup directory and its children, deepest first; one already gone is fine.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for sub in subdirs(dir) {
        remove_tree(&sub)?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Our own cgroup directory in the unified and `name=systemd` hierarchies.
pub(crate) fn own_cgroups() -> Vec<PathBuf> {
    own_where(Mount::tracks)
}

/// Our own cgroup directory in every hierarchy, where machines' cgroups are created: the
/// sweep looks for leftovers of crashed runs there.
pub(crate) fn own_in_every_hierarchy() -> Vec<PathBuf> {
    own_where(|_| true)
}

fn own_where(wanted: impl Fn(&Mount) -> bool) -> Vec<PathBuf> {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mounts = all_mounts();
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = mounts.iter().find(|m| m.serves(controllers) && wanted(m))?;
            // "/../.." : we were moved into a container's cgroup namespace without moving our
            // cgroup (a command run in a machine); the namespace's root is as near as we get.
            if path.starts_with("/..") {
                return Some(mount.path.clone());
            }
            Some(mount.path.join(path.trim_start_matches('/')))
        })
        .collect()
}

/// The cgroup directories of process `pid` on this host, one per hierarchy, controllers
/// included. The file is read as if a hostile process had named its cgroups: a line that does
/// not parse, a hierarchy listed twice or missing, or a path that climbs out of the mount is
/// an error, never a directory elsewhere.
pub(crate) fn of_process(pid: u32) -> std::io::Result<Vec<PathBuf>> {
    Ok(memberships(pid)?.into_iter().map(|(_, dir)| dir).collect())
}

/// [`of_process`], with the hierarchy of each directory.
fn memberships(pid: u32) -> std::io::Result<Vec<(Mount, PathBuf)>> {
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let ours = std::fs::read_to_string("/proc/self/cgroup")?;
    let ids = |text: &str| -> Vec<String> {
        let mut ids: Vec<String> = text
            .lines()
            .map(|l| l.split(':').next().unwrap_or("").to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut unique = ids(&theirs);
    unique.dedup();
    if ids(&theirs) != ids(&ours) || unique.len() != ids(&theirs).len() {
        return Err(bad_cgroup(pid, "its hierarchies are not this host's"));
    }
    let mounts = all_mounts();
    theirs
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                return Err(bad_cgroup(pid, "a line does not parse"));
            };
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(bad_cgroup(pid, "a path leaves its hierarchy"));
            }
            let mount = mounts
                .iter()
                .find(|m| m.serves(controllers))
                .ok_or_else(|| bad_cgroup(pid, "a hierarchy is not mounted here"))?;
            let dir = mount.path.join(path.trim_start_matches('/'));
            if !dir.join("cgroup.procs").exists() {
                return Err(bad_cgroup(pid, "a cgroup does not exist"));
            }
            Ok((mount.clone(), dir))
        })
        .collect()
}

fn bad_cgroup(pid: u32, why: &str) -> std::io::Error {
    std::io::Error::other(format!("the cgroups of process {pid} are unusable: {why}"))
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone)]
struct Mount {
    path: PathBuf,
    /// Empty for the unified hierarchy; else the mount options (controllers, `name=`).
    options: Vec<String>,
}

impl Mount {
    /// Whether this is the hierarchy a `/proc/PID/cgroup` line with `controllers` names.
    fn serves(&self, controllers: &str) -> bool {
        if controllers.is_empty() {
            return self.options.is_empty();
        }
        !self.options.is_empty() && controllers.split(',').all(|c| self.has(c))
    }

    /// Whether a cgroup v1 hierarchy has this controller or `name=` option.
    fn has(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }

    /// The hierarchies nspawn tracks processes in: the unified one and `name=systemd`.
    fn tracks(&self) -> bool {
        self.options.is_empty() || self.has("name=systemd")
    }
}

/// Every cgroup mount of this mount namespace.
fn all_mounts() -> Vec<Mount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let path = PathBuf::from(pre.split(' ').nth(4)?);
            let mut fields = post.split(' ');
            let fstype = fields.next()?;
            let options = fields.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => Some(Mount {
                    path,
                    options: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    path,
                    options: options.split(',').map(str::to_string).collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cgroups_are_found_in_every_hierarchy() {
        let dirs = of_process(std::process::id()).unwrap();
        let lines = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(dirs.len(), lines.lines().count());
        for dir in dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
            let me = std::process::id().to_string();
            assert!(procs.lines().any(|p| p == me), "{}", dir.display());
        }
    }

    #[test]
    fn our_cgroups_exist() {
        for dir in own_cgroups() {
            assert!(dir.join("cgroup.procs").exists(), "{}", dir.display());
        }
    }
}
