//! Warm machines across runs (`NSPAWN_WARM`): a run's exit starts a keeper that boots a
//! pristine machine for the next run; the next run's first module takes it instead of booting;
//! the keeper stops everything and exits once nobody claimed a machine for a while.

use std::path::Path;
use std::process::Command;

use crate::common;

/// The seed-shaped suite (4 modules on bookworm), one test at a time, with warm machines
/// kept `warm` seconds and its events in `log`.
fn run_suite(bin: &Path, log: &Path, warm: &str) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("--test-threads=1")
        .env("NSPAWN_WARM", warm)
        .env("NSPAWN_EVENT_LOG", log)
        .env_remove("NSPAWN_QUIET");
    // Under sudo, this process has dropped root: its child regains it, and drops again.
    nspawn::privs::start_as_root(&mut cmd);
    let out = cmd.output().unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    report
}

#[test]
fn the_next_run_takes_a_warm_machine_and_the_keeper_leaves_nothing() {
    let bin = common::test_binary("suite_seed");
    let dir = common::scratch_dir();
    let (first_log, second_log) = (dir.path().join("first"), dir.path().join("second"));
    let first = run_suite(&bin, &first_log, "4");
    let booted_by_the_run = common::Events::read(&first_log).machines();
    assert!(!first.contains("took warm machine"), "{first}");

    // The keeper, started at the run's exit, writes its events where the run did.
    let warm = || {
        let events = common::Events::read(&first_log).machines();
        events.into_iter().find(|m| !booted_by_the_run.contains(m))
    };
    assert!(
        common::eventually(|| warm().is_some()),
        "no warm machine booted after the run"
    );
    let warm = warm().unwrap();

    let second = run_suite(&bin, &second_log, "4");
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
    let keepers = || common::processes_with_env("NSPAWN_WARM_KEEPER");
    let mut gone = false;
    for _ in 0..6 {
        if common::eventually(|| keepers().is_empty()) {
            gone = true;
            break;
        }
    }
    assert!(gone, "warm keepers still running: {:?}", keepers());
    let mut all = common::Events::read(&first_log).machines();
    all.extend(common::Events::read(&second_log).machines());
    common::assert_nothing_left(&all);
}
