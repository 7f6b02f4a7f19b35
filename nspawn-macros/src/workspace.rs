//! The chroots the workspace declares, read at compile time with the runtime's own parser
//! (`nspawn-config`), so that a test naming an undeclared chroot fails to build instead of
//! failing at run time, and both agree on what is declared.

use std::path::PathBuf;

/// The workspace manifest and what it declares.
pub struct Declared {
    pub manifest: PathBuf,
    /// The declared names (the embedded `bookworm` when nothing is declared), or why the
    /// declarations are invalid.
    pub names: Result<Vec<String>, String>,
}

/// Reads the declarations of the workspace that holds the crate being compiled, or of the one
/// that holds `$NSPAWN_WORKSPACE` when set. `None` when there is no manifest to read.
pub fn declared() -> Option<Declared> {
    let start =
        std::env::var_os("NSPAWN_WORKSPACE").or_else(|| std::env::var_os("CARGO_MANIFEST_DIR"))?;
    let manifest = nspawn_config::workspace_root(&PathBuf::from(start))?.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).ok()?;
    let names =
        nspawn_config::parse_manifest(&text).map(|defs| defs.into_iter().map(|d| d.name).collect());
    Some(Declared { manifest, names })
}
