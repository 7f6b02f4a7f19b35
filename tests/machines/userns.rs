//! The guest's root is nobody on the host: machines run in a user namespace of their own by
//! default, and what a hostile guest tried against privileged machines fails. Each test plays
//! the guest with a shell in a real machine; `every_case_holds_under_sudo` runs them all again
//! as a sudo user's test binary.

use crate::common;

use std::process::Command;

use nspawn::Machine;

const CHROOT: &str = "bookworm";

/// Marks the re-run under sudo, which must not recurse.
const UNDER_SUDO: &str = "NSPAWN_USERNS_UNDER_SUDO";

/// `0 <base> 65536` of a machine's `/proc/self/uid_map`, as numbers.
fn uid_map(m: &Machine) -> Vec<u64> {
    let out = m.sh("cat /proc/self/uid_map").unwrap();
    out.split_whitespace().map(|n| n.parse().unwrap()).collect()
}

fn host_uid_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_guests_root_is_an_unprivileged_host_uid() {
    let m = Machine::start(CHROOT).unwrap();
    let out = m
        .sh("cat /proc/self/uid_map; grep -E '^(CapEff|Seccomp):' /proc/self/status; id -u")
        .unwrap();
    eprintln!("a command's view:\n{out}");
    let map = uid_map(&m);
    assert_eq!(map.len(), 3, "{out}");
    assert_eq!(map[0], 0, "{out}");
    assert!(map[1] >= 0x80000 && map[1].is_multiple_of(0x10000), "{out}");
    assert_eq!(map[2], 65536, "{out}");
    assert_eq!(
        host_uid_of(m.leader_pid()),
        map[1],
        "the leader runs as the range's base"
    );
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert_eq!(out.lines().last(), Some("0"), "root inside: {out}");
    // Two machines at once never share a range.
    let other = Machine::start(CHROOT).unwrap();
    assert_ne!(uid_map(&other)[1], map[1]);
}

#[test]
fn a_machine_may_ask_to_be_privileged() {
    let m = Machine::builder(CHROOT)
        .private_users(false)
        .start()
        .unwrap();
    assert_eq!(uid_map(&m), [0, 0, 4294967295]);
    assert_eq!(host_uid_of(m.leader_pid()), 0);
}

/// For each process the guest sees (but its own shell): its PID, name, how many of its
/// `map_files` the guest opened, whether the guest opened its memory for writing, and whether
/// its environment holds `$1`.
const PROCESS_PROBE: &str = r#"
for d in /proc/[0-9]*; do
  p=${d#/proc/}; [ "$p" = "$$" ] && continue
  comm=$(cat $d/comm 2>/dev/null) || continue
  mf=0
  for f in $d/map_files/*; do
    [ -L "$f" ] || continue
    if (exec 3<"$f") 2>/dev/null; then mf=$((mf+1)); fi
  done
  mem=no; if (exec 3<>$d/mem) 2>/dev/null; then mem=yes; fi
  env=no; if grep -qaF "$1" $d/environ 2>/dev/null; then env=yes; fi
  echo "$p $comm $mf $mem $env"
done
"#;

struct Seen {
    pid: String,
    comm: String,
    map_files: usize,
    mem: bool,
    secret: bool,
}

fn processes(m: &Machine, secret: &str) -> Vec<Seen> {
    let out = m
        .command("sh")
        .args(["-c", PROCESS_PROBE, "probe", secret])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 5).then(|| Seen {
                pid: f[0].into(),
                comm: f[1].into(),
                map_files: f[2].parse().unwrap_or(0),
                mem: f[3] == "yes",
                secret: f[4] == "yes",
            })
        })
        .collect()
}

/// Sets a secret in the test process's environment before any machine starts, then looks for
/// it from the guest in every process there, after a call left its idle process behind.
fn secret_and_machine(builder: nspawn::MachineBuilder) -> (String, Machine) {
    let secret = format!("s3cret-{}", std::process::id());
    std::env::set_var("NSPAWN_USERNS_TEST_SECRET", &secret);
    let m = builder.start().unwrap();
    assert_eq!(m.function(|(): ()| 42).call(()).unwrap(), 42);
    // The next call's process is forked ahead, once the call has ended.
    assert!(
        common::eventually(|| common::running(&m, "nspawn-agent") > 0),
        "a call's idle process waits in the machine"
    );
    (secret, m)
}

#[test]
fn guest_root_cannot_reach_host_files_or_memory_through_our_processes() {
    let (secret, m) = secret_and_machine(Machine::builder(CHROOT));
    let seen = processes(&m, &secret);
    let ours: Vec<&Seen> = seen.iter().filter(|p| p.comm == "nspawn-agent").collect();
    assert!(!ours.is_empty(), "our process is among those seen");
    for p in &seen {
        assert_eq!(p.map_files, 0, "opened map_files of {} {}", p.pid, p.comm);
        assert!(!p.secret, "the test's environment in {} {}", p.pid, p.comm);
    }
    for p in ours {
        assert!(
            !p.mem,
            "opened the memory of our process {} for writing",
            p.pid
        );
    }
    // The call still answers truthfully afterwards.
    assert_eq!(m.function(|x: u32| x + 1).call(41).unwrap(), 42);
}

#[test]
fn no_process_of_ours_carries_the_hosts_environment_even_when_privileged() {
    let (secret, m) = secret_and_machine(Machine::builder(CHROOT).private_users(false));
    for p in processes(&m, &secret) {
        assert!(!p.secret, "the test's environment in {} {}", p.pid, p.comm);
    }
}

#[test]
fn host_files_bound_into_the_machine_stay_read_only() {
    let m = Machine::start(CHROOT).unwrap();
    let script = r#"
        for target in /etc/hosts /run/host/os-release; do
          if mount -o remount,bind,rw "$target" 2>/dev/null; then echo "remounted $target"; fi
        done
        # What the read-only mounts cover must stay covered: nspawn's own binds beneath them.
        for target in /run/host/os-release /run/host /etc/hosts; do
          if umount -l "$target" 2>/dev/null; then echo "unmounted $target" >&2; fi
        done
        if (echo 127.0.0.9 evil >> /etc/hosts) 2>/dev/null; then echo "wrote /etc/hosts"; fi
        if (: >> /run/host/os-release) 2>/dev/null; then echo "opened os-release"; fi
        grep -c . /etc/hosts
    "#;
    let out = m.command("sh").args(["-c", script]).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(!out.contains("remounted"), "{out}");
    assert!(!out.contains("wrote"), "{out}");
    assert!(!out.contains("opened"), "{out}");
}

/// Every file below the run directory, with its size: what a guest could have written into.
fn run_dir_files() -> std::collections::BTreeMap<String, u64> {
    let run = std::env::var("NSPAWN_RUN_DIR").unwrap_or_else(|_| "/run/nspawn-rs".into());
    let out = as_root(&format!("find {run} -xdev -type f -printf '%s %p\\n'"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(size, path)| (path.to_string(), size.parse().unwrap_or(0)))
        .collect()
}

#[test]
fn a_privileged_guest_that_reopens_its_hosts_file_writes_into_its_own_memory_only() {
    let m = Machine::builder(CHROOT)
        .private_users(false)
        .start()
        .unwrap();
    let before = run_dir_files();
    let script = r#"
        mount -o remount,bind,rw /etc/hosts && echo remounted
        head -c 4M /dev/zero >> /etc/hosts 2>/dev/null
        wc -c < /etc/hosts
    "#;
    let out = m.sh(script).unwrap();
    // Privileged guest root can do that much: this is no sandbox, but what it wrote is bounded
    // and no host file.
    assert!(out.contains("remounted"), "{out}");
    let size: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(size <= 1 << 20, "the hosts file grew to {size} bytes");
    for (path, after) in run_dir_files() {
        let grown = after.saturating_sub(before.get(&path).copied().unwrap_or(0));
        assert!(grown < 64 << 10, "{path} grew by {grown} bytes");
    }
}

/// A loop device of the test's own stands in for the host's disk. Made and removed by root
/// children: a process-wide root guard under sudo would take root back from the threads of
/// other tests mid-stop when it ends.
struct Loop(String);

/// Runs `script` in a shell started as root.
fn as_root(script: &str) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    nspawn::privs::start_as_root(&mut cmd);
    cmd.output().unwrap()
}

impl Loop {
    fn new(dir: &std::path::Path) -> Loop {
        let file = dir.join("disk.img");
        let out = as_root(&format!(
            "truncate -s 1M {0} && losetup --find --show {0}",
            file.display()
        ));
        assert!(out.status.success(), "{}", common::report(&out));
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn numbers(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.0).unwrap().rdev();
        (libc::major(rdev) as u64, libc::minor(rdev) as u64)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        as_root(&format!("losetup -d {}", self.0));
    }
}

/// In both modes: a user namespace refuses the `mknod`, and so does the device policy in a
/// privileged machine.
#[test]
fn the_guest_can_neither_make_nor_open_a_block_device() {
    let dir = common::scratch_dir();
    let disk = Loop::new(dir.path());
    let (major, minor) = disk.numbers();
    for private in [true, false] {
        let m = Machine::builder(CHROOT)
            .private_users(private)
            .start()
            .unwrap();
        let out = m
            .sh(&format!(
                "if mknod /tmp/disk b {major} {minor} 2>/dev/null; then echo made; fi; \
                 if dd if=/tmp/disk of=/dev/null count=1 2>/dev/null; then echo read; fi"
            ))
            .unwrap();
        assert!(!out.contains("made"), "user namespace {private}: {out}");
        assert!(!out.contains("read"), "user namespace {private}: {out}");
    }
}

#[test]
fn an_alias_that_would_add_a_hosts_line_is_refused() {
    let err = Machine::builder(CHROOT)
        .alias("x\n1.2.3.4 y")
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("not a host name"), "{err}");
}

/// Links the runtime's pre-`main` hooks, as any `#[nspawn::test]` does: the watchdog's is
/// among them.
#[nspawn::test(chroot = "bookworm")]
#[ignore = "only here for its pre-main hooks"]
fn links_the_pre_main_hooks() {}

#[test]
fn a_helpers_marker_alone_fails_loudly() {
    for marker in ["NSPAWN_WATCHDOG", "NSPAWN_AGENT", "NSPAWN_BUILD"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .env(marker, "1")
            .output()
            .unwrap();
        let report = common::report(&out);
        assert_eq!(out.status.code(), Some(2), "{marker}: {report}");
        assert!(report.contains(&format!("{marker} is set")), "{report}");
    }
    // The systemd backend's mount helper proves its role by a plan file of root's in a
    // directory only root enters: a file anywhere else is refused, whoever made it.
    let dir = tempfile_dir();
    let plan = dir.join("x.plan");
    std::fs::write(&plan, b"").unwrap();
    for value in [std::path::PathBuf::from("1"), plan] {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .env("NSPAWN_MOUNT_PLAN", &value)
            .output()
            .unwrap();
        let report = common::report(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {report}", value.display());
        assert!(report.contains("NSPAWN_MOUNT_PLAN is set"), "{report}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nspawn-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_case_holds_under_sudo() {
    if std::env::var_os(UNDER_SUDO).is_some() {
        return;
    }
    let args = [
        "userns::",
        "--skip",
        "userns::every_case_holds_under_sudo",
        "--test-threads=2",
    ];
    common::rerun_under_sudo(&args, UNDER_SUDO, 11);
}

/// How many machines run at once (`NSPAWN_MAX_MACHINES` raised): boots until one fails, up to
/// 40, and prints the count. A measurement for the README, not a check: run it with
/// `--ignored --nocapture`, with and without `NSPAWN_PRIVATE_USERS=no`.
#[test]
#[ignore = "a measurement, run by hand"]
fn how_many_machines_run_at_once() {
    let mut machines = Vec::new();
    let outcome = loop {
        if machines.len() == 40 {
            break "stopped at 40".to_string();
        }
        match Machine::builder(CHROOT)
            .network(nspawn::Network::Host)
            .start()
        {
            Ok(m) => machines.push(m),
            Err(e) => break format!("then: {e}"),
        }
    };
    eprintln!("{} machines at once; {outcome}", machines.len());
}

/// Set in the process that [`guest_sizes_stop_at_the_output_limit`] runs alone, whose peak
/// memory no other test shares.
const SIZES_ALONE: &str = "NSPAWN_USERNS_SIZES_ALONE";

#[test]
fn guest_sizes_stop_at_the_output_limit() {
    if std::env::var_os(SIZES_ALONE).is_some() {
        return sizes_alone();
    }
    let mut alone = Command::new(std::env::current_exe().unwrap());
    // Under sudo, this process has dropped root: its child regains it, and drops again.
    nspawn::privs::start_as_root(&mut alone);
    let out = alone
        .args([
            "--exact",
            "userns::guest_sizes_stop_at_the_output_limit",
            "--nocapture",
        ])
        .env(SIZES_ALONE, "1")
        .output()
        .unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    let peak: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("peak: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak reported: {report}"));
    // Unbounded, 256 MiB of output alone would have taken it past this.
    assert!(
        peak < 200 << 20,
        "the test process peaked at {} MiB",
        peak >> 20
    );
}

/// Guest-sized output, a call's print-out, a sparse file and results, then the peak memory.
fn sizes_alone() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .command("head")
        .args(["-c", "256M", "/dev/zero"])
        .output()
        .unwrap_err();
    assert!(err.to_string().contains("output_limit"), "{err}");
    let printed = m
        .function(|(): ()| {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..256 {
                std::io::Write::write_all(&mut std::io::stdout(), &chunk).unwrap();
            }
        })
        .call(())
        .unwrap_err();
    assert!(printed.to_string().contains("stdout"), "{printed}");
    m.run(["truncate", "-s", "2G", "/var/tmp/sparse"]).unwrap();
    let read = m.read("/var/tmp/sparse").unwrap_err();
    assert!(read.to_string().contains("copy_out"), "{read}");
    assert!(
        !read.to_string().contains("output_limit"),
        "read has none: {read}"
    );
    // A result under the limit still arrives whole; one over it is refused.
    let under = m
        .function(|n: usize| vec![7u8; n])
        .call((8 << 20) as usize)
        .unwrap();
    assert_eq!(under.len(), 8 << 20);
    let over = m
        .function(|n: usize| vec![7u8; n])
        .call((80 << 20) as usize)
        .unwrap_err();
    assert!(over.to_string().contains("result"), "{over}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    println!("\npeak: {}", kib << 10);
}

#[test]
fn a_guests_panic_text_is_bounded_and_escaped() {
    let m = Machine::start(CHROOT).unwrap();
    let err = m
        .function(|(): ()| -> u8 { panic!("\u{1b}]0;pwned\u{7}{}", "y".repeat(10 << 20)) })
        .call(())
        .unwrap_err()
        .to_string();
    assert!(err.len() < 64 << 10, "{} bytes", err.len());
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{7}'),
        "{err:.200}"
    );
    assert!(err.contains("bytes not shown"), "{err:.200}");
}
