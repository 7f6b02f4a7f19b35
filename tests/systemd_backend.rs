//! The systemd-host backend, for real: our hosts do not boot systemd as PID 1, but a container
//! does. The `host` chroot (systemd, dbus, systemd-container) is booted with the direct
//! backend, `--capability=all` and the workspace bound at the same path; the backend's own
//! tests (`tests/systemd_inner.rs`) then run inside it, through the same public API.

mod common;

use std::time::{Duration, Instant};

use nspawn::Machine;

fn host() -> Machine {
    let ws = env!("CARGO_MANIFEST_DIR");
    // The workspace is bound read-write into the host machine; under sudo, in a checkout the
    // test's user cannot write (root's, here), only root may ask for that.
    let _root = nspawn::privs::root().unwrap();
    // A host for containers of its own: privileged, as a user namespace could not give it
    // machined, cgroup delegation and the mounts nspawn makes.
    Machine::builder("host")
        .private_users(false)
        .arg("--capability=all")
        .bind(ws, ws)
        .wait_until_running(true)
        .start()
        .unwrap()
}

fn ours_left(host: &Machine) -> String {
    host.sh(&format!(
        "machinectl list --no-legend | grep nspawn- ; systemctl list-units --all --no-legend 'nspawn-*' ; \
         ls -d {}/test_chroots/.#machine.* 2>/dev/null ; true",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn the_backend_suite_passes_inside_a_systemd_host_and_cleans_up() {
    let inner = common::test_binary("systemd_inner");
    let host = host();
    let out = host
        .command(&inner)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NSPAWN_QUIET", "1")
        // The host machine is isolated already; its own machines share its network.
        .env("NSPAWN_NETWORK", "host")
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("10 passed"), "{report}");
    assert_eq!(
        ours_left(&host),
        "",
        "exit cleanup left units, machines or snapshots"
    );
}

#[test]
fn sigkill_of_the_test_process_leaves_no_unit_machine_or_snapshot() {
    let inner = common::test_binary("systemd_inner");
    let host = host();
    let ws = env!("CARGO_MANIFEST_DIR");
    let pid = host
        .sh(&format!(
            "cd {ws} && NSPAWN_NETWORK=host INNER_HANG=1 setsid {} hang >/dev/null 2>&1 & echo $!",
            inner.display()
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !host
        .sh("machinectl list --no-legend")
        .unwrap()
        .contains("nspawn-")
    {
        assert!(Instant::now() < deadline, "the machine never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    host.sh(&format!("kill -9 {}", pid.trim())).unwrap();
    // A bound, not a speed check: a busy host (a chroot being built beside) once took over 5 s.
    let gone_by = Instant::now() + Duration::from_secs(60);
    loop {
        let left = ours_left(&host);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < gone_by, "left 60 s after SIGKILL: {left}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn forcing_a_backend_that_cannot_run_is_a_clear_error() {
    let run = |backend: &str| {
        let mut cmd = std::process::Command::new(common::fixture_binary());
        nspawn::privs::start_as_root(&mut cmd);
        let out = cmd
            .args(["--exact", "alpha::one"])
            .env("NSPAWN_BACKEND", backend)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(101));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bogus = run("docker");
    assert!(
        bogus.contains("NSPAWN_BACKEND=\"docker\": accepted: direct, systemd"),
        "{bogus}"
    );
    if std::fs::read_to_string("/proc/1/comm").unwrap().trim() != "systemd" {
        let forced = run("systemd");
        assert!(
            forced.contains("the systemd backend cannot be used: PID 1 is"),
            "{forced}"
        );
    }
}
