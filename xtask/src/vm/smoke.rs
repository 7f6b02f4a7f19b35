//! What runs in the VM: the smoke set by default, each binary of it with libtest filters, then
//! a SIGKILL of a test process whose machine is up, after which nothing may be left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cargo_nspawn::CliError;
use nspawn_runtime::host::tools;

use super::qemu::Vm;
use super::{io, step};

/// The environment of every run: the VM emulates its CPU, so boots and stops take 10-60 s
/// there, and a chroot is never built in it.
const ENV: &str = "NSPAWN_BOOT_TIMEOUT=300 NSPAWN_STOP_TIMEOUT=120 NSPAWN_AUTO_BUILD=0";

/// The caller's own `NSPAWN_*` settings, for the runs in the VM (after [`ENV`], so they win):
/// `NSPAWN_BACKEND=direct cargo xtask vm-test ...` runs the direct backend there.
fn passed_on() -> String {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("NSPAWN_"))
        .map(|(k, v)| format!("{k}={}", tools::shell_word(std::ffi::OsStr::new(&v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One test binary's run: its target and its libtest arguments.
#[derive(Debug, Clone)]
pub struct Run {
    pub target: String,
    pub args: Vec<String>,
}

/// The smoke set: the systemd backend's own suite (a module machine, `scope = "test"`, a zone,
/// user namespaces, machined, the sweep), calls and the guest's walls, a group on a zone,
/// zones next to a Docker-like firewall, and reboots, crashes and power cycles (the systemd
/// backend boots a machine again through its mount helper).
const SMOKE: &[(&str, &[&str])] = &[
    ("systemd_inner", &[]),
    // One run per area, as before they shared a binary: under TCG, several areas' machines
    // booting at once take minutes.
    (
        "machines",
        &[
            "userns::the_guests_root_is_an_unprivileged_host_uid",
            "userns::guest_root_cannot_reach_host_files_or_memory_through_our_processes",
            "userns::host_files_bound_into_the_machine_stay_read_only",
        ],
    ),
    // A group of bookworm machines: a trixie machine takes minutes to boot in the VM.
    (
        "machines",
        &["groups::pair::a_group_without_a_network_gets_a_zone_of_its_own"],
    ),
    ("firewall", &[]),
    ("machines", &["power::"]),
];

/// The runs `tests` names (TARGET or TARGET:FILTER), or the smoke set.
pub fn runs(tests: &[String]) -> Vec<Run> {
    if tests.is_empty() {
        return SMOKE
            .iter()
            .map(|(target, filters)| Run {
                target: target.to_string(),
                args: filters.iter().map(|f| f.to_string()).collect(),
            })
            .collect();
    }
    tests
        .iter()
        .map(|t| match t.split_once(':') {
            Some((target, filter)) => Run {
                target: target.into(),
                args: vec![filter.into()],
            },
            None => Run {
                target: t.clone(),
                args: vec![],
            },
        })
        .collect()
}

/// Mounts the payload, runs each binary, then (for the smoke set) the SIGKILL case; fails
/// naming what failed.
pub fn run_all(
    vm: &Vm,
    workspace: &Path,
    runs: &[Run],
    binaries: &[PathBuf],
    sigkill: bool,
) -> Result<(), CliError> {
    let ws = workspace.display();
    if !vm.ssh_shown(&format!("mkdir -p {ws} && mount /dev/vdb {ws}"))? {
        return Err(failed("mounting the payload in the VM"));
    }
    // What kind of host this is, for the log, once its boot is done (Docker and firewalld
    // set their rules while they start, which takes minutes under emulation).
    vm.ssh_shown(
        "systemctl is-system-running --wait >/dev/null; systemctl --version | head -1; echo \"cgroup: $(stat -fc %T /sys/fs/cgroup)\"; \
         for unit in docker firewalld ufw; do echo \"$unit: $(systemctl is-active $unit 2>/dev/null)\"; done; \
         echo \"br_netfilter: $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo off)\"; \
         iptables -S FORWARD 2>/dev/null | head -4",
    )?;
    let mut failures = Vec::new();
    for run in runs {
        let binary = binary_of(binaries, &run.target)?;
        let started = Instant::now();
        step(&format!("running {} {}", run.target, run.args.join(" ")));
        let line = format!(
            "cd {ws} && {ENV} {} {} --test-threads=2 {}",
            passed_on(),
            binary.display(),
            run.args.join(" ")
        );
        let ok = vm.ssh_shown(&line)?;
        let secs = started.elapsed().as_secs_f64();
        step(&format!(
            "{} {} in {secs:.0} s",
            run.target,
            if ok { "passed" } else { "FAILED" }
        ));
        if !ok {
            failures.push(run.target.clone());
        }
    }
    if sigkill {
        let inner = binary_of(binaries, "systemd_inner")?;
        if let Err(e) = sigkill_leaves_nothing(vm, workspace, inner) {
            step(&format!("SIGKILL case FAILED: {e}"));
            failures.push("SIGKILL of a test process".into());
        }
    }
    match left(vm, workspace) {
        left if left.is_empty() => {}
        left => failures.push(format!("left in the VM: {left}")),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failed(&format!("in the VM: {}", failures.join("; "))))
    }
}

fn binary_of<'a>(binaries: &'a [PathBuf], target: &str) -> Result<&'a PathBuf, CliError> {
    binaries
        .iter()
        .find(|b| {
            b.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{target}-")))
        })
        .ok_or_else(|| failed(&format!("no binary built for {target}")))
}

/// A test process is SIGKILLed once its machine is up (its test body waits); its machine,
/// unit and snapshot must then go (the watchdog's work).
fn sigkill_leaves_nothing(vm: &Vm, workspace: &Path, inner: &Path) -> Result<(), CliError> {
    step("SIGKILL of a test process whose machine is up");
    let ws = workspace.display();
    let start = format!(
        "cd {ws} && ({ENV} NSPAWN_NETWORK=host INNER_HANG=1 setsid {} hang >/dev/null 2>&1 & echo $!)",
        inner.display()
    );
    let pid = text(vm, &start)?;
    let hanging = "for m in $(machinectl list --no-legend | awk '/nspawn-/ {print $1}'); do \
                   l=$(machinectl show $m -p Leader --value); \
                   test -e /proc/$l/root/root/hanging && echo up; done";
    wait_until(
        vm,
        hanging,
        |out| out.contains("up"),
        Duration::from_secs(300),
    )
    .map_err(|_| failed("the hanging test's machine never came up"))?;
    text(vm, &format!("kill -9 {}", pid.trim()))?;
    wait_until(
        vm,
        &left_script(workspace),
        str::is_empty,
        Duration::from_secs(120),
    )
    .map_err(|left| failed(&format!("left 120 s after SIGKILL: {left}")))
}

/// Units, machines and snapshots of ours in the VM.
fn left(vm: &Vm, workspace: &Path) -> String {
    text(vm, &left_script(workspace)).unwrap_or_else(|e| e.to_string())
}

fn left_script(workspace: &Path) -> String {
    format!(
        "machinectl list --no-legend | grep nspawn- ; \
         systemctl list-units --all --no-legend 'nspawn-*' ; \
         ls -d {}/test_chroots/.#machine.* 2>/dev/null ; true",
        workspace.display()
    )
}

/// Polls `script` every 2 s until `done` holds for its output; the last output otherwise.
fn wait_until(
    vm: &Vm,
    script: &str,
    done: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let out = text(vm, script).unwrap_or_else(|e| e.to_string());
        if done(out.trim()) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(out);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn text(vm: &Vm, script: &str) -> Result<String, CliError> {
    let out = vm.ssh(script).map_err(|e| io(Path::new("ssh"), e))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn failed(what: &str) -> CliError {
    io(
        Path::new("vm-test"),
        std::io::Error::other(what.to_string()),
    )
}
