//! Which workspace a command acts on: the one around the current directory, as cargo finds
//! it, unless told otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::CliError;
use nspawn_runtime::chroot::config::Workspace;

/// The workspace to act on: `--workspace DIR`, else `$NSPAWN_WORKSPACE`, else the one
/// `cargo locate-project --workspace` finds from the current directory (falling back to the
/// nearest manifest when cargo cannot tell).
pub fn find(explicit: Option<&Path>) -> Result<Workspace, CliError> {
    if let Some(dir) = explicit {
        return Ok(Workspace::discover(dir)?);
    }
    if let Some(dir) = nspawn_runtime::settings::lenient().workspace.as_deref() {
        return Ok(Workspace::discover(dir)?);
    }
    let here =
        std::env::current_dir().map_err(|e| CliError::io("reading the current directory", e))?;
    match located_by_cargo(&here) {
        Some(manifest) => Ok(Workspace {
            root: manifest.parent().unwrap_or(&here).to_path_buf(),
        }),
        None => Ok(Workspace::discover(&here)?),
    }
}

/// The workspace manifest `cargo locate-project --workspace` names.
fn located_by_cargo(dir: &Path) -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(dir)
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !path.trim().is_empty()).then(|| PathBuf::from(path.trim()))
}
