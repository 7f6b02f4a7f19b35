//! Module sharing under cargo-nextest, for real: the fixture suite run by `cargo nextest run`,
//! each test in its own process. A module's tests see one machine; a test killed by nextest's
//! timeout does not take the machine from its sibling; nothing is left when the run ends; two
//! runs at once do not share.
//!
//! The runs look at host-wide state (the shares under `/run/nspawn-rs/shared`), so this file's
//! tests take turns.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Events;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `cargo nextest run` of the fixture's tests matching `filter`, with `log` as event log.
fn nextest(filter: &str, log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["nextest", "run", "--test", "fixture", "--no-fail-fast"])
        .args(["-E", filter])
        .args(extra)
        .env("NSPAWN_EVENT_LOG", log)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    nspawn::privs::start_as_root(&mut cmd);
    cmd
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    let report = common::report(&out);
    (out, report)
}

/// Within 5 s of a run's end: nothing of its machines, no keeper, no share.
fn nothing_left(log: &Path) {
    let machines = Events::read(log).machines();
    let shared = nspawn_runtime::cleanup::records::run_dir().join("shared");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = common::leftovers(&machines, &common::chroots_dir());
        left.extend(
            common::processes_with_env("NSPAWN_KEEPER")
                .iter()
                .map(|p| format!("keeper {p}")),
        );
        left.extend(
            std::fs::read_dir(&shared)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| format!("share file {}", e.path().display())),
        );
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left 5 s after the run: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_module_shares_one_machine_across_nextest_processes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let (out, report) = run(&mut nextest("test(/^alpha::/)", &log, &[], &[]));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("5 passed"), "{report}");
    // Each test wrote the machine's name into it and checked that its siblings saw the same.
    let events = Events::read(&log);
    assert_eq!(events.module_boots("fixture::alpha").len(), 1, "{report}");
    assert_eq!(events.machines().len(), 1, "{report}");
    nothing_left(&log);
}

#[test]
fn a_keeper_lets_go_once_its_modules_tests_are_done() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let filter = "test(/^alpha::/) | test(=zz_keepers_let_go_when_their_module_is_done)";
    let extra = ["--run-ignored", "all", "--test-threads", "1"];
    // Idle time far beyond the last test's wait: only the module being done lets go.
    let idle = [("NSPAWN_NEXTEST_IDLE", "3600")];
    let (out, report) = run(&mut nextest(filter, &log, &extra, &idle));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("6 passed"), "{report}");
    nothing_left(&log);
}

#[test]
fn a_timed_out_test_does_not_stop_the_shared_machine() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let extra = ["--profile", "sharing-test", "--test-threads", "2"];
    let hang = [("FIXTURE_SHARED_HANG", "1")];
    let (out, report) = run(&mut nextest(
        "test(/^shared_timeout::/)",
        &log,
        &extra,
        &hang,
    ));
    assert!(
        !out.status.success(),
        "the hanging test times out: {report}"
    );
    assert!(report.contains("TIMEOUT"), "{report}");
    assert!(report.contains("1 passed"), "the sibling passes: {report}");
    assert_eq!(
        Events::read(&log)
            .module_boots("fixture::shared_timeout")
            .len(),
        1,
        "{report}"
    );
    nothing_left(&log);
}

#[test]
fn two_runs_at_once_do_not_share() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch_dir();
    let logs = [dir.path().join("first"), dir.path().join("second")];
    let children: Vec<_> = logs
        .iter()
        .map(|log| {
            nextest("test(/^alpha::/)", log, &[], &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", common::report(&out));
    }
    let machines: Vec<Vec<String>> = logs
        .iter()
        .map(|l| Events::read(l).module_boots("fixture::alpha"))
        .collect();
    assert_eq!(machines[0].len(), 1, "{machines:?}");
    assert_eq!(machines[1].len(), 1, "{machines:?}");
    assert_ne!(machines[0], machines[1], "each run has its own machine");
    for log in &logs {
        nothing_left(log);
    }
}

/// Under sudo, as `cargo nspawn init`'s runner has it: the test processes and the keeper (which
/// runs set-ups, test code) drop to the invoking user, and sharing works the same.
#[test]
fn sharing_works_under_sudo() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (uid, gid) = common::probe_user();
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let sudo = [
        ("SUDO_UID", uid.as_str()),
        ("SUDO_GID", gid.as_str()),
        ("SUDO_USER", common::PROBE_USER),
        ("FIXTURE_EXPECT_UID", uid.as_str()),
    ];
    let (out, report) = run(&mut nextest("test(/^alpha::/)", &log, &[], &sudo));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("5 passed"), "{report}");
    assert_eq!(
        Events::read(&log).module_boots("fixture::alpha").len(),
        1,
        "{report}"
    );
    nothing_left(&log);
}
