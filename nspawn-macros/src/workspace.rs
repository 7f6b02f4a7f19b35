//! The chroots the workspace declares, read at compile time so that a test naming an
//! undeclared chroot fails to build instead of failing at run time.

use std::path::{Path, PathBuf};

/// The workspace manifest and the chroot names it declares (`None`: nothing declared, the
/// embedded default `bookworm` serves).
pub struct Declared {
    pub manifest: PathBuf,
    pub names: Option<Vec<String>>,
}

/// Reads the declarations of the workspace that holds the crate being compiled, or of the one
/// that holds `$NSPAWN_WORKSPACE` when set.
pub fn declared() -> Option<Declared> {
    let start =
        std::env::var_os("NSPAWN_WORKSPACE").or_else(|| std::env::var_os("CARGO_MANIFEST_DIR"))?;
    let start = PathBuf::from(start);
    let manifest = workspace_manifest(&start)?;
    let text = std::fs::read_to_string(&manifest).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    let names = ["workspace", "metadata", "nspawn", "chroots"]
        .iter()
        .try_fold(&toml::Value::Table(doc), |v, k| v.as_table()?.get(*k))
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect::<Vec<_>>())
        .filter(|names| !names.is_empty());
    Some(Declared { manifest, names })
}

/// The nearest ancestor manifest with a `[workspace]` table, else the nearest manifest, as
/// cargo finds it.
fn workspace_manifest(start: &Path) -> Option<PathBuf> {
    let mut nearest = None;
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let is_workspace = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("workspace"));
        if is_workspace {
            return Some(manifest);
        }
        nearest.get_or_insert(manifest);
    }
    nearest
}
