//! Warm machines across runs (`NSPAWN_WARM`): a run's exit starts a keeper that boots a
//! pristine machine for the next run; the next run's first module takes it instead of booting;
//! the keeper stops everything and exits once nobody claimed a machine for a while.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;

/// The seed-shaped suite (4 modules on bookworm), one test at a time, with warm machines
/// kept `warm` seconds and its events in `log`; by another user than this test's with
/// `other_user`.
fn run_suite(bin: &Path, log: &Path, warm: &str, other_user: bool) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("--test-threads=1")
        .env("NSPAWN_WARM", warm)
        .env("NSPAWN_EVENT_LOG", log)
        .env_remove("NSPAWN_QUIET");
    if other_user {
        if std::env::var_os("SUDO_UID").is_some() {
            for var in ["SUDO_UID", "SUDO_GID", "SUDO_USER", "NSPAWN_USER"] {
                cmd.env_remove(var);
            }
        } else {
            let (uid, gid) = common::probe_user();
            cmd.env("SUDO_UID", uid.to_string())
                .env("SUDO_GID", gid.to_string());
        }
    }
    // Under sudo, this process has dropped root: its child regains it, and drops again.
    nspawn::privs::start_as_root(&mut cmd);
    let out = cmd.output().unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    report
}

/// Whether `check` holds before a keeper's boots and stops could have taken their longest
/// (`NSPAWN_BOOT_TIMEOUT` for each of the suite's 4 machines, and its stops): never a measure
/// of speed, and long enough for an emulated VM.
fn in_a_keeper_s_time(mut check: impl FnMut() -> bool) -> bool {
    let boot = nspawn_runtime::settings::lenient().boot_timeout;
    let stop = nspawn_runtime::settings::lenient().stop_timeout;
    let deadline = Instant::now() + 4 * (boot + stop);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// What the warm keepers publish, all of it (their files are root's).
fn published() -> String {
    let _root = nspawn::privs::root().unwrap();
    let dir = nspawn_runtime::settings::lenient().run_dir.join("warm");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

/// The warm keepers of this test's runs: their processes (not the watchdogs and agents that
/// inherit the marker), by PID.
fn keepers() -> Vec<u32> {
    common::processes_with_env("NSPAWN_WARM_KEEPER")
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"--exact"))
        })
        .collect()
}

#[test]
fn the_next_run_takes_a_warm_machine_and_the_keeper_leaves_nothing() {
    let bin = common::test_binary("suite_seed");
    let dir = common::scratch_dir();
    let log = |name: &str| dir.path().join(name);
    // Long enough for any host to run the suite twice more: the keepers are ended below.
    let first = run_suite(&bin, &log("first"), "3600", false);
    let booted_by_the_run = common::Events::read(&log("first")).machines();
    assert!(!first.contains("took warm machine"), "{first}");

    // The keeper, started at the run's exit, writes its events where the run did.
    let warm = || {
        let events = common::Events::read(&log("first")).machines();
        events.into_iter().find(|m| !booted_by_the_run.contains(m))
    };
    assert!(
        in_a_keeper_s_time(|| warm().is_some()),
        "no warm machine booted after the run"
    );
    let warm = warm().unwrap();
    // Ready, then published for the next run, unless the keeper ended first.
    in_a_keeper_s_time(|| published().contains(&warm) || keepers().is_empty());
    assert!(
        published().contains(&warm),
        "{warm} was not published: {}",
        published()
    );

    // Another user's run never sees this user's warm machines.
    let other = run_suite(&bin, &log("other"), "3600", true);
    assert!(!other.contains("took warm machine"), "{other}");

    let second = run_suite(&bin, &log("second"), "3600", false);
    assert!(
        second.contains(&format!("took warm machine {warm}")),
        "{second}"
    );
    let modules = common::Events::read(&log("second"));
    assert!(
        ["paths", "commands", "files", "services"]
            .iter()
            .any(|m| modules
                .module_boots(&format!("suite_seed::{m}"))
                .contains(&warm)),
        "{:?}",
        modules.lines
    );
    assert!(
        !modules.spawned().iter().any(|(m, _)| *m == warm),
        "the run booted no machine of that name"
    );

    // `cargo nspawn gc --warm` ends this user's keepers: a signal, on which a keeper stops what
    // it holds, as any test process does.
    let ended = nspawn_runtime::harness::end_warm_keepers().unwrap();
    assert!(!ended.is_empty(), "no keeper of this user ended");
    // The other user's: this test's runs started them, and they are root's.
    let others = keepers();
    assert!(!others.is_empty(), "the other user's keeper was ended too");
    let root = nspawn::privs::root().unwrap();
    for pid in others {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    drop(root);
    assert!(
        in_a_keeper_s_time(|| keepers().is_empty()),
        "warm keepers still running after SIGTERM: {:?}",
        keepers()
    );

    // A keeper nobody takes from stops what it booted and exits once its idle time is over,
    // counted from when its machines are ready.
    run_suite(&bin, &log("idle"), "1", false);
    assert!(
        in_a_keeper_s_time(
            || !keepers().is_empty() || common::Events::read(&log("idle")).machines().len() > 4
        ),
        "no keeper after the last run"
    );
    assert!(
        in_a_keeper_s_time(|| keepers().is_empty()),
        "warm keepers still running: {:?}",
        keepers()
    );
    // A keeper that exits withdraws its share; a killed one's is swept (by its watchdog).
    assert!(
        in_a_keeper_s_time(|| published().is_empty()),
        "shares left: {}",
        published()
    );
    let mut all = Vec::new();
    for name in ["first", "other", "second", "idle"] {
        all.extend(common::Events::read(&log(name)).machines());
    }
    common::assert_nothing_left(&all);
}
