//! `cargo bench --bench machine`: the runtime beside raw `systemd-nspawn`, in one run.
//!
//! For each storage mode (the plain-directory chroot of the workspace, and a btrfs copy of it
//! on a loop device), alternating ours and raw for every sample:
//! - start-to-ready: `Machine::start` against `systemd-nspawn` started with the same command
//!   line, to `READY=1`;
//! - exec: `machine.run(["/bin/true"])` against `nsenter -t <leader> -a /bin/true`;
//! - `exists()`;
//! - the agent's calls one by one, interleaved: file calls, commands, and `Machine::call` of
//!   the test binary's own functions (`--calls` runs only these), then no-op calls back to
//!   back, 1 ms apart, and from two threads at once, with the calling threads' CPU time;
//! - stop-to-gone: `Machine::stop` (returns once nspawn has removed the snapshot or overlay)
//!   against SIGKILL to the raw leader and waiting for nspawn to exit.
//!
//! Then the framework's overhead per test on a shared machine, and whole suites against raw
//! boots (`--suites` runs only these): the seed's suite (4 modules, 18 tests) and 8 modules x
//! 5 tests, with 1 and 2 test threads, with and without boots ahead, against as many raw
//! boots one after another; and the `fast` profile's boot against the full one. Boot time on
//! each network (`--networks` runs only this): host, private, isolated, joining a zone, and
//! joining a zone with a way out, against raw nspawn on the host's network. The example
//! suite under `cargo test` and under `cargo nextest run`, with and without sharing across
//! nextest's processes (`--nextest` runs only this): wall time and machines booted. A
//! one-package change of bookworm rebuilt from its tree and from nothing, and bookworm's
//! export and import (`--chroots`, not in the default run: it downloads from the mirror).
//! The seed's suite cold and with warm machines from the run before (`--warm`, not in the
//! default run).
//! Needs root; `NSPAWN_BENCH_SAMPLES` sets the sample count (default 11).

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use nspawn::Machine;
use nspawn_runtime::chroot::storage::{storage_of, Storage};
use nspawn_runtime::testing::MachineCgroup;
use nspawn_runtime::testing::PidFd;

fn samples() -> usize {
    std::env::var("NSPAWN_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11)
}

/// Median and spread of a set of durations.
struct Stats(Vec<Duration>);

impl Stats {
    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        self.quantile(0.5)
    }
    fn quantile(&self, q: f64) -> f64 {
        let v = self.sorted();
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
    fn show(&self) -> String {
        let v = self.sorted();
        let fmt = |x: f64| {
            if x < 1.0 {
                format!("{:.3}", x)
            } else {
                format!("{:.1}", x)
            }
        };
        format!(
            "{} ms [{}-{}]",
            fmt(self.median()),
            fmt(v[0]),
            fmt(v[v.len() - 1])
        )
    }
}

fn row(what: &str, ours: &Stats, raw: Option<&Stats>) {
    match raw {
        Some(raw) => println!(
            "| {what:<24} | {:<26} | {:<26} | {:.2}x |",
            ours.show(),
            raw.show(),
            ours.median() / raw.median()
        ),
        None => println!("| {what:<24} | {:<26} | {:<26} | |", ours.show(), "-"),
    }
}

/// A machine booted by hand with the runtime's command line.
struct Raw {
    child: std::process::Child,
    nspawn: PidFd,
    leader: PidFd,
    cgroup: MachineCgroup,
}

fn raw_boot(dir: &Path, n: usize) -> (Raw, Duration) {
    let name = format!("rawbench-{}-{n}", std::process::id());
    let sock_path = std::env::temp_dir().join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let cgroup = MachineCgroup::create(&name);
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args([
        "--quiet",
        "--boot",
        "--notify-ready=yes",
        "--register=no",
        "--keep-unit",
    ])
    .arg(format!("--machine={name}"))
    .arg(format!("--directory={}", dir.display()));
    match storage_of(dir) {
        Storage::Subvolume => cmd.arg("--ephemeral"),
        Storage::Directory => cmd.args(["--volatile=overlay", "--read-only"]),
    };
    let procs: Vec<PathBuf> = cgroup
        .dirs()
        .iter()
        .map(|d| d.join("cgroup.procs"))
        .collect();
    // SAFETY: only writes to cgroup files (allocation is acceptable in a benchmark).
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let _ = std::fs::write(p, "0");
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut leader = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("X_NSPAWN_LEADER_PID=") {
                leader = Some(pid.trim().parse::<u32>().unwrap());
            }
        }
        if text.lines().any(|l| l == "READY=1") && leader.is_some() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&sock_path);
    let raw = Raw {
        nspawn: PidFd::open(child.id()).unwrap(),
        leader: PidFd::open(leader.unwrap()).unwrap(),
        child,
        cgroup,
    };
    (raw, elapsed)
}

impl Raw {
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.leader.signal(libc::SIGKILL).unwrap();
        assert!(self.nspawn.wait(Duration::from_secs(10)));
        let elapsed = started.elapsed();
        self.child.wait().unwrap();
        self.cgroup.remove();
        elapsed
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let r = f();
    (r, started.elapsed())
}

/// Boot to ready and stop, user-namespaced against privileged against raw nspawn, in turns
/// (host network: the network's own cost is `--networks`'s).
fn private_users_table(dir: &Path) {
    let n = samples();
    let (mut mapped, mut privileged, mut raw) = (vec![], vec![], vec![]);
    let boot = |private: bool| {
        let builder = Machine::builder(dir.to_str().unwrap())
            .network(nspawn::Network::Host)
            .private_users(private);
        let (m, t) = time(|| builder.start().unwrap());
        m.stop().unwrap();
        t
    };
    for i in 0..n {
        mapped.push(boot(true));
        privileged.push(boot(false));
        let (r, t) = raw_boot(dir, i);
        raw.push(t);
        r.stop();
    }
    let (mapped, privileged, raw) = (Stats(mapped), Stats(privileged), Stats(raw));
    println!("\nboot to READY=1, {n} samples in turns; median [min-max]\n");
    println!("| {:<34} | {:<26} | vs raw |", "", "");
    println!("|{:-<36}|{:-<28}|--------|", "", "");
    for (label, stats) in [
        ("ours, user namespace (default)", &mapped),
        ("ours, privileged", &privileged),
        ("raw systemd-nspawn, privileged", &raw),
    ] {
        println!(
            "| {label:<34} | {:<26} | {:.2}x |",
            stats.show(),
            stats.median() / raw.median()
        );
    }
    println!(
        "\nuser namespace / privileged: {:.2}x",
        mapped.median() / privileged.median()
    );
}

/// A boot against a `reboot()` and a `crash()` + `power_on()` of the same machine, each to
/// `is-system-running` = running, and raw nspawn to READY=1, in turns (host network).
fn power_table(dir: &Path) {
    let n = samples();
    let (mut boot, mut reboot, mut crash, mut raw) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let builder = Machine::builder(dir.to_str().unwrap()).network(nspawn::Network::Host);
        let (m, t) = time(|| builder.start().unwrap());
        boot.push(t);
        reboot.push(time(|| m.reboot().unwrap()).1);
        crash.push(
            time(|| {
                m.crash().unwrap();
                m.power_on().unwrap();
            })
            .1,
        );
        m.stop().unwrap();
        let (r, t) = raw_boot(dir, i);
        raw.push(t);
        r.stop();
    }
    let stats = [
        ("boot (start, to running)", Stats(boot)),
        ("reboot() (clean, to running)", Stats(reboot)),
        ("crash() + power_on()", Stats(crash)),
        ("raw systemd-nspawn to READY=1", Stats(raw)),
    ];
    println!("\n{n} samples in turns; median [min-max]\n");
    println!("| {:<34} | {:<26} | vs boot | vs raw |", "", "");
    println!("|{:-<36}|{:-<28}|---------|--------|", "", "");
    for (label, s) in &stats {
        println!(
            "| {label:<34} | {:<26} | {:.2}x | {:.2}x |",
            s.show(),
            s.median() / stats[0].1.median(),
            s.median() / stats[3].1.median()
        );
    }
}

fn bench_storage(label: &str, dir: &Path) {
    let n = samples();
    let (mut ours_boot, mut raw_boot_t, mut ours_stop, mut raw_stop) =
        (vec![], vec![], vec![], vec![]);
    let (mut ours_exec, mut raw_exec, mut exists, mut agent) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let (m, t) = time(|| Machine::start(dir.to_str().unwrap()).unwrap());
        ours_boot.push(t);
        agent.push(time(|| m.agent_pid().unwrap()).1);
        let (raw, t) = raw_boot(dir, i);
        raw_boot_t.push(t);
        for _ in 0..5 {
            ours_exec.push(time(|| m.run(["/bin/true"]).unwrap()).1);
            let leader = raw.leader.pid().to_string();
            raw_exec.push(
                time(|| {
                    let s = Command::new("nsenter")
                        .args(["-t", &leader, "-a", "/bin/true"])
                        .status()
                        .unwrap();
                    assert!(s.success());
                })
                .1,
            );
        }
        let (_, t) = time(|| {
            for _ in 0..100 {
                assert!(m.exists("/etc/os-release"));
            }
        });
        exists.push(t / 100);
        ours_stop.push(time(|| m.stop().unwrap()).1);
        raw_stop.push(raw.stop());
    }
    println!("\n{label} ({n} samples; median [min-max])\n");
    println!(
        "| {:<24} | {:<26} | {:<26} | ratio |",
        "", "nspawn (ours)", "raw systemd-nspawn / nsenter"
    );
    println!("|{:-<26}|{:-<28}|{:-<28}|-------|", "", "", "");
    row(
        "start to READY=1",
        &Stats(ours_boot),
        Some(&Stats(raw_boot_t)),
    );
    row("exec /bin/true", &Stats(ours_exec), Some(&Stats(raw_exec)));
    row("exists()", &Stats(exists), None);
    row("agent start (per machine)", &Stats(agent), None);
    row("stop to gone", &Stats(ours_stop), Some(&Stats(raw_stop)));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.iter().any(|a| a == "--backend-run") {
        return backends::measure();
    }
    if args.iter().any(|a| a == "--backends-inside") {
        return backends::compare();
    }
    if args.iter().any(|a| a == "--backends") {
        return backends::in_a_systemd_host();
    }
    let chroot = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_chroots/bookworm");
    if args.iter().any(|a| a == "--nextest") {
        return under_nextest::table();
    }
    if args.iter().any(|a| a == "--networks") {
        return networks::table(&chroot);
    }
    if args.iter().any(|a| a == "--suites") {
        return suites::table(&chroot);
    }
    if args.iter().any(|a| a == "--private-users") {
        return private_users_table(&chroot);
    }
    if args.iter().any(|a| a == "--power") {
        return power_table(&chroot);
    }
    if args.iter().any(|a| a == "--chroots") {
        return chroot_builds::table(&chroot);
    }
    if args.iter().any(|a| a == "--warm") {
        return warm_suite::table(&chroot);
    }
    calls::table(&chroot);
    if args.iter().any(|a| a == "--calls") {
        return;
    }
    bench_storage("bookworm, plain directory (read-only overlay)", &chroot);
    let btrfs = common::BtrfsCopy::new();
    bench_storage(
        "bookworm, btrfs subvolume (ephemeral snapshot)",
        &btrfs.chroot(),
    );
    drop(btrfs);
    overhead::per_test();
    networks::table(&chroot);
    suites::table(&chroot);
    backends::in_a_systemd_host();
}

/// Both backends side by side, inside a container that boots systemd as PID 1 (the `host`
/// chroot): the systemd backend needs one, and our hosts do not boot systemd.
mod backends {
    use super::*;

    /// Boots the `host` chroot and runs this benchmark inside it with `--backends-inside`.
    pub fn in_a_systemd_host() {
        let ws = env!("CARGO_MANIFEST_DIR");
        let host = Machine::builder("host")
            .private_users(false)
            .arg("--capability=all")
            .bind(ws, ws)
            .wait_until_running(true)
            .start()
            .unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = host
            .command(&exe)
            .arg("--backends-inside")
            .env("NSPAWN_QUIET", "1")
            .env("NSPAWN_BENCH_SAMPLES", samples().to_string())
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{}", common::report(&out));
    }

    /// Inside the systemd host: one process per backend (the choice is made once per process).
    pub fn compare() {
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for backend in ["direct", "systemd"] {
            let out = Command::new(std::env::current_exe().unwrap())
                .arg("--backend-run")
                .env("NSPAWN_BACKEND", backend)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", common::report(&out));
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((what, value)) = line.split_once('\t') {
                    rows.push((backend.into(), what.into(), value.into()));
                }
            }
        }
        println!(
            "\nbackends, inside a container booting systemd ({} samples; median [min-max])\n",
            samples()
        );
        println!(
            "| {:<34} | {:<26} | {:<26} |",
            "", "direct", "systemd (systemd-run + machined)"
        );
        println!("|{:-<36}|{:-<28}|{:-<28}|", "", "", "");
        let whats: Vec<String> = rows
            .iter()
            .filter(|r| r.0 == "systemd")
            .map(|r| r.1.clone())
            .collect();
        for what in whats {
            let cell = |b: &str| {
                rows.iter()
                    .find(|r| r.0 == b && r.1 == what)
                    .map_or("-".to_string(), |r| r.2.clone())
            };
            println!(
                "| {what:<34} | {:<26} | {:<26} |",
                cell("direct"),
                cell("systemd")
            );
        }
    }

    /// One backend: start, exec, stop; on systemd also `systemd-run -M NAME --wait --pipe`.
    pub fn measure() {
        let (kind, _) = nspawn_runtime::backend::selected().unwrap();
        let systemd = kind == nspawn_runtime::backend::Kind::Systemd;
        let (mut boot, mut exec, mut pipe, mut stop) = (vec![], vec![], vec![], vec![]);
        for _ in 0..samples() {
            let (m, t) = time(|| {
                Machine::builder("bookworm")
                    .workspace(env!("CARGO_MANIFEST_DIR"))
                    .start()
                    .unwrap()
            });
            boot.push(t);
            for _ in 0..5 {
                exec.push(time(|| m.run(["/bin/true"]).unwrap()).1);
                if systemd {
                    let (s, t) = time(|| {
                        Command::new("systemd-run")
                            .args(["-M", m.name(), "--wait", "--pipe", "--quiet", "/bin/true"])
                            .status()
                            .unwrap()
                    });
                    assert!(s.success());
                    pipe.push(t);
                }
            }
            stop.push(time(|| m.stop().unwrap()).1);
        }
        println!("start to ready\t{}", Stats(boot).show());
        println!("exec /bin/true (agent, ours)\t{}", Stats(exec).show());
        if systemd {
            println!("exec: systemd-run -M --wait --pipe\t{}", Stats(pipe).show());
        } else {
            println!("exec: systemd-run -M --wait --pipe\t-");
        }
        println!("stop to gone\t{}", Stats(stop).show());
    }
}

/// The agent's calls one by one, each beside `nsenter -t <leader> -a /bin/true`, on one
/// machine, interleaved so that all see the same noise (`--calls` runs only this).
mod calls {
    use super::calls_more::{back_to_back, side_by_side, spaced};
    use super::*;

    pub(super) fn count() -> usize {
        std::env::var("NSPAWN_BENCH_CALLS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300)
    }

    type Op<'a> = (&'static str, Box<dyn Fn() + 'a>);

    pub fn table(chroot: &Path) {
        let m = Machine::start(chroot.to_str().unwrap()).unwrap();
        m.write("/tmp/small", "hello\n").unwrap();
        let leader = m.leader_pid().to_string();
        let ops: Vec<Op> = vec![
            (
                "exists() /tmp/small",
                Box::new(|| assert!(m.exists("/tmp/small"))),
            ),
            (
                "exists() /etc/os-release",
                Box::new(|| assert!(m.exists("/etc/os-release"))),
            ),
            (
                "read_to_string() 6 B",
                Box::new(|| assert_eq!(m.read_to_string("/tmp/small").unwrap(), "hello\n")),
            ),
            (
                "write() 6 B",
                Box::new(|| m.write("/tmp/w", "hello\n").unwrap()),
            ),
            (
                "run([\"/bin/true\"])",
                Box::new(|| drop(m.run(["/bin/true"]).unwrap())),
            ),
            (
                "call(|()| ())",
                Box::new(|| m.call(|(): ()| (), ()).unwrap()),
            ),
            (
                "two call(|()| ()) in a row",
                Box::new(|| {
                    m.call(|(): ()| (), ()).unwrap();
                    m.call(|(): ()| (), ()).unwrap();
                }),
            ),
            (
                "call(|p| Path::new(&p).exists())",
                Box::new(|| {
                    let exists = |p: String| Path::new(&p).exists();
                    assert!(m.call(exists, "/etc/os-release".to_string()).unwrap());
                }),
            ),
            (
                "sh(\"echo hi\")",
                Box::new(|| assert_eq!(m.sh("echo hi").unwrap(), "hi\n")),
            ),
            (
                "nsenter -t <leader> -a /bin/true",
                Box::new(|| {
                    let s = Command::new("nsenter")
                        .args(["-t", &leader, "-a", "/bin/true"])
                        .status()
                        .unwrap();
                    assert!(s.success());
                }),
            ),
        ];
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ops.len()];
        // A new random order each round, so that no operation always follows the same one
        // (after `nsenter`, caches are cold).
        for _ in 0..count() {
            let seed = std::collections::hash_map::RandomState::new();
            let mut order: Vec<usize> = (0..ops.len()).collect();
            order.sort_by_key(|i| std::hash::BuildHasher::hash_one(&seed, i));
            for i in order {
                times[i].push(time(&ops[i].1).1);
            }
        }
        println!("\nagent calls, {} each, interleaved (ms)\n", count());
        println!("| {:<34} | median | p90 | min | max |", "");
        println!("|{:-<36}|--------|-----|-----|-----|", "");
        for ((what, _), t) in ops.iter().zip(times) {
            let s = Stats(t);
            let v = s.sorted();
            println!(
                "| {what:<34} | {:.3} | {:.3} | {:.3} | {:.3} |",
                s.median(),
                s.quantile(0.9),
                v[0],
                v[v.len() - 1]
            );
        }
        back_to_back(&m);
        spaced(&m);
        side_by_side(&m);
        drop(ops);
        m.stop().unwrap();
    }
}

/// More rows of `--calls`, each in a loop of its own: calls back to back, 1 ms apart, and
/// from two threads at once, with the CPU time they cost the calling threads.
mod calls_more {
    use super::*;

    /// CPU time of the calling thread so far.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: fills `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// `n` no-op calls, each after `pause`: their times, and the calling thread's CPU time
    /// in them, per call.
    fn noop_calls(m: &Machine, n: usize, pause: Duration) -> (Vec<Duration>, Duration) {
        let (mut times, mut cpu) = (Vec::with_capacity(n), Duration::ZERO);
        for _ in 0..n {
            std::thread::sleep(pause);
            let before = thread_cpu();
            times.push(time(|| m.call(|(): ()| (), ()).unwrap()).1);
            cpu += thread_cpu() - before;
        }
        (times, cpu / n as u32)
    }

    fn report(what: &str, times: Vec<Duration>, cpu: Duration) {
        let s = Stats(times);
        println!(
            "{what}: median {:.3} ms, p90 {:.3} ms; the calling thread's CPU time per call \
             {:.3} ms",
            s.median(),
            s.quantile(0.9),
            cpu.as_secs_f64() * 1e3
        );
    }

    /// No-op calls one after another (each waits for the process that replaces the last).
    pub fn back_to_back(m: &Machine) {
        let n = calls::count();
        let (times, cpu) = noop_calls(m, n, Duration::ZERO);
        println!();
        report(&format!("{n} no-op calls back to back"), times, cpu);
    }

    /// No-op calls 1 ms apart, as a test's calls between its other work.
    pub fn spaced(m: &Machine) {
        let n = calls::count();
        let (times, cpu) = noop_calls(m, n, Duration::from_millis(1));
        report(&format!("{n} no-op calls 1 ms apart"), times, cpu);
    }

    /// Two threads calling at once on one machine, on a host of two CPUs.
    pub fn side_by_side(m: &Machine) {
        let n = calls::count();
        let results: Vec<(Vec<Duration>, Duration)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| noop_calls(m, n, Duration::ZERO)))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let cpu = results.iter().map(|r| r.1).sum::<Duration>() / 2;
        let times = results.into_iter().flat_map(|r| r.0).collect();
        report(
            &format!("two threads, {n} no-op calls each at once"),
            times,
            cpu,
        );
    }
}

mod overhead {
    use super::*;
    use nspawn::__private::{run, TestInfo};
    use std::sync::mpsc;

    static INFO: TestInfo = TestInfo::module_test(
        "bench::shared",
        "noop",
        "bookworm",
        env!("CARGO_MANIFEST_DIR"),
    );

    /// What `#[nspawn::test]` adds to a test that does nothing, on an already-booted shared
    /// machine, against calling a plain function.
    pub fn per_test() {
        let (hold, release) = mpsc::channel::<()>();
        let (up, is_up) = mpsc::channel::<()>();
        let keeper = std::thread::spawn(move || {
            run(&INFO, |_m| {
                up.send(()).unwrap();
                release.recv().unwrap();
            })
        });
        is_up.recv().unwrap();
        let n = 10_000;
        let (_, ours) = time(|| {
            for _ in 0..n {
                run(&INFO, |m| {
                    std::hint::black_box(m.name().len());
                });
            }
        });
        let (_, plain) = time(|| {
            for _ in 0..n {
                std::hint::black_box(noop());
            }
        });
        hold.send(()).unwrap();
        keeper.join().unwrap();
        println!(
            "\nper-test overhead on a shared machine: {:.2} us (plain call: {:.3} us), {n} calls",
            ours.as_secs_f64() * 1e6 / n as f64,
            plain.as_secs_f64() * 1e6 / n as f64
        );
    }

    #[inline(never)]
    fn noop() -> usize {
        7
    }
}

/// A one-package change of bookworm (`jq` added) rebuilt from the tree it has and from
/// nothing, in turns, in a scratch workspace; then bookworm exported and imported there.
mod chroot_builds {
    use super::*;
    use nspawn_runtime::chroot::{self, archive, config::Workspace, BuildOptions};

    fn rounds() -> usize {
        std::env::var("NSPAWN_BENCH_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3)
    }

    pub fn table(chroot: &Path) {
        assert!(
            std::env::var_os("NSPAWN_CHROOTS_DIR").is_none(),
            "unset NSPAWN_CHROOTS_DIR: the scratch workspace keeps its own chroots"
        );
        let scratch = tempfile::Builder::new()
            .prefix("nspawn-bench-")
            .tempdir()
            .unwrap();
        std::fs::write(
            scratch.path().join("Cargo.toml"),
            "[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\ninclude = [\"jq\"]\n",
        )
        .unwrap();
        let ws = Workspace::discover(scratch.path()).unwrap();
        let dir = ws.chroots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let before = suites::load();
        // The packages the master bookworm's last build kept: what a rebuild after a change
        // of the declaration starts from.
        let kept = chroot.parent().unwrap().join(".debs/bookworm");
        assert!(
            kept.is_dir(),
            "{} is missing: build bookworm with `cargo nspawn make-chroots --force bookworm` first",
            kept.display()
        );
        let mut rows: Vec<(Build, Vec<Duration>, Vec<u64>)> = Build::ALL
            .iter()
            .map(|b| (*b, Vec::new(), Vec::new()))
            .collect();
        for round in 0..rounds() {
            for i in 0..rows.len() {
                let (build, times, downloads) = &mut rows[(i + round) % Build::ALL.len()];
                build.prepare(&dir, chroot, &kept);
                let opts = BuildOptions {
                    force: true,
                    fresh: *build == Build::Fresh,
                    ..Default::default()
                };
                let received = received_bytes();
                let (built, took) = time(|| chroot::build(&ws, &["bookworm".into()], &opts));
                built.unwrap();
                downloads.push(received_bytes() - received);
                times.push(took);
            }
        }
        let def = ws.selected(&["bookworm".into()]).unwrap().remove(0);
        let out = scratch.path().join("cache");
        std::fs::create_dir(&out).unwrap();
        let (file, export) = time(|| archive::export(&dir, &def, &out).unwrap());
        let (_, import) = time(|| archive::import(&dir, &def, &file, true).unwrap());
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        println!(
            "\nchroot builds, {} rounds in turns (load average {before} before, {} after)\n",
            rounds(),
            suites::load()
        );
        println!("| | median [min-max] | downloaded, median |\n|---|---|---|");
        for (build, times, mut downloads) in rows {
            downloads.sort_unstable();
            println!(
                "| {} | {} | {:.1} MB |",
                build.label(),
                Stats(times).show(),
                downloads[downloads.len() / 2] as f64 / 1e6
            );
        }
        println!(
            "| export of bookworm+jq ({:.0} MB) | {:.2} s | |",
            size as f64 / 1e6,
            export.as_secs_f64()
        );
        println!("| import of it | {:.2} s | |", import.as_secs_f64());
        let _ = Command::new("rm").arg("-rf").arg(&dir).status();
    }

    /// The three ways bookworm with `jq` added to its declaration gets built.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Build {
        /// From the tree it had, by installing `jq` into a copy.
        Extended,
        /// From nothing, with the packages its last build kept.
        Cached,
        /// From nothing, downloading everything (`--fresh`).
        Fresh,
    }

    impl Build {
        const ALL: [Build; 3] = [Build::Extended, Build::Cached, Build::Fresh];

        fn label(self) -> &'static str {
            match self {
                Build::Extended => "`jq` added, from the tree it had (`make-chroots --force`)",
                Build::Cached => "`jq` added, bootstrapped with the packages kept",
                Build::Fresh => "`jq` added, from nothing (`make-chroots --fresh`)",
            }
        }

        /// The scratch chroots directory as this build starts from: the tree it had (for an
        /// extension) or none, and the packages of bookworm's last build (for the cached one).
        fn prepare(self, dir: &Path, chroot: &Path, kept: &Path) {
            let tree = dir.join("bookworm");
            let cache = dir.join(".debs/bookworm");
            for old in [&tree, &cache] {
                let _ = Command::new("rm").arg("-rf").arg(old).status();
            }
            let copy = |from: &Path, to: &Path| {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                let copied = Command::new("cp").arg("-a").arg(from).arg(to).status();
                assert!(copied.unwrap().success());
            };
            match self {
                Build::Extended => copy(chroot, &tree),
                Build::Cached => copy(kept, &cache),
                Build::Fresh => {}
            }
        }
    }

    /// Bytes received by the host's network interfaces but loopback so far.
    fn received_bytes() -> u64 {
        let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
        dev.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(name, _)| name.trim() != "lo")
            .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The seed's suite cold, and with the warm machines a keeper holds after the run before
/// (`NSPAWN_WARM`), in turns, against raw boots.
mod warm_suite {
    use super::*;

    /// How long the keeper of the benchmark's runs keeps its machines: long enough for a
    /// round, short enough to be gone soon after the last.
    const WARM_FOR: &str = "20";

    /// One run of the suite: its wall time, and when its first test was done (the first
    /// `ran` line of its event log, polled every millisecond: an upper bound of when the
    /// first test body started).
    fn run(bin: &Path, warm: bool) -> (Duration, Duration) {
        let dir = common::scratch_dir();
        let log = dir.path().join("events");
        let mut cmd = Command::new(bin);
        cmd.arg("--test-threads=2")
            .env("NSPAWN_QUIET", "1")
            .env("NSPAWN_EVENT_LOG", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if warm {
            cmd.env("NSPAWN_WARM", WARM_FOR);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let mut first = None;
        loop {
            if first.is_none()
                && std::fs::read_to_string(&log)
                    .is_ok_and(|t| t.lines().any(|l| l.starts_with("ran ")))
            {
                first = Some(started.elapsed());
            }
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let wall = started.elapsed();
        (wall, first.unwrap_or(wall))
    }

    /// The warm machines published for the next run, over every kind.
    fn published() -> usize {
        let Ok(dir) = std::fs::read_dir("/run/nspawn-rs/warm") else {
            return 0;
        };
        dir.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|t| t.matches("[[machines]]").count())
            .sum()
    }

    /// Waits until the keeper holds `n` warm machines again (it boots them after each run).
    fn wait_for_warm(n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while published() < n {
            assert!(
                Instant::now() < deadline,
                "the keeper did not warm {n} machines"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn table(chroot: &Path) {
        let rounds = samples().min(7);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bin = common::test_binary_with("suite_seed", &["--release"]);
        let before = suites::load();
        // A run that leaves the keeper, untimed.
        run(&bin, true);
        let (mut cold, mut cold_first, mut warm, mut warm_first, mut raw) =
            (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            for warmed in [round % 2 == 1, round % 2 == 0] {
                // Both start with the keeper's machines up and the host quiet again.
                wait_for_warm(4);
                let (wall, first) = run(&bin, warmed);
                let (walls, firsts) = if warmed {
                    (&mut warm, &mut warm_first)
                } else {
                    (&mut cold, &mut cold_first)
                };
                walls.push(wall);
                firsts.push(first);
            }
            wait_for_warm(4);
            raw.push(suites::raw_boots(chroot, 4, cpus).1);
        }
        println!(
            "\nthe seed's suite (4 modules, 18 tests, 2 test threads, release), {rounds} rounds \
             in turns (load average {before} before, {} after)\n",
            suites::load()
        );
        println!("| | wall, median [min-max] (ms) | first test done, median [min-max] (ms) |");
        println!("|---|---|---|");
        println!(
            "| cold | {} | {} |",
            Stats(cold.clone()).show(),
            Stats(cold_first).show()
        );
        println!(
            "| warm (`NSPAWN_WARM`) | {} | {} |",
            Stats(warm.clone()).show(),
            Stats(warm_first).show()
        );
        println!(
            "| raw: 4 boots, {cpus} at a time, no tests | {} | |",
            Stats(raw).show()
        );
        println!(
            "\nwarm / cold: {:.2}x",
            Stats(warm).median() / Stats(cold).median()
        );
        println!("(the keeper stops its machines {WARM_FOR} s after the last run)");
    }
}

/// Whole suites against raw boots, side by side in one run.
mod suites {
    use super::*;

    pub fn load() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Wall time of a suite binary's run, and its tests' own time (their bodies, from the
    /// event log).
    fn run(bin: &Path, threads: usize, ahead: Option<&str>) -> (Duration, Duration) {
        let dir = common::scratch_dir();
        let log = dir.path().join("events");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--test-threads={threads}"))
            .env("NSPAWN_QUIET", "1")
            .env("NSPAWN_EVENT_LOG", &log);
        if let Some(n) = ahead {
            cmd.env("NSPAWN_BOOT_AHEAD", n);
        }
        let (out, wall) = time(|| cmd.output().unwrap());
        assert!(out.status.success(), "{}", common::report(&out));
        (wall, common::Events::read(&log).tests_own_time())
    }

    /// `n` raw boots to READY=1, `at_once` at a time: the sum of the boots' times, and the
    /// wall time of all of them with their stops.
    pub fn raw_boots(dir: &Path, n: usize, at_once: usize) -> (Duration, Duration) {
        let started = Instant::now();
        let sums: Vec<Duration> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..at_once)
                .map(|w| {
                    scope.spawn(move || {
                        (w..n)
                            .step_by(at_once)
                            .map(|i| {
                                let (raw, t) = raw_boot(dir, 200 + i);
                                raw.stop();
                                t
                            })
                            .sum::<Duration>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        (sums.into_iter().sum(), started.elapsed())
    }

    /// Each suite with 1 and 2 test threads, with and without boots ahead, beside its raw
    /// boots one after another (the goal's measure: at most half of them plus the tests' own
    /// time) and raw boots as many at a time as there are CPUs, with no tests, no agent and
    /// the host's network: what overlapping boots alone gives on this host.
    pub fn table(chroot: &Path) {
        let rounds = samples().min(5);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "\nsuites, median of {rounds} rounds, load average before: {}\n",
            load()
        );
        println!(
            "| suite | threads | boots ahead | wall (s) | tests' own (s) | raw boots one after another (s) | ratio | goal: raw / 2 + tests (s) | raw boots {cpus} at a time, wall (s) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (name, boots) in [("suite_seed", 4), ("suite8x5", 8)] {
            let bin = common::test_binary_with(name, &["--release"]);
            for threads in [1, 2] {
                for ahead in [Some("0"), None] {
                    let (mut ours, mut own, mut raw, mut overlapped) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    for _ in 0..rounds {
                        let (wall, tests) = run(&bin, threads, ahead);
                        ours.push(wall);
                        own.push(tests);
                        raw.push(raw_boots(chroot, boots, 1).0);
                        overlapped.push(raw_boots(chroot, boots, cpus).1);
                    }
                    let (o, t) = (Stats(ours).median(), Stats(own).median());
                    let (r, p) = (Stats(raw).median(), Stats(overlapped).median());
                    println!(
                        "| {name} | {threads} | {} | {:.2} | {:.2} | {:.2} ({boots}) | {:.2}x | {:.2} | {:.2} ({:.2}x) |",
                        ahead.map_or("default", |_| "none"),
                        o / 1e3,
                        t / 1e3,
                        r / 1e3,
                        o / r,
                        (r / 2.0 + t) / 1e3,
                        p / 1e3,
                        p / r
                    );
                }
            }
        }
        profiles(chroot);
        println!("\nload average after: {}", load());
    }

    /// The `fast` profile's tree against the full one, raw boots and ours, alternating.
    fn profiles(chroot: &Path) {
        let fast = chroot.with_file_name("bookworm-fast");
        let (mut raw_full, mut raw_fast, mut ours_full, mut ours_fast) =
            (vec![], vec![], vec![], vec![]);
        for i in 0..samples() {
            for (dir, raw, ours) in [
                (chroot, &mut raw_full, &mut ours_full),
                (fast.as_path(), &mut raw_fast, &mut ours_fast),
            ] {
                let (r, t) = raw_boot(dir, 300 + i);
                raw.push(t);
                r.stop();
                let (m, t) = time(|| Machine::start(dir.to_str().unwrap()).unwrap());
                ours.push(t);
                m.stop().unwrap();
            }
        }
        println!("\nboot to ready by profile, {} samples (ms)\n", samples());
        row("full profile", &Stats(ours_full), Some(&Stats(raw_full)));
        row("fast profile", &Stats(ours_fast), Some(&Stats(raw_fast)));
    }
}

mod networks {
    use super::*;
    use nspawn::Network;

    /// Start-to-ready (for a zone: with its address and route set) and stop, per network,
    /// interleaved with raw nspawn boots on the host's network. An isolated machine makes its
    /// own bridge and table every time; the zone rows measure joining a zone that another
    /// machine keeps up (what every machine but a zone's first pays).
    pub fn table(chroot: &Path) {
        let n = samples();
        let zone = |name: &str, outside| Network::Zone {
            name: name.into(),
            outside,
        };
        let modes = [
            ("host", Network::Host),
            ("private", Network::Private),
            ("isolated", Network::Isolated),
            ("zone (joining)", zone("bench", false)),
            ("zone+outside (joining)", zone("bench-out", true)),
        ];
        let dir = chroot.to_str().unwrap();
        let residents: Vec<Machine> = ["bench", "bench-out"]
            .iter()
            .map(|z| {
                Machine::builder(dir)
                    .network(zone(z, *z == "bench-out"))
                    .start()
                    .unwrap()
            })
            .collect();
        let mut boots: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
        let mut stops: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
        let mut raw = Vec::new();
        for i in 0..n {
            let (r, t) = raw_boot(chroot, 1000 + i);
            raw.push(t);
            r.stop();
            for (k, (_, network)) in modes.iter().enumerate() {
                let (m, t) = time(|| {
                    Machine::builder(dir)
                        .network(network.clone())
                        .start()
                        .unwrap()
                });
                boots[k].push(t);
                stops[k].push(time(|| m.stop().unwrap()).1);
            }
        }
        drop(residents);
        let host = Stats(boots[0].clone()).median();
        let raw = Stats(raw);
        println!("\nboot per network, bookworm plain directory ({n} samples; median [min-max])\n");
        println!(
            "| {:<24} | {:<26} | {:<22} | vs host | vs raw |",
            "network", "start to ready", "stop"
        );
        println!("|{:-<26}|{:-<28}|{:-<24}|---------|--------|", "", "", "");
        println!(
            "| {:<24} | {:<26} | {:<22} |         | 1.00x  |",
            "raw nspawn (host)",
            raw.show(),
            "-"
        );
        for (k, (label, _)) in modes.iter().enumerate() {
            let boot = Stats(boots[k].clone());
            println!(
                "| {label:<24} | {:<26} | {:<22} | {:.2}x   | {:.2}x  |",
                boot.show(),
                Stats(stops[k].clone()).show(),
                boot.median() / host,
                boot.median() / raw.median()
            );
        }
    }
}

mod under_nextest {
    use super::*;

    /// A way to run the suite: its label, cargo's arguments, extra environment.
    type Way = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    );

    /// One run of the example suite; its wall time and the machines it booted.
    fn suite(args: &[&str], env: &[(&str, &str)], n: usize) -> (Duration, usize) {
        let dir = common::scratch_dir();
        let log = dir.path().join(format!("events-{n}"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let started = Instant::now();
        let out = Command::new(cargo)
            .args(args)
            .args(["-p", "provisioning-example"])
            .env("NSPAWN_EVENT_LOG", &log)
            .env("NSPAWN_QUIET", "1")
            .envs(env.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(out.status.success(), "{}", common::report(&out));
        (elapsed, common::Events::read(&log).machines().len())
    }

    /// The example suite (5 modules, 11 tests, one a two-chroot matrix), 3 runs of each way,
    /// interleaved.
    pub fn table() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        for warm in [&["test", "--no-run"][..], &["nextest", "list"][..]] {
            let status = Command::new(&cargo)
                .args(warm)
                .args(["-p", "provisioning-example"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let ways: [Way; 3] = [
            ("cargo test", &["test"], &[]),
            ("cargo nextest run", &["nextest", "run"], &[]),
            (
                "cargo nextest run, NSPAWN_NEXTEST_SHARE=0",
                &["nextest", "run"],
                &[("NSPAWN_NEXTEST_SHARE", "0")],
            ),
        ];
        let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
        let mut boots: Vec<Vec<usize>> = vec![Vec::new(); ways.len()];
        for i in 0..3 {
            for (k, (_, args, env)) in ways.iter().enumerate() {
                let (wall, booted) = suite(args, env, i * 10 + k);
                walls[k].push(wall);
                boots[k].push(booted);
            }
        }
        println!("\nthe example suite (3 runs each, interleaved; median [min-max])\n");
        println!("| {:<42} | {:<26} | machines booted |", "how", "wall");
        println!("|{:-<44}|{:-<28}|-----------------|", "", "");
        for (k, (label, _, _)) in ways.iter().enumerate() {
            println!(
                "| {label:<42} | {:<26} | {:?} |",
                Stats(walls[k].clone()).show(),
                boots[k]
            );
        }
    }
}
