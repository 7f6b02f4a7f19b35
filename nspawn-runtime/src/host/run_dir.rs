//! The runtime's host-wide state directory (`/run/nspawn-rs`, `NSPAWN_RUN_DIR`), and its
//! subdirectories, which only root may enter.

use std::path::{Path, PathBuf};

use crate::error::{HostError, Result};
use crate::host::privs::ThreadRoot;

/// Set on every nspawn we start: the run directory that holds its record. A run under
/// another run directory sees no record of the machine, and must not take it for an orphan.
pub(crate) const RUN_DIR_ENV: &str = "NSPAWN_RS_RUN_DIR";

/// Where the runtime keeps host-wide state.
pub fn run_dir() -> PathBuf {
    crate::settings::lenient().run_dir.clone()
}

/// `sub` below [`run_dir`], both made if missing and checked: directories of root's, that
/// only root can enter. Another local user could otherwise hold every slot lock (`flock`
/// works on a read-only descriptor), plant records, or bind the notify sockets. A directory
/// root left open (an earlier version made them 0755) is closed; one of anybody else's, or
/// a symlink, is refused. Needs root.
pub fn private_dir(sub: &str) -> Result<PathBuf, HostError> {
    let _root = ThreadRoot::acquire()?;
    let run = run_dir();
    secure(&run)?;
    let dir = run.join(sub);
    secure(&dir)?;
    Ok(dir)
}

/// A lock file of ours (made if need be, as root: its directory is root's), opened and
/// locked as `how` says.
pub(crate) fn lock_file(
    path: &Path,
    how: nix::fcntl::FlockArg,
) -> Result<nix::fcntl::Flock<std::fs::File>, HostError> {
    let file = {
        let _root = ThreadRoot::acquire()?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| HostError::io(format!("opening {}", path.display()), e))?
    };
    nix::fcntl::Flock::lock(file, how)
        .map_err(|(_, e)| HostError::io(format!("locking {}", path.display()), e.into()))
}

/// Writes `text` to `path` whole or not at all (as root): to `temporary` first, then renamed
/// over it, so that a process killed meanwhile leaves the old file or none, never half of one.
pub(crate) fn write_whole(path: &Path, temporary: &Path, text: &str) -> Result<(), HostError> {
    let _root = ThreadRoot::acquire()?;
    std::fs::write(temporary, text)
        .and_then(|()| std::fs::rename(temporary, path))
        .map_err(|e| HostError::io(format!("writing {}", path.display()), e))
}

/// Makes `dir` (or finds it) a directory of root's that only root can enter: created 0700, one
/// left open closed, one of anybody else's or a symlink refused. Needs root.
pub(crate) fn secure(dir: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(HostError::io(format!("creating {}", dir.display()), e));
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| HostError::io(format!("checking {}", dir.display()), e))?;
    let refuse = |problem: String| HostError::UnsafeState {
        path: dir.to_path_buf(),
        problem,
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory (a symlink?)".into()));
    }
    if meta.uid() != 0 {
        return Err(refuse(format!(
            "it belongs to uid {}, not root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| HostError::io(format!("closing {} to other users", dir.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_state_directories_are_roots_alone() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Some(_root) =
            crate::host::privs::root_for_test("host_state_directories_are_roots_alone")
        else {
            return;
        };
        let base = tempfile::tempdir().unwrap();
        let fresh = base.path().join("fresh");
        secure(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);

        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure(&open).unwrap();
        assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o700);

        let squatted = base.path().join("squatted");
        std::fs::create_dir(&squatted).unwrap();
        std::os::unix::fs::chown(&squatted, Some(4242), Some(4242)).unwrap();
        let err = secure(&squatted).unwrap_err().to_string();
        assert!(err.contains("belongs to uid 4242"), "{err}");

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let err = secure(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
