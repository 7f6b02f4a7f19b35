//! Whether a master chroot is built, and from its current declaration.

use std::path::Path;

use crate::chroot::config::ChrootDef;
use crate::chroot::storage::{self, Storage};
use crate::error::{ChrootError, Result};

/// Inside a built tree: the declaration it was built from.
pub const STAMP: &str = "etc/nspawn-chroot.toml";

/// Whether a chroot is ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not built.
    Missing,
    /// Built from the current declaration.
    Ready(Storage),
    /// Built from another declaration.
    Outdated(Storage),
    /// Made by hand (no stamp): booted as it is, never rebuilt unless asked (`--force`).
    HandMade(Storage),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Missing => write!(f, "missing"),
            Status::Ready(storage) => write!(f, "ready, {storage}"),
            Status::Outdated(storage) => write!(f, "outdated, {storage}"),
            Status::HandMade(storage) => write!(
                f,
                "made by hand (no nspawn stamp), booted as it is, {storage}"
            ),
        }
    }
}

impl Status {
    /// The command that makes chroot `name` ready, unless it is.
    pub(crate) fn remedy(&self, name: &str) -> Option<String> {
        match self {
            Status::Missing => Some(format!("cargo nspawn make-chroots {name}")),
            Status::Ready(_) => None,
            Status::Outdated(_) => Some(format!("cargo nspawn make-chroots --force {name}")),
            Status::HandMade(_) => None,
        }
    }

    /// Whether a machine can boot it as it is.
    pub(crate) fn bootable(&self) -> bool {
        matches!(self, Status::Ready(_) | Status::HandMade(_))
    }

    /// The status, with its remedy when there is one: `missing: cargo nspawn make-chroots x`.
    pub fn describe(&self, name: &str) -> String {
        match self.remedy(name) {
            Some(remedy) => format!("{self}: {remedy}"),
            None if matches!(self, Status::HandMade(_)) => format!(
                "{self}; `cargo nspawn make-chroots --force {name}` replaces it with the \
                 declaration's"
            ),
            None => self.to_string(),
        }
    }
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
        Ok(_) => Status::Outdated(storage),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Status::HandMade(storage),
        Err(_) => Status::Outdated(storage),
    }
}

/// Writes `CACHEDIR.TAG` so backup tools skip the chroots directory.
pub fn write_cachedir_tag(dir: &Path) -> Result<(), ChrootError> {
    let tag = dir.join("CACHEDIR.TAG");
    if tag.exists() {
        return Ok(());
    }
    std::fs::write(
        &tag,
        "Signature: 8a477f597d28d172789f06886806bc55\n\
         # Master chroots of nspawn tests. Regenerate them with `cargo nspawn make-chroots`.\n",
    )
    .map_err(|e| ChrootError::io(format!("writing {}", tag.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_stamp() {
        let tmp = tempfile::tempdir().unwrap();
        let def = ChrootDef::with_defaults("bookworm");
        assert_eq!(status(tmp.path(), &def), Status::Missing);
        let tree = tmp.path().join("bookworm");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        let hand_made = status(tmp.path(), &def);
        assert!(matches!(hand_made, Status::HandMade(_)));
        assert!(hand_made.bootable());
        assert!(hand_made.describe("bookworm").contains("--force bookworm"));
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
        assert!(text.contains("cargo nspawn make-chroots"));
    }

    #[test]
    fn a_status_says_what_makes_it_ready() {
        assert_eq!(
            Status::Missing.describe("trixie"),
            "missing: cargo nspawn make-chroots trixie"
        );
        let outdated = Status::Outdated(Storage::Directory).describe("trixie");
        assert!(
            outdated.starts_with("outdated, ")
                && outdated.ends_with(": cargo nspawn make-chroots --force trixie"),
            "{outdated}"
        );
        assert_eq!(Status::Ready(Storage::Directory).remedy("trixie"), None);
    }
}
