//! Master chroots: where they are, whether they are built and current, and building them.
//!
//! A downstream project's own xtask can be this short:
//!
//! ```no_run
//! use nspawn_runtime::chroot::{self, BuildOptions};
//! use nspawn_runtime::config::Workspace;
//!
//! let ws = Workspace::from_env()?;
//! chroot::build(&ws, &[], &BuildOptions::default())?;
//! # Ok::<(), nspawn_runtime::Error>(())
//! ```

mod build;
mod progress;

use std::path::{Path, PathBuf};

pub use build::{build, build_one, Bootstrapper, BuildOptions, Outcome};
pub use progress::Progress;

use crate::config::{ChrootDef, Workspace};
use crate::error::{Error, Result};
use crate::storage::{self, Storage};

/// Inside a built tree: the declaration it was built from.
pub const STAMP: &str = "etc/nspawn-chroot.toml";

/// Whether a chroot is ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not built.
    Missing,
    /// Built from the current declaration.
    Ready(Storage),
    /// Built from another declaration, or not by us (no stamp).
    Outdated(Storage),
}

/// The status of the chroot `def` in `dir`.
pub fn status(dir: &Path, def: &ChrootDef) -> Status {
    let path = dir.join(&def.name);
    if !path.is_dir() {
        return Status::Missing;
    }
    let storage = storage::storage_of(&path);
    match std::fs::read_to_string(path.join(STAMP)) {
        Ok(stamp) if stamp == def.stamp() => Status::Ready(storage),
        _ => Status::Outdated(storage),
    }
}

/// Writes `CACHEDIR.TAG` so backup tools skip the chroots directory.
pub fn write_cachedir_tag(dir: &Path) -> Result<()> {
    let tag = dir.join("CACHEDIR.TAG");
    if tag.exists() {
        return Ok(());
    }
    std::fs::write(
        &tag,
        "Signature: 8a477f597d28d172789f06886806bc55\n\
         # Master chroots of nspawn tests. Regenerate them with `cargo xtask make-chroots`.\n",
    )
    .map_err(|e| Error::io(format!("writing {}", tag.display()), e))
}

/// The directory of a chroot the runtime is asked to boot, checked to exist.
///
/// `name` may also be a path (containing `/`) to any tree, relative to `workspace` when given.
/// `workspace` is a directory in the Cargo workspace; by default it is found from the
/// environment.
pub fn locate(name: &str, workspace: Option<&Path>) -> Result<PathBuf> {
    let path = if name.contains('/') {
        match workspace {
            Some(dir) if Path::new(name).is_relative() => dir.join(name),
            _ => PathBuf::from(name),
        }
    } else {
        let ws = match workspace {
            Some(dir) => Workspace::discover(dir)?,
            None => Workspace::from_env()?,
        };
        ws.chroots_dir().join(name)
    };
    // Only "not found" is missing: a directory the test's user cannot reach is not.
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
            format!(
                "looking for chroot {name:?} at {} (test code runs as the invoking user under \
                 sudo, who must be able to reach it)",
                path.display()
            ),
            e,
        )),
        _ => Err(Error::ChrootMissing {
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
            matches!(missing, Err(Error::ChrootMissing { .. })),
            "{missing:?}"
        );
        // A file where a directory is expected: ENOTDIR, like a path the user cannot search.
        std::fs::write(tmp.path().join("file"), "").unwrap();
        let blocked = locate(&format!("{}/file/tree", tmp.path().display()), None);
        let message = blocked.unwrap_err().to_string();
        assert!(message.contains("must be able to reach it"), "{message}");
    }

    #[test]
    fn status_follows_the_stamp() {
        let tmp = tempfile::tempdir().unwrap();
        let def = ChrootDef::with_defaults("bookworm");
        assert_eq!(status(tmp.path(), &def), Status::Missing);
        let tree = tmp.path().join("bookworm");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        assert!(matches!(status(tmp.path(), &def), Status::Outdated(_)));
        std::fs::write(tree.join(STAMP), def.stamp()).unwrap();
        assert!(matches!(status(tmp.path(), &def), Status::Ready(_)));
        let mut changed = def.clone();
        changed.include.push("python3".into());
        assert!(matches!(status(tmp.path(), &changed), Status::Outdated(_)));
    }

    #[test]
    fn cachedir_tag_has_the_signature() {
        let tmp = tempfile::tempdir().unwrap();
        write_cachedir_tag(tmp.path()).unwrap();
        let text = std::fs::read_to_string(tmp.path().join("CACHEDIR.TAG")).unwrap();
        assert!(text.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"));
        assert!(text.contains("cargo xtask make-chroots"));
    }

    #[test]
    fn a_missing_chroot_names_the_xtask() {
        let err = locate("/nonexistent/chroot", None).unwrap_err().to_string();
        assert!(err.contains("cargo xtask make-chroots"), "{err}");
    }
}
