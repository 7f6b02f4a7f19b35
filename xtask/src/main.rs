//! `cargo xtask`: this repository's chores. Every `cargo nspawn` command is here too, from the
//! same code (`cargo xtask make-chroots` is `cargo nspawn make-chroots`), plus `test` and
//! `demo`, which set a fresh machine up and run the suites.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use cargo_nspawn::CliError;
use cargo_nspawn::MakeChroots;
use clap::{Parser, Subcommand};
use nspawn_runtime::error::HostError;
use nspawn_runtime::host::tools;

mod vm;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set-up and chores of the nspawn workspace"
)]
struct Cli {
    /// Act on the workspace that holds this directory instead of the current one.
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Nspawn(cargo_nspawn::Command),
    /// Set up everything and run what CI runs: fmt, clippy, every test, `cargo package`, and
    /// the smoke set in a VM of the second host kind (`vm-test`).
    Test {
        /// Leave out the VM's smoke set (about 8 minutes).
        #[arg(long)]
        no_vm: bool,
    },
    /// Set up everything and run the example suite: the quick start's main job.
    Demo,
    /// Run test binaries in a VM of a second host kind: Debian trixie, systemd as PID 1,
    /// cgroup v2 (the systemd backend), optionally with Docker.
    VmTest(vm::VmTest),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Nspawn(command) => cargo_nspawn::run(&command, cli.workspace.as_deref()),
        Cmd::Test { no_vm } => test(cli.workspace.as_deref(), no_vm).map(|()| ExitCode::SUCCESS),
        Cmd::Demo => demo().map(|()| ExitCode::SUCCESS),
        Cmd::VmTest(options) => {
            vm_test(cli.workspace.as_deref(), &options).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test(workspace: Option<&std::path::Path>, no_vm: bool) -> Result<(), CliError> {
    setup(&[])?;
    cargo(&["fmt", "--all", "--check"])?;
    // Without and with the optional `tokio` feature: both must be clean.
    for features in [&[][..], &["--all-features"]] {
        let mut args = vec!["clippy", "--workspace", "--all-targets"];
        args.extend_from_slice(features);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    cargo(&["test", "--workspace", "--features", "nspawn/tokio"])?;
    // The crates users depend on must stay publishable.
    cargo(&[
        "package",
        "--workspace",
        "--no-verify",
        "--allow-dirty",
        "--exclude",
        "xtask",
        "--exclude",
        "provisioning-example",
        "--exclude",
        "readme-examples",
        "--exclude",
        "system-tests-example",
    ])?;
    if no_vm {
        return Ok(());
    }
    let smoke = vm::VmTest {
        firewall: None,
        docker: false,
        tests: Vec::new(),
    };
    vm_test(workspace, &smoke)
}

fn vm_test(workspace: Option<&std::path::Path>, options: &vm::VmTest) -> Result<(), CliError> {
    setup(&["bookworm", "trixie"])?;
    let ws = cargo_nspawn::find_workspace(workspace)?;
    vm::run(&ws.root, options)
}

/// The chroots the example suite boots.
const DEMO_CHROOTS: &[&str] = &["bookworm", "trixie"];

fn demo() -> Result<(), CliError> {
    setup(DEMO_CHROOTS)?;
    cargo(&["test", "--package", "provisioning-example"])
}

/// Host packages and chroots (the named ones, or all declared): everything the tests need.
fn setup(chroots: &[&str]) -> Result<(), CliError> {
    if !tools::is_root() {
        return Err(not_root("setting up"));
    }
    // btrfs-progs: the storage tests put a chroot on a loop-mounted btrfs image; iptables:
    // the firewall tests make a Docker-like FORWARD chain.
    tools::ensure(
        &[
            tools::NSPAWN,
            tools::BTRFS,
            tools::MKFS_BTRFS,
            tools::IP,
            tools::NFT,
            tools::IPTABLES,
        ],
        &|m| eprintln!("{m}"),
    )?;
    let ws = cargo_nspawn::find_workspace(None)?;
    cargo_nspawn::make_chroots(
        &ws,
        &MakeChroots {
            names: chroots.iter().map(|c| c.to_string()).collect(),
            jobs: 2,
            ..MakeChroots::default()
        },
    )
}

fn cargo(args: &[&str]) -> Result<(), CliError> {
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    let line = tools::command_line(&cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| CliError::io(format!("running `{line}`"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(HostError::command(line, status, "").into())
    }
}

fn not_root(action: &str) -> CliError {
    let args: Vec<String> = std::env::args().skip(1).collect();
    HostError::not_root(
        action,
        format!(
            "cargo xtask {} (as root: it installs host packages)",
            args.join(" ")
        ),
    )
    .into()
}
