//! `cargo nspawn make-chroots` as users run it.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A workspace of its own with the given manifest text.
fn scratch_workspace(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    dir
}

#[test]
fn a_bad_declaration_is_a_clear_error_not_a_panic() {
    let ws = scratch_workspace(
        "[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\nsuit = \"sid\"\n",
    );
    let out = xtask()
        .args(["make-chroots", "--list"])
        .env("NSPAWN_WORKSPACE", ws.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "unknown key `suit`, expected one of `suite`, `mirror`, `variant`, `include`"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn an_undeclared_name_lists_the_declared_ones() {
    let out = xtask().args(["make-chroots", "jessie"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "chroot \"jessie\" is not declared; declared chroots: bookworm, bookworm-fast, host, trixie"
        ),
        "{stderr}"
    );
}

#[test]
fn a_built_chroot_is_skipped_without_touching_it() {
    let chroot = workspace().join("test_chroots/bookworm");
    let stamp = chroot.join("etc/nspawn-chroot.toml");
    let before = std::fs::metadata(&stamp)
        .expect("the chroots are built before the tests")
        .modified()
        .unwrap();
    let out = xtask().args(["make-chroots", "bookworm"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("bookworm: up to date"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&stamp).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn list_shows_state_and_storage() {
    let out = xtask().args(["make-chroots", "--list"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("bookworm") && stdout.contains("suite=bookworm"),
        "{stdout}"
    );
    assert!(stdout.contains("[ready, "), "{stdout}");
}

#[test]
fn a_changed_declaration_asks_for_force() {
    let ws = scratch_workspace("[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\ninclude = [\"dbus\", \"systemd\", \"python3\"]\n");
    let out = xtask()
        .args(["make-chroots"])
        .env("NSPAWN_WORKSPACE", ws.path())
        .env("NSPAWN_CHROOTS_DIR", workspace().join("test_chroots"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was built from a different declaration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo nspawn make-chroots --force bookworm"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_during_a_build_leaves_no_chroot_and_no_partial_tree() {
    let ws = scratch_workspace("[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\n");
    let chroots = ws.path().join("test_chroots");
    let mut child = xtask()
        .args(["make-chroots"])
        .env("NSPAWN_WORKSPACE", ws.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the bootstrapper is at work on the temporary tree.
    let deadline = Instant::now() + Duration::from_secs(120);
    let log = chroots.join(".logs/bookworm.log");
    while std::fs::read_to_string(&log).map_or(true, |l| l.lines().count() < 5) {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "it dies of the interrupt"
    );
    assert!(
        !chroots.join("bookworm").exists(),
        "no tree under the final name"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&chroots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        nspawn_runtime::chroot::storage::mounts_below(&chroots).is_empty(),
        "nothing left mounted"
    );
}

/// The built chroot is usable as it is, before and without the runtime: plain systemd-nspawn
/// runs a command in it.
#[test]
fn the_built_chroot_runs_a_command_under_plain_systemd_nspawn() {
    let chroot = workspace().join("test_chroots/bookworm");
    // Without systemd on the host, nspawn puts its payload under our cgroup: give it its own.
    let cgroup = nspawn_runtime::testing::MachineCgroup::create("nspawn-cli-plain");
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args([
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--console=pipe",
        "--volatile=overlay",
        "--read-only",
    ])
    .arg(format!("--directory={}", chroot.display()))
    .args([
        "--",
        "/bin/sh",
        "-c",
        ". /etc/os-release; echo $VERSION_CODENAME; ls /lib/systemd/systemd",
    ]);
    cgroup.enter_before_exec(&mut cmd);
    let out = cmd.output().unwrap();
    cgroup.remove();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bookworm\n/lib/systemd/systemd\n"
    );
}

#[test]
fn btrfs_image_puts_the_chroots_on_subvolumes() {
    let ws = scratch_workspace("[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\n");
    let chroots = ws.path().join("test_chroots");
    let out = xtask()
        .args(["make-chroots", "--btrfs-image", "2G"])
        .env("NSPAWN_WORKSPACE", ws.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let storage = nspawn_runtime::chroot::storage::storage_of(&chroots.join("bookworm"));
    let on_btrfs = nspawn_runtime::chroot::storage::is_btrfs(&chroots);
    let _ = Command::new("umount").arg(&chroots).status();
    assert!(out.status.success(), "{stderr}");
    assert!(
        on_btrfs,
        "the image is mounted on the chroots directory: {stderr}"
    );
    assert!(
        stderr.contains("does not survive a reboot; remount it with: mount -o loop"),
        "{stderr}"
    );
    assert_eq!(
        storage,
        nspawn_runtime::chroot::storage::Storage::Subvolume,
        "{stderr}"
    );
}
