//! A machine is a sandbox: what runs in it through the agent is confined like the container's
//! own processes, and nothing it does reaches the host. Real machines, hostile commands.

use crate::common;

use common::walls;
use nspawn::Machine;

const CHROOT: &str = "bookworm";

const PROBE: &str = "cat /proc/self/status; echo ==; cat /proc/self/cgroup";

/// What a probe printed: its status walls and its unified cgroup (as the machine sees it).
fn probe(out: &str) -> (Vec<String>, String) {
    let (status, cgroup) = out.split_once("==").expect("the probe prints both parts");
    let unified = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string();
    (walls(status), unified)
}

#[test]
fn commands_are_confined_like_the_containers_own_services() {
    let m = Machine::start(CHROOT).unwrap();
    let (ours, our_cgroup) = probe(&m.sh(PROBE).unwrap());
    let service = m
        .run([
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            "/bin/sh",
            "-c",
            PROBE,
        ])
        .unwrap();
    let (theirs, their_cgroup) = probe(&String::from_utf8_lossy(&service.stdout));
    assert_eq!(ours, theirs, "a command's walls are a service's");
    assert!(ours.contains(&"Seccomp: 2".to_string()), "{ours:?}");
    assert!(
        !ours.iter().any(|l| l == "CapBnd: 000001ffffffffff"),
        "{ours:?}"
    );
    for cgroup in [&our_cgroup, &their_cgroup] {
        assert!(
            cgroup.starts_with('/') && !cgroup.starts_with("/.."),
            "inside the machine's cgroup tree: {cgroup}"
        );
    }
    let leader = std::fs::read_to_string(format!("/proc/{}/status", m.leader_pid())).unwrap();
    let leader = walls(&leader);
    assert_eq!(ours[3], leader[3], "the leader's bounding set");
}

/// System calls (x86-64 numbers, arguments that make an allowed call fail harmlessly) whose
/// outcome tells nspawn's filter apart from none: keyring, bpf, perf, modules, the clock,
/// handles, swap, memory locks, the kernel log, audit sockets, io_uring; `getpid` as control.
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[&str] = &[
    "250,0,-3,0",    // keyctl(GET_KEYRING_ID, session)
    "248,0,0,0,0",   // add_key
    "321,-1,0,0",    // bpf
    "298,0,0,0,0,0", // perf_event_open
    "313,-1,0,0",    // finit_module
    "227,0,1",       // clock_settime(REALTIME, bad pointer)
    "304,-1,0,0",    // open_by_handle_at
    "167,0,0",       // swapon
    "149,0,4096",    // mlock
    "103,3,0,0",     // syslog(READ_ALL)
    "41,16,3,9",     // socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT)
    "425,0,0",       // io_uring_setup
    "101,-1,0,0,0",  // ptrace
    "169,0,0,0,0",   // reboot(bad magic)
    "39",            // getpid
];

/// Runs every call of [`SYSCALLS`] with perl (in every Debian, as perl-base) and prints
/// `number:errno` or `number:ok`.
#[cfg(target_arch = "x86_64")]
fn syscall_outcomes(argv_prefix: &[&str], m: &Machine) -> String {
    let script = r#"for (@ARGV) { my ($n, @a) = map { $_ + 0 } split /,/; $! = 0; my $r = syscall($n, @a); print "$n:", ($r < 0 ? $! + 0 : "ok"), "\n" }"#;
    let mut argv: Vec<&str> = argv_prefix.to_vec();
    argv.extend(["perl", "-e", script]);
    argv.extend(SYSCALLS);
    let out = m.run(argv).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn system_calls_fare_as_in_the_containers_own_services() {
    let m = Machine::start(CHROOT).unwrap();
    let ours = syscall_outcomes(&[], &m);
    let theirs = syscall_outcomes(&["systemd-run", "--wait", "--pipe", "--quiet"], &m);
    assert_eq!(ours, theirs);
    let eperm = libc::EPERM.to_string();
    for refused in ["250", "321", "298", "227", "304", "syslog:103"] {
        let nr = refused.rsplit(':').next().unwrap();
        let line = ours
            .lines()
            .find(|l| l.starts_with(&format!("{nr}:")))
            .unwrap();
        assert_eq!(line, format!("{nr}:{eperm}"), "{ours}");
    }
    assert!(
        ours.contains(&format!("41:{}", libc::EAFNOSUPPORT)),
        "{ours}"
    );
    assert!(ours.contains("39:ok"), "{ours}");
}

/// On the host's network, a command must not be able to add an interface to it; nor, on any
/// network, read the host's kernel log, or mount anything the host sees.
#[test]
fn commands_cannot_change_the_host() {
    let m = Machine::builder(CHROOT)
        .network(nspawn::Network::Host)
        .start()
        .unwrap();
    let name = format!("nsbx{}", std::process::id() % 100_000);
    // TUNSETIFF on /dev/net/tun creates an interface; it takes CAP_NET_ADMIN.
    let tun = format!(
        r#"open(my $f, "+<", "/dev/net/tun") or die "open: $!\n"; my $req = pack("Z16 s x22", "{name}", 0x1001); print ioctl($f, 0x400454ca, $req) ? "created" : $! + 0"#
    );
    let out = m.run(["perl", "-e", &tun]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        libc::EPERM.to_string()
    );
    assert!(!std::path::Path::new("/sys/class/net").join(&name).exists());

    let dmesg = m.command("dmesg").output().unwrap();
    assert!(!dmesg.status.success(), "{}", common::report(&dmesg));
    assert!(
        String::from_utf8_lossy(&dmesg.stderr).contains("Operation not permitted"),
        "{}",
        common::report(&dmesg)
    );

    let source = format!("nspawn-sandbox-{}", std::process::id());
    m.run(["mount", "-t", "tmpfs", &source, "/mnt"]).unwrap();
    assert!(m.sh("cat /proc/self/mountinfo").unwrap().contains(&source));
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains(&source), "the host's mounts are unchanged");
}

/// A directory descriptor the test process inherited (a CI runner, `flock dir cargo test`)
/// is a way out of any chroot: neither the agent nor a command may hold it.
#[test]
fn inherited_descriptors_reach_nothing_in_the_machine() {
    let dir = common::scratch_dir();
    // Without O_CLOEXEC, as an inherited descriptor would be.
    let fd = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let m = Machine::start(CHROOT).unwrap();
    // `test -e` opens nothing, unlike a glob or `ls`, which would list their own descriptor.
    let listing = m
        .sh("for i in $(seq 0 1023); do [ -e /proc/$$/fd/$i ] && echo $i; done; true")
        .unwrap();
    let fds: Vec<&str> = listing.lines().collect();
    assert_eq!(fds, ["0", "1", "2"], "a command holds only its stdio");
    let agent = m.agent_pid().unwrap();
    // The agent runs as root: under sudo, only root may list its descriptors.
    let _root = nspawn::privs::root().unwrap();
    for entry in std::fs::read_dir(format!("/proc/{agent}/fd")).unwrap() {
        let target = std::fs::read_link(entry.unwrap().path()).unwrap_or_default();
        assert_ne!(
            target,
            dir.path(),
            "the agent holds the inherited directory"
        );
    }
    nix::unistd::close(fd).unwrap();
}

/// Answers that could mislead are errors: a dead machine is not "no such file", relative
/// paths go nowhere, and FIFOs and devices are refused at once instead of hanging or filling
/// the test process's memory.
#[test]
fn file_calls_answer_truthfully_and_never_hang() {
    let m = Machine::builder(CHROOT)
        .boot_timeout(std::time::Duration::MAX)
        .start()
        .unwrap();
    assert!(!m.try_exists("/no/such/file").unwrap());
    assert!(m.try_exists("/etc/os-release").unwrap());
    let relative = m.write("relfile", "x").unwrap_err().to_string();
    assert!(relative.contains("must be absolute"), "{relative}");
    assert!(m.try_exists("etc/os-release").is_err());

    m.run(["mkfifo", "/run/fifo"]).unwrap();
    for path in ["/run/fifo", "/dev/zero"] {
        let err = m.read(path).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{path}: {err}");
    }
    let err = m.write("/dev/null", "x").unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");

    let dir = common::scratch_dir();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "mine").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    assert!(m.copy_out("/etc/os-release", &link).is_err());
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "mine",
        "not followed"
    );

    let forever = m
        .command("true")
        .timeout(std::time::Duration::MAX)
        .status()
        .unwrap();
    assert!(forever.success());

    m.run(["systemctl", "poweroff"]).ok();
    let gone = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        m.try_exists("/etc/os-release").is_err()
    });
    assert!(gone, "a dead machine is an error, not `false`");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.exists("/x")));
    assert!(panicked.is_err(), "exists() panics when it cannot tell");
}

/// A background job that keeps the command's output open does not hold the test: the call
/// ends soon after the command's own exit, with its status and output so far.
#[test]
fn background_jobs_holding_output_are_reported_not_waited_for() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m.sh("sleep 600 &").unwrap_err();
    assert!(matches!(err, nspawn::Error::OutputHeldOpen { .. }), "{err}");
    let err = m
        .command("sh")
        .args(["-c", "setsid sleep 600 & echo started"])
        .timeout(std::time::Duration::from_secs(2))
        .output()
        .unwrap_err();
    match &err {
        nspawn::Error::OutputHeldOpen { status, stdout, .. } => {
            assert!(status.success(), "{err}");
            assert_eq!(stdout, "started\n");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        m.sh("echo fine").unwrap(),
        "fine\n",
        "the machine serves on"
    );
}

/// A stopped agent fails a command without a timeout too, when it does not acknowledge the
/// start within the call deadline (60 s), and says so; it serves again once continued.
#[test]
fn a_stopped_agent_is_reported_even_without_a_timeout() {
    let m = Machine::start(CHROOT).unwrap();
    let agent = m.agent_pid().unwrap();
    {
        let _root = nspawn::privs::root().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent as i32),
            nix::sys::signal::SIGSTOP,
        )
        .unwrap();
    }
    let err = m.run(["true"]).unwrap_err().to_string();
    {
        let _root = nspawn::privs::root().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent as i32),
            nix::sys::signal::SIGCONT,
        )
        .unwrap();
    }
    assert!(err.contains("did not answer in time"), "{err}");
    m.run(["true"]).unwrap();
}

/// A memory hog, a fork bomb and a tmpfs fill in one machine stop at its limits (here set
/// low with unit properties, which the direct backend maps to its cgroups); another machine
/// carries on.
#[test]
fn one_machines_excesses_stop_at_its_own_limits() {
    let m = Machine::builder(CHROOT)
        .property("MemoryMax=256M")
        .property("TasksMax=64")
        .start()
        .unwrap();
    let other = Machine::start(CHROOT).unwrap();

    // `tail -c` keeps what it reads in memory; killed, it passes on nothing.
    let hog = m.sh("head -c 600M /dev/zero | tail -c 600M | wc -c");
    assert!(
        hog.as_ref().map_or(true, |n| n.trim() != "629145600"),
        "{hog:?}"
    );

    // tmpfs pages cannot be reclaimed: a fill up to the memory limit would leave the machine
    // to the OOM killer. Its tmpfs mounts are sized below the limit, so the fill ends in
    // ENOSPC and the machine lives on.
    let fill = m
        .command("sh")
        .args(["-c", "head -c 600M /dev/zero > /dev/shm/fill"])
        .output()
        .unwrap();
    assert!(!fill.status.success());
    let stderr = String::from_utf8_lossy(&fill.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    m.run(["rm", "/dev/shm/fill"]).unwrap();
    for (mount, share) in [("/tmp", 4), ("/dev/shm", 4), ("/run", 8)] {
        let kib: u64 = m
            .sh(&format!("df --output=size -k {mount} | tail -1"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(kib * 1024 <= (256 << 20) / share, "{mount}: {kib} KiB");
    }
    assert_eq!(m.sh("echo alive").unwrap(), "alive\n");

    let bomb =
        m.sh("for i in $(seq 200); do sleep 60 >/dev/null 2>&1 & done 2>/dev/null; echo done");
    let running = common::running(&m, "sleep");
    assert!(running > 0, "the bomb ran: {bomb:?}");
    assert!(running < 64, "at most TasksMax tasks: {running} ({bomb:?})");
    common::kill_named(&m, "sleep");
    assert_eq!(other.sh("echo alive").unwrap(), "alive\n");
    let odd = Machine::builder(CHROOT).property("CPUWeight=50").start();
    let err = odd.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("needs the systemd backend"), "{err}");
}
