//! The systemd backend's tests. They run inside a container that boots systemd as PID 1 (the
//! `host` chroot), started by `tests/systemd_backend.rs`; not by `cargo test` directly
//! (`test = false`): on a host without systemd the backend cannot run.

use std::process::Command;

use nspawn::Machine;
use nspawn_runtime::backend::{selected, Kind};

fn host(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn auto_detection_picks_the_systemd_backend() {
    let (kind, why) = selected().unwrap();
    assert_eq!(kind, Kind::Systemd, "{why}");
}

mod registered {
    use super::*;

    #[nspawn::test(chroot = "bookworm")]
    fn machinectl_lists_the_machine(m: &Machine) {
        let list = host("machinectl list --no-legend");
        assert!(list.contains(m.name()), "{list}");
        assert_eq!(
            host(&format!("machinectl show {} -p Leader --value", m.name())).trim(),
            m.leader_pid().to_string()
        );
    }

    #[nspawn::test(chroot = "bookworm")]
    fn the_unit_has_the_blog_posts_properties(m: &Machine) {
        let show = host(&format!(
            "systemctl show {}.service -p Slice -p KillMode -p Type -p Delegate -p TasksMax -p MemoryMax -p WatchdogUSec",
            m.name()
        ));
        for expected in [
            "Slice=machine.slice",
            "KillMode=mixed",
            "Type=notify",
            "Delegate=yes",
            "WatchdogUSec=3min",
        ] {
            assert!(show.contains(expected), "{expected} in {show}");
        }
        // The host's share per machine, as on the direct backend; not the blog's 16384.
        let value = |key: &str| -> Option<u64> {
            show.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        assert!(
            value("TasksMax=").is_some_and(|t| (256..=4096).contains(&t)),
            "{show}"
        );
        assert!(
            value("MemoryMax=").is_some_and(|m| m >= 512 << 20),
            "{show}"
        );
    }

    #[nspawn::test(chroot = "bookworm")]
    fn commands_and_files_work(m: &Machine) -> nspawn::Result<()> {
        assert_eq!(m.sh("cat /proc/1/comm")?, "systemd\n");
        m.write("/root/shared", m.name())?;
        assert_eq!(m.read_to_string("/root/shared")?, m.name());
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm")]
    fn the_guests_root_is_nobody_on_the_host(m: &Machine) {
        let map = m.sh("cat /proc/self/uid_map").unwrap();
        let base: u64 = map.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(base >= 0x80000 && base % 0x10000 == 0, "{map}");
        // The mount helper execs nspawn in place: the unit's main process is nspawn.
        let main = host(&format!(
            "systemctl show {}.service -p MainPID --value",
            m.name()
        ));
        let comm = host(&format!("cat /proc/{}/comm", main.trim()));
        assert_eq!(comm.trim(), "systemd-nspawn");
    }

    #[nspawn::test(chroot = "bookworm")]
    fn the_module_shares_one_machine(m: &Machine) {
        m.write(format!("/root/seen-{}", std::process::id()), "")
            .unwrap();
        let seen = m.sh("ls /root | grep -c seen-").unwrap();
        assert_eq!(seen.trim(), "1", "one process, one module, one machine");
    }
}

mod fresh {
    use super::*;

    #[nspawn::test(chroot = "bookworm", scope = "test")]
    fn a_machine_of_its_own(m: &Machine) {
        assert!(host("machinectl list --no-legend").contains(m.name()));
    }
}

/// Zones on this backend: each machine's hosts file is made by the mount helper, and kept up
/// to date through the unit's main process.
#[test]
fn machines_of_a_zone_know_each_other_by_name() {
    let zone = nspawn::Network::Zone {
        name: "inner".into(),
        outside: false,
    };
    let first = Machine::builder("bookworm")
        .network(zone.clone())
        .alias("first")
        .start()
        .unwrap();
    let second = Machine::builder("bookworm").network(zone).start().unwrap();
    second.run(["getent", "hosts", "first"]).unwrap();
    first.run(["getent", "hosts", second.name()]).unwrap();
}

mod hang {
    use super::*;

    /// Hangs when asked, for the SIGKILL test.
    #[nspawn::test(chroot = "bookworm")]
    fn hangs_when_asked(m: &Machine) {
        if std::env::var_os("INNER_HANG").is_some() {
            m.write("/root/hanging", "").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
    }
}

/// A machine registered with machined as this backend starts them, with no record, named for
/// an owner that cannot be alive (PID 4194305 is above the kernel's limit): a sweep ends it.
#[test]
fn the_sweep_terminates_registered_machines_of_dead_owners() {
    let name = "nspawn-4194305-machined";
    let chroot = format!("{}/test_chroots/bookworm", env!("CARGO_MANIFEST_DIR"));
    let started = Command::new("systemd-run")
        .args([
            &format!("--unit={name}"),
            "--collect",
            "--quiet",
            "--property=Type=notify",
        ])
        .args([
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--notify-ready=yes",
            "--volatile=overlay",
            "--read-only",
        ])
        .args([format!("--directory={chroot}"), format!("--machine={name}")])
        .status()
        .unwrap();
    assert!(started.success());
    assert!(host("machinectl list --no-legend").contains(name));
    // Other tests of this process sweep when they boot; whichever sweep it is, it must go.
    // A bound, not a speed check: under emulation (`cargo xtask vm-test`) it took over 5 s.
    let removed = nspawn_runtime::cleanup::sweep::sweep(&Default::default()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while host("machinectl list --no-legend").contains(name) {
        assert!(
            std::time::Instant::now() < deadline,
            "still registered; the sweep said {removed:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
