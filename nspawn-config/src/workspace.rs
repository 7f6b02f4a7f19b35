//! Finding the workspace manifest that declares the chroots, as cargo finds a workspace.

use std::path::{Path, PathBuf};

/// The directory of the workspace that contains `start`: the nearest ancestor whose
/// `Cargo.toml` has a `[workspace]` table, or else the nearest `Cargo.toml`. `None` when there
/// is none.
pub fn workspace_root(start: &Path) -> Option<PathBuf> {
    let mut nearest = None;
    for dir in start.ancestors() {
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let is_workspace = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("workspace"));
        if is_workspace {
            return Some(dir.to_path_buf());
        }
        nearest.get_or_insert_with(|| dir.to_path_buf());
    }
    nearest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_manifest_wins_over_the_nearest() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"a\"]\n",
        )
        .unwrap();
        let member = tmp.path().join("a/src");
        std::fs::create_dir_all(&member).unwrap();
        std::fs::write(tmp.path().join("a/Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        assert_eq!(workspace_root(&member).as_deref(), Some(tmp.path()));
        let lone = tempfile::tempdir().unwrap();
        std::fs::write(lone.path().join("Cargo.toml"), "[package]\nname = \"b\"\n").unwrap();
        assert_eq!(workspace_root(lone.path()).as_deref(), Some(lone.path()));
    }
}
