//! Directories copied into and out of a machine: regular files with their permission bits,
//! directories, and symlinks as symlinks, never followed on the host.
//!
//! A machine's listing is the guest's word, and the guest may be hostile: every name is
//! checked to be a plain relative path, and a host entry is made only inside a directory
//! this copy made itself, so that no symlink of the listing's (or anybody's) can lead a
//! write elsewhere. Devices, FIFOs and sockets are refused by name.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lifecycle::Machine;
use crate::error::{Error, Result};

/// One entry of a tree, relative to its root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    /// The permission bits.
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

/// The tree below `root`, parents before children, or the first entry that is none of a
/// file, a directory or a symlink. Runs where the tree is (the host, or inside a machine).
pub(super) fn walk(root: &Path) -> std::result::Result<Vec<Entry>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let mut names: Vec<_> = std::fs::read_dir(root.join(&dir))
            .map_err(|e| format!("{}: {e}", root.join(&dir).display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("{}: {e}", root.join(&dir).display()))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let full = root.join(&path);
            let meta =
                std::fs::symlink_metadata(&full).map_err(|e| format!("{}: {e}", full.display()))?;
            let kind = if meta.is_dir() {
                pending.push(path.clone());
                Kind::Dir
            } else if meta.is_file() {
                Kind::File
            } else if meta.file_type().is_symlink() {
                Kind::Symlink(
                    std::fs::read_link(&full).map_err(|e| format!("{}: {e}", full.display()))?,
                )
            } else {
                return Err(format!(
                    "{} is a {:?}: only files, directories and symlinks are copied",
                    full.display(),
                    meta.file_type()
                ));
            };
            let mode = meta.permissions().mode() & 0o7777;
            entries.push(Entry { path, kind, mode });
        }
    }
    Ok(entries)
}

/// Inside a machine: the listing of `root`.
fn list_in_machine(root: PathBuf) -> std::result::Result<Vec<Entry>, String> {
    walk(&root)
}

/// Inside a machine: makes `root` and the directories and symlinks of `entries` below it.
fn make_in_machine((root, entries): (PathBuf, Vec<Entry>)) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    for entry in entries {
        let path = root.join(&entry.path);
        let made = match &entry.kind {
            Kind::Dir => match std::fs::create_dir(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
                other => other,
            }
            .and_then(|()| {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
            }),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &path),
            Kind::File => Ok(()),
        };
        made.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Whether `path` is a plain relative path: names only, no `..`, no root.
fn plain(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
        && path.components().next().is_some()
}

impl Machine {
    /// Copies host directory `host` into the machine at `guest`, created with its parents.
    pub(super) fn copy_tree_in(&self, host: &Path, guest: &Path) -> Result<()> {
        let context = || format!("copying {} into machine {}", host.display(), self.name());
        let entries = walk(host).map_err(|e| Error::io(context(), std::io::Error::other(e)))?;
        self.call(make_in_machine, (guest.to_path_buf(), entries.clone()))?
            .map_err(|e| self.guest_error("copying into", guest, std::io::Error::other(e)))?;
        for entry in entries.iter().filter(|e| matches!(e.kind, Kind::File)) {
            self.copy_file_in(&host.join(&entry.path), &guest.join(&entry.path))?;
        }
        Ok(())
    }

    /// Copies directory `guest` of the machine to `host`, which must not exist yet.
    pub(super) fn copy_tree_out(&self, guest: &Path, host: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let context = || {
            format!(
                "copying {} of machine {} to {}",
                guest.display(),
                self.name(),
                host.display()
            )
        };
        let refused = |why: String| Error::io(context(), std::io::Error::other(why));
        let entries = self
            .call(list_in_machine, guest.to_path_buf())?
            .map_err(|e| self.guest_error("copying out", guest, std::io::Error::other(e)))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(host)
            .map_err(|e| Error::io(context(), e))?;
        let mut made: HashSet<PathBuf> = HashSet::from([PathBuf::new()]);
        // Made writable for the copy, given their modes at the end, deepest first.
        let mut modes = Vec::new();
        for entry in &entries {
            let parent = entry.path.parent().unwrap_or(Path::new(""));
            if !plain(&entry.path) || !made.contains(parent) {
                return Err(refused(format!(
                    "the machine listed {:?}, which is not inside a directory of this copy",
                    entry.path
                )));
            }
            let target = host.join(&entry.path);
            match &entry.kind {
                Kind::Dir => {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(|e| Error::io(context(), e))?;
                    made.insert(entry.path.clone());
                    modes.push((target, entry.mode & 0o777));
                }
                Kind::Symlink(to) => {
                    std::os::unix::fs::symlink(to, &target).map_err(|e| Error::io(context(), e))?
                }
                Kind::File => self.copy_file_out(&guest.join(&entry.path), &target)?,
            }
        }
        modes.push((host.to_path_buf(), 0o755));
        for (dir, mode) in modes.into_iter().rev() {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| Error::io(context(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_pass() {
        assert!(plain(Path::new("a/b")));
        assert!(!plain(Path::new("../a")));
        assert!(!plain(Path::new("a/../../b")));
        assert!(!plain(Path::new("/etc")));
        assert!(!plain(Path::new("")));
    }

    #[test]
    fn a_walk_lists_parents_first_and_keeps_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("a/link")).unwrap();
        let entries = walk(dir.path()).unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(names, ["a", "a/b", "a/link", "a/b/f"]);
        assert!(matches!(&entries[2].kind, Kind::Symlink(t) if t == Path::new("/etc/passwd")));
    }
}
