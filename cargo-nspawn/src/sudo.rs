//! The privileged part, as root: this program again, through `sudo`, when run as a user.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode};

use nspawn_runtime::error::HostError;
use nspawn_runtime::host::tools;

use crate::error::CliError;

/// This program's arguments, program name first, without the `nspawn` that cargo adds when it
/// runs `cargo nspawn x` as `cargo-nspawn nspawn x`.
pub fn own_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "nspawn") {
        args.remove(1);
    }
    args
}

/// `args` without a `--workspace DIR` (or `--workspace=DIR`): the re-run names the workspace
/// already resolved, and clap takes the option once.
fn without_workspace(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if arg == "--workspace" {
            skip_value = true;
        } else if !arg.to_string_lossy().starts_with("--workspace=") {
            kept.push(arg);
        }
    }
    kept
}

/// Runs this same command as root through `sudo`, acting on `workspace` (found as the user,
/// since sudo may change the directory and the environment). The program is named by its
/// absolute path: sudo's `secure_path` would not find it in `~/.cargo/bin`.
pub fn rerun(action: &str, workspace: &Path) -> Result<ExitCode, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::io("finding this program to re-run it with sudo", e))?;
    let args = without_workspace(own_args().into_iter().skip(1));
    let mut cmd = Command::new("sudo");
    cmd.arg("-E")
        .arg(&exe)
        .arg("--workspace")
        .arg(workspace)
        .args(&args);
    let line = tools::command_line(&cmd);
    if tools::which("sudo").is_none() {
        return Err(HostError::not_root(action, line.trim_start_matches("sudo -E ")).into());
    }
    eprintln!("{action} needs root: {line}");
    let status = cmd
        .status()
        .map_err(|e| CliError::io(format!("running `{line}`"), e))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
