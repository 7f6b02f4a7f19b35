//! `cargo xtask`: a thin command line over `nspawn-runtime`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::chroot::storage;
use nspawn_runtime::chroot::{self, Bootstrapper, BuildOptions, Outcome};
use nspawn_runtime::cleanup::{records, slots, sweep};
use nspawn_runtime::host::{console, probe, tools};
use nspawn_runtime::{backend, Error};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set-up and chores of the nspawn workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the master chroots declared in Cargo.toml (all of them by default).
    MakeChroots(MakeChroots),
    /// Set up everything and run what CI runs: fmt, clippy and every test.
    Test,
    /// Set up everything and run the example suite: the quick start's main job.
    Demo,
    /// Report how machines will run here: backend, privileges, nspawn, chroots, limits.
    Doctor,
    /// Remove what crashed test runs left: machines whose owner is dead, stale snapshots,
    /// propagate directories and cgroups.
    Gc {
        /// Also remove machines kept for debugging (NSPAWN_KEEP).
        #[arg(long)]
        kept: bool,
    },
}

#[derive(clap::Args, Default)]
struct MakeChroots {
    /// Chroots to build (default: all declared).
    names: Vec<String>,
    /// Rebuild even when up to date.
    #[arg(long)]
    force: bool,
    /// List the declared chroots and their state, build nothing.
    #[arg(long)]
    list: bool,
    /// How many chroots to build at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Use debootstrap even when mmdebstrap is installed.
    #[arg(long)]
    debootstrap: bool,
    /// Create a btrfs image file of SIZE (e.g. 4G) and loop-mount it on the chroots directory
    /// first, so machines are cheap snapshots on hosts without btrfs.
    #[arg(long, value_name = "SIZE")]
    btrfs_image: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::MakeChroots(args) => make_chroots(&args),
        Cmd::Test => test(),
        Cmd::Demo => demo(),
        Cmd::Gc { kept } => gc(kept),
        Cmd::Doctor => doctor(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn make_chroots(args: &MakeChroots) -> Result<(), Error> {
    let ws = Workspace::from_env()?;
    if args.list {
        return list(&ws);
    }
    if let Some(size) = &args.btrfs_image {
        if !tools::is_root() {
            return Err(not_root("--btrfs-image"));
        }
        tools::ensure(&[tools::BTRFS, tools::MKFS_BTRFS], &|m| eprintln!("{m}"))?;
        storage::mount_btrfs_image(&ws.chroots_dir(), size, &|m| eprintln!("{m}"))?;
    }
    let opts = BuildOptions {
        force: args.force,
        jobs: args.jobs,
        bootstrapper: args.debootstrap.then_some(Bootstrapper::Debootstrap),
    };
    for (name, outcome) in chroot::build(&ws, &args.names, &opts)? {
        if outcome == Outcome::UpToDate {
            eprintln!("{name}: up to date");
        }
    }
    Ok(())
}

fn list(ws: &Workspace) -> Result<(), Error> {
    let dir = ws.chroots_dir();
    for def in ws.chroots()? {
        let state = chroot::status(&dir, &def).describe(&def.name);
        println!(
            "{:<12} suite={} variant={} include={} -> {} [{state}]",
            def.name,
            def.suite,
            def.variant,
            def.include.join(","),
            dir.join(&def.name).display()
        );
    }
    Ok(())
}

fn doctor() -> Result<(), Error> {
    match backend::selected() {
        Ok((kind, why)) => println!("backend:    {kind} ({why})"),
        Err(e) => println!("backend:    none: {e}"),
    }
    let who = match (tools::is_root(), std::env::var("SUDO_USER")) {
        (true, Ok(user)) => format!("root under sudo (tests will run as {user})"),
        (true, Err(_)) => "root, not under sudo (tests run as root)".into(),
        (false, _) => "not root: run tests with sudo -E cargo test".into(),
    };
    println!("privileges: {who}");
    match probe::nspawn_version() {
        Some(v) => println!(
            "nspawn:     systemd-nspawn {v}{}",
            if probe::nspawn_has_suppress_sync() {
                ", --suppress-sync available"
            } else {
                ""
            }
        ),
        None => println!("nspawn:     not installed (apt-get install systemd-container)"),
    }
    let ws = Workspace::from_env()?;
    let dir = ws.chroots_dir();
    println!("chroots:    {}", dir.display());
    for def in ws.chroots()? {
        let state = chroot::status(&dir, &def).describe(&def.name);
        println!("  {:<10} {state}", def.name);
    }
    let cap = slots::cap();
    println!(
        "inotify:    fs.inotify.max_user_instances = {}",
        console::inotify_limit()
    );
    println!(
        "cap:        {} machines at once ({})",
        cap.machines, cap.reason
    );
    let records = records::Record::all();
    let kept = records.iter().filter(|r| r.kept).count();
    println!(
        "machines:   {} running from tests, {kept} kept for debugging",
        records.len() - kept
    );
    Ok(())
}

fn gc(kept: bool) -> Result<(), Error> {
    if !tools::is_root() {
        return Err(not_root("removing leftovers"));
    }
    let ws = Workspace::from_env()?;
    let options = sweep::Options {
        chroot_dirs: vec![ws.chroots_dir()],
        kept,
    };
    let removed = sweep::sweep(&options)?;
    if removed.is_empty() {
        println!("nothing to remove");
    }
    for line in removed {
        println!("removed {line}");
    }
    Ok(())
}

fn test() -> Result<(), Error> {
    setup(&[])?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace"])
}

/// The chroots the example suite boots.
const DEMO_CHROOTS: &[&str] = &["bookworm", "trixie"];

fn demo() -> Result<(), Error> {
    setup(DEMO_CHROOTS)?;
    cargo(&["test", "--package", "provisioning-example"])
}

/// Host packages and chroots (the named ones, or all declared): everything the tests need.
fn setup(chroots: &[&str]) -> Result<(), Error> {
    if !tools::is_root() {
        return Err(not_root("setting up"));
    }
    // btrfs-progs: the storage tests put a chroot on a loop-mounted btrfs image.
    tools::ensure(&[tools::NSPAWN, tools::BTRFS, tools::MKFS_BTRFS], &|m| {
        eprintln!("{m}")
    })?;
    make_chroots(&MakeChroots {
        names: chroots.iter().map(|c| c.to_string()).collect(),
        jobs: 2,
        ..MakeChroots::default()
    })
}

fn cargo(args: &[&str]) -> Result<(), Error> {
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    let line = tools::command_line(&cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| Error::io(format!("running `{line}`"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::HostCommand {
            command: line,
            status: status.to_string(),
            stderr: String::new(),
        })
    }
}

fn not_root(action: &str) -> Error {
    let args: Vec<String> = std::env::args().skip(1).collect();
    Error::NotRoot {
        action: action.into(),
        command: format!("sudo -E env PATH=\"$PATH\" cargo xtask {}", args.join(" ")),
    }
}
