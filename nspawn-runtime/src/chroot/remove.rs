//! Removing master chroots. They are root's trees with device nodes, so a user's `rm -rf`
//! fails, and one a machine runs from must not go from under it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::config::Workspace;
use super::{in_use, status::STAMP, storage};
use crate::error::{ChrootError, Result};

/// A tree in the chroots directory that no declaration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undeclared {
    /// Its directory name.
    pub name: String,
    /// Whether nspawn built it (it has the stamp). A tree without one was made by hand, and
    /// is removed only when named.
    pub ours: bool,
}

/// The chroot trees in `dir`: its directories, but for the hidden ones (snapshots, builds
/// in progress, trees being replaced).
pub fn trees(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The trees in the workspace's chroots directory that no declaration names any more.
pub fn undeclared(ws: &Workspace) -> Result<Vec<Undeclared>, ChrootError> {
    let declared: Vec<String> = ws.chroots()?.into_iter().map(|d| d.name).collect();
    let dir = ws.chroots_dir();
    Ok(trees(&dir)
        .into_iter()
        .filter(|name| !declared.contains(name))
        .map(|name| Undeclared {
            ours: dir.join(&name).join(STAMP).exists(),
            name,
        })
        .collect())
}

/// How long a removal waits for the machines that use a tree to go: those of a run that just
/// ended may still be stopping (under nextest, its keeper stops them after nextest returns).
const STOPPING_GRACE: Duration = Duration::from_secs(5);

/// Whether `in_use` still holds after up to `grace`.
fn in_use_after(grace: Duration, in_use: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + grace;
    while in_use() {
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Removes the chroot tree `name` from `dir`, with the packages kept for its next build; how
/// long it took. Refuses a name that is no
/// tree there, and a tree a running machine uses (once the machines stopping have had
/// 5 s to go). Needs root.
pub fn remove(dir: &Path, name: &str) -> Result<Duration, ChrootError> {
    let path = dir.join(name);
    let existing = trees(dir);
    if !existing.iter().any(|t| t == name) {
        return Err(ChrootError::io(
            format!("removing chroot {name:?}"),
            std::io::Error::other(format!(
                "{} has no such tree; it has: {}",
                dir.display(),
                if existing.is_empty() {
                    "none".to_string()
                } else {
                    existing.join(", ")
                }
            )),
        ));
    }
    if in_use_after(STOPPING_GRACE, || in_use::by_any_nspawn(&path)) {
        return Err(ChrootError::io(
            format!("removing chroot {name:?}"),
            std::io::Error::other(format!(
                "a running machine uses {}: stop it (or let its test run end) first; `cargo \
                 nspawn gc --kept` removes machines kept for debugging, `cargo nspawn gc --warm` \
                 your warm machines",
                path.display()
            )),
        ));
    }
    let started = Instant::now();
    storage::remove_tree(&path)?;
    super::deb_cache::remove(dir, name)?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_in_use_is_waited_for_until_the_grace_ends() {
        let looks = std::cell::Cell::new(0);
        let stopping = || {
            looks.set(looks.get() + 1);
            looks.get() < 3
        };
        assert!(!in_use_after(Duration::from_secs(60), stopping));
        assert_eq!(looks.get(), 3);
        assert!(in_use_after(Duration::ZERO, || true));
    }

    #[test]
    fn trees_are_the_visible_directories() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["bookworm", ".#machine.x", ".tmp-trixie-1", "old"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("CACHEDIR.TAG"), "").unwrap();
        assert_eq!(trees(dir.path()), ["bookworm", "old"]);
    }

    #[test]
    fn a_name_that_is_no_tree_is_an_error_that_lists_the_trees() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bookworm")).unwrap();
        let err = remove(dir.path(), "../etc").unwrap_err().to_string();
        assert!(err.contains("it has: bookworm"), "{err}");
        assert!(dir.path().join("bookworm").exists());
    }
}
