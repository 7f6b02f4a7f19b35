//! Chroot profiles: `profile = "fast"` masks the units and generators tests rarely need and
//! boots to `multi-user.target`; the machine is still a working systemd.

use nspawn::Machine;

#[test]
fn a_fast_machine_masks_what_it_leaves_out_and_works() {
    let fast = Machine::start("bookworm-fast").unwrap();
    let full = Machine::start("bookworm").unwrap();
    let state = |m: &Machine, unit: &str| {
        let out = m
            .command("systemctl")
            .args(["is-enabled", unit])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for unit in nspawn_runtime::chroot::profile::MASKED {
        assert_eq!(state(&fast, unit), "masked", "{unit}");
        assert_ne!(state(&full, unit), "masked", "{unit}");
    }
    // Masked generators do not run (the getty generator's console getty is full's only);
    // the fstab generator still does.
    for generator in nspawn_runtime::chroot::profile::MASKED_GENERATORS {
        let link = format!("/etc/systemd/system-generators/{generator}");
        assert_eq!(fast.sh(&format!("readlink {link}")).unwrap(), "/dev/null\n");
        assert!(!full.exists(&link), "{link}");
    }
    let console_getty = "/run/systemd/generator/getty.target.wants/console-getty.service";
    assert!(full.exists(console_getty));
    assert!(!fast.exists(console_getty));
    assert!(fast.exists("/run/systemd/generator/local-fs.target.wants/systemd-remount-fs.service"));
    assert_eq!(
        fast.sh("systemctl get-default").unwrap(),
        "multi-user.target\n"
    );
    // Nothing failed for what was left out, and units still start and log.
    let running = fast
        .command("systemctl")
        .args(["is-system-running", "--wait"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout), "running\n");
    fast.run([
        "systemd-run",
        "--wait",
        "--unit=probe",
        "/bin/echo",
        "from-a-unit",
    ])
    .unwrap();
    let journal = fast.sh("journalctl --no-pager -u probe").unwrap();
    assert!(journal.contains("from-a-unit"), "{journal}");
    assert!(fast
        .call(
            |(): ()| std::path::Path::new("/etc/os-release").exists(),
            ()
        )
        .unwrap());
}
