//! The machine's agent, against real containers: one persistent process per machine, inside
//! its namespaces, that forks only for commands, survives nothing it should not, and fails
//! clearly.

use crate::common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nspawn::{Error, Machine};

const CHROOT: &str = "bookworm";

/// Whether a process runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// Polls `check` for up to 10 s: for what the kernel finishes asynchronously.
fn ns(pid: u32, kind: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

/// The last PID the machine's PID namespace handed out, through a fresh shell.
fn last_pid(m: &Machine) -> u32 {
    m.sh("echo $$").unwrap().trim().parse().unwrap()
}

#[test]
fn one_agent_per_machine_inside_its_namespaces_and_invisible_there() {
    let m = Machine::start(CHROOT).unwrap();
    let agent = m.agent_pid().unwrap();
    for _ in 0..20 {
        m.run(["true"]).unwrap();
        assert!(m.exists("/etc/os-release"));
    }
    assert_eq!(m.agent_pid().unwrap(), agent, "the agent is persistent");
    let leader = m.leader_pid();
    // The agent is root's: under sudo, only root may read its namespaces.
    let root = nspawn::privs::root().unwrap();
    for kind in ["user", "mnt", "net", "uts", "ipc", "cgroup"] {
        assert_eq!(ns(agent, kind), ns(leader, kind), "{kind} namespace");
    }
    // Its own PID namespace is the host's: `ps` in the machine does not show it, while its
    // commands are inside.
    assert_ne!(ns(agent, "pid"), ns(leader, "pid"));
    let forks_inside = std::fs::read_dir(format!("/proc/{agent}/task"))
        .unwrap()
        .flatten()
        .any(|task| {
            let link = task.path().join("ns/pid_for_children");
            std::fs::read_link(link).ok() == Some(ns(leader, "pid"))
        });
    assert!(forks_inside, "a connection thread forks into the machine");
    drop(root);
    assert_eq!(
        common::running(&m, "nspawn-agent"),
        0,
        "invisible in the machine"
    );
    // The machine's root, an unprivileged host uid: never the host's root.
    let uid_line = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        uid_line(agent),
        uid_line(leader),
        "runs as the machine's root"
    );
    assert_ne!(
        uid_line(agent),
        "Uid:\t0\t0\t0\t0",
        "not as the host's root"
    );
    assert_eq!(
        common::processes_of(m.name()).len(),
        3,
        "nspawn, the agent, and its zygote (which forks calls)"
    );
    // After a first call, two call processes wait in the machine for the next calls.
    m.call(|(): ()| (), ()).unwrap();
    assert!(
        common::eventually(|| common::running(&m, "nspawn-agent") == 2),
        "two forked ahead"
    );
}

#[test]
fn file_operations_fork_nothing() {
    let m = Machine::start(CHROOT).unwrap();
    m.write("/tmp/f", "x").unwrap();
    let before = last_pid(&m);
    for i in 0..200 {
        assert!(m.exists("/tmp/f"));
        m.write("/tmp/f", i.to_string()).unwrap();
        assert_eq!(m.read_to_string("/tmp/f").unwrap(), i.to_string());
    }
    let after = last_pid(&m);
    // 600 operations: had any of them forked, the machine's PIDs would have moved by as many.
    // The margin is for what the machine's own systemd starts meanwhile.
    assert!(after - before < 30, "PIDs went from {before} to {after}");
}

#[test]
fn the_agent_dies_with_its_machine() {
    let m = Machine::start(CHROOT).unwrap();
    let agent = m.agent_pid().unwrap();
    // The machine goes away on its own, not through the runtime.
    let _ = m.command("systemctl").arg("poweroff").status();
    assert!(
        common::eventually(|| !alive(agent)),
        "agent {agent} outlived its machine"
    );
    let err = m.run(["true"]).unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err}");

    let m = Machine::start(CHROOT).unwrap();
    let agent = m.agent_pid().unwrap();
    m.stop().unwrap();
    assert!(
        !Path::new(&format!("/proc/{agent}")).exists(),
        "reaped at stop"
    );
}

#[test]
fn a_crashed_agent_is_a_clear_error_and_the_next_call_gets_a_new_one() {
    let m = Machine::start(CHROOT).unwrap();
    let agent = m.agent_pid().unwrap();
    let (started, running) = mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            started.send(()).unwrap();
            // A timeout, so that a failure below cannot leave the test waiting 1000 s.
            m.command("sh")
                .args(["-c", "touch /tmp/running; exec sleep 1000"])
                .timeout(Duration::from_secs(120))
                .output()
        });
        running.recv().unwrap();
        assert!(common::eventually(|| m.exists("/tmp/running")));
        // The agent is root's: under sudo, only root may signal it.
        let root = nspawn::privs::root().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        drop(root);
        let err = waiter.join().unwrap().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Agent { .. }), "{msg}");
        assert!(msg.contains("killed by signal 9"), "{msg}");
        assert!(msg.contains("sleep 1000"), "{msg}");
    });
    assert_eq!(m.sh("echo back").unwrap(), "back\n");
    assert_ne!(m.agent_pid().unwrap(), agent);
    // Its command died with it.
    assert!(common::eventually(|| common::running(&m, "sleep") == 0));
}

#[test]
fn a_slow_command_holds_up_no_other_call() {
    let m = Machine::start(CHROOT).unwrap();
    std::thread::scope(|s| {
        // Waits for a file that only the other thread's calls create: if those calls queued
        // behind it, it would time out instead.
        let slow = s.spawn(|| {
            m.command("sh")
                .args([
                    "-c",
                    "while [ ! -e /tmp/go ]; do sleep 0.02; done; echo done",
                ])
                .timeout(Duration::from_secs(60))
                .output()
        });
        let others: Vec<_> = (0..4)
            .map(|i| {
                let m = &m;
                s.spawn(move || {
                    for j in 0..25 {
                        let path = format!("/tmp/t{i}-{j}");
                        m.write(&path, "x").unwrap();
                        assert_eq!(m.sh(&format!("cat {path}")).unwrap(), "x");
                    }
                })
            })
            .collect();
        for t in others {
            t.join().unwrap();
        }
        m.write("/tmp/go", "").unwrap();
        let out = slow.join().unwrap().unwrap();
        assert_eq!(out.stdout, b"done\n");
    });
}

#[test]
fn a_hundred_megabytes_go_through() {
    let m = Machine::start(CHROOT).unwrap();
    const SIZE: usize = 100_000_000;
    // Past the default limit (64 MiB), as asked.
    let out = m
        .command("head")
        .args(["-c", &SIZE.to_string(), "/dev/zero"])
        .output_limit(SIZE)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), SIZE);
    assert!(out.stdout.iter().all(|b| *b == 0));

    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let out = m.command("md5sum").stdin(data.clone()).output().unwrap();
    m.write("/tmp/big", &data).unwrap();
    assert_eq!(m.sh("md5sum < /tmp/big").unwrap().as_bytes(), out.stdout);
    // `read` keeps 64 MiB at most; `copy_out` streams a file of any size.
    let err = m.read("/tmp/big").unwrap_err();
    assert!(matches!(err, nspawn::Error::TooLarge { .. }), "{err}");
    let dir = common::scratch_dir();
    let copy = dir.path().join("big");
    m.copy_out("/tmp/big", &copy).unwrap();
    assert!(std::fs::read(&copy).unwrap() == data);
}

#[test]
fn a_timeout_kills_the_command_and_what_it_started() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .command("sh")
        .args(["-c", "sleep 1000 & sleep 1001; echo never"])
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(common::eventually(|| common::running(&m, "sleep") == 0));
    // The connection it used is fine for the next call.
    assert_eq!(m.sh("echo next").unwrap(), "next\n");
}

#[test]
fn status_reports_exit_codes_and_signals() {
    let m = Machine::start(CHROOT).unwrap();
    let status = m
        .command("sh")
        .args(["-c", "echo to-stdout; echo to-stderr >&2; exit 4"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(4));
    let signalled = m
        .command("sh")
        .args(["-c", "kill -TERM $$"])
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&signalled),
        Some(libc::SIGTERM)
    );
}

#[test]
fn a_stopped_agent_is_an_error_not_a_hang() {
    use nix::sys::signal::{kill, Signal};
    let m = Machine::start(CHROOT).unwrap();
    let agent = nix::unistd::Pid::from_raw(m.agent_pid().unwrap() as i32);
    // The agent is root's: under sudo, only root may signal it.
    let signal = |sig| {
        let _root = nspawn::privs::root().unwrap();
        kill(agent, sig).unwrap();
    };
    signal(Signal::SIGSTOP);
    // The agent cannot even start the command: the runtime gives up after the timeout and a
    // grace period (10 s), instead of waiting forever.
    let err = m
        .command("true")
        .timeout(Duration::from_millis(100))
        .output()
        .unwrap_err();
    signal(Signal::SIGCONT);
    let msg = err.to_string();
    assert!(matches!(err, Error::Agent { .. }), "{msg}");
    assert!(msg.contains("did not answer in time"), "{msg}");
    assert_eq!(m.sh("echo fine").unwrap(), "fine\n");
}
