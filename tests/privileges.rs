//! Test code runs as the user who invoked sudo; machines still work.
//!
//! `sudo_user_runs_test_code_unprivileged` re-runs this test binary as if under
//! `sudo -E cargo test`, with `SUDO_UID`/`SUDO_GID` of a real unprivileged user, and has the
//! probe below check what it sees from the inside.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const USER: &str = "nspawn-probe";
const PROBE_DIR: &str = "NSPAWN_PROBE_DIR";

fn id(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, USER]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sudo_user_runs_test_code_unprivileged() {
    let _root = nspawn::privs::root().unwrap();
    if Command::new("id").arg(USER).output().unwrap().status.code() != Some(0) {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (uid, gid) = (id("-u"), id("-g"));
    let dir = common::scratch_dir();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "probe",
            "--ignored",
            "--nocapture",
            "--test-threads=4",
        ])
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", gid.to_string())
        .env("SUDO_USER", USER)
        .env(PROBE_DIR, dir.path())
        .output()
        .unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("1 passed"), "{report}");
    let created = dir.path().join("by-the-test-body");
    assert_eq!(std::fs::metadata(&created).unwrap().uid(), uid, "{report}");
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
        cmd.args(["--exact", "probe", "--ignored"])
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
