//! A built chroot as one compressed file keyed by its declaration, for CI caches: a runner
//! exports what it built, and the next one imports it in seconds instead of building again.
//!
//! The key is a digest of the declaration's stamp (what `/etc/nspawn-chroot.toml` holds), so
//! a changed declaration, profile or suite is another key. The file is a GNU tar of the tree
//! (numeric owners, modes, device nodes, xattrs and ACLs), compressed with zstd. An import
//! unpacks under a temporary name, checks the stamp inside against the current declaration,
//! and only then renames the tree into place, as a build does; a file of another declaration
//! is skipped, and a tree made by hand is never replaced.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::build::{install, TMP_PREFIX};
use super::config::ChrootDef;
use super::status::{status, Status, STAMP};
use super::storage;
use crate::error::{ChrootError, IoContext, Result};
use crate::host::tools::{self, TAR, ZSTD};

/// The file name's ending.
pub const EXTENSION: &str = ".tar.zst";

/// The key of chroot `def`'s declaration: 16 hex digits of the SHA-256 of its stamp.
pub fn key(def: &ChrootDef) -> String {
    let digest = Sha256::digest(def.stamp().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The file an export of `def` writes: `<name>-<key>.tar.zst`.
pub fn file_name(def: &ChrootDef) -> String {
    format!("{}-{}{EXTENSION}", def.name, key(def))
}

/// The chroot name and key a file's name gives (`<name>-<key>.tar.zst`), if it has that form.
pub fn name_and_key(file: &Path) -> Option<(String, String)> {
    let stem = file.file_name()?.to_str()?.strip_suffix(EXTENSION)?;
    let (name, key) = stem.rsplit_once('-')?;
    Some((name.to_string(), key.to_string()))
}

/// Writes chroot `def` of `dir` into `out_dir` as [`file_name`]; it must be built from its
/// current declaration. Needs root (the tree is root's). Returns the file's path.
pub fn export(dir: &Path, def: &ChrootDef, out_dir: &Path) -> Result<PathBuf, ChrootError> {
    let tree = dir.join(&def.name);
    let not_ready = |why: String| ChrootError::Config {
        path: tree.clone(),
        message: format!("cannot export chroot {}: {why}", def.name),
    };
    match status(dir, def) {
        Status::Ready(_) => {}
        Status::HandMade(_) => {
            return Err(not_ready(
                "it was made by hand (no nspawn stamp), so no declaration keys it".into(),
            ))
        }
        other => return Err(not_ready(other.describe(&def.name))),
    }
    tools::ensure(&[TAR, ZSTD], &|m| eprintln!("{m}"))?;
    std::fs::create_dir_all(out_dir).context(|| format!("creating {}", out_dir.display()))?;
    let file = out_dir.join(file_name(def));
    let partial = out_dir.join(format!(".{}.partial", file_name(def)));
    // Made new by us, not opened through a name left there: as root, in a directory the
    // invoking user may own, a symlink in its place would be followed.
    let _ = std::fs::remove_file(&partial);
    let out = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&partial)
        .context(|| format!("creating {}", partial.display()))?;
    let mut cmd = Command::new(TAR.program);
    cmd.args(["--create", "--zstd", "--file", "-"])
        .args(TREE_FLAGS)
        .args(["--one-file-system", "--directory"])
        .arg(&tree)
        .arg(".")
        .stdout(out);
    let packed = tools::run(&mut cmd).and_then(|_| {
        std::fs::rename(&partial, &file).context(|| format!("naming {}", file.display()))
    });
    if packed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    packed?;
    Ok(file)
}

/// What tar keeps of a tree, both ways: numeric owners, xattrs (capabilities) and ACLs.
const TREE_FLAGS: [&str; 4] = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
];

/// What an import did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// The tree is in place, from this file.
    Installed,
    /// The chroot was built from this declaration already; the file was not unpacked.
    UpToDate,
    /// The file holds another declaration's tree (its stamp says so): left alone.
    OtherDeclaration,
    /// The chroot is a tree made by hand, never replaced unless forced.
    HandMadeKept,
}

/// Unpacks `file` (an [`export`]) into chroot `def` of `dir`, if the file's key is `def`'s
/// (or, with `force`, whatever the tree in place is). Needs root.
pub fn import(
    dir: &Path,
    def: &ChrootDef,
    file: &Path,
    force: bool,
) -> Result<Imported, ChrootError> {
    if name_and_key(file).is_some_and(|(_, k)| k != key(def)) {
        return Ok(Imported::OtherDeclaration);
    }
    match status(dir, def) {
        Status::Ready(_) if !force => return Ok(Imported::UpToDate),
        Status::HandMade(_) if !force => return Ok(Imported::HandMadeKept),
        _ => {}
    }
    tools::ensure(&[TAR, ZSTD], &|m| eprintln!("{m}"))?;
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{}", def.name, std::process::id()));
    storage::create_tree(&tmp)?;
    let result = unpack(file, &tmp).and_then(|()| {
        // The name can lie; the stamp inside is what the tree was built from.
        match std::fs::read_to_string(tmp.join(STAMP)) {
            Ok(stamp) if stamp == def.stamp() => {
                install(dir, &tmp, &dir.join(&def.name), &def.name).map(|()| Imported::Installed)
            }
            _ => Ok(Imported::OtherDeclaration),
        }
    });
    if !matches!(result, Ok(Imported::Installed)) {
        // The unpacking's own error first: it says what was wrong with the file.
        let removed = storage::remove_tree(&tmp);
        let imported = result?;
        removed?;
        return Ok(imported);
    }
    result
}

/// Unpacks archive `file` into the empty tree `tmp`, keeping owners, modes, devices and
/// xattrs. tar refuses members that would land outside `tmp` (absolute names, `..`).
fn unpack(file: &Path, tmp: &Path) -> Result<(), ChrootError> {
    let mut cmd = Command::new(TAR.program);
    cmd.args(["--extract", "--zstd", "--file"])
        .arg(file)
        .args(TREE_FLAGS)
        .args(["--same-permissions", "--same-owner", "--directory"])
        .arg(tmp);
    tools::run(&mut cmd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_declaration() {
        let plain = ChrootDef::with_defaults("bookworm");
        let mut more = plain.clone();
        more.include.push("curl".into());
        assert_eq!(key(&plain), key(&plain.clone()));
        assert_ne!(key(&plain), key(&more));
        assert_eq!(key(&plain).len(), 16);
        let name = file_name(&plain);
        assert!(
            name.starts_with("bookworm-") && name.ends_with(".tar.zst"),
            "{name}"
        );
        let parsed = name_and_key(Path::new("/cache/bookworm-fast-0123abcd.tar.zst"));
        assert_eq!(parsed, Some(("bookworm-fast".into(), "0123abcd".into())));
        assert_eq!(name_and_key(Path::new("bookworm.tar.zst")), None);
    }
}
