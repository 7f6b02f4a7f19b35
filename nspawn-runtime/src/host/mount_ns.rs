//! The mount namespace nspawn starts in: one of its own, made between `fork` and `exec` (or by
//! the systemd backend's mount helper, just before it execs nspawn), holding what only that
//! machine may see: its `/etc/hosts` and, for a user-namespaced machine, its root (see
//! [`crate::host::idmap`]).
//!
//! The hosts file lives on a tmpfs of 1 MiB in that namespace, not on the host's disk. The
//! machine gets it as a read-only bind; guest root of a privileged machine can remount that
//! bind read-write, but then it writes into memory of its own machine, bounded, and into no
//! file any other process reads. The test process rewrites it through nspawn's view of the
//! namespace ([`open_hosts`]) when its zone changes.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::idmap::{check, Mapping, RootPlan, Upper};

/// The size of the tmpfs that holds a machine's hosts file.
const HOSTS_TMPFS: &std::ffi::CStr = c"mode=0700,size=1m,nr_inodes=8";

/// What nspawn's mount namespace is to hold, as plain data: the direct backend makes the
/// [`NsPlan`] from it in the test process, the systemd backend's mount helper in the unit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MountSpec {
    /// The hosts file: the directory the tmpfs covers, the first text, the file's owner.
    pub hosts: Option<(PathBuf, String, u32)>,
    pub root: Option<RootSpec>,
    /// A namespace made for an earlier boot of the machine, held open by the test process
    /// (`/proc/<pid>/fd/<n>`): entered as it is, with the root and hosts file it holds.
    pub again: Option<PathBuf>,
}

/// The overlay root of a user-namespaced machine (see [`RootPlan`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootSpec {
    /// The first host uid of the machine's range.
    pub uid_base: u32,
    /// The directory of root's, mode 0700, that the mounts go below.
    pub dir: PathBuf,
    /// Read-only layers, top first.
    pub lowers: Vec<PathBuf>,
    pub upper: Upper,
}

impl MountSpec {
    /// Whether nspawn needs a namespace of its own at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.hosts.is_none() && self.root.is_none() && self.again.is_none()
    }

    /// The plan, with everything it needs made (the root's user namespace).
    pub(crate) fn plan(&self) -> std::io::Result<NsPlan> {
        if let Some(held) = &self.again {
            let _root = super::privs::ThreadRoot::acquire().map_err(std::io::Error::other)?;
            let ns = File::open(held)?;
            return Ok(NsPlan {
                again: Some(ns.into()),
                ..NsPlan::default()
            });
        }
        let hosts = self
            .hosts
            .as_ref()
            .map(|(dir, text, owner)| HostsPlan::new(dir, text, *owner))
            .transpose()?;
        let root = self
            .root
            .as_ref()
            .map(|r| RootPlan::new(&r.dir, &r.lowers, &r.upper, Mapping::new(r.uid_base)?))
            .transpose()?;
        Ok(NsPlan {
            hosts,
            root,
            again: None,
        })
    }

    /// The directory nspawn boots, if it is the overlay of [`RootSpec`].
    pub(crate) fn root_dir(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| super::idmap::root_below(&r.dir))
    }
}

/// Everything nspawn's own mount namespace gets, prepared before `fork`.
#[derive(Debug, Default)]
pub(crate) struct NsPlan {
    pub hosts: Option<HostsPlan>,
    pub root: Option<RootPlan>,
    /// The namespace of an earlier boot, to enter instead of making one.
    pub again: Option<std::os::fd::OwnedFd>,
}

impl NsPlan {
    /// Whether nspawn needs a namespace of its own at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.hosts.is_none() && self.root.is_none() && self.again.is_none()
    }

    /// Makes a mount namespace for the calling process and mounts the plan in it, or enters
    /// the namespace of an earlier boot. Raw system calls only, no allocation.
    ///
    /// # Safety
    /// Only in a forked child before exec, or in a single-threaded process about to exec.
    pub(crate) unsafe fn enter(&self) -> std::io::Result<()> {
        // SAFETY: raw system calls on strings prepared beforehand.
        unsafe {
            if let Some(held) = &self.again {
                use std::os::fd::AsRawFd;
                return check(libc::setns(held.as_raw_fd(), libc::CLONE_NEWNS));
            }
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing of ours may reach the host's namespace through a shared mount.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            if let Some(hosts) = &self.hosts {
                hosts.mount()?;
            }
            if let Some(root) = &self.root {
                root.mount()?;
            }
        }
        Ok(())
    }
}

/// A machine's hosts file: a tmpfs over `dir` (a directory of root's, mode 0700), and in it
/// the file with its first text.
#[derive(Debug)]
pub(crate) struct HostsPlan {
    dir: CString,
    file: CString,
    text: Vec<u8>,
    /// The owner the guest sees as root in a user-namespaced machine; 0 otherwise.
    owner: u32,
}

impl HostsPlan {
    /// The plan for `text` in `dir`, the file owned by host uid `owner`.
    pub(crate) fn new(dir: &Path, text: &str, owner: u32) -> std::io::Result<HostsPlan> {
        Ok(HostsPlan {
            dir: super::idmap::c(dir)?,
            file: super::idmap::c(&hosts_path(dir))?,
            text: text.as_bytes().to_vec(),
            owner,
        })
    }

    /// # Safety
    /// As [`NsPlan::enter`].
    unsafe fn mount(&self) -> std::io::Result<()> {
        // SAFETY: raw system calls; the descriptor is closed on every path.
        unsafe {
            super::idmap::mount_tmpfs(&self.dir, HOSTS_TMPFS)?;
            let fd = libc::open(
                self.file.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, self.text.as_ptr().cast(), self.text.len());
            let owned = libc::fchown(fd, self.owner, self.owner);
            libc::close(fd);
            if written < 0 || owned < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if written as usize != self.text.len() {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        Ok(())
    }
}

/// The hosts file below `dir`.
pub(crate) fn hosts_path(dir: &Path) -> PathBuf {
    dir.join("hosts")
}

/// Opens, for rewriting, the hosts file at `path` in the mount namespace of nspawn `pid`
/// (through `/proc/PID/root`, as root). The namespace is nspawn's, not the guest's: no path
/// component is the guest's to change, and the last one is never followed if a link.
pub(crate) fn open_hosts(pid: u32, path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _root = super::privs::ThreadRoot::acquire().map_err(std::io::Error::other)?;
    let inside =
        Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(inside)
}

/// Replaces the text of an open hosts file.
pub(crate) fn rewrite(file: &File, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(text.as_bytes(), 0)?;
    file.set_len(text.len() as u64)
}
