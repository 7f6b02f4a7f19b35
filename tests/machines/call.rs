//! `Machine::call`: the test binary's own functions, run inside a real machine: values cross
//! both ways, failures come back as errors, each call starts clean, and what runs is the
//! machine's, confined as its own processes are.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nspawn::{Error, Machine};
use serde::{Deserialize, Serialize};

const CHROOT: &str = "bookworm";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Package {
    name: String,
    version: (u32, u32),
    tags: Vec<String>,
    extra: Option<BTreeMap<String, i64>>,
}

fn bump(p: Package) -> Package {
    Package {
        version: (p.version.0, p.version.1 + 1),
        tags: p.tags.into_iter().map(|t| t.to_uppercase()).collect(),
        ..p
    }
}

fn parse_port(s: String) -> Result<u16, String> {
    s.trim().parse().map_err(|e| format!("{s:?}: {e}"))
}

#[test]
fn values_of_many_types_cross_both_ways() {
    let m = Machine::start(CHROOT).unwrap();
    assert_eq!(
        m.call(|s: String| s.repeat(2), "ab".into()).unwrap(),
        "abab"
    );
    assert_eq!(
        m.call(|v: Vec<u64>| v.iter().sum::<u64>(), vec![1, 2, 3])
            .unwrap(),
        6
    );
    m.call(|(): ()| (), ()).unwrap();
    let p = Package {
        name: "nginx".into(),
        version: (1, 22),
        tags: vec!["web".into()],
        extra: Some(BTreeMap::from([("workers".into(), -4)])),
    };
    let bumped = m.call(bump, p.clone()).unwrap();
    assert_eq!(bumped, bump(p));
    assert_eq!(m.call(parse_port, "8080\n".into()).unwrap(), Ok(8080));
    let err = m.call(parse_port, "http".into()).unwrap().unwrap_err();
    assert!(err.contains("invalid digit"), "{err}");
    // Self-describing values (deserialize_any) cross too.
    let json: serde_json::Value = serde_json::json!({"a": [1, "two", null], "b": {"c": true}});
    let back = m.call(|v: serde_json::Value| v["a"].clone(), json).unwrap();
    assert_eq!(back, serde_json::json!([1, "two", null]));
    let big = m.call(|n: usize| vec![7u8; n], 8 << 20).unwrap();
    assert_eq!(big.len(), 8 << 20);
}

#[test]
fn a_panic_is_an_error_with_its_message_and_location() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .call(|n: u32| -> u32 { panic!("no {n} here") }, 42)
        .unwrap_err();
    let Error::Panicked {
        message, location, ..
    } = &err
    else {
        panic!("not a panic: {err}");
    };
    assert_eq!(message, "no 42 here");
    let location = location.as_deref().unwrap_or_default();
    assert!(
        location.starts_with("tests/machines/call.rs:"),
        "{location}"
    );
    assert!(err.to_string().contains(m.name()), "{err}");
    // The machine and its agent go on.
    assert_eq!(m.call(|x: u32| x + 1, 1).unwrap(), 2);
}

#[test]
fn a_crash_says_which_signal_and_an_exit_says_so() {
    let m = Machine::start(CHROOT).unwrap();
    let segv = m
        .call(
            // SAFETY: the process that runs this is the call's own, and is meant to die.
            |(): ()| unsafe { libc::raise(libc::SIGSEGV) },
            (),
        )
        .unwrap_err();
    assert!(
        matches!(
            segv,
            Error::Call {
                signal: Some(libc::SIGSEGV),
                ..
            }
        ),
        "{segv}"
    );
    assert!(segv.to_string().contains("SIGSEGV"), "{segv}");
    let abort = m
        .call(|(): ()| -> () { std::process::abort() }, ())
        .unwrap_err();
    assert!(abort.to_string().contains("SIGABRT"), "{abort}");
    let exit = m
        .call(|(): ()| -> () { std::process::exit(3) }, ())
        .unwrap_err();
    assert!(exit.to_string().contains("exit status: 3"), "{exit}");
    assert_eq!(m.call(|x: u32| x * 2, 21).unwrap(), 42);
}

#[test]
fn a_call_past_its_timeout_is_killed_with_what_it_started() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .function(|(): ()| {
            let mut child = std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .expect("sleep starts");
            let _ = child.wait();
        })
        .timeout(Duration::from_millis(500))
        .call(())
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // The sleep was in the call's process group: it died with it (and is reaped soon after).
    assert!(
        common::eventually(|| common::running(&m, "sleep") == 0),
        "nothing the call started outlives its timeout"
    );
    assert!(m.call(|(): ()| true, ()).unwrap());
}

#[test]
fn a_call_that_execs_says_how_its_program_ended() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .call(
            |(): ()| -> () {
                use std::os::unix::process::CommandExt;
                let e = std::process::Command::new("sh")
                    .args(["-c", "sleep 0.2; exit 5"])
                    .exec();
                panic!("exec failed: {e}")
            },
            (),
        )
        .unwrap_err();
    // Its socket closed at the exec: the runtime learnt the end from the agent, once the
    // program had exited.
    assert!(err.to_string().contains("exit status: 5"), "{err}");
    assert_eq!(m.call(|x: u32| x + 1, 1).unwrap(), 2);
}

/// The call processes waiting for the next calls are in the machine: its root can kill them.
#[test]
fn waiting_call_processes_the_guest_killed_are_replaced() {
    let m = Machine::start(CHROOT).unwrap();
    m.call(|(): ()| (), ()).unwrap();
    assert!(common::eventually(
        || common::running(&m, "nspawn-agent") == 2
    ));
    for round in 0..3 {
        common::kill_named(&m, "nspawn-agent");
        assert_eq!(
            m.call(|r: u32| r * 2, round).unwrap(),
            round * 2,
            "round {round}"
        );
    }
    assert!(
        common::eventually(|| common::running(&m, "nspawn-agent") == 2),
        "two wait again"
    );
}

/// A global of the test binary: each call sees it as the agent had it, never as a previous
/// call left it.
static COUNTER: AtomicU32 = AtomicU32::new(0);

#[test]
fn each_call_starts_clean_whatever_the_last_one_did() {
    let m = Machine::start(CHROOT).unwrap();
    let first = m
        .call(|(): ()| COUNTER.fetch_add(1, Ordering::SeqCst), ())
        .unwrap();
    assert_eq!(first, 0);
    let _ = m.call(|(): ()| -> u32 { panic!("poison") }, ());
    let leak = m
        .call(
            |(): ()| {
                std::thread::spawn(|| loop {
                    COUNTER.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                });
                std::thread::sleep(Duration::from_millis(20));
                COUNTER.load(Ordering::SeqCst) > 0
            },
            (),
        )
        .unwrap();
    assert!(leak);
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let m = &m;
                s.spawn(move || {
                    m.call(|i: u32| (COUNTER.fetch_add(1, Ordering::SeqCst), i), i)
                        .unwrap()
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.join().unwrap(), (0, i as u32), "call {i} starts clean");
        }
    });
    let threads = m
        .call(
            |(): ()| {
                std::fs::read_dir("/proc/self/task")
                    .map(|d| d.count())
                    .unwrap_or(0)
            },
            (),
        )
        .unwrap();
    assert_eq!(threads, 1, "no thread of an earlier call");
    assert_eq!(COUNTER.load(Ordering::SeqCst), 0, "the test's own global");
}

fn hostname((): ()) -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn the_call_sees_the_machine_not_the_host() {
    let m = Machine::start("trixie").unwrap();
    assert_eq!(m.call(hostname, ()).unwrap(), m.name());
    let os = m
        .call(
            |p: String| std::fs::read_to_string(p).unwrap_or_default(),
            "/etc/os-release".into(),
        )
        .unwrap();
    assert!(os.contains("VERSION_CODENAME=trixie"), "{os}");
    assert_eq!(os, m.read_to_string("/etc/os-release").unwrap());
    let path = format!("/root/written-by-a-call-{}", std::process::id());
    m.call(
        |p: String| std::fs::write(p, "from inside").map_err(|e| e.to_string()),
        path.clone(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(m.read_to_string(&path).unwrap(), "from inside");
    let _root = nspawn::privs::root().unwrap();
    assert!(!Path::new(&path).exists(), "the host's /root is untouched");
}

/// What a child of the call (`std::process::Command`) reports: its namespaces, and its
/// confinement and cgroup as the `sandbox` tests read them.
fn child_report((): ()) -> (Vec<String>, String) {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "for n in pid mnt net uts ipc cgroup; do readlink /proc/self/ns/$n; done; echo ==; \
             cat /proc/self/status; echo ==; cat /proc/self/cgroup",
        ])
        .output()
        .expect("sh runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ns, rest) = text.split_once("==\n").unwrap_or_default();
    (ns.lines().map(String::from).collect(), rest.to_string())
}

#[test]
fn its_children_are_in_the_machine_and_confined_like_its_processes() {
    let m = Machine::start(CHROOT).unwrap();
    let (namespaces, rest) = m.call(child_report, ()).unwrap();
    let leader = m.leader_pid();
    let _root = nspawn::privs::root().unwrap();
    for (kind, seen) in ["pid", "mnt", "net", "uts", "ipc", "cgroup"]
        .iter()
        .zip(&namespaces)
    {
        let expected = std::fs::read_link(format!("/proc/{leader}/ns/{kind}")).unwrap();
        assert_eq!(Path::new(seen), expected, "{kind} namespace");
    }
    let command = m
        .sh("cat /proc/self/status; echo ==; cat /proc/self/cgroup")
        .unwrap();
    let (status, cgroup) = rest.split_once("==").unwrap();
    let (their_status, their_cgroup) = command.split_once("==").unwrap();
    assert_eq!(
        common::walls(status),
        common::walls(their_status),
        "a command's walls"
    );
    assert!(common::walls(status).contains(&"Seccomp: 2".to_string()));
    assert_eq!(cgroup, their_cgroup, "the cgroup a command gets");
}

#[test]
fn the_environment_is_a_login_one_and_users_are_the_machines() {
    let m = Machine::start(CHROOT).unwrap();
    m.run(["useradd", "--create-home", "--uid", "4321", "callee"])
        .unwrap();
    let env = m
        .call(|(): ()| std::env::vars().collect::<BTreeMap<_, _>>(), ())
        .unwrap();
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["HOME", "LOGNAME", "PATH", "SHELL", "USER", "container"]
    );
    assert_eq!(env["HOME"], "/root");
    // NSS reads the guest's /etc/passwd: this user exists only in the machine.
    let uid = m
        .call(
            |name: String| {
                nix::unistd::User::from_name(&name)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
            },
            "callee".into(),
        )
        .unwrap();
    assert_eq!(uid, Some(4321));
    let (uid, home, cwd) = m
        .function(|(): ()| {
            (
                nix::unistd::getuid().as_raw(),
                std::env::var("HOME").unwrap_or_default(),
                std::env::current_dir().unwrap_or_default(),
            )
        })
        .user("callee")
        .call(())
        .unwrap();
    assert_eq!((uid, home.as_str()), (4321, "/home/callee"));
    assert_eq!(cwd, Path::new("/home/callee"));
    let err = m
        .function(|(): ()| ())
        .user("nobody-like-this")
        .call(())
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchUser { .. }), "{err}");
}

/// The spare call process waiting in the machine is the agent's child: when the machine's
/// init exits by itself, the agent must reap it, or the init never finishes exiting.
#[test]
fn a_machine_powered_off_from_inside_after_calls_goes_down() {
    let m = Machine::start(CHROOT).unwrap();
    m.call(|(): ()| (), ()).unwrap();
    let _ = m.run(["systemctl", "poweroff"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while m.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!m.is_running(), "the machine is still up after poweroff");
}
