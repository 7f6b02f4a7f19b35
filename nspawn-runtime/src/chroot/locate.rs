//! Finding the tree a machine boots from.

use std::path::{Path, PathBuf};

use crate::chroot::config::{ChrootRef, Workspace};
use crate::error::{ChrootError, Result};

/// The directory of a chroot the runtime is asked to boot, checked to exist.
///
/// `name` may also be a path (containing `/`) to any tree, relative to `workspace` when given.
/// `workspace` is a directory in the Cargo workspace; by default it is found from the
/// environment.
pub fn locate(name: &str, workspace: Option<&Path>) -> Result<PathBuf, ChrootError> {
    let reference = ChrootRef::parse(name).map_err(|reason| ChrootError::BadName {
        name: name.into(),
        reason,
    })?;
    let path = match reference {
        ChrootRef::Path(path) => match workspace {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        },
        ChrootRef::Name(name) => {
            let ws = match workspace {
                Some(dir) => Workspace::discover(dir)?,
                None => Workspace::from_env()?,
            };
            ws.chroots_dir().join(name)
        }
    };
    // Only "not found" is missing: a directory the test's user cannot reach is not.
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ChrootError::io(
            format!(
                "looking for chroot {name:?} at {} (test code runs as the invoking user under \
                 sudo, who must be able to reach it)",
                path.display()
            ),
            e,
        )),
        _ => Err(ChrootError::Missing {
            name: name.into(),
            path,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_chroot_is_not_reported_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = locate(&format!("{}/none", tmp.path().display()), None);
        assert!(
            matches!(missing, Err(ChrootError::Missing { .. })),
            "{missing:?}"
        );
        // A file where a directory is expected: ENOTDIR, like a path the user cannot search.
        std::fs::write(tmp.path().join("file"), "").unwrap();
        let blocked = locate(&format!("{}/file/tree", tmp.path().display()), None);
        let message = blocked.unwrap_err().to_string();
        assert!(message.contains("must be able to reach it"), "{message}");
    }

    #[test]
    fn a_missing_chroot_names_the_xtask() {
        let err = locate("/nonexistent/chroot", None).unwrap_err().to_string();
        assert!(err.contains("cargo nspawn make-chroots"), "{err}");
    }
}
