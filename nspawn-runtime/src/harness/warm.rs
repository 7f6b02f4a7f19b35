//! Warm machines across runs (`NSPAWN_WARM=SECONDS`): after a run, a *warm keeper* per kind
//! of module machine the run booted holds a pristine machine of that kind, booted as the
//! module's would be, and hands it to the next run's first test that needs one, so that no
//! boot is on that test's path.
//!
//! A kind is everything a boot depends on: the invoking user, the chroot's tree (its
//! identity, so a rebuilt chroot is a new kind), the workspace, the network, the backend and
//! user-namespace settings, and this runtime's version; its hash is the `<key>` of the warm
//! keeper's files under `/run/nspawn-rs/warm/`, a directory only root may enter, so another
//! user's run never sees them.
//!
//! The keeper is the test binary of the run, re-executed at its exit to run the module's
//! first test in keeper mode (as nextest's keepers are, see `nextest`): its machines are in its
//! records, its watchdog and its exit handlers, and they take the host's slots like any. It
//! holds as many pristine machines as the run needed of that kind (at most two per CPU), and
//! publishes them in `<key>.toml`. A test process that needs a machine of that kind takes one
//! under `<key>.lock`: it removes it from the share, adds itself and the machine to
//! `<key>.claims`, and attaches to it. The keeper then boots another pristine machine, and
//! stops the claimed one once its claimer has exited. A machine is handed out once, before any
//! test used it. The keeper stops its pristine machines and exits when nobody claimed one for
//! `NSPAWN_WARM` seconds, or when the chroot's tree changed.
//!
//! A claimed machine is attached, not owned: it cannot be powered off, rebooted or kept
//! (`NSPAWN_KEEP` turns claims off), and it stops when the process that claimed it exits.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::test_info::{Scope, TestInfo};
use crate::host::privs::ThreadRoot;
use crate::host::process::ProcessId;
use crate::host::run_dir::private_dir;
use crate::machine::{Machine, Published};

/// The marker of a warm keeper: its kind's key.
const KEEPER: &str = "NSPAWN_WARM_KEEPER";
/// How long the keeper says it may live, in seconds: `NSPAWN_WARM` of the run that started it.
const KEEPER_FOR: &str = "NSPAWN_WARM_KEEPER_FOR";
/// How many pristine machines the keeper holds: as many as the run needed of its kind.
const KEEPER_HOLDS: &str = "NSPAWN_WARM_KEEPER_HOLDS";

/// What a warm keeper publishes: itself and its pristine machines.
#[derive(Debug, Serialize, Deserialize)]
struct Share {
    keeper: ProcessId,
    machines: Vec<Published>,
}

/// The machines taken since the keeper last looked, and who took them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Claims {
    claims: Vec<Claim>,
}

/// Who took which machine.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    claimer: ProcessId,
    machine: String,
}

/// The kinds of module machines this process needed, each with a test that boots one and how
/// many it needed: at exit, a keeper is started for each that has none.
static USED: Mutex<Vec<(String, &'static TestInfo, usize)>> = Mutex::new(Vec::new());

/// Whether warm machines serve this test's boot: a module's single machine on a network of
/// its own (a zone's members are the run's to know), warm machines on, no machine kept for
/// debugging.
fn serves(info: &TestInfo) -> bool {
    let settings = crate::settings::lenient();
    let networks = info.networks();
    let own_network = networks.also_on.is_empty()
        && !matches!(networks.first, nspawn_config::NetworkSpec::Zone { .. });
    info.scope == Scope::Module
        && info.machines.is_empty()
        && own_network
        && !settings.warm.is_zero()
        && matches!(settings.keep, crate::settings::Keep::Never)
}

/// The key of `info`'s kind of machine, or `None` when its chroot is not built (a warm
/// machine never stands in for a build on demand).
fn key(info: &TestInfo) -> Option<String> {
    let tree = crate::chroot::locate(info.chroot, Some(info.manifest_dir.as_ref())).ok()?;
    let meta = std::fs::metadata(&tree).ok()?;
    let settings = crate::settings::lenient();
    let user = crate::host::privs::target_user().ok().flatten();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        user,
        &tree,
        meta.dev(),
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
        .hash(&mut hasher);
    (info.chroot, info.manifest_dir, info.networks().to_string()).hash(&mut hasher);
    format!("{:?} {:?}", settings.backend, settings.private_users).hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    Some(format!("{:016x}", hasher.finish()))
}

fn path(key: &str, ext: &str) -> crate::Result<PathBuf> {
    Ok(private_dir("warm")?.join(format!("{key}.{ext}")))
}

fn lock(key: &str, how: FlockArg) -> crate::Result<Flock<File>> {
    Ok(crate::host::run_dir::lock_file(&path(key, "lock")?, how)?)
}

fn read<T: for<'de> Deserialize<'de>>(key: &str, ext: &str) -> Option<T> {
    let path = path(key, ext).ok()?;
    let _root = ThreadRoot::acquire().ok()?;
    toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write<T: Serialize>(key: &str, ext: &str, value: &T) -> crate::Result<()> {
    let text = toml::to_string(value)
        .map_err(|e| crate::Error::io("serializing a warm share", std::io::Error::other(e)))?;
    // A temporary name of each file's own: the keeper file is written without the lock.
    Ok(crate::host::run_dir::write_whole(
        &path(key, ext)?,
        &path(key, &format!("{ext}.tmp"))?,
        &text,
    )?)
}

fn remove(key: &str, ext: &str) {
    if let (Ok(path), Ok(_root)) = (path(key, ext), ThreadRoot::acquire()) {
        let _ = std::fs::remove_file(path);
    }
}

/// A warm machine of `info`'s kind, taken for this process, if a keeper has one ready; and,
/// warm or not, the kind noted for a keeper to start at this process's exit.
pub(super) fn claim(info: &'static TestInfo) -> Option<Machine> {
    if !serves(info) || keeper_key().is_some() {
        return None;
    }
    let key = key(info)?;
    note_used(&key, info);
    let started = Instant::now();
    let machine = take(&key)?;
    crate::report::announce(&format!(
        "took warm machine {} ({}) for {} in {:.3} s",
        machine.name(),
        info.chroot,
        info.module,
        started.elapsed().as_secs_f64()
    ));
    Some(machine)
}

/// Takes a published machine of kind `key`, under its lock.
fn take(key: &str) -> Option<Machine> {
    let _lock = lock(key, FlockArg::LockExclusive).ok()?;
    let mut share: Share = read(key, "toml")?;
    if !share.keeper.is_alive() {
        return None;
    }
    let claimer = ProcessId::current()?;
    let mut claims: Claims = read(key, "claims").unwrap_or_default();
    while !share.machines.is_empty() {
        let published = share.machines.remove(0);
        // One that stopped meanwhile is the keeper's to notice.
        if let Ok(machine) = Machine::attach(&published) {
            claims.claims.push(Claim {
                claimer,
                machine: published.name,
            });
            // Taken off the list before it is claimed: a machine is used only once both are
            // written, and one written off but not claimed stays the keeper's, unused.
            let recorded = write(key, "toml", &share).and_then(|()| write(key, "claims", &claims));
            if let Err(e) = recorded {
                crate::report::warning(
                    Some(machine.name()),
                    format_args!("the warm machine is left to its keeper, and one is booted: {e}"),
                );
                return None;
            }
            return Some(machine);
        }
    }
    None
}

fn note_used(key: &str, info: &'static TestInfo) {
    let mut used = USED.lock().unwrap_or_else(|p| p.into_inner());
    if used.is_empty() {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(start_keepers) };
    }
    match used.iter_mut().find(|(k, _, _)| k == key) {
        Some((_, _, count)) => *count += 1,
        None => used.push((key.to_string(), info, 1)),
    }
}

/// At exit: a keeper for each kind used that has none alive.
extern "C" fn start_keepers() {
    let used = std::mem::take(&mut *USED.lock().unwrap_or_else(|p| p.into_inner()));
    for (key, info, count) in used {
        let alive = read::<ProcessId>(&key, "keeper").is_some_and(|k| k.is_alive());
        if !alive {
            if let Err(e) = start_keeper(&key, info, count) {
                crate::report::warning(None, format_args!("no warm machine for the next run: {e}"));
            }
        }
    }
}

fn start_keeper(key: &str, info: &TestInfo, count: usize) -> crate::Result<()> {
    let most = std::thread::available_parallelism().map_or(2, |n| 2 * n.get());
    let env = [
        (
            KEEPER_FOR,
            crate::settings::lenient().warm.as_secs().to_string(),
        ),
        (KEEPER_HOLDS, count.min(most).to_string()),
    ];
    if let Some(id) = super::keeper::start(KEEPER, key, info, &path(key, "log")?, &env)? {
        write(key, "keeper", &id)?;
    }
    Ok(())
}

/// In a warm keeper, its kind's key.
pub(crate) fn keeper_key() -> Option<String> {
    crate::host::helper::role(KEEPER)
}

/// Keeps warm machines of `info`'s kind (see the module's notes). Never returns.
pub(crate) fn keep(info: &'static TestInfo, key: &str) -> ! {
    super::keeper::exit(&format!("warm keeper {key}"), serve(info, key))
}

/// A machine handed out, until its claimer exits.
struct Lent {
    machine: Machine,
    claimer: ProcessId,
}

fn serve(info: &'static TestInfo, key: &str) -> crate::Result<()> {
    let me = ProcessId::current().ok_or_else(|| {
        crate::Error::io("reading this process", std::io::Error::other("no /proc"))
    })?;
    let number = |var: &str| std::env::var(var).ok().and_then(|s| s.parse::<u64>().ok());
    let idle_for = Duration::from_secs(number(KEEPER_FOR).unwrap_or(60));
    let holds = number(KEEPER_HOLDS).map_or(1, |n| n.max(1) as usize);
    // Claims an earlier keeper of this kind left are no claims on this one's machines.
    remove(key, "claims");
    let mut pristine: Vec<Machine> = Vec::new();
    let mut lent: Vec<Lent> = Vec::new();
    let mut active = Instant::now();
    let mut current = true;
    let mut checked = Instant::now();
    let mut cannot_boot = false;
    let mut published: Vec<String> = Vec::new();
    loop {
        // Reading the workspace's declarations takes a while: the tree is looked at anew
        // every second.
        let looked = checked.elapsed() >= Duration::from_secs(1);
        if looked {
            current = self::key(info).as_deref() == Some(key);
            checked = Instant::now();
        }
        let wanted =
            current && !cannot_boot && active.elapsed() < idle_for && pristine.len() < holds;
        // Only on a slot spare enough for a boot ahead, with one more left free than giving
        // slots back asks for (below): never in the place of a machine a test waits for, and
        // two keepers never boot and stop in turn.
        let spare = match wanted {
            true => crate::cleanup::slots::try_acquire_spare(1)?,
            false => None,
        };
        let wanted = spare.is_some();
        if let Some(slot) = spare {
            match super::boot::boot_one(info, "the next run (warm)", Some(slot), None) {
                // The idle time counts from when the machines are ready: a boot may take
                // longer than it (an emulated host).
                Ok(machine) => {
                    pristine.push(machine);
                    active = Instant::now();
                }
                // The machines lent out still serve their runs.
                Err(e) => {
                    eprintln!("nspawn warm keeper {key}: no more warm machines: {e}");
                    cannot_boot = true;
                }
            }
        }
        if !wanted {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _lock = lock(key, FlockArg::LockExclusive)?;
        let claims: Claims = read(key, "claims").unwrap_or_default();
        remove(key, "claims");
        for claim in claims.claims {
            if let Some(i) = pristine.iter().position(|m| m.name() == claim.machine) {
                let machine = pristine.remove(i);
                lent.push(Lent {
                    machine,
                    claimer: claim.claimer,
                });
                active = Instant::now();
            }
        }
        // Dropping a machine stops it.
        lent.retain(|l| l.claimer.is_alive() && l.machine.is_running());
        pristine.retain(Machine::is_running);
        // Other runs need the host's slots: the newest pristine machine gives its back. Looked
        // at with the tree: counting free slots locks each for a moment.
        if looked && !pristine.is_empty() && crate::cleanup::slots::under_pressure()? {
            pristine.pop();
        }
        if !lent.is_empty() {
            active = Instant::now();
        }
        if !current || active.elapsed() >= idle_for {
            remove(key, "toml");
            published.clear();
            pristine.clear();
            if lent.is_empty() {
                remove(key, "keeper");
                return Ok(());
            }
            continue;
        }
        let names: Vec<String> = pristine.iter().map(|m| m.name().to_string()).collect();
        if names != published {
            let machines = pristine
                .iter()
                .map(Machine::publish)
                .collect::<crate::Result<_>>()?;
            write(
                key,
                "toml",
                &Share {
                    keeper: me,
                    machines,
                },
            )?;
            published = names;
        }
    }
}

/// Ends the warm keepers of the invoking user (`SUDO_UID`, or root's own without sudo), as a
/// signal ends a test process: each stops its machines and exits. Waits for them, up to the
/// stop timeout each; returns what it ended. Needs root (the keepers are root's).
pub fn end_keepers() -> crate::Result<Vec<String>> {
    let user = crate::host::privs::target_user()
        .ok()
        .flatten()
        .map(|(uid, _)| uid);
    let dir = private_dir("warm")?;
    let _root = ThreadRoot::acquire()?;
    let mut ended = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".keeper") else {
            continue;
        };
        let Some(keeper) = read::<ProcessId>(key, "keeper").filter(ProcessId::is_alive) else {
            continue;
        };
        if keeper_user(keeper.pid) != user {
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(keeper.pid as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            continue;
        }
        let deadline = Instant::now() + crate::settings::lenient().stop_timeout;
        while keeper.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        ended.push(format!("warm keeper {key} (pid {})", keeper.pid));
    }
    Ok(ended)
}

/// The user a keeper runs tests for: its `SUDO_UID` (or `NSPAWN_USER`'s), `None` for root's.
fn keeper_user(pid: u32) -> Option<u32> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let var = |name: &str| {
        environ.split(|b| *b == 0).find_map(|entry| {
            let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(String::from_utf8_lossy(value).into_owned())
        })
    };
    let uid = var("NSPAWN_USER")
        .and_then(|spec| spec.split_once(':').map(|(u, _)| u.to_string()))
        .or_else(|| var("SUDO_UID"))?;
    uid.parse().ok()
}
