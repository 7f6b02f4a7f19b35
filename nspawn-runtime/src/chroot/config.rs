//! The workspace that declares the chroots, and where they live. The declarations themselves
//! are read by `nspawn-config`, the parser the `#[nspawn::test]` macro uses too.

use std::path::{Path, PathBuf};

pub(crate) use nspawn_config::{parse_manifest, ChrootDef, ChrootRef};

use crate::error::{ChrootError, IoContext, Result};

/// A Cargo workspace, the home of chroot declarations and of `test_chroots/`.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The directory of the workspace `Cargo.toml`.
    pub root: PathBuf,
}

impl Workspace {
    /// Finds the workspace that contains `start`: the nearest ancestor whose `Cargo.toml` has
    /// a `[workspace]` table, or else the nearest `Cargo.toml`.
    pub fn discover(start: &Path) -> Result<Workspace, ChrootError> {
        nspawn_config::workspace_root(start)
            .map(|root| Workspace { root })
            .ok_or_else(|| ChrootError::WorkspaceNotFound {
                start: start.into(),
            })
    }

    /// The workspace of the running program: from `$NSPAWN_WORKSPACE`, else
    /// `CARGO_MANIFEST_DIR` (set by cargo for tests, benches and `cargo run`), else from the
    /// current directory.
    pub fn from_env() -> Result<Workspace, ChrootError> {
        let dir = crate::settings::lenient()
            .workspace
            .clone()
            .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from));
        let start = match dir {
            Some(dir) => dir,
            None => std::env::current_dir().context(|| "reading the current directory".into())?,
        };
        Workspace::discover(&start)
    }

    /// The workspace manifest.
    pub(crate) fn manifest(&self) -> PathBuf {
        self.root.join("Cargo.toml")
    }

    /// Where chroots live: `$NSPAWN_CHROOTS_DIR`, else `test_chroots/` in the workspace.
    pub fn chroots_dir(&self) -> PathBuf {
        self.chroots_dir_with(crate::settings::lenient().chroots_dir.as_deref())
    }

    /// Where chroots live, given the `NSPAWN_CHROOTS_DIR` override.
    fn chroots_dir_with(&self, chosen: Option<&Path>) -> PathBuf {
        chosen.map_or_else(|| self.root.join("test_chroots"), Path::to_path_buf)
    }

    /// The declared chroots, or the embedded default (`bookworm`) when none are declared.
    pub fn chroots(&self) -> Result<Vec<ChrootDef>, ChrootError> {
        let path = self.manifest();
        let text =
            std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
        parse_manifest(&text).map_err(|message| ChrootError::Config { path, message })
    }

    /// The declarations of the chroots `names` names, or all of them when it is empty; an
    /// undeclared name is an error listing the declared ones.
    pub fn selected(&self, names: &[String]) -> Result<Vec<ChrootDef>, ChrootError> {
        if names.is_empty() {
            return self.chroots();
        }
        names.iter().map(|n| self.chroot(n)).collect()
    }

    /// The declaration of one chroot by name.
    pub(crate) fn chroot(&self, name: &str) -> Result<ChrootDef, ChrootError> {
        let defs = self.chroots()?;
        defs.iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| ChrootError::Undeclared {
                name: name.into(),
                declared: defs.into_iter().map(|d| d.name).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_chroots_dir() {
        let ws = Workspace { root: "/w".into() };
        assert_eq!(ws.chroots_dir_with(None), Path::new("/w/test_chroots"));
        assert_eq!(
            ws.chroots_dir_with(Some(Path::new("/elsewhere"))),
            Path::new("/elsewhere")
        );
    }
}
