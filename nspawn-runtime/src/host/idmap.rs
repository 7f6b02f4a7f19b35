//! The root file system of a user-namespaced machine: an overlay of our own, built in a mount
//! namespace of nspawn's own, whose read-only layers are idmapped mounts of the master chroot
//! (and of a set-up layer).
//!
//! nspawn 252 cannot idmap its own `--volatile=overlay` ("ID mapped mounts are apparently not
//! available"), and overlayfs itself cannot be idmapped; its *layers* can. So each layer, owned
//! by host root on disk, is mounted with the machine's mapping (host uid `n` shows as
//! `base + n`), the writable layer is a tmpfs whose files belong to the machine's range, and
//! nspawn boots the overlay with `--private-users=<base>:65536 --private-users-ownership=off`.
//! A set-up layer's template writes into the layer's directory directly, in its own range;
//! once it has stopped, [`shift_down`] gives the layer host root's ids, and it serves as a
//! read-only layer, idmapped like the chroot, for machines of any range. (An idmapped upper
//! layer cannot work: overlayfs creates its work directory as the mounting host root, whom
//! the mapping cannot represent.)
//!
//! Everything is mounted by nspawn's child between `fork` and `exec` (or by the systemd
//! backend's mount helper before it execs nspawn), in a mount namespace it
//! has just made for itself ([`crate::host::mount_ns`]): the mounts exist for nspawn and
//! its container only, no other host process (or user) can reach them, and they are gone with
//! the last process of that namespace, however the run ends. Nothing to sweep.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::host::privs::ThreadRoot;

/// Where the writable layer of a machine lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Upper {
    /// A tmpfs of the machine's own, gone with it.
    Tmpfs,
    /// A directory with `upper/` and `work/` (a set-up layer's): what the machine writes
    /// there belongs to its range, until [`shift_down`] gives it host root's ids.
    Dir(PathBuf),
}

/// A user namespace that maps `0..65536` to `base..base+65536`, held by a descriptor: what an
/// idmapped mount takes.
#[derive(Debug)]
pub(crate) struct Mapping {
    fd: OwnedFd,
    base: u32,
}

impl Mapping {
    /// Makes the namespace (as root: writing a map to other users' ids needs it).
    pub(crate) fn new(base: u32) -> std::io::Result<Mapping> {
        let _root = ThreadRoot::acquire().map_err(std::io::Error::other)?;
        let child = NsChild::start()?;
        let map = format!("0 {base} {}\n", crate::host::uid_range::SIZE);
        std::fs::write(child.proc("uid_map"), &map)?;
        std::fs::write(child.proc("setgroups"), "deny")?;
        std::fs::write(child.proc("gid_map"), &map)?;
        let fd = std::fs::File::open(child.proc("ns/user"))?.into();
        Ok(Mapping { fd, base })
    }
}

/// A forked child that made a user namespace and waits to be killed.
struct NsChild {
    pid: libc::pid_t,
}

impl NsChild {
    fn start() -> std::io::Result<NsChild> {
        let (read, write) = nix::unistd::pipe()?;
        // SAFETY: getpid before the fork, for the child's check.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child makes raw system calls only, then waits for its end.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the forked child: raw calls, and an exit that runs no handler.
            unsafe { ns_child(write.as_raw_fd(), parent) }
        }
        drop(write);
        let child = NsChild { pid };
        let mut answer = [0u8; 1];
        let got = nix::unistd::read(read.as_raw_fd(), &mut answer)?;
        if got != 1 || answer[0] != 1 {
            return Err(std::io::Error::other(
                "could not make a user namespace (unshare(CLONE_NEWUSER) failed)",
            ));
        }
        Ok(child)
    }

    fn proc(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.pid))
    }
}

/// The forked child: it dies with its parent, and holds none of the parent's descriptors (a
/// copy of a lock's descriptor would keep a machine slot or a uid range taken).
///
/// # Safety
/// Only in the child of a fork, which it never returns from.
unsafe fn ns_child(answer: RawFd, parent: libc::pid_t) -> ! {
    // SAFETY: raw system calls in a single-threaded child.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent || libc::dup2(answer, 0) < 0 {
            libc::_exit(1);
        }
        libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32);
        let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
        libc::write(0, [ok as u8].as_ptr().cast(), 1);
        libc::close(0);
        loop {
            libc::pause();
        }
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Every path and option of a machine's root, prepared before `fork`: the child only makes
/// system calls.
#[derive(Debug)]
pub(crate) struct RootPlan {
    mapping: Mapping,
    /// A directory of root's, mode 0700, that a tmpfs covers in the child's namespace.
    base: CString,
    /// `(source on the host, mount point)`, read-only and idmapped, top layer first.
    lowers: Vec<(CString, CString)>,
    upper: UpperPlan,
    overlay_options: CString,
    root: CString,
}

#[derive(Debug)]
enum UpperPlan {
    Tmpfs {
        mount_point: CString,
        upper: CString,
        work: CString,
    },
    Dir {
        upper: CString,
    },
}

/// Where the overlay of a plan below `base` is mounted.
pub(crate) fn root_below(base: &Path) -> PathBuf {
    base.join("root")
}

pub(crate) fn c(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

impl RootPlan {
    /// The plan for `lowers` (top first) under `upper`, mounted below `base` (an existing
    /// directory of root's, mode 0700), with `mapping`.
    pub(crate) fn new(
        base: &Path,
        lowers: &[PathBuf],
        upper: &Upper,
        mapping: Mapping,
    ) -> std::io::Result<RootPlan> {
        let points: Vec<PathBuf> = (0..lowers.len())
            .map(|i| base.join(format!("lower{i}")))
            .collect();
        let rw = match upper {
            Upper::Tmpfs => base.join("rw"),
            Upper::Dir(dir) => dir.clone(),
        };
        let root = root_below(base);
        let (upper_dir, work_dir) = (rw.join("upper"), rw.join("work"));
        let lowerdir: Vec<String> = points.iter().map(|p| p.display().to_string()).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.join(":"),
            upper_dir.display(),
            work_dir.display()
        );
        let upper = match upper {
            Upper::Tmpfs => UpperPlan::Tmpfs {
                mount_point: c(&rw)?,
                upper: c(&upper_dir)?,
                work: c(&work_dir)?,
            },
            Upper::Dir(_) => UpperPlan::Dir {
                upper: c(&upper_dir)?,
            },
        };
        Ok(RootPlan {
            mapping,
            base: c(base)?,
            lowers: lowers
                .iter()
                .zip(&points)
                .map(|(l, p)| Ok((c(l)?, c(p)?)))
                .collect::<std::io::Result<_>>()?,
            upper,
            overlay_options: CString::new(options)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?,
            root: c(&root)?,
        })
    }

    /// Makes the mounts, in the calling process's own mount namespace (see
    /// [`crate::host::mount_ns`]). Raw system calls only, no allocation.
    ///
    /// # Safety
    /// Only in a forked child before exec, or in a single-threaded process about to exec,
    /// after it made a mount namespace of its own.
    pub(crate) unsafe fn mount(&self) -> std::io::Result<()> {
        // SAFETY: raw system calls on strings prepared beforehand.
        unsafe {
            mount_tmpfs(&self.base, c"mode=0700")?;
            for (source, point) in &self.lowers {
                check(libc::mkdir(point.as_ptr(), 0o700))?;
                self.idmapped(source, point)?;
            }
            match &self.upper {
                UpperPlan::Tmpfs {
                    mount_point,
                    upper,
                    work,
                } => {
                    check(libc::mkdir(mount_point.as_ptr(), 0o700))?;
                    check(libc::mount(
                        c"tmpfs".as_ptr(),
                        mount_point.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        c"mode=0700".as_ptr().cast(),
                    ))?;
                    let base = self.mapping.base;
                    for dir in [upper, work] {
                        check(libc::mkdir(dir.as_ptr(), 0o755))?;
                        check(libc::chmod(dir.as_ptr(), 0o755))?;
                        check(libc::chown(dir.as_ptr(), base, base))?;
                    }
                }
                UpperPlan::Dir { upper } => {
                    let base = self.mapping.base;
                    check(libc::chown(upper.as_ptr(), base, base))?;
                }
            }
            check(libc::mkdir(self.root.as_ptr(), 0o755))?;
            check(libc::mount(
                c"overlay".as_ptr(),
                self.root.as_ptr(),
                c"overlay".as_ptr(),
                0,
                self.overlay_options.as_ptr().cast(),
            ))
        }
    }

    /// Mounts `source` on `point` with the machine's mapping.
    ///
    /// # Safety
    /// As [`RootPlan::mount`].
    unsafe fn idmapped(&self, source: &CString, point: &CString) -> std::io::Result<()> {
        let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_RDONLY;
        // SAFETY: raw system calls; the tree descriptor is closed on every path.
        unsafe {
            let tree = detached_idmapped(source, self.mapping.fd.as_raw_fd(), attrs)?;
            check_long(libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                point.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ))
        }
    }
}

/// A detached copy of the mount at `source`, idmapped through `userns` with `attrs` on top.
/// Raw system calls only.
///
/// # Safety
/// `userns` must be an open user namespace descriptor.
unsafe fn detached_idmapped(
    source: &CString,
    userns: RawFd,
    attrs: u64,
) -> std::io::Result<OwnedFd> {
    // SAFETY: raw system calls; the descriptor is owned from its creation on.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if tree < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tree = OwnedFd::from_raw_fd(tree as RawFd);
        let mut attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        check_long(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))?;
        Ok(tree)
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A `nosuid,nodev,noexec` tmpfs on `point` with `options`. A raw system call.
///
/// # Safety
/// As [`RootPlan::mount`].
pub(crate) unsafe fn mount_tmpfs(point: &CString, options: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: strings prepared beforehand.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            point.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            options.as_ptr().cast(),
        )
    })
}

pub(crate) fn check(ret: libc::c_int) -> std::io::Result<()> {
    check_long(ret.into())
}

fn check_long(ret: libc::c_long) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The first host uid of the range process `pid` runs in (what its root is on the host);
/// `None` outside any user namespace of ours (an identity map).
pub(crate) fn range_of(pid: u32) -> std::io::Result<Option<u32>> {
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    let fields: Vec<u64> = map
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match fields[..] {
        [0, 0, _] => Ok(None),
        [0, base, _] => Ok(u32::try_from(base).ok()),
        _ => Err(std::io::Error::other(format!(
            "unexpected uid_map of {pid}: {map:?}"
        ))),
    }
}

/// Gives the tree at `dir`, written by a machine whose range starts at `base`, host root's
/// ids: `base + n` becomes `n`. Modes are set again after each change of owner, which clears
/// set-uid and set-gid bits. Symlinks are changed themselves, never followed. Run only once the
/// machine has stopped: nothing may change the tree meanwhile.
pub(crate) fn shift_down(dir: &Path, base: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shift = |id: u32| {
        id.checked_sub(base)
            .filter(|n| *n < crate::host::uid_range::SIZE)
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
        let (uid, gid) = (shift(meta.uid()), shift(meta.gid()));
        if uid.is_none() && gid.is_none() {
            continue;
        }
        std::os::unix::fs::lchown(&path, uid, gid)?;
        if !meta.file_type().is_symlink() {
            let mode = std::fs::Permissions::from_mode(meta.mode() & 0o7777);
            std::fs::set_permissions(&path, mode)?;
        }
    }
    Ok(())
}

/// Whether this host can make a machine's root this way: a user namespace and an idmapped
/// mount of `dir` (not attached anywhere). The reason when not.
pub(crate) fn probe(dir: &Path) -> std::result::Result<(), String> {
    let mapping =
        Mapping::new(0x7FFE_0000).map_err(|e| format!("no user namespace with a uid map: {e}"))?;
    let _root = ThreadRoot::acquire().map_err(|e| e.to_string())?;
    let source = c(dir).map_err(|e| e.to_string())?;
    // SAFETY: the mapping's descriptor is open; the detached tree goes with its descriptor.
    unsafe { detached_idmapped(&source, mapping.fd.as_raw_fd(), MOUNT_ATTR_RDONLY) }
        .map(drop)
        .map_err(|e| {
            format!(
                "no idmapped mount of {}: {e} (kernel 5.12 or later, and a file system that \
                 supports them: ext4, btrfs, xfs, tmpfs)",
                dir.display()
            )
        })
}
