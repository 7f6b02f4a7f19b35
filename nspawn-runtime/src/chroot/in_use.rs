//! Whether a running nspawn uses a tree: booted from it (`--directory=`) or stacked on it (a
//! user-namespaced machine's lowers, [`LOWERS_ENV`]).

use std::path::Path;

/// Set on a user-namespaced machine's nspawn: the trees its root is stacked from, one per
/// line (its `--directory=` is its own overlay).
pub const LOWERS_ENV: &str = "NSPAWN_RS_LOWERS";

/// Whether some nspawn on the host uses `path` or a tree below it. Unreadable `/proc` counts
/// as in use: removing a tree a machine runs from is worse than keeping one.
pub(crate) fn by_any_nspawn(path: &Path) -> bool {
    std::fs::read_dir("/proc")
        .map(|procs| procs.flatten().any(|p| by_process(&p.path(), path)))
        .unwrap_or(true)
}

/// Whether process `proc` (its `/proc` directory) is an nspawn that uses `path` or below.
fn by_process(proc: &Path, path: &Path) -> bool {
    let read = |file: &str| std::fs::read(proc.join(file)).unwrap_or_default();
    let path = path.as_os_str().as_encoded_bytes();
    let cmdline = read("cmdline");
    let booted = cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| arg.strip_prefix(b"--directory="))
        .any(|dir| at_or_below(dir, path));
    let prefix = format!("{LOWERS_ENV}=");
    booted
        || read("environ")
            .split(|b| *b == 0)
            .filter_map(|var| var.strip_prefix(prefix.as_bytes()))
            .any(|trees| trees.split(|b| *b == b'\n').any(|t| at_or_below(t, path)))
}

/// Whether `candidate` is `path` or a path below it.
fn at_or_below(candidate: &[u8], path: &[u8]) -> bool {
    candidate
        .strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_at_or_below_itself_not_beside_it() {
        assert!(at_or_below(b"/c/bookworm", b"/c/bookworm"));
        assert!(at_or_below(b"/c/bookworm/x", b"/c/bookworm"));
        assert!(at_or_below(b"/c/bookworm", b"/c"));
        assert!(!at_or_below(b"/c/bookworm-fast", b"/c/bookworm"));
        assert!(!at_or_below(b"/d", b"/c"));
    }
}
