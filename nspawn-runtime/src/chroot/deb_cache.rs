//! The packages of each chroot's last build, kept beside the chroots
//! (`<chroots>/.debs/<name>/`), so that building it again after its declaration changed
//! downloads only what is new.
//!
//! mmdebstrap copies a chroot's cache into the new tree's `/var/cache/apt/archives` before it
//! downloads, and its archives out again (into a staging directory) before it cleans them
//! up. Of those, the cache then keeps exactly the packages the new tree has installed, so it
//! never grows past one tree's packages. apt takes a cached file only if its name (package,
//! version, architecture) and size are the archive's; the directories are root's, as the
//! chroots are.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::chroot::storage;
use crate::error::{ChrootError, IoContext, Result};

const DIR: &str = ".debs";

/// A chroot's package cache and the staging directory of a build that refills it.
#[derive(Debug, Clone)]
pub(crate) struct DebCache {
    /// The packages of the chroot's last build.
    pub(crate) kept: PathBuf,
    /// Where this build's archives land, before they replace `kept`.
    pub(crate) staging: PathBuf,
}

impl DebCache {
    /// The cache of chroot `name` in `dir`, created if missing; `None` when its path would not
    /// survive mmdebstrap's hook syntax, which splits on white space.
    pub(crate) fn open(dir: &Path, name: &str) -> Result<Option<DebCache>, ChrootError> {
        let root = dir.join(DIR);
        let kept = root.join(name);
        let staging = root.join(format!(".new-{name}-{}", std::process::id()));
        if [&kept, &staging]
            .iter()
            .any(|p| p.to_string_lossy().contains(char::is_whitespace))
        {
            crate::report::warning(
                None,
                format_args!(
                    "chroot {name} is built without its package cache: its path {} has white \
                     space, which mmdebstrap's hooks split on; every package is downloaded \
                     again (a chroot directory without white space keeps them)",
                    kept.display()
                ),
            );
            return Ok(None);
        }
        std::fs::create_dir_all(&kept).context(|| format!("creating {}", kept.display()))?;
        storage::remove_tree(&staging)?;
        std::fs::create_dir(&staging).context(|| format!("creating {}", staging.display()))?;
        Ok(Some(DebCache { kept, staging }))
    }

    /// After a build that made `tree`: the staged archives `tree` has installed become the
    /// cache. Returns how many packages it holds now.
    pub(crate) fn keep(&self, tree: &Path) -> Result<usize, ChrootError> {
        let installed = installed(tree)?;
        let entries = std::fs::read_dir(&self.staging)
            .context(|| format!("reading {}", self.staging.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let used = name
                .to_str()
                .and_then(package_of)
                .is_some_and(|p| installed.contains(&p));
            if !used {
                // apt's `partial/` and `lock` too.
                let path = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.context(|| format!("removing {}", path.display()))?;
            }
        }
        let count = std::fs::read_dir(&self.staging).map_or(0, |d| d.count());
        storage::remove_tree(&self.kept)?;
        std::fs::rename(&self.staging, &self.kept).context(|| {
            format!(
                "renaming {} to {}",
                self.staging.display(),
                self.kept.display()
            )
        })?;
        Ok(count)
    }

    /// Removes the staging directory of a build that failed; the cache stays as it was.
    pub(crate) fn discard(&self) {
        let _ = storage::remove_tree(&self.staging);
    }
}

/// Removes chroot `name`'s cache from `dir`.
pub(crate) fn remove(dir: &Path, name: &str) -> Result<(), ChrootError> {
    storage::remove_tree(&dir.join(DIR).join(name))
}

/// `(package, version)` of every package installed in `tree`, from dpkg's status file.
fn installed(tree: &Path) -> Result<HashSet<(String, String)>, ChrootError> {
    let path = tree.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
    Ok(text
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |key: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                    .map(str::to_string)
            };
            if !field("Status")?.ends_with(" installed") {
                return None;
            }
            Some((field("Package")?, field("Version")?))
        })
        .collect())
}

/// `(package, version)` of an archive apt named `package_version_arch.deb`, where the version's
/// epoch colon is written `%3a`.
fn package_of(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".deb")?;
    let mut parts = stem.split('_');
    let (package, version, _arch) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((package.to_string(), version.replace("%3a", ":")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_give_package_and_version() {
        assert_eq!(
            package_of("libc6_2.36-9+deb12u4_amd64.deb"),
            Some(("libc6".into(), "2.36-9+deb12u4".into()))
        );
        assert_eq!(
            package_of("login_1%3a4.13+dfsg1-1+b1_amd64.deb"),
            Some(("login".into(), "1:4.13+dfsg1-1+b1".into()))
        );
        assert_eq!(package_of("lock"), None);
        assert_eq!(package_of("partial"), None);
    }

    #[test]
    fn a_chroot_directory_with_white_space_has_no_cache() {
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("test chroots");
        assert!(DebCache::open(&spaced, "bookworm").unwrap().is_none());
        assert!(
            !spaced.exists(),
            "nothing is made for a cache it cannot use"
        );
        assert!(DebCache::open(dir.path(), "bookworm").unwrap().is_some());
    }

    #[test]
    fn the_cache_keeps_what_the_tree_installed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("var/lib/dpkg")).unwrap();
        std::fs::write(
            tree.join("var/lib/dpkg/status"),
            "Package: login\nStatus: install ok installed\nVersion: 1:4.13\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
             Package: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2\n",
        )
        .unwrap();
        let cache = DebCache::open(dir.path(), "bookworm").unwrap().unwrap();
        std::fs::write(cache.kept.join("old_0.1_all.deb"), "").unwrap();
        for file in [
            "login_1%3a4.13_amd64.deb",
            "jq_1.6-2_amd64.deb",
            "jq_1.5_amd64.deb",
            "gone_1.0_all.deb",
            "lock",
        ] {
            std::fs::write(cache.staging.join(file), "").unwrap();
        }
        std::fs::create_dir(cache.staging.join("partial")).unwrap();
        assert_eq!(cache.keep(&tree).unwrap(), 2);
        let mut kept: Vec<_> = std::fs::read_dir(&cache.kept)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["jq_1.6-2_amd64.deb", "login_1%3a4.13_amd64.deb"]);
        assert!(!cache.staging.exists());
    }
}
