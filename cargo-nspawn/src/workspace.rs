//! Which workspace a command acts on: the one around the current directory, as cargo finds
//! it, unless told otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::Error;

/// The workspace to act on: `--workspace DIR`, else `$NSPAWN_WORKSPACE`, else the one
/// `cargo locate-project --workspace` finds from the current directory (falling back to the
/// nearest manifest when cargo cannot tell).
pub fn find(explicit: Option<&Path>) -> Result<Workspace, Error> {
    if let Some(dir) = explicit {
        return Workspace::discover(dir);
    }
    if let Some(dir) = nspawn_runtime::settings::lenient().workspace.as_deref() {
        return Workspace::discover(dir);
    }
    let here =
        std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?;
    match located_by_cargo(&here) {
        Some(manifest) => Ok(Workspace {
            root: manifest.parent().unwrap_or(&here).to_path_buf(),
        }),
        None => Workspace::discover(&here),
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
