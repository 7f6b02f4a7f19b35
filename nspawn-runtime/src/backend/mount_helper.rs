//! The systemd backend's mount helper. A unit gives us no hook between `fork` and `exec`, so
//! its main process is this executable again, as root: it makes nspawn's mount namespace (see
//! [`crate::host::mount_ns`]) and execs `systemd-nspawn` in place. The unit's main process is
//! then nspawn, as without the helper (`Type=notify`, `KillMode=mixed` and machined see no
//! difference).
//!
//! systemd starts the helper, not the test process, so no inherited descriptor can prove its
//! role (see [`crate::host::helper`]). Its proof is its plan: a file of root's, mode 0600, in
//! a directory only root may enter, named by its marker (`NSPAWN_MOUNT_PLAN`). The helper
//! removes it once read. A marker that names anything else is an error with a message.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::helper;
use crate::host::mount_ns::MountSpec;
use crate::host::privs::ThreadRoot;
use crate::host::run_dir::private_dir;

pub(crate) use helper::MOUNT_PLAN as MARKER;

helper::pre_main_hook!(run_if_requested);

/// A plan written for a unit's helper; removed on drop if the helper never took it.
#[derive(Debug)]
pub(crate) struct PlanFile {
    path: PathBuf,
}

impl PlanFile {
    /// Writes the plan of machine `name`.
    pub(crate) fn write(name: &str, mounts: &MountSpec) -> Result<PlanFile> {
        let path = private_dir("plans")?.join(format!("{name}.plan"));
        let bytes = postcard::to_stdvec(mounts)
            .map_err(|e| Error::io("encoding a mount plan", std::io::Error::other(e)))?;
        let _root = ThreadRoot::acquire()?;
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(PlanFile { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PlanFile {
    fn drop(&mut self) {
        if let Ok(_root) = ThreadRoot::acquire() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The program a unit runs for the helper: this executable, by a path systemd can exec.
pub(crate) fn program() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(Error::io(
            "starting a machine's unit",
            std::io::Error::other(format!(
                "this executable ({}) was replaced while it ran (a rebuild?); run it again",
                exe.display()
            )),
        ));
    }
    Ok(exe)
}

/// Called before `main`: in the mount helper, mounts and execs nspawn (or ends with a message
/// and status 2); elsewhere returns at once.
fn run_if_requested() {
    let Some(plan) = std::env::var_os(MARKER) else {
        return;
    };
    let err = run(Path::new(&plan));
    eprintln!("nspawn: {MARKER} is set, but {err}");
    // SAFETY: ending the helper without running the test harness or exit handlers.
    unsafe { libc::_exit(2) }
}

/// Returns only on failure.
fn run(plan: &Path) -> String {
    let mounts = match take_plan(plan) {
        Ok(mounts) => mounts,
        Err(e) => {
            return format!(
            "{}: {e}. It is internal to nspawn's systemd backend; unset it: env -u {MARKER} ...",
            plan.display()
        )
        }
    };
    let lowers = mounts
        .root
        .as_ref()
        .map(|r| super::namespace::lowers_value(&r.lowers));
    let entered = mounts.plan().and_then(|plan| {
        // SAFETY: before main, in a process that has started no thread.
        unsafe { plan.enter() }
    });
    if let Err(e) = entered {
        return format!("making the machine's mount namespace failed: {e}");
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut nspawn = std::process::Command::new("systemd-nspawn");
    nspawn.args(args).env_remove(MARKER);
    if let Some(lowers) = lowers {
        nspawn.env(crate::chroot::LOWERS_ENV, lowers);
    }
    format!("could not exec systemd-nspawn: {}", nspawn.exec())
}

/// Reads and removes the plan, which must be a file of root's, mode 0600, in a directory
/// only root may enter, read by root.
fn take_plan(path: &Path) -> std::io::Result<MountSpec> {
    let refuse = |why: &str| Err(std::io::Error::other(why.to_string()));
    // SAFETY: a plain query.
    if unsafe { libc::geteuid() } != 0 {
        return refuse("the mount helper runs as root only");
    }
    let file = std::fs::symlink_metadata(path)?;
    if !file.is_file() || file.uid() != 0 || file.mode() & 0o7777 != 0o600 {
        return refuse("not a plan file of root's (a regular file, mode 0600)");
    }
    let dir = std::fs::symlink_metadata(path.parent().unwrap_or(Path::new("/")))?;
    if !dir.is_dir() || dir.uid() != 0 || dir.mode() & 0o077 != 0 {
        return refuse("not in a directory only root may enter");
    }
    let bytes = std::fs::read(path)?;
    std::fs::remove_file(path)?;
    postcard::from_bytes(&bytes).map_err(std::io::Error::other)
}
