//! Waiting for the system instead of sleeping, and testinfra-style state: each helper's
//! success, its timeout, and a unit that fails, with the messages they carry.

use std::time::Duration;

use nspawn::{Error, Machine};

const CHROOT: &str = "bookworm";

/// Installs a unit from `service`'s `[Service]` lines and starts it without waiting.
fn start_unit(m: &Machine, name: &str, service: &str) {
    m.write(
        format!("/etc/systemd/system/{name}.service"),
        format!("[Service]\n{service}\n"),
    )
    .unwrap();
    m.run(["systemctl", "daemon-reload"]).unwrap();
    m.run(["systemctl", "start", "--no-block", name]).unwrap();
}

fn message(e: &Error) -> String {
    e.to_string()
}

#[test]
fn units_are_waited_for_and_their_failures_explained() {
    let m = Machine::start(CHROOT).unwrap();
    start_unit(
        &m,
        "slow",
        "Type=oneshot\nRemainAfterExit=yes\nExecStartPre=/bin/sleep 0.5\nExecStart=/bin/true",
    );
    let state = m
        .wait_for_unit("slow.service", Duration::from_secs(30))
        .unwrap();
    assert!(state.is_active(), "{state}");
    assert_eq!(state.sub, "exited");

    start_unit(&m, "stuck", "Type=oneshot\nExecStart=/bin/sleep 600");
    let err = m
        .wait_for_unit("stuck.service", Duration::from_millis(500))
        .unwrap_err();
    let text = message(&err);
    assert!(matches!(err, Error::NotReady { .. }), "{text}");
    assert!(text.contains("still not active after 0.5 s"), "{text}");
    assert!(text.contains("activating"), "{text}");

    start_unit(
        &m,
        "broken",
        "Type=oneshot\nExecStart=/bin/sh -c 'echo broken-unit-says-why; exit 3'",
    );
    let err = m
        .wait_for_unit("broken.service", Duration::from_secs(30))
        .unwrap_err();
    let text = message(&err);
    assert!(text.contains("unit broken.service"), "{text}");
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("exit-code"), "{text}");
    assert!(
        text.contains("broken-unit-says-why"),
        "the journal tail: {text}"
    );

    let err = m
        .wait_for_unit("no-such.service", Duration::from_secs(5))
        .unwrap_err();
    assert!(message(&err).contains("not-found"), "{err}");
}

#[test]
fn the_system_state_names_the_failed_units() {
    let m = Machine::start(CHROOT).unwrap();
    m.wait_until_running(Duration::from_secs(30)).unwrap();
    start_unit(
        &m,
        "crashes",
        "Type=oneshot\nExecStart=/bin/sh -c 'echo crash-report-line; exit 1'",
    );
    let failed = m
        .wait_for_unit("crashes.service", Duration::from_secs(30))
        .unwrap_err();
    assert!(message(&failed).contains("failed"));
    let err = m.wait_until_running(Duration::from_secs(30)).unwrap_err();
    let text = message(&err);
    assert!(text.contains("\"degraded\""), "{text}");
    assert!(text.contains("crashes.service"), "{text}");
    assert!(text.contains("crash-report-line"), "{text}");
}

#[test]
fn sockets_are_waited_for_and_the_listening_ports_shown() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .wait_for_port(8089, Duration::from_millis(300))
        .unwrap_err();
    let text = message(&err);
    assert!(text.contains("port 8089 (from inside)"), "{text}");
    assert!(text.contains("accepts no connection"), "{text}");
    assert!(text.contains("after 0.3 s"), "{text}");
    assert!(text.contains("nothing listens on port 8089"), "{text}");

    // systemd itself listens: socket units need no daemon in the chroot.
    m.write(
        "/etc/systemd/system/probe.socket",
        "[Socket]\nListenStream=127.0.0.1:8089\nListenStream=/run/probe.sock\nAccept=yes\n",
    )
    .unwrap();
    m.write(
        "/etc/systemd/system/probe@.service",
        "[Service]\nExecStart=/bin/echo hello\nStandardInput=socket\n",
    )
    .unwrap();
    m.run(["systemctl", "daemon-reload"]).unwrap();
    m.run(["systemctl", "start", "probe.socket"]).unwrap();
    m.wait_for_port(8089, Duration::from_secs(10)).unwrap();
    m.wait_for_socket("/run/probe.sock", Duration::from_secs(10))
        .unwrap();
    let err = m
        .wait_for_socket("/run/nothing.sock", Duration::from_millis(200))
        .unwrap_err();
    assert!(message(&err).contains("/run/nothing.sock"), "{err}");
    assert!(message(&err).contains("No such file or directory"), "{err}");
    let err = m
        .wait_for_port(8090, Duration::from_millis(200))
        .unwrap_err();
    assert!(
        message(&err).contains("127.0.0.1:8089"),
        "listening sockets listed with their addresses: {err}"
    );
}

/// A socket unit that answers on `listen` (an address and port); systemd itself listens.
fn listen(m: &Machine, unit: &str, listen: &str) {
    m.write(
        format!("/etc/systemd/system/{unit}.socket"),
        format!("[Socket]\nListenStream={listen}\nAccept=yes\n"),
    )
    .unwrap();
    m.write(
        format!("/etc/systemd/system/{unit}@.service"),
        "[Service]\nExecStart=/bin/echo hello\nStandardInput=socket\n",
    )
    .unwrap();
    m.succeed(&format!(
        "systemctl daemon-reload && systemctl start {unit}.socket"
    ))
    .unwrap();
}

#[test]
fn ports_are_waited_for_from_inside_from_a_peer_and_from_the_test_process() {
    use nspawn::Network;
    let zone = Network::Zone {
        name: "ports".into(),
        outside: false,
    };
    let server = Machine::builder(CHROOT)
        .network(zone.clone())
        .alias("server-lazy")
        .start()
        .unwrap();
    let client = Machine::builder(CHROOT).network(zone).start().unwrap();
    let address = server.address().unwrap().to_string();

    // Bound to its zone address only: inside it counts, though loopback refuses.
    listen(&server, "zoned", &format!("{address}:8081"));
    server.port(8081).wait_open().unwrap();
    server.port(8081).from_test().wait_open().unwrap();
    client.port(8081).on(&server).wait_open().unwrap();
    client.port(8081).on("server-lazy").wait_open().unwrap();

    // Bound to loopback only: inside yes, from elsewhere no, and the error says where it listens.
    listen(&server, "local", "127.0.0.1:8082");
    server.port(8082).wait_open().unwrap();
    let err = client
        .port(8082)
        .on(&server)
        .timeout(Duration::from_millis(500))
        .wait_open()
        .unwrap_err();
    let text = message(&err);
    assert!(
        text.contains(&format!("{address}:8082 (from machine {})", client.name())),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.1:8082"),
        "what listens, with addresses: {text}"
    );
    assert!(text.contains(&format!("{address}:8081")), "{text}");
    let err = server
        .port(8082)
        .from_test()
        .timeout(Duration::from_millis(300))
        .wait_open()
        .unwrap_err();
    assert!(message(&err).contains("from the test process"), "{err}");

    // Closing.
    let err = client
        .port(8081)
        .on(&server)
        .timeout(Duration::from_millis(300))
        .wait_closed()
        .unwrap_err();
    assert!(message(&err).contains("still accepts connections"), "{err}");
    server.succeed("systemctl stop zoned.socket").unwrap();
    server.port(8081).wait_closed().unwrap();
    client.port(8081).on(&server).wait_closed().unwrap();
    server.port(8081).from_test().wait_closed().unwrap();
}

#[test]
fn packages_users_and_units_show_their_actual_state() {
    let m = Machine::start(CHROOT).unwrap();
    let systemd = m.package_version("systemd").unwrap();
    assert!(
        systemd.as_deref().is_some_and(|v| v.starts_with("252")),
        "{systemd:?}"
    );
    assert_eq!(m.package_version("nginx").unwrap(), None);
    assert!(m.user_exists("root").unwrap());
    assert!(!m.user_exists("no-such-user").unwrap());
    let journald = m.unit("systemd-journald.service").unwrap();
    assert!(journald.is_active(), "{journald}");
    assert_eq!(journald.sub, "running");
    let shown = journald.to_string();
    assert!(
        shown.starts_with("systemd-journald.service: loaded, active (running)"),
        "{shown}"
    );
    let missing = m.unit("no-such.service").unwrap();
    assert!(!missing.is_active());
    assert_eq!(missing.load, "not-found");
}

/// The state helpers print nothing of their own: libtest captures only what the test prints
/// through `print!`, so anything a helper's command wrote to the process's stdout would reach
/// the terminal. This test runs the one above in a child and reads that stdout.
#[test]
fn the_state_helpers_print_nothing_on_the_terminal() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "wait::packages_users_and_units_show_their_actual_state",
        "--quiet",
    ]);
    nspawn::privs::start_as_root(&mut child);
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("root:x:0:0"), "{stdout}");
}

/// The NixOS driver's verbs: `succeed` (strict bash: a failing pipeline stage fails it, where
/// `sh` does not), `fail`, the retries, and the wait for a file, with their errors.
#[test]
fn the_drivers_verbs_succeed_fail_retry_and_wait_for_files() {
    let m = Machine::builder(CHROOT)
        .wait_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    assert_eq!(m.wait_timeout(), Duration::from_secs(30));
    assert_eq!(m.succeed("echo one | tr o O").unwrap(), "One\n");
    let err = m.succeed("false | cat").unwrap_err();
    assert!(matches!(err, Error::Exec { .. }), "{err}");
    assert!(m.sh("false | cat").is_ok(), "sh stays plain /bin/sh");
    let refused = m.fail("echo nope >&2; exit 3").unwrap();
    assert!(refused.contains("nope"), "{refused}");
    let err = m.fail("echo fine").unwrap_err();
    assert!(matches!(err, Error::Succeeded { .. }), "{err}");
    assert!(err.to_string().contains("fine"), "{err}");

    // A file that a service of the machine's makes a second later, then removes.
    let later = |script: &str| {
        let script = format!("sleep 1; {script}");
        m.run(["systemd-run", "--quiet", "/bin/sh", "-c", &script])
            .unwrap();
    };
    later("touch /tmp/ready");
    m.wait_for_file("/tmp/ready").unwrap();
    assert_eq!(
        m.wait_until_succeeds("test -e /tmp/ready && echo there")
            .unwrap(),
        "there\n"
    );
    later("rm /tmp/ready");
    m.wait_until_fails("test -e /tmp/ready").unwrap();
    m.stop().unwrap();

    let quick = Machine::builder(CHROOT)
        .wait_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    let err = quick
        .wait_until_succeeds("echo not yet; exit 1")
        .unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("not yet"), "{err}");
    let err = quick.wait_for_file("/no/such/file").unwrap_err();
    assert!(err.to_string().contains("did not appear"), "{err}");
    quick.stop().unwrap();
}

#[test]
fn unit_properties_user_units_and_console_lines() {
    let m = Machine::builder(CHROOT)
        .wait_timeout(Duration::from_secs(60))
        .start()
        .unwrap();
    let pid = m
        .unit_property("systemd-journald.service", "MainPID")
        .unwrap();
    assert!(pid.parse::<u32>().unwrap() > 1, "{pid}");
    assert_eq!(
        m.unit_property("systemd-journald.service", "NRestarts")
            .unwrap(),
        "0"
    );
    assert_eq!(
        m.unit_property("systemd-journald.service", "NoSuchProperty")
            .unwrap(),
        ""
    );

    // A user unit, enabled for every user, under alice's own manager.
    m.succeed("useradd -m alice").unwrap();
    m.write(
        "/etc/systemd/user/hello.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n\
         [Install]\nWantedBy=default.target\n",
    )
    .unwrap();
    m.succeed("systemctl --global enable hello.service")
        .unwrap();
    let state = m.wait_for_user_unit("alice", "hello.service").unwrap();
    assert!(state.is_active(), "{state}");
    let user = m
        .user_unit_property("alice", "hello.service", "ExecMainStatus")
        .unwrap();
    assert_eq!(user, "0");
    assert!(
        !m.unit("hello.service").unwrap().is_active(),
        "not a system unit"
    );
    let err = m.user_unit("nobody-here", "hello.service").unwrap_err();
    assert!(matches!(err, Error::NoSuchUser { .. }), "{err}");

    start_unit(
        &m,
        "says",
        "Type=oneshot\nStandardOutput=journal+console\nExecStart=/bin/echo console-marker-42",
    );
    let line = m.wait_for_console(r"console-marker-\d+").unwrap();
    assert!(line.contains("console-marker-42"), "{line}");
    let err = m
        .wait_for_console_within("never-printed", Duration::from_millis(300))
        .unwrap_err();
    assert!(message(&err).contains("did not show after 0.3 s"), "{err}");
    assert!(
        message(&err).contains(&m.log_path().display().to_string()),
        "{err}"
    );
    let err = m.wait_for_console("(unclosed").unwrap_err();
    assert!(
        message(&err).contains("not a valid regular expression"),
        "{err}"
    );
}
