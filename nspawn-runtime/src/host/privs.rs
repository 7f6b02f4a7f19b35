//! Dropping root at start-up and regaining it only where it is needed.
//!
//! Under `sudo` the test process switches to the invoking user (`SUDO_UID`/`SUDO_GID`) before
//! `main`, keeping saved-uid 0. Root comes back in three places only:
//!
//! - in forked children, before they exec a privileged program (`regain_in_child`); no other
//!   thread of the test process ever sees it;
//! - on one thread for a few system calls (`ThreadRoot`): Linux keeps credentials per
//!   thread, and the raw system calls change only the calling one;
//! - in-process for every thread, through the serialized [`root`] guard, for callers who need
//!   it.
//!
//! As real root without `SUDO_UID` (CI, containers) nothing is dropped. `NSPAWN_USER=uid:gid`
//! forces a drop to that user.

use std::ffi::CString;
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::unistd::{Gid, Uid};

use crate::error::{HostError, Result};

/// How the process stands towards root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dropped to this user; root can be regained.
    Dropped {
        /// The user's uid.
        uid: u32,
        /// The user's primary gid.
        gid: u32,
    },
    /// Running as root, nothing dropped.
    Root,
    /// Not root and no way to become root.
    Unprivileged,
}

static MODE: OnceLock<Mode> = OnceLock::new();
static PROCESS_ROOT: Mutex<()> = Mutex::new(());

/// Drops privileges if the process runs as root under sudo, once. Idempotent and cheap.
///
/// `#[nspawn::test]` calls it before `main`; call it yourself first thing in a custom harness.
pub fn init() -> Mode {
    *MODE.get_or_init(decide_and_drop)
}

fn decide_and_drop() -> Mode {
    if !Uid::effective().is_root() {
        return if Uid::current().is_root()
            || nix::unistd::getresuid().is_ok_and(|r| r.saved.is_root())
        {
            // Already dropped by someone else keeping saved-uid 0.
            Mode::Dropped {
                uid: Uid::current().as_raw(),
                gid: Gid::current().as_raw(),
            }
        } else {
            Mode::Unprivileged
        };
    }
    let target = target_user().unwrap_or_else(|why| refuse(&why));
    match target {
        Some((uid, gid)) if uid != 0 => match drop_to(uid, gid) {
            Ok(()) => Mode::Dropped { uid, gid },
            Err(e) => refuse(&format!("could not drop root to uid {uid} gid {gid}: {e}")),
        },
        _ => {
            tracing::debug!("running as root without SUDO_UID: privileges are not dropped");
            Mode::Root
        }
    }
}

/// Ends the process: test code must never run as root by mistake, and there is no caller to
/// hand an error to before `main`.
fn refuse(why: &str) -> ! {
    eprintln!("nspawn: refusing to run the tests as root: {why}");
    std::process::exit(2)
}

/// The user to drop to: `NSPAWN_USER=uid:gid`, else sudo's `SUDO_UID`/`SUDO_GID`; `None`
/// for root without either. A malformed value is an error, never a silent "stay root".
/// Also whom a file root writes for the invoking user should belong to.
pub fn target_user() -> std::result::Result<Option<(u32, u32)>, String> {
    if let Some(spec) = std::env::var_os("NSPAWN_USER") {
        let spec = spec.to_string_lossy();
        let parsed = spec
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        return parsed.map(Some).ok_or_else(|| {
            format!("NSPAWN_USER={spec:?} is not NUMERIC_UID:NUMERIC_GID (for example 1000:1000)")
        });
    }
    let number = |var: &str| -> std::result::Result<Option<u32>, String> {
        match std::env::var_os(var) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("{var}={v:?} is not a number")),
        }
    };
    match (number("SUDO_UID")?, number("SUDO_GID")?) {
        (None, None) => Ok(None),
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => Err("SUDO_UID and SUDO_GID must be set together".into()),
    }
}

fn drop_to(uid: u32, gid: u32) -> nix::Result<()> {
    let groups = supplementary_groups(uid, gid);
    nix::unistd::setgroups(&groups)?;
    nix::unistd::setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(0))?;
    nix::unistd::setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(0))
}

fn supplementary_groups(uid: u32, gid: u32) -> Vec<Gid> {
    let name = std::env::var("SUDO_USER").ok().or_else(|| {
        nix::unistd::User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    });
    name.and_then(|n| CString::new(n).ok())
        .and_then(|n| nix::unistd::getgrouplist(&n, Gid::from_raw(gid)).ok())
        .unwrap_or_else(|| vec![Gid::from_raw(gid)])
}

/// The user the process dropped to, if it did.
pub fn dropped_user() -> Option<(u32, u32)> {
    match init() {
        Mode::Dropped { uid, gid } => Some((uid, gid)),
        _ => None,
    }
}

/// Fails with a message naming `sudo -E` when root cannot be had.
pub fn require_root(action: &str) -> Result<(), HostError> {
    match init() {
        Mode::Unprivileged => Err(HostError::NotRoot {
            action: action.into(),
            command: TEST_COMMAND.into(),
        }),
        _ => Ok(()),
    }
}

/// For a unit test that needs root: root for as long as the guard lives (regained, under
/// sudo, where the process dropped to the user), or, if it cannot have it, a line saying that
/// it is skipped and how to run it. The unit tests that need nothing run as anybody.
#[cfg(test)]
pub(crate) fn root_for_test(test: &str) -> Option<RootGuard> {
    let root = match init() {
        Mode::Unprivileged => None,
        _ => root().ok(),
    };
    if root.is_none() {
        // Past libtest's capture, which would hide it for a test that passes.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {test} needs root (run the tests as root, or as yourself with \
                   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=\"sudo -E\")"
        );
    }
    root
}

/// Makes a forked child root before it execs. Only raw system calls: it runs between `fork`
/// and `exec` of a multi-threaded process. `needed` comes from [`child_needs_root`], computed
/// before the fork.
pub(crate) fn regain_in_child(needed: bool) -> std::io::Result<()> {
    if !needed {
        return Ok(());
    }
    // SAFETY: plain system calls on the calling (only) thread of the child.
    unsafe {
        check(libc::syscall(libc::SYS_setresuid, 0, 0, 0))?;
        check(libc::syscall(libc::SYS_setresgid, 0, 0, 0))?;
        check(libc::syscall(
            libc::SYS_setgroups,
            0,
            std::ptr::null::<libc::gid_t>(),
        ))?;
    }
    Ok(())
}

/// Makes `cmd` start its program as root, with root regained in the forked child only.
///
/// A dropped process's children cannot regain root (exec resets the saved uid), so a test
/// that starts another test binary, or any program that boots machines, needs this. The
/// program sees `SUDO_UID` and drops again itself if it uses nspawn.
///
/// ```no_run
/// let mut cmd = std::process::Command::new("target/debug/deps/my_suite-0123");
/// nspawn_runtime::host::privs::start_as_root(&mut cmd);
/// let status = cmd.status()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn start_as_root(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let regain = child_needs_root();
    // SAFETY: the hook makes raw system calls only.
    unsafe { cmd.pre_exec(move || regain_in_child(regain)) };
}

/// Whether forked children must regain root (see [`regain_in_child`]).
pub(crate) fn child_needs_root() -> bool {
    matches!(init(), Mode::Dropped { .. })
}

fn check(ret: libc::c_long) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What makes tests run with root on a rustup user's machine: cargo compiles as the user and
/// runs only the test binaries through sudo, which drop back to the user before `main`.
const TEST_COMMAND: &str = "`cargo test` with the runner `cargo nspawn init` sets up \
     ([target.'cfg(target_os = \"linux\")'] runner = \"sudo -E\" in .cargo/config.toml), \
     or CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=\"sudo -E\" cargo test";

/// Root for the current thread only, until dropped. Other threads keep running as the user.
///
/// Do not spawn threads or run user code while holding it.
pub(crate) struct ThreadRoot {
    restore: Option<(u32, u32)>,
    /// Not `Send`: credentials belong to a thread, and dropping the guard on another thread
    /// would give that one's privileges back instead.
    _thread: std::marker::PhantomData<*const ()>,
}

impl ThreadRoot {
    pub(crate) fn acquire() -> Result<ThreadRoot, HostError> {
        match init() {
            Mode::Root => Ok(ThreadRoot {
                restore: None,
                _thread: std::marker::PhantomData,
            }),
            Mode::Unprivileged => Err(HostError::NotRoot {
                action: "accessing a machine".into(),
                command: TEST_COMMAND.into(),
            }),
            // Already root (inside a `root()` guard): nothing to take, nothing to give back.
            Mode::Dropped { .. } if Uid::effective().is_root() => Ok(ThreadRoot {
                restore: None,
                _thread: std::marker::PhantomData,
            }),
            Mode::Dropped { uid, gid } => {
                // SAFETY: raw calls change the calling thread's credentials only.
                let res = unsafe {
                    check(libc::syscall(libc::SYS_setresuid, -1, 0, -1))
                        .and_then(|_| check(libc::syscall(libc::SYS_setresgid, -1, 0, -1)))
                };
                res.map_err(|e| HostError::io("regaining root on this thread", e))?;
                Ok(ThreadRoot {
                    restore: Some((uid, gid)),
                    _thread: std::marker::PhantomData,
                })
            }
        }
    }
}

impl Drop for ThreadRoot {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.restore {
            // SAFETY: as in acquire. The gid goes first, while the thread still may.
            unsafe {
                libc::syscall(libc::SYS_setresgid, -1, gid, -1);
                libc::syscall(libc::SYS_setresuid, -1, uid, -1);
            }
        }
    }
}

/// Root for the whole process while the guard lives.
///
/// This is process-wide: every thread, including other tests running in parallel, runs as
/// root until the guard is dropped. Guards are serialized. Prefer the machine's methods, which
/// never need it.
///
/// ```no_run
/// let _root = nspawn_runtime::host::privs::root()?;
/// std::fs::write("/etc/motd", "hello\n").unwrap();
/// # Ok::<(), nspawn_runtime::Error>(())
/// ```
pub fn root() -> Result<RootGuard, HostError> {
    require_root("privs::root()")?;
    let lock = PROCESS_ROOT.lock().unwrap_or_else(|p| p.into_inner());
    let restore = dropped_user();
    if restore.is_some() {
        let regain = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .and_then(|_| {
                nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            });
        regain.map_err(|e| HostError::io("regaining root for the process", e.into()))?;
    }
    Ok(RootGuard {
        _lock: lock,
        restore,
    })
}

/// Returned by [`root`]; drops back to the user when dropped.
#[derive(Debug)]
pub struct RootGuard {
    _lock: MutexGuard<'static, ()>,
    restore: Option<(u32, u32)>,
}

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.restore {
            if let Err(e) = drop_to(uid, gid) {
                crate::report::error(None, format_args!("could not drop root again: {e}"));
            }
        }
    }
}
