//! Opening files inside a machine from the test process, without spawning anything.
//!
//! The container's root is `/proc/<leader>/root`. Paths are resolved with `openat2(2)` and
//! `RESOLVE_IN_ROOT`, so absolute symlinks inside the machine (`/etc/resolv.conf`, ...) stay
//! inside it. Root is taken for the calling thread only ([`ThreadRoot`]); other test threads
//! never see it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::pidfd::PidFd;
use crate::privs::ThreadRoot;

/// The path of `guest` as seen from the host, through the leader's root.
pub fn host_path(leader_pid: u32, guest: &Path) -> PathBuf {
    PathBuf::from(format!("/proc/{leader_pid}/root")).join(relative(guest))
}

/// `guest` made relative to the machine's root.
pub fn relative(guest: &Path) -> PathBuf {
    let rel: PathBuf = guest
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Opens `guest` in the machine whose leader is `leader`, with `open(2)` flags and mode.
pub fn open(
    leader: &PidFd,
    guest: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    let root = cstring(&format!("/proc/{}/root", leader.pid()))?;
    let rel = cstring_path(&relative(guest))?;
    let _root = ThreadRoot::acquire().map_err(std::io::Error::other)?;
    // SAFETY: a valid C string; the fd is owned below.
    let dir = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dir is a fresh fd.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    // The leader still being alive proves `dir` is its root, not a reused PID's.
    leader.signal(0)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dir fd, path and open_how of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    if flags & libc::O_CREAT != 0 {
        // The exact mode, whatever the umask, and for files that existed already.
        // SAFETY: fchmod on an fd we own.
        if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstring(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

fn cstring_path(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_are_made_relative() {
        assert_eq!(relative(Path::new("/etc/passwd")), Path::new("etc/passwd"));
        assert_eq!(relative(Path::new("/")), Path::new("."));
        assert_eq!(relative(Path::new("tmp/x")), Path::new("tmp/x"));
        assert_eq!(
            host_path(42, Path::new("/etc/os-release")),
            Path::new("/proc/42/root/etc/os-release")
        );
    }
}
