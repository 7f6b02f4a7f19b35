//! The machine API against real containers booted from `test_chroots/bookworm`
//! (`cargo nspawn make-chroots` builds it).

use crate::common;

use std::path::Path;
use std::time::Duration;

use nspawn::{Error, Machine};

const CHROOT: &str = "bookworm";

#[test]
fn boots_systemd_and_runs_commands() {
    let m = Machine::start(CHROOT).unwrap();
    assert!(m.name().starts_with("nspawn-"));
    assert!(m.is_running());
    // PID 1 of the container is systemd, and commands run inside its PID namespace.
    assert_eq!(m.sh("cat /proc/1/comm").unwrap(), "systemd\n");
    assert_eq!(m.sh("hostname").unwrap().trim(), m.name());
    assert!(m
        .read_to_string("/etc/os-release")
        .unwrap()
        .contains("bookworm"));
    m.run(["systemctl", "is-active", "dbus.socket"]).unwrap();
    m.stop().unwrap();
}

#[test]
fn command_mirrors_std_process_command() {
    let m = Machine::start(CHROOT).unwrap();
    let out = m
        .command("sh")
        .args([
            "-c",
            "cat > /tmp/in; echo \"$GREETING $(wc -c < /tmp/in) $(pwd) $USER $HOME\"",
        ])
        .env("GREETING", "hello")
        .current_dir("/tmp")
        .stdin("12345")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "hello 5 /tmp root /root\n"
    );
    // The environment is clean: nothing of the test process leaks in.
    std::env::set_var("NSPAWN_TEST_LEAK", "1");
    assert_eq!(m.sh("echo ${NSPAWN_TEST_LEAK:-clean}").unwrap(), "clean\n");

    m.run(["useradd", "--create-home", "alice"]).unwrap();
    let out = m.command("id").arg("-un").user("alice").output().unwrap();
    assert_eq!(out.stdout, b"alice\n");
    let out = m.command("pwd").user("alice").output().unwrap();
    assert_eq!(out.stdout, b"/home/alice\n");
    let status = m.command("sh").args(["-c", "exit 7"]).status().unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn run_fails_with_the_command_status_and_stderr() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m.run(["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Exec { .. }), "{msg}");
    assert!(msg.contains("`sh -c 'echo oops >&2; exit 3'`"), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("oops"), "{msg}");
}

#[test]
fn missing_programs_users_and_dirs_are_clear_errors() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m.run(["no-such-program"]).unwrap_err();
    assert!(matches!(err, Error::ProgramNotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`no-such-program` was not found in machine"),
        "{err}"
    );
    let err = m.command("true").user("nobody-here").output().unwrap_err();
    assert!(matches!(err, Error::NoSuchUser { .. }), "{err}");
    let err = m
        .command("true")
        .current_dir("/no/such/dir")
        .output()
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    assert!(m.read("/no/such/file").is_err());
}

#[test]
fn commands_that_hang_time_out() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .command("sleep")
        .arg("600")
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(common::eventually(|| common::running(&m, "sleep") == 0));
}

#[test]
fn files_go_in_and_out() {
    let m = Machine::start(CHROOT).unwrap();
    assert!(m.exists("/etc/os-release"));
    assert!(!m.exists("/etc/nothing-here"));
    m.write("/etc/motd", "hello\n").unwrap();
    assert_eq!(m.sh("cat /etc/motd").unwrap(), "hello\n");
    assert_eq!(m.read("/etc/motd").unwrap(), b"hello\n");
    assert_eq!(m.sh("stat -c %a /etc/motd").unwrap(), "644\n");

    // Absolute symlinks resolve inside the machine, not on the host.
    m.run(["ln", "-s", "/etc/os-release", "/tmp/link"]).unwrap();
    assert!(m.read_to_string("/tmp/link").unwrap().contains("bookworm"));

    let dir = common::scratch_dir();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho from-host\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    m.copy_in(&script, "/usr/local/bin/from-host").unwrap();
    assert_eq!(m.sh("from-host").unwrap(), "from-host\n");

    let back = dir.path().join("passwd");
    m.copy_out("/etc/passwd", &back).unwrap();
    assert!(std::fs::read_to_string(&back).unwrap().starts_with("root:"));
    assert_eq!(
        m.host_path("/etc/passwd"),
        Path::new(&format!("/proc/{}/root/etc/passwd", m.leader_pid()))
    );
}

#[test]
fn stop_and_drop_leave_nothing_behind() {
    let m = Machine::start(CHROOT).unwrap();
    let name = m.name().to_string();
    assert!(!common::processes_of(&name).is_empty());
    m.stop().unwrap();
    assert_eq!(common::leftovers_of(&name), Vec::<String>::new());

    let m = Machine::start(CHROOT).unwrap();
    let name = m.name().to_string();
    let leader = m.leader_pid();
    drop(m);
    assert_eq!(common::leftovers_of(&name), Vec::<String>::new());
    assert!(!Path::new(&format!("/proc/{leader}")).exists());
}

#[test]
fn machines_are_isolated_from_each_other_and_from_the_chroot() {
    let a = Machine::start(CHROOT).unwrap();
    let b = Machine::start(CHROOT).unwrap();
    a.write("/root/only-in-a", "a").unwrap();
    assert!(!b.exists("/root/only-in-a"));
    assert!(!common::chroots_dir()
        .join(CHROOT)
        .join("root/only-in-a")
        .exists());
}

#[test]
fn builder_options_reach_the_machine() {
    let dir = common::scratch_dir();
    std::fs::write(dir.path().join("shared"), "from the host").unwrap();
    let m = Machine::builder(CHROOT)
        .private_network(true)
        .bind_ro(dir.path(), "/mnt/host")
        .env("NSPAWN_TEST", "yes")
        .wait_until_running(true)
        .start()
        .unwrap();
    assert_eq!(
        m.read_to_string("/mnt/host/shared").unwrap(),
        "from the host"
    );
    assert!(
        m.run(["touch", "/mnt/host/x"]).is_err(),
        "the bind is read-only"
    );
    // Only loopback in a private network namespace.
    assert_eq!(m.sh("ls /sys/class/net").unwrap(), "lo\n");
    assert_eq!(m.sh("systemctl is-system-running").unwrap(), "running\n");
    assert!(m
        .sh("tr '\\0' '\\n' < /proc/1/environ")
        .unwrap()
        .contains("NSPAWN_TEST=yes"));
}

#[test]
fn a_missing_chroot_names_the_xtask() {
    let err = Machine::start("no-such-chroot").unwrap_err();
    assert!(
        matches!(err, Error::Chroot(nspawn::ChrootError::Missing { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("cargo nspawn make-chroots no-such-chroot"),
        "{err}"
    );
}

#[test]
fn a_tree_without_systemd_fails_to_boot_with_the_console_tail() {
    let dir = common::scratch_dir();
    let tree = dir.path().join("broken");
    std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("usr/lib/os-release"), "ID=debian\n").unwrap();
    let err = Machine::builder(tree.to_str().unwrap())
        .boot_timeout(Duration::from_secs(20))
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Boot { .. }), "{msg}");
    assert!(msg.contains("exited"), "{msg}");
    assert!(msg.contains("last console lines of"), "{msg}");
    let Error::Boot {
        log, tail, machine, ..
    } = err
    else {
        unreachable!()
    };
    assert!(log.exists());
    assert!(!tail.is_empty(), "the console tail is in the error");
    assert_eq!(common::leftovers_of(&machine), Vec::<String>::new());
}

#[test]
fn a_boot_that_never_gets_ready_times_out() {
    let err = Machine::builder(CHROOT)
        .boot_timeout(Duration::from_millis(50))
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no READY=1 within"), "{msg}");
    let Error::Boot { machine, .. } = err else {
        unreachable!()
    };
    assert_eq!(common::leftovers_of(&machine), Vec::<String>::new());
}

/// The examples' `apt-get install -y jq` works as printed: a chroot keeps the package lists
/// its bootstrap fetched, and an isolated machine (the default) has a way out.
#[test]
fn a_package_installs_as_the_examples_show() {
    let machine = Machine::start(CHROOT).unwrap();
    machine.run(["apt-get", "install", "-y", "jq"]).unwrap();
    let version = machine.run(["jq", "--version"]).unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("jq-"),
        "{version:?}"
    );
    machine.stop().unwrap();
}

#[test]
fn directories_are_copied_in_and_out_with_modes_and_symlinks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = Machine::start(CHROOT).unwrap();
    let dir = common::scratch_dir();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(site.join("css/site.css"), "h1 {}").unwrap();
    std::fs::write(site.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(site.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("index.html", site.join("home.html")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", site.join("host-secret")).unwrap();

    // Parents made; symlinks stay symlinks, pointing where they pointed.
    m.copy_in(&site, "/srv/www/site").unwrap();
    assert_eq!(
        m.read_to_string("/srv/www/site/css/site.css").unwrap(),
        "h1 {}"
    );
    assert_eq!(m.succeed("/srv/www/site/run.sh").unwrap(), "ran\n");
    assert_eq!(
        m.succeed("stat -c %a /srv/www/site/run.sh").unwrap(),
        "750\n"
    );
    assert_eq!(
        m.succeed("readlink /srv/www/site/home.html").unwrap(),
        "index.html\n"
    );
    assert_eq!(
        m.succeed("readlink /srv/www/site/host-secret").unwrap(),
        "/etc/shadow\n"
    );
    m.copy_in(
        dir.path().join("site/index.html"),
        "/new/parents/index.html",
    )
    .unwrap();
    assert!(m.exists("/new/parents/index.html"));

    m.succeed("mkdir -p /etc/app/conf.d && echo 1 > /etc/app/conf.d/a && chmod 555 /etc/app/conf.d && ln -s /etc/passwd /etc/app/passwd-link").unwrap();
    let back = dir.path().join("app");
    m.copy_out("/etc/app", &back).unwrap();
    assert_eq!(
        std::fs::read_to_string(back.join("conf.d/a")).unwrap(),
        "1\n"
    );
    let conf = std::fs::metadata(back.join("conf.d")).unwrap();
    assert_eq!(conf.permissions().mode() & 0o777, 0o555);
    assert_eq!(
        conf.uid(),
        nix::unistd::geteuid().as_raw(),
        "the test's user owns the copy"
    );
    let link = std::fs::symlink_metadata(back.join("passwd-link")).unwrap();
    assert!(
        link.file_type().is_symlink(),
        "copied as a symlink, not followed"
    );
    assert_eq!(
        std::fs::read_link(back.join("passwd-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    std::fs::set_permissions(back.join("conf.d"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let err = m.copy_out("/etc/app", &back).unwrap_err();
    assert!(
        err.to_string().contains("exists"),
        "an existing target is refused: {err}"
    );
    m.run(["mkfifo", "/etc/app/fifo"]).unwrap();
    let err = m
        .copy_out("/etc/app", dir.path().join("again"))
        .unwrap_err();
    assert!(err.to_string().contains("/etc/app/fifo"), "{err}");

    let err = m.create_dir_all("relative/path").unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
}

/// `?` takes host I/O errors in a test returning `nspawn::Result`.
fn reads_a_missing_fixture() -> nspawn::Result<String> {
    Ok(std::fs::read_to_string("/nonexistent/fixture")?)
}

#[test]
fn host_io_errors_convert() {
    let err = reads_a_missing_fixture().unwrap_err();
    assert!(
        matches!(err, nspawn::Error::Host(nspawn::HostError::Io { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("No such file"), "{err}");
}
