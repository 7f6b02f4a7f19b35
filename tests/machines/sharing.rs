//! Machines shared per module, scopes, failures and exit cleanup, observed by running the
//! fixture suite (`tests/fixture`) and reading the runtime's event log.

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Events;

struct Run {
    output: Output,
    events: Events,
    /// The fixture process's PID.
    pid: u32,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// The run's output, once it is known to have passed, `n` tests of it.
    fn passed(&self, n: usize) -> String {
        let out = self.stdout();
        assert!(self.output.status.success(), "{out}");
        assert!(out.contains(&format!("{n} passed")), "{out}");
        out
    }
}

fn fixture(args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf, common::Scratch) {
    let dir = common::scratch_dir();
    let log = dir.path().join("events");
    let mut cmd = Command::new(common::fixture_binary());
    nspawn::privs::start_as_root(&mut cmd);
    let child = cmd
        .args(args)
        .env("NSPAWN_EVENT_LOG", &log)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, log, dir)
}

fn run_fixture(args: &[&str], env: &[(&str, &str)]) -> Run {
    let (child, log, _dir) = fixture(args, env);
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    Run {
        output,
        events: Events::read(&log),
        pid,
    }
}

/// What is there of the set-up layers of the fixture process `pid`: their directories
/// (`.layers/<pid>-<id>`) and mounts. Other tests' runs may have theirs meanwhile.
fn layers_of(pid: u32) -> Vec<String> {
    // `.layers` is root's alone: under sudo, read it as root.
    let _root = nspawn::privs::root().unwrap();
    let prefix = format!("{pid}-");
    let mut left: Vec<String> = std::fs::read_dir(common::chroots_dir().join(".layers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().display().to_string())
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    left.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&format!("/.layers/{prefix}")))
            .map(String::from),
    );
    left
}

#[test]
fn a_whole_run_boots_once_per_module_and_stops_each_machine_after_its_last_test() {
    let run = run_fixture(&[], &[]);
    assert!(run.output.status.success(), "{}", run.stdout());
    let ev = &run.events;
    for module in [
        "fixture::alpha",
        "fixture::beta",
        "fixture::slow",
        "fixture::slow2",
        "fixture::crash",
        "fixture::shared_timeout",
    ] {
        assert_eq!(ev.module_boots(module).len(), 1, "{module}: {:?}", ev.lines);
    }
    assert_eq!(
        ev.test_boots().len(),
        2,
        "scope = \"test\" boots per test: {:?}",
        ev.lines
    );
    assert_eq!(ev.machines().len(), 8);
    // Every machine was stopped by its module's end, none was left for the exit cleanup.
    let mut stopped = ev.stopped();
    stopped.sort();
    let mut machines = ev.machines();
    machines.sort();
    assert_eq!(stopped, machines);
    assert_eq!(ev.stopped_at_exit(), Vec::<String>::new());
    common::assert_nothing_left(&machines);
}

#[test]
fn a_failing_test_fails_alone() {
    let run = run_fixture(&["alpha"], &[("FIXTURE_FAIL", "1")]);
    let out = run.stdout();
    assert_eq!(run.output.status.code(), Some(101), "{out}");
    assert!(
        out.contains("test alpha::fails_when_asked ... FAILED"),
        "{out}"
    );
    assert!(
        out.contains("test alpha::panics_when_asked ... FAILED"),
        "{out}"
    );
    for sibling in ["one", "two", "three"] {
        assert!(
            out.contains(&format!("test alpha::{sibling} ... ok")),
            "{out}"
        );
    }
    assert!(
        out.contains("exit status: 1"),
        "the error shows the command's status: {out}"
    );
    // A plain panic says which machine it ran on, and how to look inside.
    assert!(
        out.contains("nspawn: alpha::panics_when_asked failed on machine nspawn-"),
        "{out}"
    );
    assert!(out.contains("its console log: "), "{out}");
    assert!(out.contains("NSPAWN_KEEP=failed keeps it running"), "{out}");
    assert_eq!(run.events.module_boots("fixture::alpha").len(), 1);
    common::assert_nothing_left(&run.events.machines());
}

#[test]
fn filtered_runs_stop_their_machines_and_leave_nothing() {
    for args in [
        &["alpha::one"][..],
        &["--exact", "beta::two"],
        &["alpha", "--skip", "alpha::t"],
    ] {
        let run = run_fixture(args, &[]);
        assert!(run.output.status.success(), "{args:?}: {}", run.stdout());
        assert_eq!(
            run.events.machines().len(),
            1,
            "{args:?}: {:?}",
            run.events.lines
        );
        assert_eq!(run.events.stopped(), run.events.machines(), "{args:?}");
        common::assert_nothing_left(&run.events.machines());
    }
}

#[test]
fn sigint_mid_run_stops_the_machines_and_kills_the_process_with_sigint() {
    let (mut child, log, _dir) = fixture(&["slow::"], &[("FIXTURE_HANG", "1")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let machine = loop {
        if let Some(m) = Events::read(&log).module_boots("fixture::slow").pop() {
            break m;
        }
        assert!(Instant::now() < deadline, "the fixture never booted");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    assert_eq!(Events::read(&log).stopped_at_exit(), vec![machine.clone()]);
    common::assert_nothing_left(&[machine]);
}

#[test]
fn a_boot_failure_fails_every_test_of_the_module_after_one_attempt() {
    let run = run_fixture(&["--ignored", "broken"], &[]);
    let out = run.stdout();
    assert_eq!(run.output.status.code(), Some(101), "{out}");
    assert!(out.contains("test broken::first ... FAILED"), "{out}");
    assert!(out.contains("test broken::second ... FAILED"), "{out}");
    assert_eq!(
        out.matches("did not boot").count(),
        2,
        "each test shows the boot error: {out}"
    );
    assert_eq!(out.matches("last console lines of").count(), 2, "{out}");
    // The panic points at the test, not at the harness that reports the failure.
    assert!(out.contains("panicked at tests/fixture/main.rs:"), "{out}");
    assert!(!out.contains("panicked at nspawn-runtime/"), "{out}");
    let attempts = run.events.module_boot_failures("fixture::broken");
    assert_eq!(
        attempts, 1,
        "one boot attempt for the module: {:?}",
        run.events.lines
    );
}

#[test]
fn a_boot_failure_does_not_pass_for_the_panic_a_test_expects() {
    let run = run_fixture(&["--ignored", "expects_panic"], &[]);
    let out = run.stdout();
    assert_eq!(run.output.status.code(), Some(101), "{out}");
    for test in ["expects_panic::shared", "expects_panic::alone"] {
        assert!(
            out.contains(&format!("test {test} - should panic ... FAILED")),
            "{out}"
        );
    }
    assert_eq!(out.matches("did not boot").count(), 2, "{out}");
    assert!(!out.contains("the body ran"), "{out}");
}

#[test]
fn invalid_settings_fail_the_run_and_say_what_is_accepted() {
    for bad in ["abc", "-1", "0"] {
        let run = run_fixture(
            &["--exact", "alpha::one"],
            &[("NSPAWN_MAX_MACHINES", bad), ("NSPAWN_KEEP", "bogus")],
        );
        let out = run.stdout();
        assert_eq!(run.output.status.code(), Some(101), "{out}");
        assert!(
            out.contains(&format!(
                "NSPAWN_MAX_MACHINES={bad:?}: accepted: a whole number"
            )),
            "{out}"
        );
        assert!(
            out.contains("NSPAWN_KEEP=\"bogus\": accepted: failed, all"),
            "{out}"
        );
        assert!(run.events.machines().is_empty(), "no machine booted");
    }
}

#[test]
fn a_module_set_up_runs_once_on_each_machine_before_its_tests() {
    let run = run_fixture(
        &[
            "--ignored",
            "--exact",
            "prepared::one",
            "prepared::two",
            "prepared::alone",
        ],
        &[],
    );
    run.passed(3);
    let setups = run.events.setups("fixture::prepared");
    let mut machines = [
        run.events.module_boots("fixture::prepared"),
        run.events.test_boots(),
    ]
    .concat();
    assert_eq!(machines.len(), 2, "{:?}", run.events.lines);
    // Once on the shared machine, once on the test's own machine: with one such test, no
    // set-up layer (its template would be a third boot).
    let mut ran_on: Vec<String> = setups.iter().map(|(m, _)| m.clone()).collect();
    ran_on.sort();
    machines.sort();
    assert_eq!(ran_on, machines, "{:?}", run.events.lines);
    assert_eq!(run.events.machines().len(), 2, "{:?}", run.events.lines);
    assert!(setups.iter().all(|(_, ok)| *ok));
    common::assert_nothing_left(&run.events.machines());
}

/// Set up once: a module's `scope = "test"` machines boot from a layer holding its set-up's
/// result; the set-up runs once (on a template), each machine starts pristine apart from it
/// (the set-up's file and deletion are there, another test's file is not, the machine-id is
/// its own), and nothing of the layer is left.
#[test]
fn scope_test_machines_start_from_the_set_up_run_once() {
    let run = run_fixture(&["--ignored", "layered::"], &[]);
    run.passed(3);
    let setups = run.events.setups("fixture::layered");
    assert_eq!(setups.len(), 1, "once: {:?}", run.events.lines);
    let test_boots = run.events.test_boots();
    assert_eq!(test_boots.len(), 3, "{:?}", run.events.lines);
    assert!(
        !test_boots.contains(&setups[0].0),
        "on a template of its own"
    );
    common::assert_nothing_left(&run.events.machines());
    let left = layers_of(run.pid);
    assert!(left.is_empty(), "layers left: {left:?}");
}

#[test]
fn a_failed_set_up_fails_every_test_of_its_module_without_running_again() {
    let run = run_fixture(
        &["--ignored", "unprepared::"],
        &[("FIXTURE_SETUP_FAIL", "1")],
    );
    let out = run.stdout();
    assert_eq!(run.output.status.code(), Some(101), "{out}");
    for test in ["unprepared::first", "unprepared::second"] {
        assert!(out.contains(&format!("test {test} ... FAILED")), "{out}");
    }
    let message = "the set-up `prepare` of module fixture::unprepared failed";
    assert_eq!(out.matches(message).count(), 2, "{out}");
    assert!(out.contains("asked to fail"), "{out}");
    let setups = run.events.setups("fixture::unprepared");
    assert_eq!(setups.len(), 1, "ran once: {:?}", run.events.lines);
    assert!(!setups[0].1);
    common::assert_nothing_left(&run.events.machines());
}

#[test]
fn inside_tests_run_in_the_machine_after_their_inside_set_up() {
    let run = run_fixture(&["--ignored", "indoors::"], &[]);
    run.passed(5);
    let setups = run.events.setups("fixture::indoors");
    let machines = [
        run.events.module_boots("fixture::indoors"),
        run.events.test_boots(),
    ]
    .concat();
    assert_eq!(machines.len(), 2, "{:?}", run.events.lines);
    assert_eq!(setups.len(), 2, "once per machine: {:?}", run.events.lines);
    assert!(setups.iter().all(|(_, ok)| *ok));
    common::assert_nothing_left(&run.events.machines());
}

#[test]
fn an_inside_test_fails_with_its_message_and_shows_its_output() {
    let run = run_fixture(&["--ignored", "indoors_failing::"], &[]);
    let out = run.stdout();
    assert_eq!(run.output.status.code(), Some(101), "{out}");
    for test in [
        "asserts ...",
        "returns_an_error ...",
        "crashes_where_a_panic_is_expected - should panic ...",
    ] {
        assert!(
            out.contains(&format!("test indoors_failing::{test} FAILED")),
            "{out}"
        );
    }
    assert!(out.contains("an assertion inside"), "{out}");
    assert!(out.contains("left: 2"), "{out}");
    assert!(out.contains("an error value from inside"), "{out}");
    assert!(
        out.contains("SIGKILL"),
        "a crash is not the panic expected: {out}"
    );
    // libtest shows what the failing body printed, under that test's name.
    let section = out
        .split("---- indoors_failing::asserts stdout ----")
        .nth(1)
        .unwrap_or_default();
    assert!(section.contains("printed by the body inside"), "{out}");
    common::assert_nothing_left(&run.events.machines());
}

#[test]
fn under_sudo_inside_tests_run_as_root_in_the_machine() {
    let (uid, gid) = common::probe_user();
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let run = run_fixture(
        &[
            "--ignored",
            "indoors::runs_in_the_machine",
            "indoors::outside",
        ],
        &[
            ("SUDO_UID", &uid),
            ("SUDO_GID", &gid),
            ("SUDO_USER", common::PROBE_USER),
        ],
    );
    run.passed(2);
    common::assert_nothing_left(&run.events.machines());
}

/// Set-up layers under sudo: the set-up and the tests run as the user, the layer's mounts and
/// files are made and removed as root.
#[test]
fn under_sudo_set_up_layers_work() {
    let (uid, gid) = common::probe_user();
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let run = run_fixture(
        &["--ignored", "layered::"],
        &[
            ("SUDO_UID", &uid),
            ("SUDO_GID", &gid),
            ("SUDO_USER", common::PROBE_USER),
            ("FIXTURE_EXPECT_UID", &uid),
        ],
    );
    run.passed(3);
    assert_eq!(
        run.events.setups("fixture::layered").len(),
        1,
        "{:?}",
        run.events.lines
    );
    common::assert_nothing_left(&run.events.machines());
}

/// A whole fixture run on one test thread, with host-wide state of its own (slots are
/// host-wide: a run directory of its own keeps other tests' runs out of its count).
fn run_alone(env: &[(&str, &str)]) -> Run {
    let dir = common::scratch_dir();
    let run_dir = dir.path().join("run");
    let mut env = env.to_vec();
    env.push(("NSPAWN_RUN_DIR", run_dir.to_str().unwrap()));
    run_fixture(&["--test-threads=1"], &env)
}

/// Every machine the run booted was stopped while it ran (not at exit), and left nothing.
fn assert_each_stopped_during_the_run(run: &Run) {
    let (mut stopped, mut booted) = (run.events.stopped(), run.events.machines());
    stopped.sort();
    booted.sort();
    assert_eq!(stopped, booted, "each stopped during the run");
    common::assert_nothing_left(&run.events.machines());
}

#[test]
fn machines_boot_ahead_within_the_cap_and_stop_in_the_background() {
    // One test thread: the run's own machine and the one ahead are all it has at once.
    let run = run_alone(&[("NSPAWN_MAX_MACHINES", "4")]);
    let out = run.stdout();
    assert!(run.output.status.success(), "{out}");
    assert!(
        !run.events.ahead_boots().is_empty(),
        "{:?}",
        run.events.lines
    );
    assert!(
        run.events.most_at_once() <= 4,
        "the cap holds: {:?}",
        run.events.lines
    );
    // A boot keeps a CPU busy: never more boots at once than CPUs.
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        run.events.most_booting_at_once() <= cpus,
        "at most {cpus} boots at once: {:?}",
        run.events.lines
    );
    // Every module still boots once, ahead or not.
    for module in ["fixture::alpha", "fixture::beta", "fixture::slow"] {
        assert_eq!(run.events.module_boots(module).len(), 1, "{module}");
    }
    assert_each_stopped_during_the_run(&run);
}

#[test]
fn under_sudo_machines_boot_ahead_and_stop_in_the_background() {
    let (uid, gid) = common::probe_user();
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let run = run_alone(&[
        ("SUDO_UID", &uid),
        ("SUDO_GID", &gid),
        ("SUDO_USER", common::PROBE_USER),
    ]);
    assert!(run.output.status.success(), "{}", run.stdout());
    assert!(
        !run.events.ahead_boots().is_empty(),
        "{:?}",
        run.events.lines
    );
    assert_each_stopped_during_the_run(&run);
}

#[test]
fn boots_ahead_can_be_turned_off_and_never_take_the_last_slots() {
    for env in [[("NSPAWN_BOOT_AHEAD", "0")], [("NSPAWN_MAX_MACHINES", "2")]] {
        // Alone, so that the absence of boots ahead is this setting's doing, not other runs'.
        let run = run_alone(&env);
        assert!(run.output.status.success(), "{env:?}: {}", run.stdout());
        assert_eq!(run.events.ahead_boots(), Vec::<String>::new(), "{env:?}");
        common::assert_nothing_left(&run.events.machines());
    }
}

#[test]
fn a_matrix_runs_once_per_chroot_each_on_its_chroots_module_machine() {
    let run = run_fixture(&["--ignored", "matrix::"], &[]);
    let out = run.stdout();
    assert!(run.output.status.success(), "{out}");
    for test in [
        "matrix::os::bookworm",
        "matrix::os::trixie",
        "matrix::inside_too::bookworm",
        "matrix::inside_too::trixie",
        "matrix::plain",
    ] {
        assert!(
            out.contains(&format!("test {test} ... ok")),
            "{test}: {out}"
        );
    }
    let boots = run.events.module_boots("fixture::matrix");
    assert_eq!(boots.len(), 2, "one per chroot: {:?}", run.events.lines);
    let chroots: Vec<&str> = run
        .events
        .lines
        .iter()
        .filter_map(|e| match e {
            nspawn_runtime::report::Event::ModuleBoot { module, chroot, .. }
                if module == "fixture::matrix" =>
            {
                Some(chroot.as_str())
            }
            _ => None,
        })
        .collect();
    let mut chroots = chroots;
    chroots.sort();
    assert_eq!(chroots, ["bookworm", "trixie"]);
    common::assert_nothing_left(&run.events.machines());
    // Each instance runs alone by its name.
    let alone = run_fixture(&["--ignored", "--exact", "matrix::os::trixie"], &[]);
    assert!(alone.output.status.success(), "{}", alone.stdout());
    assert!(alone.stdout().contains("1 passed"), "{}", alone.stdout());
    assert_eq!(alone.events.machines().len(), 1);
    common::assert_nothing_left(&alone.events.machines());
}

/// A run killed while its machines boot from a set-up layer leaves no layer and no mount: the
/// watchdog's sweep finds the layer by its pointer in the run directory.
#[test]
fn a_killed_run_leaves_no_set_up_layer() {
    // Two of its tests: with one, its machine would run the set-up itself, with no layer.
    let (mut child, log, _dir) = fixture(
        &["--ignored", "--exact", "layered::one", "layered::two"],
        &[("FIXTURE_LAYER_HANG", "1")],
    );
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Events::read(&log).test_boots().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the test's machine never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!layers_of(pid).is_empty(), "a layer is up before the kill");
    child.kill().unwrap();
    child.wait().unwrap();
    let machines = Events::read(&log).machines();
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = common::leftovers(&machines, &common::chroots_dir());
        left.extend(layers_of(pid));
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < gone_by, "left 5 s after SIGKILL: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
