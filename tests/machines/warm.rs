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

#[test]
fn the_next_run_takes_a_warm_machine_and_the_keeper_leaves_nothing() {
    let bin = common::test_binary("suite_seed");
    let dir = common::scratch_dir();
    let (first_log, second_log) = (dir.path().join("first"), dir.path().join("second"));
    let first = run_suite(&bin, &first_log, "4", false);
    let booted_by_the_run = common::Events::read(&first_log).machines();
    assert!(!first.contains("took warm machine"), "{first}");

    // The keeper, started at the run's exit, writes its events where the run did.
    let warm = || {
        let events = common::Events::read(&first_log).machines();
        events.into_iter().find(|m| !booted_by_the_run.contains(m))
    };
    assert!(
        in_a_keeper_s_time(|| warm().is_some()),
        "no warm machine booted after the run"
    );
    let warm = warm().unwrap();
    // Ready, then published for the next run, unless the keeper ended first.
    let keepers = || common::processes_with_env("NSPAWN_WARM_KEEPER");
    in_a_keeper_s_time(|| published().contains(&warm) || keepers().is_empty());
    assert!(
        published().contains(&warm),
        "{warm} was not published: {}",
        published()
    );

    // Another user's run never sees this user's warm machines.
    let other_log = dir.path().join("other");
    let other = run_suite(&bin, &other_log, "4", true);
    assert!(!other.contains("took warm machine"), "{other}");

    let second = run_suite(&bin, &second_log, "4", false);
    assert!(
        second.contains(&format!("took warm machine {warm}")),
        "{second}"
    );
    let modules = common::Events::read(&second_log);
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

    // Nobody claims for 4 s: the keeper stops what it booted and exits.
    assert!(
        in_a_keeper_s_time(|| keepers().is_empty()),
        "warm keepers still running: {:?}",
        keepers()
    );
    let mut all = common::Events::read(&first_log).machines();
    for log in [&second_log, &other_log] {
        all.extend(common::Events::read(log).machines());
    }
    common::assert_nothing_left(&all);
}
