//! Nothing of a run's networks survives it: the fixture suite runs with its machines on a
//! zone with a way out (a bridge, an nft table, IPv4 forwarding turned on), and on the default
//! isolated networks, and ends normally, by SIGINT and by SIGKILL. Within 5 s of each end,
//! nothing of its zones is left (`network::stale`), and the host's routes, rules, other nft
//! tables and forwarding are as they were.
//!
//! A test binary of its own: these checks look at the whole host, so nothing else of ours may
//! make zones meanwhile (cargo runs test binaries one after another).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The fixture's `slow` tests on `network`, hanging in their machines until killed (or its
/// `alpha` tests, which end on their own, when `end` is `None`).
fn start(network: &str, end: Option<Signal>, sleep: &str) -> Child {
    let mut cmd = Command::new(common::fixture_binary());
    cmd.arg(if end.is_some() { "slow" } else { "alpha" })
        .env("NSPAWN_NETWORK", network)
        .env("NSPAWN_CHROOTS_DIR", common::chroots_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if end.is_some() {
        cmd.env("FIXTURE_HANG", "1").env("FIXTURE_SLEEP", sleep);
    }
    nspawn::privs::start_as_root(&mut cmd);
    cmd.spawn().unwrap()
}

fn wait_ended(child: &mut Child, what: &str) -> Result<(), String> {
    let ended = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > ended {
            let _ = child.kill();
            return Err(format!("{what}: the test process did not end"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Within 5 s, nothing of dead runs' zones is left and the host network is as `before`.
fn nothing_left(before: &str, what: &str) -> Result<(), String> {
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        let left = nspawn_runtime::network::stale();
        let now = common::host_network();
        if left.is_empty() && now == before {
            return Ok(());
        }
        if Instant::now() > gone_by {
            return Err(format!(
                "{what}: left after 5 s: {left:?}; host network before:\n{before}\nafter:\n{now}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn one_case(network: &str, end: Option<Signal>, n: usize, before: &str) -> Result<(), String> {
    let what = format!(
        "{network}, {}",
        end.map_or("normal end".into(), |s| s.to_string())
    );
    let sleep = format!("600.{}{n}", std::process::id());
    let mut child = start(network, end, &sleep);
    if let Some(signal) = end {
        // The machines are up and a test hangs in one when its command runs.
        let up = Instant::now() + Duration::from_secs(120);
        while common::processes_with_arg(&sleep).is_empty() {
            if Instant::now() > up {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: the command inside never started"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        wait_ended(&mut child, &what)?;
    } else {
        let status = child.wait().unwrap();
        if !status.success() {
            return Err(format!(
                "{what}: the fixture's alpha tests failed ({status})"
            ));
        }
    }
    nothing_left(before, &what)
}

#[test]
fn nothing_of_a_zone_survives_the_test_process() {
    // What a crashed earlier run left is not this run's to answer for: swept first.
    nspawn_runtime::cleanup::sweep::sweep(&Default::default()).unwrap();
    let before = common::host_network();
    let mut failures = Vec::new();
    let mut n = 0;
    for network in ["zone:kill+outside", "isolated"] {
        for end in [None, Some(Signal::SIGINT), Some(Signal::SIGKILL)] {
            n += 1;
            if let Err(e) = one_case(network, end, n, &before) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
