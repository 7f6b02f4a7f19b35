//! What a test's `chroot = "..."` names: a declared chroot, or a tree by its path.

use std::path::PathBuf;

use crate::declaration::check_name;

/// A chroot as a test names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChrootRef {
    /// A declared chroot, by name (a directory under the chroots directory).
    Name(String),
    /// Any tree, by path (the value contains `/`); relative to the crate's directory.
    Path(PathBuf),
}

impl ChrootRef {
    /// Reads a `chroot = "..."` value: a path when it contains `/`, else a name, which must
    /// pass [`check_name`].
    pub fn parse(value: &str) -> Result<ChrootRef, String> {
        if value.contains('/') {
            return Ok(ChrootRef::Path(PathBuf::from(value)));
        }
        check_name(value)?;
        Ok(ChrootRef::Name(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_paths_are_paths() {
        assert_eq!(
            ChrootRef::parse("bookworm"),
            Ok(ChrootRef::Name("bookworm".into()))
        );
        assert_eq!(
            ChrootRef::parse("tests/fixture/tree"),
            Ok(ChrootRef::Path("tests/fixture/tree".into()))
        );
        assert!(ChrootRef::parse("bad name")
            .unwrap_err()
            .contains("bad chroot name"));
        assert!(ChrootRef::parse("").is_err());
    }
}
