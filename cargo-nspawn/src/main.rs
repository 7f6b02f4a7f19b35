//! `cargo-nspawn`, run by cargo as `cargo nspawn ...`, or directly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cargo nspawn",
    bin_name = "cargo nspawn",
    version,
    about = "Build the master chroots of nspawn tests, inspect and clean up machines"
)]
struct Cli {
    /// Act on the workspace that holds this directory instead of the current one.
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    #[command(subcommand)]
    command: cargo_nspawn::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(cargo_nspawn::own_args());
    match cargo_nspawn::run(&cli.command, cli.workspace.as_deref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
