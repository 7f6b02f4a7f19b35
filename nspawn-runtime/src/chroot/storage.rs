//! How chroot trees are stored: btrfs subvolumes or plain directories, and removing trees
//! safely (never through a mount point).

use std::path::{Path, PathBuf};

use crate::error::{ChrootError, IoContext, Result};
use crate::host::tools;

/// The inode number of every btrfs subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

/// How a master chroot is stored, which decides how machines are made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Storage {
    /// A btrfs subvolume: machines are `--ephemeral` snapshots.
    Subvolume,
    /// A plain directory: machines are `--volatile=overlay --read-only`.
    Directory,
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Storage::Subvolume => "btrfs subvolume (ephemeral snapshots)",
            Storage::Directory => "directory (read-only overlay)",
        })
    }
}

/// Whether `path` is on a btrfs file system.
pub fn is_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// How the tree at `path` is stored.
pub fn storage_of(path: &Path) -> Storage {
    use std::os::unix::fs::MetadataExt;
    let subvolume = is_btrfs(path)
        && path
            .metadata()
            .is_ok_and(|m| m.ino() == BTRFS_FIRST_FREE_OBJECTID);
    if subvolume {
        Storage::Subvolume
    } else {
        Storage::Directory
    }
}

/// Creates an empty tree: a subvolume on btrfs, a directory elsewhere.
pub(crate) fn create_tree(path: &Path) -> Result<Storage, ChrootError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    if is_btrfs(parent) {
        tools::run(
            tools::command("btrfs")
                .args(["-q", "subvolume", "create"])
                .arg(path),
        )?;
        Ok(Storage::Subvolume)
    } else {
        std::fs::create_dir(path).context(|| format!("creating {}", path.display()))?;
        Ok(Storage::Directory)
    }
}

/// Copies the tree `from` to `to`, which must not exist: a snapshot of a subvolume on the same
/// btrfs, a copy elsewhere (by reflinks where the file system has them), owners, modes,
/// device nodes and extended attributes kept.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<Storage, ChrootError> {
    let parent = to.parent().unwrap_or(Path::new("/"));
    if storage_of(from) == Storage::Subvolume && is_btrfs(parent) {
        tools::run(
            tools::command("btrfs")
                .args(["-q", "subvolume", "snapshot"])
                .arg(from)
                .arg(to),
        )?;
        return Ok(Storage::Subvolume);
    }
    let storage = create_tree(to)?;
    tools::run(
        tools::command("cp")
            .args(["-a", "--reflink=auto", "--no-target-directory"])
            .arg(from)
            .arg(to),
    )?;
    Ok(storage)
}

/// Removes a tree. Anything still mounted below it is unmounted first, so a bootstrap that
/// died with `/proc` or `/dev` bound inside can never make this delete the host's.
pub(crate) fn remove_tree(path: &Path) -> Result<(), ChrootError> {
    if !path.exists() {
        return Ok(());
    }
    unmount_below(path)?;
    let storage = storage_of(path);
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(_) if storage == Storage::Subvolume => Ok(tools::run(
            tools::command("btrfs")
                .args(["-q", "subvolume", "delete"])
                .arg(path),
        )
        .map(drop)?),
        Err(e) => Err(ChrootError::io(format!("removing {}", path.display()), e)),
    }
}

/// Mount points at or below `path`, deepest first.
pub fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| m.starts_with(path))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

fn unmount_below(path: &Path) -> Result<(), ChrootError> {
    for mount in mounts_below(path) {
        nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH).context(|| {
            format!(
                "unmounting {} before removing {}",
                mount.display(),
                path.display()
            )
        })?;
    }
    Ok(())
}

fn unescape_mount_path(field: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        match octal.and_then(|d| u8::from_str_radix(d, 8).ok()) {
            Some(b) if bytes[i] == b'\\' => {
                out.push(b);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Creates a btrfs image file of `size` (as `fallocate` reads it, e.g. `4G`), formats it and
/// loop-mounts it on `dir`, as the blog post does on hosts without btrfs. Returns the image.
pub fn mount_btrfs_image(
    dir: &Path,
    size: &str,
    report: &dyn Fn(&str),
) -> Result<PathBuf, ChrootError> {
    let image = image_path(dir);
    if is_btrfs(dir) {
        report(&format!("{} is already on btrfs", dir.display()));
        return Ok(image);
    }
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let occupied = std::fs::read_dir(dir)
        .context(|| format!("reading {}", dir.display()))?
        .flatten()
        .any(|e| e.file_name() != "CACHEDIR.TAG");
    if occupied {
        return Err(ChrootError::Config {
            path: dir.into(),
            message: "is not empty: mounting a btrfs image there would hide its chroots. \
                      Move them away (or remove them) and run again"
                .into(),
        });
    }
    if !image.exists() {
        report(&format!(
            "creating a {size} btrfs image at {}",
            image.display()
        ));
        let made = tools::run(tools::command("fallocate").args(["-l", size]).arg(&image))
            .and_then(|_| tools::run(tools::command("mkfs.btrfs").arg("-q").arg(&image)));
        if let Err(e) = made {
            // Half made, it would fail every later run with "wrong fs type".
            let _ = std::fs::remove_file(&image);
            return Err(e.into());
        }
    }
    tools::run(
        tools::command("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir),
    )?;
    report(&format!(
        "mounted {} on {}. The mount does not survive a reboot; remount it with: mount -o loop {} {}",
        image.display(),
        dir.display(),
        image.display(),
        dir.display()
    ));
    Ok(image)
}

/// Where `--btrfs-image` keeps the image for a chroots directory: beside it.
pub(crate) fn image_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.btrfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), Path::new("/a b/c"));
        assert_eq!(unescape_mount_path("/plain"), Path::new("/plain"));
    }

    #[test]
    fn proc_is_a_mount_below_root_and_not_below_tmp_dirs() {
        assert!(mounts_below(Path::new("/")).contains(&PathBuf::from("/proc")));
        let tmp = tempfile::tempdir().unwrap();
        assert!(mounts_below(tmp.path()).is_empty());
    }

    #[test]
    fn plain_directories_are_trees_and_get_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("t");
        let storage = create_tree(&tree).unwrap();
        assert_eq!(storage, storage_of(&tree));
        std::fs::create_dir_all(tree.join("etc/x")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
    }

    #[test]
    fn the_image_sits_beside_the_directory() {
        assert_eq!(
            image_path(Path::new("/w/test_chroots")),
            Path::new("/w/test_chroots.btrfs")
        );
    }
}
