//! Helpers shared by the integration tests: finding what a machine may have left behind.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nspawn_runtime::report::Event;

/// A temporary directory anyone may write to: under `sudo -E cargo test` the test process
/// and the fixture processes it starts run as the invoking user, and some helpers as root.
pub fn scratch_dir() -> Scratch {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("nspawn-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    Scratch(Some(dir))
}

/// A [`scratch_dir`], removed as root when dropped: what root made in it (or the directory
/// itself, made before the test process dropped to the user) could not be removed otherwise.
#[derive(Debug)]
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    pub fn path(&self) -> &Path {
        self.0.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        // SAFETY: a plain getter.
        if unsafe { libc::geteuid() } != 0 {
            // A root child, not `privs::root()`: that guard changes every thread's credentials,
            // those of other tests' threads that hold root for themselves included.
            let mut rm = Command::new("rm");
            rm.arg("-rf").arg("--").arg(dir.path());
            nspawn::privs::start_as_root(&mut rm);
            let _ = rm.status();
        }
        let _ = dir.close();
    }
}

/// A finished program's output, stdout then stderr, for assertion messages.
pub fn report(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The workspace's chroots directory, as the runtime sees it.
pub fn chroots_dir() -> PathBuf {
    std::env::var_os("NSPAWN_CHROOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("test_chroots"))
}

/// PIDs of processes whose command line names the machine: nspawn and the machine's agent.
pub fn processes_of(machine: &str) -> Vec<u32> {
    processes_with_arg(&format!("--machine={machine}"))
}

/// PIDs of processes with `needle` as one of their arguments.
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    processes_whose("cmdline", |arg| arg == needle.as_bytes())
}

/// Processes whose environment has `name` (read as root: helpers are root's).
pub fn processes_with_env(name: &str) -> Vec<u32> {
    let _root = nspawn::privs::root().unwrap();
    let prefix = format!("{name}=");
    processes_whose("environ", |v| v.starts_with(prefix.as_bytes()))
}

/// Runs this test binary again with `args`, as `sudo -E cargo test` by [`PROBE_USER`] would:
/// `SUDO_*` set, and root regained in the child, which then drops to the user as test binaries
/// do. `marker` is set for the re-running test to return at once there. Asserts that exactly
/// `passed` tests ran and passed.
pub fn rerun_under_sudo(args: &[&str], marker: &str, passed: usize) {
    let (uid, gid) = probe_user();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    nspawn::privs::start_as_root(&mut cmd);
    let out = cmd
        .args(args)
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", gid.to_string())
        .env("SUDO_USER", PROBE_USER)
        .env(marker, "1")
        .output()
        .unwrap();
    let report = report(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains(&format!("{passed} passed;")), "{report}");
}

/// Processes whose environment has exactly `name=value`. Call it as root (inside a
/// `privs::root()` guard under sudo): another user's processes are left out otherwise.
pub fn processes_with_env_value(name: &str, value: &std::ffi::OsStr) -> Vec<u32> {
    use std::os::unix::ffi::OsStrExt;
    let entry = [name.as_bytes(), b"=", value.as_bytes()].concat();
    processes_whose("environ", |v| v == entry.as_slice())
}

/// PIDs of processes with a NUL-separated entry of `/proc/<pid>/<file>` that `matches`.
fn processes_whose(file: &str, matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(&matches))
        })
        .collect()
}

/// Ephemeral snapshots (`.#machine.*`) in a directory.
pub fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with(".#machine.") && !n.ends_with(".lck")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Everything a machine may leave: processes, the propagate dir, its cgroups.
pub fn leftovers_of(machine: &str) -> Vec<String> {
    let mut left: Vec<String> = processes_of(machine)
        .iter()
        .map(|p| format!("process {p}"))
        .collect();
    let propagate = Path::new("/run/systemd/nspawn/propagate").join(machine);
    if propagate.exists() {
        left.push(propagate.display().to_string());
    }
    for base in own_cgroups() {
        let cg = base.join(format!("nspawn-{machine}"));
        if cg.exists() {
            left.push(cg.display().to_string());
        }
    }
    // Root's directory: under sudo this process cannot look, and finds nothing.
    let records = Path::new("/run/nspawn-rs/machines");
    for record in [format!("{machine}.toml"), format!(".{machine}.toml.tmp")] {
        if records.join(&record).exists() {
            left.push(records.join(record).display().to_string());
        }
    }
    left
}

/// This process's cgroup in every hierarchy mounted under `/sys/fs/cgroup`, where the
/// runtime creates the cgroups of the machines it starts.
pub fn own_cgroups() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = match controllers {
                "" if Path::new("/sys/fs/cgroup/unified").exists() => "unified",
                "" => "",
                named => named.strip_prefix("name=").unwrap_or(named),
            };
            let dir = Path::new("/sys/fs/cgroup").join(mount);
            Some(dir.join(path.trim_start_matches('/')))
        })
        .filter(|dir| dir.exists())
        .collect()
}

/// What a run of the fixture suite did, from its event log, read through the runtime's own
/// [`Event`] type.
#[derive(Debug, Default)]
pub struct Events {
    pub lines: Vec<Event>,
}

impl Events {
    pub fn read(path: &Path) -> Events {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Events {
            // Only whole lines: the log may be read while a line is being written.
            lines: text
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .map(|l| Event::parse(l).unwrap_or_else(|| panic!("not an event: {l:?}")))
                .collect(),
        }
    }

    fn machines_where(&self, pick: impl Fn(&Event) -> Option<&String>) -> Vec<String> {
        self.lines.iter().filter_map(pick).cloned().collect()
    }

    /// Machines booted for a module (`fixture::alpha`).
    pub fn module_boots(&self, of: &str) -> Vec<String> {
        self.machines_where(|e| match e {
            Event::ModuleBoot {
                module, machine, ..
            } if module == of => Some(machine),
            _ => None,
        })
    }

    /// Machines booted ahead of their module's first test.
    pub fn ahead_boots(&self) -> Vec<String> {
        self.machines_where(|e| match e {
            Event::ModuleBoot {
                machine,
                ahead: true,
                ..
            } => Some(machine),
            _ => None,
        })
    }

    /// The most machines this run had at once: started, and not yet stopped or kept.
    pub fn most_at_once(&self) -> usize {
        let (mut now, mut most) = (0usize, 0usize);
        for e in &self.lines {
            match e {
                Event::Spawned { .. } => now += 1,
                Event::Stopped { .. } | Event::StoppedAtExit { .. } | Event::Kept { .. } => {
                    now = now.saturating_sub(1)
                }
                _ => {}
            }
            most = most.max(now);
        }
        most
    }

    /// The time the tests' bodies took, all together.
    pub fn tests_own_time(&self) -> std::time::Duration {
        self.lines
            .iter()
            .filter_map(|e| match e {
                Event::Ran { us, .. } => Some(std::time::Duration::from_micros(*us)),
                _ => None,
            })
            .sum()
    }

    /// The most boots this run had in flight at once: started, and not yet ready (nor
    /// stopped, nor kept).
    pub fn most_booting_at_once(&self) -> usize {
        let mut booting: Vec<&str> = Vec::new();
        let mut most = 0;
        for e in &self.lines {
            match e {
                Event::Spawned { machine, .. } => booting.push(machine),
                Event::Ready { machine, .. }
                | Event::Stopped { machine }
                | Event::StoppedAtExit { machine }
                | Event::Kept { machine, .. } => booting.retain(|m| m != machine),
                _ => {}
            }
            most = most.max(booting.len());
        }
        most
    }

    /// Failed boot attempts for a module.
    pub fn module_boot_failures(&self, of: &str) -> usize {
        self.lines
            .iter()
            .filter(|e| matches!(e, Event::ModuleBootFailed { module, .. } if module == of))
            .count()
    }

    /// The machines a module's set-up ran on, in order, and whether it succeeded.
    pub fn setups(&self, of: &str) -> Vec<(String, bool)> {
        self.lines
            .iter()
            .filter_map(|e| match e {
                Event::Setup {
                    module,
                    machine,
                    ok,
                } if module == of => Some((machine.clone(), *ok)),
                _ => None,
            })
            .collect()
    }

    /// Machines booted for single tests.
    pub fn test_boots(&self) -> Vec<String> {
        self.machines_where(|e| match e {
            Event::TestBoot { machine, .. } => Some(machine),
            _ => None,
        })
    }

    /// Every machine whose nspawn was started, with its nspawn's PID.
    pub fn spawned(&self) -> Vec<(String, u32)> {
        self.lines
            .iter()
            .filter_map(|e| match e {
                Event::Spawned { machine, nspawn } => Some((machine.clone(), *nspawn)),
                _ => None,
            })
            .collect()
    }

    /// Every machine that became ready.
    pub fn machines(&self) -> Vec<String> {
        self.machines_where(|e| match e {
            Event::Ready { machine, .. } => Some(machine),
            _ => None,
        })
    }

    /// Machines stopped while the tests ran (not by the exit cleanup).
    pub fn stopped(&self) -> Vec<String> {
        self.machines_where(|e| match e {
            Event::Stopped { machine } => Some(machine),
            _ => None,
        })
    }

    /// The most machines that ran at once.
    pub fn max_concurrent(&self) -> usize {
        let (mut now, mut max) = (0i64, 0i64);
        for event in &self.lines {
            match event {
                Event::Ready { .. } => now += 1,
                Event::Stopped { .. } | Event::StoppedAtExit { .. } | Event::Kept { .. } => {
                    now -= 1
                }
                _ => {}
            }
            max = max.max(now);
        }
        max as usize
    }

    /// Machines the exit cleanup had to stop.
    pub fn stopped_at_exit(&self) -> Vec<String> {
        self.machines_where(|e| match e {
            Event::StoppedAtExit { machine } => Some(machine),
            _ => None,
        })
    }
}

/// Builds the fixture suite (`tests/fixture`) once and returns its test binary.
pub fn fixture_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| test_binary("fixture")).clone()
}

/// Builds a `test = false` test target of this package and returns its binary.
pub fn test_binary(name: &str) -> PathBuf {
    test_binary_with(name, &[])
}

/// [`test_binary`] with more cargo arguments, e.g. `--release`. Where there is no cargo (the
/// VM of `cargo xtask vm-test`, which gets binaries built on the host), the newest one built
/// beside this test binary.
pub fn test_binary_with(name: &str, cargo_args: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    // Under sudo, cargo and the target directory belong to root.
    nspawn::privs::start_as_root(&mut cmd);
    let out = cmd
        .args(["test", "--test", name, "--no-run", "--message-format=json"])
        .args(cargo_args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return built_beside(name),
        Err(e) => panic!("running cargo: {e}"),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == name)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the executable")
}

/// The newest `<name>-<hash>` executable in this test binary's directory.
fn built_beside(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let prefix = format!("{name}-");
    std::fs::read_dir(exe.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&prefix) && !file.ends_with(".d")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no cargo, and no {name} built beside {}", exe.display()))
}

/// Asserts that none of the machines left anything behind.
pub fn assert_nothing_left(machines: &[String]) {
    assert_eq!(leftovers(machines, &chroots_dir()), Vec::<String>::new());
}

/// Everything the machines left: processes, propagate dirs, cgroups, records, and any
/// snapshot in the chroots directory.
pub fn leftovers(machines: &[String], chroots: &Path) -> Vec<String> {
    let mut left: Vec<String> = machines.iter().flat_map(|m| leftovers_of(m)).collect();
    left.extend(
        snapshots_in(chroots)
            .iter()
            .map(|s| s.display().to_string()),
    );
    left
}

/// The host's own network state that zones must never change: routes and rules of every
/// table, IPv4 forwarding, and the nft tables that are not a zone's.
pub fn host_network() -> String {
    let run = |program: &str, args: &[&str]| {
        let mut cmd = host_command(program);
        cmd.args(args);
        nspawn::privs::start_as_root(&mut cmd);
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = |line: &&str| line.contains("nspawn-z") || line.contains("nspawn_z");
    let keep = |text: String| {
        text.lines()
            .filter(|l| !ours(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    [
        keep(run("ip", &["-4", "route", "show", "table", "all"])),
        keep(run("ip", &["-6", "route", "show", "table", "all"])),
        keep(run("ip", &["rule"])),
        keep(run("nft", &["list", "tables"])),
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
    ]
    .join("\n--\n")
}

/// A host program, found in the sbin directories too: `sudo env PATH=...` from a user's shell
/// leaves them out of `PATH`.
fn host_command(program: &str) -> Command {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.exists());
    Command::new(found.unwrap_or_else(|| program.into()))
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loop-mounted btrfs image holding a copy of the bookworm chroot as a subvolume; unmounted
/// and removed on drop.
pub struct BtrfsCopy {
    dir: Scratch,
}

impl BtrfsCopy {
    pub fn new() -> BtrfsCopy {
        let dir = scratch_dir();
        let (img, mnt) = (dir.path().join("img"), dir.path().join("mnt"));
        std::fs::create_dir(&mnt).unwrap();
        sh(Command::new("fallocate").args(["-l", "1G"]).arg(&img));
        sh(host_command("mkfs.btrfs").arg("-q").arg(&img));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        let copy = BtrfsCopy { dir };
        sh(host_command("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(copy.chroot()));
        let source = chroots_dir().join("bookworm");
        sh(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", source.display()))
            .arg(copy.chroot()));
        // Written out now: the first snapshot would otherwise commit the whole copy, and a
        // test's first stop would take seconds for it.
        sh(Command::new("sync").arg("-f").arg(copy.chroot()));
        copy
    }

    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn chroot(&self) -> PathBuf {
        self.mnt().join("bookworm")
    }
}

impl Drop for BtrfsCopy {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
    }
}

/// The unprivileged user the tests simulate `sudo` for.
pub const PROBE_USER: &str = "nspawn-probe";

/// The uid and gid of [`PROBE_USER`], made on first use (as root, by a root child).
pub fn probe_user() -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, PROBE_USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if id("-u").is_none() {
        let mut add = Command::new("useradd");
        add.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PROBE_USER,
        ]);
        nspawn::privs::start_as_root(&mut add);
        let status = add.status().unwrap();
        // Another test may have made it meanwhile.
        assert!(
            status.success() || id("-u").is_some(),
            "useradd {PROBE_USER}"
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// The confinement lines of a `/proc/PID/status`.
pub fn walls(status: &str) -> Vec<String> {
    // Seccomp_filters is left out: the container's systemd adds filters of its own to what it
    // starts (5 against nspawn's 2 here), on top of the same policy.
    const KEYS: [&str; 7] = [
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
        "Seccomp:",
    ];
    status
        .lines()
        .filter(|l| KEYS.iter().any(|k| l.starts_with(k)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A shell loop over the machine's processes named `name` (their `comm`), with shell
/// builtins only: the chroots have no procps, and a machine at its task limit can still run it.
fn each_named(name: &str, body: &str) -> String {
    format!(
        "n=0; for p in /proc/[0-9]*; do read c < $p/comm 2>/dev/null && [ \"$c\" = '{name}' ] \
         && {{ n=$((n+1)); {body} }}; done; echo $n"
    )
}

/// How many processes of the machine are named `name`.
/// Whether `check` holds within 10 s: for what the kernel finishes after a call returns (a
/// killed process is gone once reaped), never a measure of speed.
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn running(m: &nspawn::Machine, name: &str) -> usize {
    let count = m.sh(&each_named(name, ":;")).unwrap();
    count.trim().parse().unwrap()
}

/// Kills the machine's processes named `name`.
pub fn kill_named(m: &nspawn::Machine, name: &str) {
    m.sh(&each_named(name, "kill -9 ${p#/proc/} 2>/dev/null;"))
        .unwrap();
}

// Services in machines, and reaching them (tests/machines/network.rs, tests/machines/groups.rs).

/// Serves `page` on port 80 with a socket unit: the chroot has no web server, systemd is one.
pub fn serve(m: &nspawn::Machine, page: &str) {
    m.write(
        "/etc/systemd/system/page.socket",
        "[Socket]\nListenStream=80\nAccept=yes\n",
    )
    .unwrap();
    m.write(
        "/etc/systemd/system/page@.service",
        format!("[Service]\nExecStart=/bin/echo {page}\nStandardOutput=socket\n"),
    )
    .unwrap();
    m.run(["systemctl", "daemon-reload"]).unwrap();
    m.run(["systemctl", "start", "page.socket"]).unwrap();
}

/// Inside a machine (through `Machine::call`): what `host:80` answers, or why it did not.
pub fn fetch(host: String) -> Result<String, String> {
    let mut stream = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 80))
        .map_err(|e| format!("resolving {host}: {e}"))?
        .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
        .ok_or_else(|| format!("no connection to {host}:80"))?;
    let mut page = String::new();
    stream
        .read_to_string(&mut page)
        .map_err(|e| e.to_string())?;
    Ok(page.trim().to_string())
}

/// Inside a machine: whether a TCP connection to `address:port` opens within 3 s.
pub fn connects(address: (IpAddr, u16)) -> bool {
    TcpStream::connect_timeout(&address.into(), Duration::from_secs(3)).is_ok()
}

/// `apt-get update`'s output in `m`; it exits 0 even when it fetched nothing.
pub fn apt_update(m: &nspawn::Machine) -> String {
    let out = m
        .command("apt-get")
        .args([
            "-o",
            "Acquire::Retries=2",
            "-o",
            "Acquire::http::Timeout=10",
            "update",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// From the test process: what `address:80` answers.
pub fn fetch_from_host(address: IpAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&(address, 80).into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the test process cannot reach {address}:80: {e}"));
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page.trim().to_string()
}
