//! Test code runs as the user who invoked sudo; machines still work.
//!
//! `sudo_user_runs_test_code_unprivileged` re-runs this test binary as if under
//! `sudo -E cargo test`, with `SUDO_UID`/`SUDO_GID` of a real unprivileged user, and has the
//! probe below check what it sees from the inside.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const USER: &str = common::PROBE_USER;
const PROBE_DIR: &str = "NSPAWN_PROBE_DIR";
/// `<fd>:<path>` of a root-only directory the probe inherits.
const ROOT_ONLY: &str = "NSPAWN_PROBE_ROOT_ONLY";

#[test]
fn sudo_user_runs_test_code_unprivileged() {
    let (uid, gid) = common::probe_user();
    let _root = nspawn::privs::root().unwrap();
    let dir = common::scratch_dir();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    // A directory only root may write, handed down as an inherited descriptor (what `flock
    // dir cargo test` or a CI runner does): the body must not get a root-owned file into it.
    let root_only = common::scratch_dir();
    std::fs::set_permissions(
        root_only.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let fd = nix::fcntl::open(
        root_only.path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "privileges::probe",
            "--ignored",
            "--nocapture",
            "--test-threads=4",
        ])
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", gid.to_string())
        .env("SUDO_USER", USER)
        .env(PROBE_DIR, dir.path())
        .env(ROOT_ONLY, format!("{fd}:{}", root_only.path().display()))
        .output()
        .unwrap();
    nix::unistd::close(fd).unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("1 passed"), "{report}");
    let created = dir.path().join("by-the-test-body");
    assert_eq!(std::fs::metadata(&created).unwrap().uid(), uid, "{report}");
    let planted: Vec<_> = std::fs::read_dir(root_only.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(planted, Vec::<std::path::PathBuf>::new(), "{report}");
}

/// Puts the runtime's pre-`main` hook in this binary, as any `#[nspawn::test]` does.
#[nspawn::test(chroot = "bookworm")]
#[ignore = "only here for its pre-main hook"]
fn links_the_pre_main_hook() {}

/// Runs inside the re-executed binary only (see above). A plain `#[test]` that calls nothing
/// of the runtime first: root was already dropped before `main`.
#[test]
#[ignore = "run by sudo_user_runs_test_code_unprivileged"]
fn probe() {
    let Some(dir) = std::env::var_os(PROBE_DIR) else {
        return;
    };
    let uid: u32 = std::env::var("SUDO_UID").unwrap().parse().unwrap();
    // SAFETY: plain getters.
    let (euid, ruid) = unsafe { (libc::geteuid(), libc::getuid()) };
    assert_eq!(
        (euid, ruid),
        (uid, uid),
        "the test body runs as the sudo user"
    );

    let m = nspawn::Machine::start("bookworm").unwrap();
    assert_eq!(
        m.sh("id -u").unwrap(),
        "0\n",
        "commands in the machine run as its root"
    );
    assert_eq!(
        m.call(|(): ()| nix::unistd::geteuid().as_raw(), ())
            .unwrap(),
        0,
        "a call runs as the machine's root"
    );
    m.write("/root/secret", "x").unwrap();
    assert!(m.exists("/root/secret"));
    assert_eq!(m.read_to_string("/root/secret").unwrap(), "x");
    // SAFETY: as above; still the user after all that.
    assert_eq!(unsafe { libc::geteuid() }, uid);
    assert_eq!(
        std::fs::metadata(m.log_path()).unwrap().uid(),
        uid,
        "the console log is the user's"
    );

    escape_attempts(&m);

    let file = Path::new(&dir).join("by-the-test-body");
    std::fs::write(&file, "mine").unwrap();
    let name = m.name().to_string();
    m.stop().unwrap();
    assert_eq!(common::leftovers_of(&name), Vec::<String>::new());
}

/// A malformed privilege setting stops the run before any test, never leaving test code root.
#[test]
fn malformed_privilege_settings_refuse_to_run() {
    let cases: [&[(&str, &str)]; 5] = [
        &[("NSPAWN_USER", "1003")],
        &[("NSPAWN_USER", "name:name")],
        &[("NSPAWN_USER", "bad")],
        &[("SUDO_UID", "1000"), ("SUDO_GID", "abc")],
        &[("SUDO_UID", "1000")],
    ];
    for env in cases {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "privileges::probe", "--ignored"])
            .env_remove("NSPAWN_USER")
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Under `sudo -E cargo test` this process has dropped root; the child must start as
        // root to reach the decision at all.
        nspawn::privs::start_as_root(&mut cmd);
        let out = cmd.output().unwrap();
        let report = common::report(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {report}");
        assert!(
            report.contains("refusing to run the tests as root"),
            "{report}"
        );
        assert!(!report.contains("running 1 test"), "no test ran: {report}");
    }
}

/// What test code running as the user might try, with a machine's root at hand, to get a
/// root-owned file onto the host; the parent checks the directory stayed empty.
fn escape_attempts(m: &nspawn::Machine) {
    let spec = std::env::var(ROOT_ONLY).unwrap();
    let (fd, path) = spec.split_once(':').unwrap();
    let through_fd = format!("/proc/self/fd/{fd}");
    let _ = m.sh(&format!(
        "touch {through_fd}/by-sh; touch /proc/1/fd/{fd}/by-sh-via-init; true"
    ));
    let _ = m.write(format!("{through_fd}/by-write"), "x");
    assert!(
        m.copy_out("/etc/hostname", format!("{through_fd}/by-copy-out"))
            .is_err(),
        "copy_out writes as the user"
    );
    for host in [path, through_fd.as_str()] {
        let refused = nspawn::Machine::builder("bookworm")
            .bind(host, "/mnt")
            .start();
        assert!(
            matches!(refused, Err(nspawn::Error::BindRefused { .. })),
            "{host}: {refused:?}"
        );
    }
    // A chroot this user cannot reach is not "missing".
    let hidden = nspawn::Machine::start(&format!("{path}/bookworm"))
        .unwrap_err()
        .to_string();
    assert!(
        hidden.contains("Permission denied") && !hidden.contains("is missing"),
        "{hidden}"
    );
    // Nor can this user, like any other local user, hold a slot or reach the notify sockets.
    for private in [
        "/run/nspawn-rs/slots/0.lock",
        "/run/nspawn-rs/notify",
        "/run/nspawn-rs/machines",
    ] {
        let err = std::fs::File::open(private).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{private}"
        );
    }
}
