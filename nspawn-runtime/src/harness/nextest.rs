//! Module sharing under cargo-nextest, which runs each test in a process of its own.
//!
//! The first test process of a run that needs a module's machine (or group) starts a
//! *keeper*: the same test binary, running that one test in keeper mode (`NSPAWN_KEEPER`), in
//! a session of its own. The keeper boots the machines as a module's first test would (slot,
//! set-up, events), publishes them in `/run/nspawn-rs/shared/<id>.toml`, and owns them: they
//! are in its records, its watchdog and its exit handlers. Later test processes attach to
//! them ([`Machine::attach`]) and talk to them through agents of their own. `<id>` is a hash of
//! the nextest run, the test binary and the module's key, so two runs never share.
//!
//! While a test uses the machines it holds a shared lock on `<id>.users`. The keeper stops
//! them when the nextest process that runs the tests has exited, or when nobody has held that
//! lock for `NSPAWN_NEXTEST_IDLE` seconds (default 30), and exits. A timed-out test process
//! that nextest kills takes its agent with it, not the machines. `<id>.lock` orders attaching
//! and the keeper's last look, so that nobody attaches to machines about to stop.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::boot::Group;
use super::test_info::TestInfo;
use crate::host::privs::ThreadRoot;
use crate::host::process::ProcessId;
use crate::host::run_dir::private_dir;
use crate::machine::{Machine, Published};

/// The marker of a keeper: the share's id.
const KEEPER: &str = "NSPAWN_KEEPER";
/// The nextest process (`pid start`), for the keeper to watch.
const RUN_PROCESS: &str = "NSPAWN_KEEPER_RUN";
/// How long a keeper waits for its machines to boot and be set up, at most.
const KEEPER_START: Duration = Duration::from_secs(600);

/// What a keeper publishes.
#[derive(Debug, Serialize, Deserialize)]
struct Share {
    keeper: ProcessId,
    /// The machines, in the order of the test's parameters; none if the boot failed.
    machines: Vec<Published>,
    /// Why the machines could not be booted or set up.
    failed: Option<String>,
}

/// Whether module machines are shared across this nextest run's processes: under nextest,
/// unless `NSPAWN_NEXTEST_SHARE=0`.
pub(crate) fn active() -> bool {
    std::env::var_os("NEXTEST_RUN_ID").is_some() && crate::settings::lenient().nextest_share
}

/// The id of a test's share: its run, its binary and its module's key.
fn share_id(info: &TestInfo) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::env::var("NEXTEST_RUN_ID")
        .unwrap_or_default()
        .hash(&mut hasher);
    std::env::current_exe().ok().hash(&mut hasher);
    super::sharing::Key::of(info).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn path(id: &str, ext: &str) -> crate::Result<PathBuf> {
    Ok(private_dir("shared")?.join(format!("{id}.{ext}")))
}

fn lock(path: &std::path::Path, how: FlockArg) -> crate::Result<Flock<File>> {
    Ok(crate::host::run_dir::lock_file(path, how)?)
}

/// Writes the run's process into a new lock file: the sweep removes a share's files once
/// that process is gone (see `cleanup::sweep`).
fn mark_run(lock: &Flock<File>) {
    use std::io::Write;
    let empty = lock.metadata().is_ok_and(|m| m.len() == 0);
    if let (true, Some(run)) = (empty, run_process()) {
        let mut file: &File = lock;
        let _ = writeln!(file, "{run}");
    }
}

fn read_share(id: &str) -> Option<Share> {
    let path = path(id, "toml").ok()?;
    let _root = ThreadRoot::acquire().ok()?;
    toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A test's use of machines a keeper owns: the machines, and the lock that says they are
/// in use. Dropped when the test is done: it then says so in the share's `.done` file, for
/// the keeper to stop the machines once every test of the module is (see [`all_done`]).
pub(crate) struct Attached {
    pub machines: Group,
    _users: Flock<File>,
    id: String,
    test: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        use std::io::Write;
        let Ok(done) = path(&self.id, "done") else {
            return;
        };
        let Ok(_root) = ThreadRoot::acquire() else {
            return;
        };
        // One short line per write, in append mode: lines of tests ending at once never mix.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(done);
        if let Ok(mut file) = file {
            let _ = file.write_all(format!("{}\n", self.test).as_bytes());
        }
    }
}

/// The machines of `info`'s module in this nextest run, starting their keeper if this test
/// is the first to need them.
pub(crate) fn attach(info: &'static TestInfo) -> Result<Attached, String> {
    let id = share_id(info);
    let fail = |e: crate::Error| e.to_string();
    let _attaching =
        lock(&path(&id, "lock").map_err(fail)?, FlockArg::LockExclusive).map_err(fail)?;
    mark_run(&_attaching);
    let share = match read_share(&id).filter(|s| s.keeper.is_alive()) {
        Some(share) => share,
        None => start_keeper(info, &id)?,
    };
    if let Some(why) = share.failed {
        return Err(why);
    }
    let machines = share
        .machines
        .iter()
        .map(Machine::attach)
        .collect::<crate::Result<Group>>()
        .map_err(fail)?;
    let users = lock(&path(&id, "users").map_err(fail)?, FlockArg::LockShared).map_err(fail)?;
    Ok(Attached {
        machines,
        _users: users,
        id,
        test: info.test_name(),
    })
}

/// Starts the keeper of share `id` and waits for what it publishes.
fn start_keeper(info: &'static TestInfo, id: &str) -> Result<Share, String> {
    let log = path(id, "log").map_err(|e| e.to_string())?;
    let env: Vec<(&str, String)> = run_process()
        .map(|run| (RUN_PROCESS, run.to_string()))
        .into_iter()
        .collect();
    let keeper_id =
        super::keeper::start(KEEPER, id, info, &log, &env).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + KEEPER_START;
    loop {
        // Only this keeper's: a dead one's share may still be there until it is replaced.
        if let Some(share) = read_share(id).filter(|s| Some(s.keeper) == keeper_id) {
            return Ok(share);
        }
        if !keeper_id.is_some_and(|k| k.is_alive()) || Instant::now() > deadline {
            // The log is in a directory only root may enter.
            let _root = ThreadRoot::acquire();
            return Err(format!(
                "the keeper of module {}'s machines under nextest ended without them; its log {}:\n{}",
                info.module,
                log.display(),
                crate::host::console::tail(&log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The nextest process this test process runs under: the nearest ancestor called so (a
/// runner such as `sudo -E` may stand between).
fn run_process() -> Option<ProcessId> {
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..8 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() == "cargo-nextest" || comm.trim() == "nextest" {
            return ProcessId::of(pid);
        }
        pid = crate::host::process::parent_of(pid)?;
    }
    None
}

/// In a keeper process (see the module's notes), the share's id.
pub(crate) fn keeper_id() -> Option<String> {
    crate::host::helper::role(KEEPER)
}

/// Keeps the machines of `info`'s module for the nextest run: boots them, publishes them,
/// and stops them when the run ends or nobody has used them for a while. Never returns.
pub(crate) fn keep(info: &'static TestInfo, id: &str) -> ! {
    super::keeper::exit(&format!("keeper {id}"), serve(info, id))
}

fn serve(info: &'static TestInfo, id: &str) -> crate::Result<()> {
    let me = ProcessId::current().ok_or_else(|| {
        crate::Error::io(
            "reading this process",
            std::io::Error::other("no /proc/self"),
        )
    })?;
    let booted = super::sharing::boot_for_module(info, None);
    let share = match &booted {
        Ok(machines) => Share {
            keeper: me,
            machines: machines
                .iter()
                .map(Machine::publish)
                .collect::<crate::Result<_>>()?,
            failed: None,
        },
        Err(why) => Share {
            keeper: me,
            machines: Vec::new(),
            failed: Some(why.to_string()),
        },
    };
    publish(id, &share)?;
    // A failure stays published for the module's other tests while the run lasts.
    let machines = booted.unwrap_or_default();
    let run_over = wait_for_the_end(info, id, &machines);
    for machine in machines {
        machine.stop()?;
    }
    if !run_over {
        remove_lock_when_the_run_ends(id);
    }
    Ok(())
}

/// Waits, with no machine left, for the run to end, then removes the share's lock file, which
/// a test may wait on while the run lasts (a retried test starts a keeper again).
fn remove_lock_when_the_run_ends(id: &str) {
    let Some(run) = std::env::var(RUN_PROCESS)
        .ok()
        .and_then(|v| v.parse::<ProcessId>().ok())
    else {
        return;
    };
    while run.is_alive() {
        std::thread::sleep(Duration::from_millis(200));
    }
    if let (Ok(lock), Ok(_root)) = (path(id, "lock"), ThreadRoot::acquire()) {
        let _ = std::fs::remove_file(lock);
    }
}

fn publish(id: &str, share: &Share) -> crate::Result<()> {
    let text = toml::to_string(share)
        .map_err(|e| crate::Error::io("serializing a share", std::io::Error::other(e)))?;
    Ok(crate::host::run_dir::write_whole(
        &path(id, "toml")?,
        &path(id, "tmp")?,
        &text,
    )?)
}

fn remove(id: &str) -> crate::Result<()> {
    let _root = ThreadRoot::acquire()?;
    for ext in ["toml", "users", "log", "done"] {
        let _ = std::fs::remove_file(path(id, ext)?);
    }
    Ok(())
}

/// Returns once the run has ended, a machine is gone, every test of the module is done, or
/// nobody has used them for the idle time, with the share removed while nobody was
/// attaching; whether the run has ended.
fn wait_for_the_end(info: &TestInfo, id: &str, machines: &[Machine]) -> bool {
    let run = std::env::var(RUN_PROCESS)
        .ok()
        .and_then(|v| v.parse::<ProcessId>().ok());
    let idle_for = crate::settings::lenient().nextest_idle;
    let mut idle_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let used = in_use(id);
        if used {
            idle_since = Instant::now();
        }
        let run_over = run.is_some_and(|r| !r.is_alive());
        let gone = machines.iter().any(|m| !m.is_running());
        let idle = !used && (idle_since.elapsed() >= idle_for || all_done(info, id));
        if (run_over || gone || idle) && withdrawn(id, run_over) {
            return run_over;
        }
    }
}

/// Removes the share if nobody attaches or uses it at this moment; once the run is over, its
/// lock file too (while the run lasts, a test may wait on that very file).
fn withdrawn(id: &str, run_over: bool) -> bool {
    let Ok(Ok(_attaching)) = path(id, "lock").map(|p| lock(&p, FlockArg::LockExclusiveNonblock))
    else {
        return false;
    };
    if in_use(id) || remove(id).is_err() {
        return false;
    }
    if run_over {
        if let (Ok(lock), Ok(_root)) = (path(id, "lock"), ThreadRoot::acquire()) {
            let _ = std::fs::remove_file(lock);
        }
    }
    true
}

/// Whether every test of `info`'s module that nextest can run (not `#[ignore]`d) is done: its
/// machines will not be asked for again, and holding them would only keep other tests
/// waiting for a slot. A run that filters some out ends its share after the idle time.
fn all_done(info: &TestInfo, id: &str) -> bool {
    let done = {
        let Ok(_root) = ThreadRoot::acquire() else {
            return false;
        };
        path(id, "done")
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let key = super::sharing::Key::of(info);
    super::test_info::registered()
        .filter(|t| super::sharing::Key::of(t) == key && !t.ignored)
        .all(|t| done.lines().any(|l| l == t.test_name()))
}

/// Whether a test holds the users lock.
fn in_use(id: &str) -> bool {
    !matches!(
        path(id, "users").map(|p| lock(&p, FlockArg::LockExclusiveNonblock)),
        Ok(Ok(_))
    )
}
