//! Never leak, never hang: concurrent runs, sweeping what dead runs left, the machine cap,
//! and machines kept for debugging.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::Events;
use nspawn::Machine;
use nspawn_runtime::cleanup::records::{ProcessId, Record};
use nspawn_runtime::cleanup::sweep;
use nspawn_runtime::testing::MachineCgroup;

fn run(bin: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Output {
    let mut cmd = Command::new(bin);
    nspawn::privs::start_as_root(&mut cmd);
    cmd.args(args)
        .env("NSPAWN_EVENT_LOG", log)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn two_concurrent_runs_both_pass_and_neither_sweeps_the_other() {
    let dir = common::scratch_dir();
    let bin = common::fixture_binary();
    let logs = [dir.path().join("a"), dir.path().join("b")];
    let runs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = logs
            .iter()
            .map(|log| s.spawn(|| run(&bin, &[], &[], log)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (out, log) in runs.iter().zip(&logs) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let ev = Events::read(log);
        let mut stopped = ev.stopped();
        let mut machines = ev.machines();
        stopped.sort();
        machines.sort();
        assert_eq!(
            stopped, machines,
            "each run stopped its own machines itself"
        );
        common::assert_nothing_left(&machines);
    }
}

#[test]
fn a_low_cap_is_never_exceeded_and_does_not_deadlock() {
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let bin = common::test_binary("suite8x5");
    let out = run(
        &bin,
        &["--test-threads=4"],
        &[("NSPAWN_MAX_MACHINES", "2")],
        &log,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("40 passed"));
    let ev = Events::read(&log);
    assert!(ev.max_concurrent() <= 2, "{:?}", ev.lines);
    assert!(ev.machines().len() >= 8, "every module booted");
    common::assert_nothing_left(&ev.machines());
}

#[test]
fn failed_machines_are_kept_when_asked_and_removed_by_gc() {
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let out = run(
        &common::fixture_binary(),
        &["alpha", "beta"],
        &[("FIXTURE_FAIL", "1"), ("NSPAWN_KEEP", "failed")],
        &log,
    );
    assert_eq!(out.status.code(), Some(101));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ev = Events::read(&log);
    let [alpha] = &ev.module_boots("fixture::alpha")[..] else {
        panic!("{:?}", ev.lines)
    };
    let [beta] = &ev.module_boots("fixture::beta")[..] else {
        panic!("{:?}", ev.lines)
    };
    assert!(
        stderr.contains(&format!("kept machine {alpha}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cargo nspawn shell {alpha}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 kept running for debugging"),
        "the summary does not say none is left: {stderr}"
    );
    assert!(
        !common::processes_of(alpha).is_empty(),
        "the failed module's machine runs on"
    );
    // A run under another run directory does not see the kept machine's record: its sweep
    // at start must leave the machine alone all the same.
    let other = dir.path().join("other-run");
    let second = run(
        &common::fixture_binary(),
        &["beta::one", "--exact"],
        &[("NSPAWN_RUN_DIR", other.to_str().unwrap())],
        &dir.path().join("events-other"),
    );
    assert!(second.status.success(), "{}", common::report(&second));
    assert!(
        !common::processes_of(alpha).is_empty(),
        "a run under another run directory stopped the kept machine"
    );
    assert_eq!(
        common::leftovers_of(beta),
        Vec::<String>::new(),
        "the passing module's machine is gone"
    );

    let _root = nspawn::privs::root().unwrap();
    let plain = sweep::sweep(&sweep::Options::default()).unwrap();
    assert!(
        !plain.iter().any(|l| l.contains(alpha.as_str())),
        "an ordinary sweep keeps it: {plain:?}"
    );
    let removed = sweep::sweep(&sweep::Options {
        kept: true,
        ..Default::default()
    })
    .unwrap();
    assert!(
        removed.iter().any(|l| l.contains(alpha.as_str())),
        "{removed:?}"
    );
    common::assert_nothing_left(std::slice::from_ref(alpha));
}

fn orphan_alive(child: &std::process::Child) -> bool {
    ProcessId::of(child.id()).is_some_and(|p| p.is_alive())
}

/// A raw nspawn machine, as a crashed run would have left it, with a record naming an owner
/// that is dead. Planted names carry PID 4194305, above the kernel's limit: never alive.
fn plant_orphan(name: &str) -> std::process::Child {
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let id = ProcessId::of(c.id()).unwrap();
        c.wait().unwrap();
        id
    };
    let cgroup = MachineCgroup::create(name);
    let chroot = common::chroots_dir().join("bookworm");
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args([
        "--quiet",
        "--boot",
        "--register=no",
        "--keep-unit",
        "--volatile=overlay",
        "--read-only",
    ])
    .arg(format!("--machine={name}"))
    .arg(format!("--directory={}", chroot.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    cgroup.enter_before_exec(&mut cmd);
    let child = cmd.spawn().unwrap();
    Record {
        name: name.into(),
        owner: dead,
        nspawn: ProcessId::of(child.id()).unwrap(),
        leader: ProcessId { pid: 0, start: 0 },
        chroot,
        snapshot: None,
        cgroups: cgroup.dirs().to_vec(),
        unit: None,
        kept: false,
    }
    .save()
    .unwrap();
    child
}

#[test]
fn the_sweep_removes_leftovers_of_dead_owners_only() {
    let live = Machine::start("bookworm").unwrap();
    let _root = nspawn::privs::root().unwrap();
    let mut orphan = plant_orphan("nspawn-4194305-orphan01");
    let chroots = common::scratch_dir();
    let stale = chroots.path().join(".#machine.stale");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(chroots.path().join(".#.#machine.stale.lck"), "").unwrap();
    // A snapshot whose lock is held belongs to a live nspawn: it stays.
    let held = chroots.path().join(".#machine.held");
    std::fs::create_dir(&held).unwrap();
    let lock = std::fs::File::create(chroots.path().join(".#.#machine.held.lck")).unwrap();
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: 0,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: an OFD lock on an open file, as nspawn takes.
    let locked = unsafe { libc::fcntl(lock.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(locked, 0);
    let propagate = Path::new("/run/systemd/nspawn/propagate/nspawn-4194305-stale02");
    std::fs::create_dir_all(propagate).unwrap();
    let cgroups = MachineCgroup::create("nspawn-4194305-stale03");

    let removed = sweep::sweep(&sweep::Options {
        chroot_dirs: vec![chroots.path().into()],
        kept: false,
    })
    .unwrap();
    let text = removed.join("\n");
    // Tests of this binary run fixture processes meanwhile, and each sweeps when it starts:
    // a planted leftover may be gone before our sweep looks. It must be gone either way.
    assert!(
        text.contains("machine nspawn-4194305-orphan01") || !orphan_alive(&orphan),
        "{text}"
    );
    assert!(
        text.contains(".#machine.stale"),
        "only this sweep knows that directory: {text}"
    );
    orphan.wait().unwrap();
    assert_eq!(
        common::leftovers_of("nspawn-4194305-orphan01"),
        Vec::<String>::new()
    );
    assert!(!stale.exists() && !propagate.exists());
    assert!(cgroups.dirs().iter().all(|d| !d.exists()));
    assert!(held.exists(), "a locked snapshot is not touched");
    assert!(
        live.is_running(),
        "the machine of a live run is not touched"
    );
    assert!(!text.contains(live.name()), "{text}");
    assert_eq!(live.sh("echo alive").unwrap(), "alive\n");
}

/// A crashed run whose nspawn died first leaves the container's processes in the machine's
/// cgroups, and may leave no record: the sweep finds such a cgroup by its name, kills what is
/// in it and removes it.
#[test]
fn the_sweep_empties_populated_orphan_cgroups_without_a_record() {
    let _root = nspawn::privs::root().unwrap();
    // The other tests of this binary sweep too, and the children of one of them sweep when
    // they start: an orphan cgroup that is still empty can go before the process joins it.
    let (cgroup, mut inside) = (0..20)
        .find_map(|_| orphan_with_a_process("nspawn-4194305-orphan04"))
        .expect("a process stayed in the orphan cgroup until the sweep");
    let removed = sweep::sweep(&sweep::Options::default()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(status) = inside.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            inside.kill().unwrap();
            panic!("the process in the orphan cgroup survived the sweep: {removed:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{removed:?}"
    );
    assert!(cgroup.dirs().iter().all(|d| !d.exists()), "{removed:?}");
}

/// Cgroup `name` in each hierarchy, with a process in all of them; `None` if another sweep
/// removed the cgroup before the process was in (that process is then ended).
fn orphan_with_a_process(name: &str) -> Option<(MachineCgroup, std::process::Child)> {
    let cgroup = MachineCgroup::create(name);
    assert!(!cgroup.dirs().is_empty(), "no cgroup could be created");
    let mut cmd = Command::new("sleep");
    cmd.arg("600.4194305");
    cgroup.enter_before_exec(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let joined = cgroup.dirs().iter().all(|d| {
        std::fs::read_to_string(d.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|p| p == child.id().to_string()))
    });
    if joined {
        return Some((cgroup, child));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// A record a killed process left half written (or its temporary file) names a machine whose
/// owner is dead: the sweep removes it, as it cannot be read to do more.
#[test]
fn the_sweep_removes_unreadable_records_of_dead_owners() {
    let _root = nspawn::privs::root().unwrap();
    let dir = Path::new("/run/nspawn-rs/machines");
    std::fs::create_dir_all(dir).unwrap();
    let empty = dir.join("nspawn-4194305-junk01.toml");
    let tmp = dir.join(".nspawn-4194305-junk02.toml.tmp");
    // Killed after writing it whole, before the rename: a readable record under a temporary
    // name, which only its own path removes.
    let whole = dir.join(".nspawn-4194305-junk03.toml.tmp");
    std::fs::write(&empty, "").unwrap();
    std::fs::write(&tmp, "name = ").unwrap();
    let dead = "pid = 4194305\nstart = 1\n";
    std::fs::write(
        &whole,
        format!(
            "name = \"nspawn-4194305-junk03\"\nchroot = \"/nonexistent\"\ncgroups = []\n\
             [owner]\n{dead}[nspawn]\n{dead}[leader]\n{dead}"
        ),
    )
    .unwrap();
    let removed = sweep::sweep(&sweep::Options::default()).unwrap();
    // Fixture processes of this binary sweep too, and may have removed them first.
    assert!(
        !empty.exists() && !tmp.exists() && !whole.exists(),
        "{removed:?}"
    );
}
