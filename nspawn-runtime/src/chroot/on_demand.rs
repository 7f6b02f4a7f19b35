//! Chroots on demand: a test that needs a declared chroot that is missing, or was built from
//! another declaration, gets it built before its machine boots, as a container image is pulled
//! on first use.
//!
//! The build runs in a helper process, this executable again as root (the test process may
//! run as the user, and building installs signal handlers of its own), with its progress on
//! the test process's stderr. The helper takes a host-wide lock per chroot first, so
//! concurrent test processes build it once: the others wait, then find it ready. A rebuilt
//! chroot is renamed into place; machines still running from the old tree keep it (see
//! `build`). `NSPAWN_AUTO_BUILD=0` turns this off: a missing or outdated chroot is then an
//! error naming `cargo nspawn make-chroots`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use super::build::{build, BuildOptions};
use super::config::{ChrootDef, ChrootRef, Workspace};
use super::locate::locate;
use super::status::{status, Status};
use crate::error::{ChrootError, Result};
use crate::host::helper;

/// Set by the pre-`main` hook: re-running this executable reaches [`run_if_requested`].
static HOOKED: AtomicBool = AtomicBool::new(false);

helper::pre_main_hook!(run_if_requested);

/// Called before `main`: in a build helper, builds and exits; elsewhere notes that builds can
/// be started. `#[nspawn::test]`'s hook calls it too, before privileges are dropped.
pub fn run_if_requested() {
    let Some(name) = helper::role(helper::BUILD) else {
        HOOKED.store(true, Ordering::SeqCst);
        return;
    };
    let code = match build_here(&name) {
        Ok(()) => 0,
        // The test that asked shows the log's last lines: only the gist here.
        Err(ChrootError::Build {
            phase, reason, log, ..
        }) => {
            eprintln!(
                "nspawn: building chroot {name} failed ({phase}): {reason} (log: {})",
                log.display()
            );
            1
        }
        Err(e) => {
            eprintln!("nspawn: building chroot {name}: {e}");
            1
        }
    };
    // SAFETY: ending the helper without running the test harness or exit handlers.
    unsafe { libc::_exit(code) }
}

/// The tree to boot for `name` (see [`locate`]). A declared chroot that is missing or outdated
/// is built first, unless `NSPAWN_AUTO_BUILD=0`.
pub fn ensure(name: &str, workspace: Option<&Path>) -> Result<PathBuf, ChrootError> {
    let Ok(ChrootRef::Name(_)) = ChrootRef::parse(name) else {
        return locate(name, workspace);
    };
    let ws = match workspace {
        Some(dir) => Workspace::discover(dir)?,
        None => Workspace::from_env()?,
    };
    let def = match ws.chroot(name) {
        Ok(def) => def,
        // Not declared (a tree put there by hand): booted as it is, if it is there.
        Err(ChrootError::Undeclared { .. }) => return locate(name, workspace),
        // Declarations that do not parse: said, not taken for "not declared".
        Err(e) => return Err(e),
    };
    let dir = ws.chroots_dir();
    match status(&dir, &def) {
        Status::Ready(_) => return Ok(dir.join(name)),
        hand_made @ Status::HandMade(_) => {
            announce_once(&format!("chroot {name}: {}", hand_made.describe(name)));
            return Ok(dir.join(name));
        }
        _ if !crate::settings::lenient().auto_build => return locate_current(&dir, &def),
        _ => {}
    }
    build_in_helper(&ws, &def)?;
    locate_current(&dir, &def)
}

/// The chroot's directory if it is built from its current declaration, else the error that
/// says how to build it.
fn locate_current(dir: &Path, def: &ChrootDef) -> Result<PathBuf, ChrootError> {
    let path = dir.join(&def.name);
    match status(dir, def) {
        Status::Ready(_) | Status::HandMade(_) => Ok(path),
        Status::Missing => Err(ChrootError::Missing {
            name: def.name.clone(),
            path,
        }),
        Status::Outdated(_) => Err(ChrootError::Outdated {
            name: def.name.clone(),
            path,
        }),
    }
}

/// Says `line` once per process (every test of a run asks for its chroot).
fn announce_once(line: &str) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.iter().any(|s| s == line) {
        crate::report::announce(line);
        said.push(line.to_string());
    }
}

/// Chroots whose build failed in this process, with the failure: later tests that need them
/// get the same error at once instead of building again.
static FAILED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Builds `def` in a helper process as root, and waits for it.
fn build_in_helper(ws: &Workspace, def: &ChrootDef) -> Result<(), ChrootError> {
    if !HOOKED.load(Ordering::SeqCst) {
        // Without the hook the helper would be a second test run: say how to build instead.
        return Ok(());
    }
    let path = ws.chroots_dir().join(&def.name);
    let failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, reason)) = failed.iter().find(|(p, _)| *p == path) {
        return Err(build_failed(ws, def, reason.clone()));
    }
    drop(failed);
    if super::build::failed_before(&ws.chroots_dir(), def) {
        return Err(build_failed(
            ws,
            def,
            format!(
                "its last build, of this same declaration, failed, so it is not built on demand \
                 again: fix the declaration or the host, then `cargo nspawn make-chroots {}`",
                def.name
            ),
        ));
    }
    let beside = missing_beside(ws, def);
    crate::report::announce(&format!(
        "chroot {} is missing or outdated: building it ({}){}",
        def.name,
        ws.chroots_dir().display(),
        if beside.is_empty() {
            String::new()
        } else {
            format!(
                ", and beside it the declared chroots that are missing too, which other test \
                 binaries of the run would build one after another: {}",
                beside.join(", ")
            )
        }
    ));
    let names = std::iter::once(def.name.clone())
        .chain(beside)
        .collect::<Vec<_>>();
    let null = File::open("/dev/null").map_err(|e| ChrootError::io("opening /dev/null", e))?;
    let status = helper::command(helper::BUILD, names.join(","), null.into())
        .env("NSPAWN_WORKSPACE", &ws.root)
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| ChrootError::io(format!("starting the build of chroot {}", def.name), e))?;
    // The helper fails if any of them failed; this test needs its own only.
    if status.success() || super::status::status(&ws.chroots_dir(), def).bootable() {
        return Ok(());
    }
    let reason = format!(
        "the build ({status}) failed. Fix the declaration or the host, then `cargo nspawn \
         make-chroots {}` (builds on demand do not try the same declaration again)",
        def.name
    );
    FAILED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((path, reason.clone()));
    Err(build_failed(ws, def, reason))
}

/// A failed on-demand build, with its log's path and last lines.
fn build_failed(ws: &Workspace, def: &ChrootDef, reason: String) -> ChrootError {
    let log = ws
        .chroots_dir()
        .join(".logs")
        .join(format!("{}.log", def.name));
    let tail = crate::text::tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20);
    ChrootError::Build {
        name: def.name.clone(),
        phase: "the build on demand".into(),
        reason,
        log,
        tail: tail.into(),
    }
}

/// The other declared chroots that are missing altogether (never built, never failed):
/// cargo runs test binaries one after another, so building them at the first need, together,
/// saves the run the sum of their builds. Outdated ones wait for a test that needs them.
fn missing_beside(ws: &Workspace, def: &ChrootDef) -> Vec<String> {
    let dir = ws.chroots_dir();
    ws.chroots()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.name != def.name && status(&dir, d) == Status::Missing)
        .filter(|d| !super::build::failed_before(&dir, d))
        .map(|d| d.name)
        .collect()
}

/// In the helper: builds the chroots `names` (comma-separated) of `$NSPAWN_WORKSPACE`
/// together, but those another process built while this one waited for their locks.
fn build_here(names: &str) -> Result<(), ChrootError> {
    let ws = Workspace::from_env()?;
    let dir = ws.chroots_dir();
    let mut names: Vec<String> = names.split(',').map(String::from).collect();
    // Locks taken in one order by every helper: two cannot wait for each other.
    names.sort();
    let _locks = names
        .iter()
        .map(|name| lock(&dir, name))
        .collect::<Result<Vec<_>, ChrootError>>()?;
    let mut todo = Vec::new();
    for name in names {
        if !status(&dir, &ws.chroot(&name)?).bootable() {
            todo.push(name);
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    // Only missing or outdated ones are left: forcing rebuilds the outdated, nothing else.
    let options = BuildOptions {
        force: true,
        ..BuildOptions::default()
    };
    build(&ws, &todo, &options).map(|_| ())
}

/// The host-wide lock on building chroot `name` in `dir`, held until dropped.
fn lock(dir: &Path, name: &str) -> Result<Flock<File>, ChrootError> {
    let key = fnv1a(dir.join(name).to_string_lossy().as_bytes());
    let path = crate::host::run_dir::private_dir("builds")?.join(format!("{key:016x}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ChrootError::io(format!("opening {}", path.display()), e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| ChrootError::io(format!("locking {}", path.display()), e.into()))
}

/// A stable hash of a path, for a lock file name (FNV-1a, 64 bits).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
