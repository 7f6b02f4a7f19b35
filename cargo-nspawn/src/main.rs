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
    // `cargo nspawn x` runs `cargo-nspawn nspawn x`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "nspawn") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    match cargo_nspawn::run(&cli.command, cli.workspace.as_deref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
