//! Boot profiles of a chroot: `full` boots what Debian enables; `fast` masks, at build time,
//! the units that tests rarely need and that cost boot time, and boots to
//! `multi-user.target`.
//!
//! What `fast` leaves out (measured on kernel 6.18, 2 CPUs, medians of 5: boot to `READY=1`
//! 189 ms against 284 ms for `full`; raw nspawn on the same trees 175 against 285 ms):
//! - `systemd-logind` (no `loginctl`, no user sessions; `systemd-run --user` does not work);
//! - `systemd-journal-flush` (the journal stays in `/run`, where `journalctl` reads it);
//! - utmp/wtmp records (`systemd-update-utmp*`: `who` and `last` show nothing);
//! - the gettys (`getty.target`, `getty@tty1`, `console-getty`): no login prompt on the
//!   console;
//! - the hugepages and FUSE control mounts;
//! - the periodic timers (`apt-daily*`, `dpkg-db-backup`, `e2scrub*`, `fstrim`) and
//!   `e2scrub_reap`, `systemd-pstore`, `remote-fs.target`;
//! - the generators that find nothing to do in a container but cost an exec each at every
//!   boot ([`MASKED_GENERATORS`]: disks, encryption, hibernation, TPM, the kernel command
//!   line's `systemd.run=`/`systemd.mask=`/debug shell, offline updates, console gettys, the
//!   SSH-over-vsock sockets). `fstab`, `rc-local` and `sysv` stay: packages and tests use
//!   them.
//!
//! A test can still start any of them: `systemctl unmask` undoes a mask in its machine.

use std::path::Path;

/// The units the `fast` profile masks.
pub const MASKED: &[&str] = &[
    "systemd-logind.service",
    "systemd-journal-flush.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "getty.target",
    "getty@tty1.service",
    "console-getty.service",
    "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-pstore.service",
    "remote-fs.target",
];

/// The generators the `fast` profile masks (a link to `/dev/null` in
/// `/etc/systemd/system-generators/`, as systemd documents); a name the release does not
/// ship is harmless.
pub const MASKED_GENERATORS: &[&str] = &[
    "systemd-cryptsetup-generator",
    "systemd-debug-generator",
    "systemd-getty-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-run-generator",
    "systemd-ssh-generator",
    "systemd-system-update-generator",
    "systemd-tpm2-generator",
    "systemd-veritysetup-generator",
];

/// Applies `profile` to the tree at `root` (being built).
pub(crate) fn apply(root: &Path, profile: &str) -> std::io::Result<()> {
    if profile != "fast" {
        return Ok(());
    }
    let etc = root.join("etc/systemd/system");
    std::fs::create_dir_all(&etc)?;
    for unit in MASKED {
        replace_link(&etc.join(unit), Path::new("/dev/null"))?;
        // The enablement links Debian made: a masked unit's would only log a warning.
        for wants in [
            "multi-user.target.wants",
            "timers.target.wants",
            "sysinit.target.wants",
            "getty.target.wants",
        ] {
            remove_if_there(&etc.join(wants).join(unit))?;
        }
    }
    let generators = root.join("etc/systemd/system-generators");
    std::fs::create_dir_all(&generators)?;
    for generator in MASKED_GENERATORS {
        replace_link(&generators.join(generator), Path::new("/dev/null"))?;
    }
    replace_link(
        &etc.join("default.target"),
        Path::new("/lib/systemd/system/multi-user.target"),
    )
}

fn replace_link(link: &Path, target: &Path) -> std::io::Result<()> {
    remove_if_there(link)?;
    std::os::unix::fs::symlink(target, link)
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_masks_and_unwants_and_full_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc/systemd/system");
        std::fs::create_dir_all(etc.join("timers.target.wants")).unwrap();
        std::os::unix::fs::symlink("/lib/x", etc.join("timers.target.wants/fstrim.timer")).unwrap();
        apply(root.path(), "full").unwrap();
        assert!(!etc.join("default.target").exists());
        apply(root.path(), "fast").unwrap();
        let link = |p: &str| std::fs::read_link(etc.join(p)).unwrap();
        assert_eq!(link("systemd-logind.service"), Path::new("/dev/null"));
        assert_eq!(
            link("default.target"),
            Path::new("/lib/systemd/system/multi-user.target")
        );
        assert!(std::fs::symlink_metadata(etc.join("timers.target.wants/fstrim.timer")).is_err());
        let generator = root
            .path()
            .join("etc/systemd/system-generators/systemd-gpt-auto-generator");
        assert_eq!(
            std::fs::read_link(generator).unwrap(),
            Path::new("/dev/null")
        );
        // Twice is the same as once.
        apply(root.path(), "fast").unwrap();
    }
}
