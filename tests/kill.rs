//! The kill-test harness: the fixture suite is started, its machines come up, and then it is
//! ended by SIGINT, SIGTERM, SIGKILL, an abort (what `panic = "abort"` does) or cargo-nextest's
//! timeout (SIGTERM, then SIGKILL after the grace period). After each, nothing may be left
//! within 5 s: no process (nspawn, the machine's agent, a command still running inside),
//! snapshot, overlay, propagate dir, cgroup or record.
//!
//! Every path runs `NSPAWN_KILL_REPEAT` times (default 3) on both storage modes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Events;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Sigint,
    Sigterm,
    Sigkill,
    Abort,
    NextestTimeout,
}

const ENDS: [End; 5] = [
    End::Sigint,
    End::Sigterm,
    End::Sigkill,
    End::Abort,
    End::NextestTimeout,
];

fn repeat() -> usize {
    std::env::var("NSPAWN_KILL_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

struct Case {
    child: Child,
    log: PathBuf,
    /// The argument of the `sleep` the fixture runs inside a machine, unique to the case.
    sleep: String,
    _dir: tempfile::TempDir,
}

fn start(end: End, chroots: &Path) -> Case {
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let mut cmd = match end {
        End::NextestTimeout => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut c = Command::new(cargo);
            c.args([
                "nextest",
                "run",
                "--profile",
                "kill-test",
                "--test",
                "fixture",
                "--no-fail-fast",
            ])
            .args(["-E", "test(hangs_when_asked)"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
            c
        }
        End::Abort => {
            let mut c = Command::new(common::fixture_binary());
            c.arg("crash").env("FIXTURE_ABORT", "1");
            c
        }
        _ => {
            let mut c = Command::new(common::fixture_binary());
            c.arg("slow");
            c
        }
    };
    nspawn::privs::start_as_root(&mut cmd);
    static CASES: AtomicUsize = AtomicUsize::new(0);
    let sleep = format!(
        "600.{}{}",
        std::process::id(),
        CASES.fetch_add(1, Ordering::SeqCst)
    );
    let child = cmd
        .env("FIXTURE_HANG", "1")
        .env("FIXTURE_SLEEP", &sleep)
        .env("NSPAWN_EVENT_LOG", &log)
        .env("NSPAWN_CHROOTS_DIR", chroots)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Case {
        child,
        log,
        sleep,
        _dir: dir,
    }
}

fn machines(log: &Path) -> Vec<String> {
    Events::read(log).machines()
}

/// One run of one path; `Err` says what was left or what went wrong.
fn run_case(end: End, chroots: &Path) -> Result<(), String> {
    let mut case = start(end, chroots);
    let expected = if end == End::Abort { 1 } else { 2 };
    let deadline = Instant::now() + Duration::from_secs(120);
    while machines(&case.log).len() < expected {
        if Instant::now() > deadline {
            let _ = case.child.kill();
            return Err(format!("{end:?}: the machines never came up"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the tests reach their hang (or abort): one of them in a command inside its machine.
    while end != End::Abort && common::processes_with_arg(&case.sleep).is_empty() {
        if Instant::now() > deadline {
            let _ = case.child.kill();
            return Err(format!("{end:?}: the command inside never started"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = Pid::from_raw(case.child.id() as i32);
    match end {
        End::Sigint => kill(pid, Signal::SIGINT).unwrap(),
        End::Sigterm => kill(pid, Signal::SIGTERM).unwrap(),
        End::Sigkill => kill(pid, Signal::SIGKILL).unwrap(),
        End::Abort | End::NextestTimeout => {}
    }
    let ended = Instant::now() + Duration::from_secs(60);
    while case.child.try_wait().unwrap().is_none() {
        if Instant::now() > ended {
            let _ = case.child.kill();
            return Err(format!("{end:?}: the test process did not end"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let machines = machines(&case.log);
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = common::leftovers(&machines, chroots);
        left.extend(
            common::processes_with_arg(&case.sleep)
                .iter()
                .map(|p| format!("command `sleep {}` (pid {p})", case.sleep)),
        );
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > gone_by {
            return Err(format!("{end:?}: left after 5 s: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn every_path(chroots: &Path, label: &str) {
    let n = repeat();
    let mut failures = Vec::new();
    for end in ENDS {
        let mut passed = 0;
        for _ in 0..n {
            match run_case(end, chroots) {
                Ok(()) => passed += 1,
                Err(e) => failures.push(e),
            }
        }
        eprintln!("kill harness, {label}: {end:?} {passed}/{n}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn nothing_survives_the_test_process_on_a_plain_directory() {
    every_path(&common::chroots_dir(), "plain directory");
}

#[test]
fn nothing_survives_the_test_process_on_btrfs() {
    let _root = nspawn::privs::root().unwrap();
    let copy = common::BtrfsCopy::new();
    every_path(&copy.mnt(), "btrfs");
}
