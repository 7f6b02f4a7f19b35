//! The commands, and which of them need root.

use std::path::Path;
use std::process::ExitCode;

use crate::error::CliError;
use nspawn_runtime::host::tools;

use crate::chroots::{self, MakeChroots};
use crate::{doctor, init, machines, sudo, workspace};

/// A `cargo nspawn` command.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build the master chroots declared in Cargo.toml (all of them by default). Needs root:
    /// run as a user, it re-runs itself through sudo.
    MakeChroots(MakeChroots),
    /// List the declared chroots: where they are, and whether they are built and current.
    List,
    /// Report how machines will run here: backend, privileges, nspawn, chroots, limits.
    Doctor,
    /// Remove what crashed test runs left: machines whose owner is dead, stale snapshots,
    /// propagate directories and cgroups. Needs root (through sudo).
    Gc {
        /// Also remove machines kept for debugging (NSPAWN_KEEP).
        #[arg(long)]
        kept: bool,
        /// Also end your warm machines (NSPAWN_WARM) now, instead of after their idle time.
        #[arg(long)]
        warm: bool,
    },
    /// Remove master chroots: the named ones, or with --undeclared those no declaration
    /// names any more. Needs root (through sudo).
    RemoveChroots(chroots::RemoveChroots),
    /// Write built chroots (all declared by default) as one file each,
    /// NAME-KEY.tar.zst, keyed by their declaration: for a CI cache. Needs root (through
    /// sudo).
    ExportChroots(chroots::ExportChroots),
    /// Put chroots in place from files `export-chroots` wrote, each if its key is its
    /// declaration's; a file of another declaration is skipped. Needs root (through sudo).
    ImportChroots(chroots::ImportChroots),
    /// Open a login shell in a running machine, e.g. one kept with NSPAWN_KEEP=failed.
    /// Needs root (through sudo).
    Shell {
        /// The machine's name, as the kept-machine message shows it.
        machine: String,
        /// A command to run instead of a login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Set this project up for nspawn tests: the test runner, the runtime optimized in dev
    /// builds, ignore and exclude entries, and a first test. Run it as yourself, not as root.
    Init(init::Init),
}

/// Runs `command` on the workspace at `workspace` (default: the one around the current
/// directory).
pub fn run(command: &Command, workspace: Option<&Path>) -> Result<ExitCode, CliError> {
    if let Command::Init(args) = command {
        return init::run(args, workspace).map(|()| ExitCode::SUCCESS);
    }
    let ws = workspace::find(workspace)?;
    eprintln!("workspace: {}", ws.root.display());
    let needs_root = match command {
        Command::MakeChroots(args) => (!args.list).then_some("building chroots"),
        Command::Gc { .. } => Some("removing leftovers"),
        Command::RemoveChroots(_) => Some("removing chroots"),
        Command::ExportChroots(_) => Some("exporting chroots"),
        Command::ImportChroots(_) => Some("importing chroots"),
        Command::Shell { .. } => Some("entering a machine"),
        _ => None,
    };
    if let Some(action) = needs_root.filter(|_| !tools::is_root()) {
        return sudo::rerun(action, &ws.root);
    }
    match command {
        Command::MakeChroots(args) => chroots::make(&ws, args),
        Command::List => chroots::list(&ws),
        Command::Doctor => doctor::report(&ws),
        Command::Gc { kept, warm } => machines::gc(&ws, *kept, *warm),
        Command::RemoveChroots(args) => chroots::remove(&ws, args),
        Command::ExportChroots(args) => chroots::export(&ws, args),
        Command::ImportChroots(args) => chroots::import(&ws, args),
        Command::Shell { machine, command } => machines::shell(machine, command),
        Command::Init(_) => Ok(()),
    }?;
    Ok(ExitCode::SUCCESS)
}
