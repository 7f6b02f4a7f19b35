//! Machine console logs: one file per machine under the target directory, never the test's
//! own output, and the diagnosis of a boot from its last lines.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{HostError, IoContext, Result};
use crate::host::privs::{self, ThreadRoot};

/// Where console logs go: `$NSPAWN_LOG_DIR`, else `nspawn-logs/` in the cargo target
/// directory of the running test binary, else the temporary directory.
pub(crate) fn log_dir() -> PathBuf {
    if let Some(dir) = &crate::settings::lenient().log_dir {
        return dir.clone();
    }
    target_dir()
        .map(|t| t.join("nspawn-logs"))
        .unwrap_or_else(|| std::env::temp_dir().join("nspawn-logs"))
}

/// The cargo target directory the running executable lives in (it holds `CACHEDIR.TAG`).
pub(crate) fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// Creates the console log of machine `name`, owned by the test's user. A target directory
/// that an earlier `sudo cargo test` left owned by root is handled too.
pub(crate) fn create_log(name: &str) -> Result<(PathBuf, File), HostError> {
    let dir = log_dir();
    let path = dir.join(format!("{name}.log"));
    let create = || std::fs::create_dir_all(&dir).and_then(|()| File::create(&path));
    let file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => create_as_root(&dir, &path),
        other => other,
    };
    let file = file.context(|| {
        format!(
            "creating the console log {} (set NSPAWN_LOG_DIR to a writable directory)",
            path.display()
        )
    })?;
    Ok((path, file))
}

fn create_as_root(dir: &Path, path: &Path) -> std::io::Result<File> {
    let _root = ThreadRoot::acquire().map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let file = File::create(path)?;
    if let Some((uid, gid)) = privs::dropped_user() {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    Ok(file)
}

/// The last `n` lines of a log, without colours.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    crate::text::tail(&String::from_utf8_lossy(&read_end(path, 64 * 1024)), n)
}

fn read_end(path: &Path, max: u64) -> Vec<u8> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    buf
}

/// Whether the console shows the inotify exhaustion that stalls boots forever.
pub(crate) fn shows_inotify_exhaustion(path: &Path) -> bool {
    let text = String::from_utf8_lossy(&read_end(path, 256 * 1024)).into_owned();
    text.contains("Failed to create inotify object: Too many open files")
        || text.contains("Failed to allocate manager object: Too many open files")
        || (text.contains("inotify") && text.contains("Too many open files"))
}

/// Whether root, the user the containers run as, can create no more inotify instances now.
///
/// A machine that hit the limit during boot still sends `READY=1` (systemd logs the failure
/// and carries on with broken units), and its console lines may reach the log after READY.
/// Asking the kernel does not depend on that timing: a booted machine holds its instances
/// for as long as it runs, so an exhausted limit at READY means the boot ran into it.
pub(crate) fn inotify_exhausted_for_root() -> bool {
    let Ok(_root) = ThreadRoot::acquire() else {
        return false;
    };
    // SAFETY: a plain system call; the descriptor is closed at once.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::EMFILE);
    }
    // SAFETY: closing the descriptor just created.
    unsafe { libc::close(fd) };
    false
}

/// The current `fs.inotify.max_user_instances`.
pub fn inotify_limit() -> String {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_exhaustion_is_recognized() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            "ok\nFailed to create inotify object: Too many open files\n",
        )
        .unwrap();
        assert!(shows_inotify_exhaustion(f.path()));
        std::fs::write(f.path(), "Welcome to Debian\n").unwrap();
        assert!(!shows_inotify_exhaustion(f.path()));
    }

    #[test]
    fn tail_reads_the_end() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(f.path(), text).unwrap();
        assert_eq!(tail(f.path(), 2), "line 98\nline 99");
    }

    #[test]
    fn test_binaries_find_their_target_dir() {
        let target = target_dir().expect("tests run from a cargo target dir");
        assert!(target.join("CACHEDIR.TAG").is_file());
    }
}
