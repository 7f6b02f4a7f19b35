//! `cargo xtask vm-test`: test binaries on a second kind of host, the one most users have:
//! Debian trixie with systemd as PID 1 and cgroup v2, where the framework picks its systemd
//! backend (units, machined), optionally with Docker, firewalld or ufw. The binaries are built here,
//! the VM only runs them (see [`payload`]); its image is built once and cached (see
//! [`image`]); QEMU runs under software emulation (see [`qemu`]).

mod image;
mod payload;
mod qemu;
mod smoke;

use std::path::Path;
use std::time::Instant;

use cargo_nspawn::CliError;
use nspawn_runtime::host::tools::{self, Tool};

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args, Debug)]
pub struct VmTest {
    /// Give the VM a host firewall of this kind, active.
    #[arg(long, value_enum)]
    pub firewall: Option<Firewall>,
    /// The same as `--firewall docker`.
    #[arg(long, conflicts_with = "firewall")]
    pub docker: bool,
    /// Integration test targets to run, each as TARGET or TARGET:FILTER (libtest's filter).
    /// Without any: the smoke set, and a SIGKILL of a test process with nothing left.
    pub tests: Vec<String>,
}

/// The host firewalls the VM can have: what users' hosts often run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firewall {
    /// docker.io: iptables' FORWARD policy DROP, and `br_netfilter` loaded.
    Docker,
    /// firewalld (nftables backend): its own forward chain, rejecting what no zone allows.
    Firewalld,
    /// ufw, enabled: iptables' FORWARD policy DROP.
    Ufw,
}

impl VmTest {
    /// The firewall asked for, `--docker` included.
    pub fn firewall(&self) -> Option<Firewall> {
        self.firewall.or(self.docker.then_some(Firewall::Docker))
    }
}

/// The chroots the tests boot, built here and copied in: never built in the VM.
const CHROOTS: &[&str] = &["bookworm", "trixie"];

const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
const SSH: Tool = Tool {
    program: "ssh",
    package: "openssh-client",
};

/// Runs the tests in the VM; fails if any fails, or if anything of a run is left there.
pub fn run(workspace: &Path, options: &VmTest) -> Result<(), CliError> {
    let started = Instant::now();
    tools::ensure(
        &[
            QEMU,
            SSH,
            tools::MMDEBSTRAP,
            Tool {
                program: "mkfs.ext4",
                package: "e2fsprogs",
            },
        ],
        &|m| eprintln!("{m}"),
    )?;
    let runs = smoke::runs(&options.tests);
    let targets: Vec<String> = runs.iter().map(|r| r.target.clone()).collect();
    let dir = workspace.join("target/vm");
    let image = image::ensure(&dir, options.firewall())?;
    let binaries = payload::build_tests(workspace, &dedup(&targets))?;
    let run_dir = dir.join("run");
    let disk = run_dir.join("payload.img");
    payload::make(workspace, CHROOTS, &binaries, &run_dir.join("stage"), &disk)?;
    let outcome = {
        let vm = qemu::Vm::boot(&image, &disk, &run_dir)?;
        smoke::run_all(&vm, workspace, &runs, &binaries, options.tests.is_empty())
    };
    let _ = std::fs::remove_file(&disk);
    step(&format!(
        "vm-test took {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    outcome
}

fn dedup(targets: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    for t in targets {
        if !seen.contains(t) {
            seen.push(t.clone());
        }
    }
    seen
}

/// Progress, on stderr.
fn step(what: &str) {
    eprintln!("vm-test: {what}");
}

fn io(path: &Path, e: std::io::Error) -> CliError {
    CliError::io(path.display().to_string(), e)
}
