//! Reboot, power off, crash and power on, on the same disk: what the machine wrote stays, it
//! keeps its name, address and zone, the agent comes back, and a shutdown's units run on a
//! power-off but not on a crash.

use std::time::{Duration, Instant};

use nspawn::{Error, Machine, Network};

const CHROOT: &str = "bookworm";

/// A unit that is up while the machine is, and marks a clean stop on the machine's disk.
fn install_marker_unit(m: &Machine) {
    m.write(
        "/etc/systemd/system/marker.service",
        "[Unit]\nDescription=marks a clean stop\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/bin/true\nExecStop=/bin/sh -c 'echo stopped >> /var/lib/marker'\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    m.succeed("systemctl daemon-reload && systemctl enable --now marker.service")
        .unwrap();
}

#[test]
fn a_reboot_keeps_the_disk_name_address_and_zones() {
    let m = Machine::builder(CHROOT)
        .network(Network::Zone {
            name: "power".into(),
            outside: false,
        })
        .also_on("power-back")
        .start()
        .unwrap();
    install_marker_unit(&m);
    m.write("/var/lib/kept", "written before the reboot\n")
        .unwrap();
    let (leader, address, hosts) = (m.leader_pid(), m.address(), m.read("/etc/hosts").unwrap());
    let first_boot = m
        .succeed("systemctl show -p InvocationID --value marker")
        .unwrap();

    m.reboot().unwrap();

    assert_ne!(m.leader_pid(), leader, "a new init");
    assert_ne!(
        m.succeed("systemctl show -p InvocationID --value marker")
            .unwrap(),
        first_boot,
        "the unit started again"
    );
    assert_eq!(
        m.read_to_string("/var/lib/kept").unwrap(),
        "written before the reboot\n"
    );
    assert_eq!(m.read_to_string("/var/lib/marker").unwrap(), "stopped\n");
    assert_eq!(m.succeed("hostname").unwrap().trim(), m.name());
    assert_eq!(m.address(), address);
    assert_eq!(m.read("/etc/hosts").unwrap(), hosts);
    // No iproute2 in a minimal chroot: the kernel's table of local addresses.
    let local = m.succeed("cat /proc/net/fib_trie").unwrap();
    let address = address.expect("a zone machine has an address").to_string();
    assert!(local.contains(&address), "{address} not in\n{local}");
    // Its further zone's link is back on that zone's bridge, with its address.
    let back = m.address_on("power-back").unwrap().to_string();
    assert!(local.contains(&back), "{back} not in\n{local}");
    let carrier = m.succeed("cat /sys/class/net/host1/carrier").unwrap();
    assert_eq!(carrier.trim(), "1");
    m.succeed("systemctl is-system-running --wait").unwrap();
}

#[test]
fn a_reboot_the_guest_asks_for_is_followed() {
    let m = Machine::start(CHROOT).unwrap();
    m.write("/root/kept", "yes").unwrap();
    let leader = m.leader_pid();
    // The command's own process may be killed by the reboot it starts: its outcome is moot.
    let _ = m.run(["systemctl", "reboot"]);
    if nspawn_runtime::backend::selected().unwrap().0 == nspawn_runtime::backend::Kind::Systemd {
        // nspawn reboots a unit's container in place: followed when a new container
        // registers, else the machine ends and says what to use instead. Either way the disk
        // is still there.
        let deadline = Instant::now() + Duration::from_secs(300);
        while m.is_running() && m.leader_pid() == leader {
            assert!(
                Instant::now() < deadline,
                "the guest's reboot was not noticed"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        if !m.is_running() {
            let err = m.read("/root/kept").unwrap_err();
            assert!(err.to_string().contains("use Machine::reboot()"), "{err}");
            m.power_on().unwrap();
        }
        assert_eq!(m.read_to_string("/root/kept").unwrap(), "yes");
        return;
    }
    // Whatever is asked next follows the reboot.
    let deadline = Instant::now() + Duration::from_secs(120);
    while m.leader_pid() == leader {
        assert!(
            Instant::now() < deadline,
            "the guest's reboot was not followed"
        );
        assert!(m.is_running(), "down instead of rebooted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(m.read_to_string("/root/kept").unwrap(), "yes");
}

#[test]
fn power_off_runs_the_shutdown_and_power_on_boots_the_same_disk() {
    let m = Machine::start(CHROOT).unwrap();
    install_marker_unit(&m);
    m.power_off().unwrap();
    assert!(!m.is_running());
    let err = m.read("/var/lib/marker").unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err}");
    assert!(err.to_string().contains("power_on()"), "{err}");

    m.power_on().unwrap();
    assert!(m.is_running());
    assert_eq!(m.read_to_string("/var/lib/marker").unwrap(), "stopped\n");
    assert_eq!(
        m.succeed("systemctl is-active marker").unwrap().trim(),
        "active"
    );
    let leader = m.leader_pid();
    m.power_on().unwrap();
    assert_eq!(
        m.leader_pid(),
        leader,
        "power_on on a running machine does nothing"
    );
}

#[test]
fn a_crash_skips_the_shutdown_and_keeps_what_was_written() {
    let m = Machine::start(CHROOT).unwrap();
    install_marker_unit(&m);
    m.succeed("echo committed > /var/lib/journal-of-record && sync")
        .unwrap();
    let leader = m.leader_pid();
    m.crash().unwrap();
    assert!(!m.is_running());
    m.power_on().unwrap();
    assert_ne!(m.leader_pid(), leader);
    assert_eq!(
        m.read_to_string("/var/lib/journal-of-record").unwrap(),
        "committed\n"
    );
    assert!(
        !m.exists("/var/lib/marker"),
        "no unit was stopped cleanly on a crash"
    );
    m.stop().unwrap();
}

#[test]
fn a_privileged_machine_says_why_it_cannot_boot_again() {
    let m = Machine::builder(CHROOT)
        .private_users(false)
        .start()
        .unwrap();
    m.crash().unwrap();
    let err = m.power_on().unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err}");
    assert!(err.to_string().contains("private_users(false)"), "{err}");
    // What is asked of it later says why too, not only that it is not running.
    let later = m.read("/etc/hostname").unwrap_err();
    assert!(matches!(later, Error::NotRunning { .. }), "{later}");
    assert!(
        later.to_string().contains("powering it on failed")
            && later.to_string().contains("private_users(false)"),
        "{later}"
    );
}
