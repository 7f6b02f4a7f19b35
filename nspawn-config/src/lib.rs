//! The chroot declarations of an nspawn workspace, read the same way at compile time (by
//! `#[nspawn::test]`, which rejects an undeclared chroot) and at run time (by the runtime and
//! `cargo xtask`), so that both accept exactly the same declarations and names.
//!
//! A small crate on purpose: the macro crate depends on it, and it depends on `toml` alone.

mod declaration;
mod network;
mod reference;
mod workspace;

pub use declaration::{
    check_name, parse_manifest, ChrootDef, BASE_PACKAGES, DEFAULT_MIRROR, KNOWN_SUITES, PROFILES,
    VARIANTS,
};
pub use network::{check_alias, check_zone_name, NetworkSpec, Networks, NETWORK_FORMS};
pub use reference::ChrootRef;
pub use workspace::workspace_root;
