//! The kill-test harness: the fixture suite is started, its machines come up, and then it is
//! ended by SIGINT, SIGTERM, SIGKILL, an abort (what `panic = "abort"` does) or cargo-nextest's
//! timeout (SIGTERM, then SIGKILL after the grace period). After each, nothing may be left
//! within 5 s: no process (nspawn, the machine's agent, a command still running inside),
//! snapshot, overlay, propagate dir, cgroup or record.
//!
//! Every path runs `NSPAWN_KILL_REPEAT` times (default 3) on both storage modes.
//!
//! Two more harnesses aim at the moments a machine is least tracked: a signal to the test
//! process 0, 5, 20 or 50 ms after an nspawn starts (the container half set up, no leader
//! known, nspawn's own handlers maybe not installed), and `kill -9` of nspawn itself (the
//! container loses its supervisor), then of the test process.

mod common;

use std::os::unix::process::CommandExt;
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
    _dir: common::Scratch,
}

fn start(end: End, chroots: &Path) -> Case {
    start_with(end, chroots, false)
}

/// [`start`], with the test process started with SIGINT ignored when `sigint_ignored` (as a
/// run started in the background by a non-interactive shell is).
fn start_with(end: End, chroots: &Path, sigint_ignored: bool) -> Case {
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
    if sigint_ignored {
        // SAFETY: one async-signal-safe call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            });
        }
    }
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
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    Case {
        child,
        log,
        sleep,
        _dir: dir,
    }
}

impl Case {
    /// The end of what the test process wrote to stderr, for a failure's message.
    fn stderr_tail(&self) -> String {
        let path = self.log.with_file_name("stderr");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
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
            return Err(format!(
                "{end:?}: the machines never came up; the test process said:\n{}",
                case.stderr_tail()
            ));
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
    wait_ended(&mut case, &format!("{end:?}"))?;
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

/// Waits for the case's process to end after it was signalled.
fn wait_ended(case: &mut Case, what: &str) -> Result<(), String> {
    let ended = Instant::now() + Duration::from_secs(60);
    while case.child.try_wait().unwrap().is_none() {
        if Instant::now() > ended {
            let _ = case.child.kill();
            return Err(format!("{what}: the test process did not end"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Within 5 s of the test process's end, nothing of any machine it started is left, and no
/// process of its own (a child it forked for a moment, say) outlives it.
fn nothing_left_of_spawned(case: &Case, chroots: &Path, what: &str) -> Result<(), String> {
    let machines: Vec<String> = Events::read(&case.log)
        .spawned()
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = common::leftovers(&machines, chroots);
        left.extend(
            common::processes_with_env_value("NSPAWN_EVENT_LOG", case.log.as_os_str())
                .iter()
                .map(|p| format!("a process of the test binary (pid {p})")),
        );
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > gone_by {
            return Err(format!("{what}: left after 5 s: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (polling every millisecond) until the case's first nspawn has started, and returns
/// the machine's name and nspawn's PID.
fn first_spawn(case: &mut Case, what: &str) -> Result<(String, u32), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(first) = Events::read(&case.log).spawned().into_iter().next() {
            return Ok(first);
        }
        if Instant::now() > deadline {
            let _ = case.child.kill();
            return Err(format!("{what}: no nspawn ever started"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `signal` to the test process `delay` after its first nspawn started.
fn early_signal(
    signal: Signal,
    delay: Duration,
    chroots: &Path,
    sigint_ignored: bool,
) -> Result<(), String> {
    let what = format!(
        "{signal} at {} ms{}",
        delay.as_millis(),
        if sigint_ignored {
            ", SIGINT ignored at start"
        } else {
            ""
        }
    );
    let mut case = start_with(End::Sigkill, chroots, sigint_ignored);
    first_spawn(&mut case, &what)?;
    std::thread::sleep(delay);
    kill(Pid::from_raw(case.child.id() as i32), signal).unwrap();
    wait_ended(&mut case, &what)?;
    nothing_left_of_spawned(&case, chroots, &what)
}

/// `kill -9` of a running machine's nspawn, then of the test process.
fn nspawn_then_owner_killed(chroots: &Path) -> Result<(), String> {
    let what = "kill -9 nspawn, then the test process";
    let mut case = start(End::Sigkill, chroots);
    let (machine, nspawn) = first_spawn(&mut case, what)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !machines(&case.log).contains(&machine) {
        if Instant::now() > deadline {
            let _ = case.child.kill();
            return Err(format!("{what}: {machine} never came up"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(nspawn as i32), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(case.child.id() as i32), Signal::SIGKILL).unwrap();
    wait_ended(&mut case, what)?;
    nothing_left_of_spawned(&case, chroots, what)
}

fn every_early_signal(chroots: &Path, label: &str) {
    let n = repeat();
    let mut failures = Vec::new();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
        for ms in [0, 5, 20, 50] {
            let mut passed = 0;
            for i in 0..n {
                // Every other run starts as in the background: the runtime's own handler,
                // installed before the first boot, must catch the signal all the same.
                let ignored = i % 2 == 1;
                match early_signal(signal, Duration::from_millis(ms), chroots, ignored) {
                    Ok(()) => passed += 1,
                    Err(e) => failures.push(e),
                }
            }
            eprintln!("early signal, {label}: {signal} at {ms} ms {passed}/{n}");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
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

#[test]
fn nothing_survives_an_early_signal_on_a_plain_directory() {
    every_early_signal(&common::chroots_dir(), "plain directory");
}

#[test]
fn nothing_survives_an_early_signal_on_btrfs() {
    let _root = nspawn::privs::root().unwrap();
    let copy = common::BtrfsCopy::new();
    every_early_signal(&copy.mnt(), "btrfs");
}

/// The container outlives a SIGKILLed nspawn; the watchdog must take it down when the test
/// process dies too.
#[test]
fn nothing_survives_a_killed_nspawn_and_test_process() {
    let _root = nspawn::privs::root().unwrap();
    let copy = common::BtrfsCopy::new();
    let n = 20;
    let mut failures = Vec::new();
    for i in 0..n {
        let chroots = if i % 2 == 0 {
            common::chroots_dir()
        } else {
            copy.mnt()
        };
        if let Err(e) = nspawn_then_owner_killed(&chroots) {
            failures.push(e);
        }
    }
    eprintln!(
        "kill -9 nspawn, then the test process: {}/{n}",
        n - failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
