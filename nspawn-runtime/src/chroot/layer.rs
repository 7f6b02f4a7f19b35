//! Set-up layers: a module's set-up run once, on a *template* machine, its changes kept as an
//! overlay layer over the master chroot, from which the module's `scope = "test"` machines
//! boot. Each such machine then starts from the set-up's result and is otherwise as pristine
//! as one booted from the chroot: it runs on its own throw-away overlay on top.
//!
//! nspawn's `--volatile=overlay` keeps its changes in a tmpfs of its own, and `--overlay=`
//! cannot replace the root, so the overlays are ours: under `<chroots>/.layers/<id>/`,
//! `upper/` and `work/` hold the set-up's changes; while the template runs, `build/` is the
//! writable overlay of `upper/` over the chroot; after it stopped, `tree/` is the read-only
//! overlay of `upper/` over the chroot, which machines boot as they boot a chroot. `owner`
//! names the process, and a pointer in `/run/nspawn-rs/layers/` names the layer, so that a
//! sweep (the watchdog's too, which knows no chroot directory) unmounts and removes the layers
//! of dead runs.
//!
//! For user-namespaced machines nothing is mounted here: the template and the machines stack
//! `upper/` and the chroot themselves in nspawn's own mount namespace (see `host::idmap`). The
//! template writes `upper/` in its own uid range; sealing gives it host root's ids, so that it
//! serves machines of any range, idmapped like the chroot.
//!
//! What a guest wrote is in `upper/`, set-uid binaries and device nodes included, so the
//! layers' directories are root's and mode 0700, and the read-only tree is mounted `nosuid` and
//! `nodev`: no other host user can reach or use any of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{ChrootError, Result};
use crate::host::privs::ThreadRoot;
use crate::host::process::ProcessId;

/// What the template's boot writes that is not the set-up's doing: taken out of the layer.
const BOOT_ARTEFACTS: [&str; 5] = [
    "etc/machine-id",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/timers",
    "var/log/journal",
];

/// One set-up layer of this process.
#[derive(Debug)]
pub(crate) struct Layer {
    dir: PathBuf,
    chroot: PathBuf,
    /// For user-namespaced machines: nothing mounted on the host.
    private_users: bool,
}

/// What a machine boots from a layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LayerRoot {
    /// A privileged machine's tree: the overlay mounted on the host.
    pub tree: PathBuf,
    /// A user-namespaced machine's read-only layers, top first.
    pub lowers: Vec<PathBuf>,
    /// The template's writable layer (with `upper/` and `work/`); none for a machine, whose
    /// changes are thrown away.
    pub writable: Option<PathBuf>,
    /// Whether machines of this layer run in a user namespace.
    pub private_users: bool,
}

/// Layers of this process, released at exit after its machines stopped.
static LIVE: Mutex<Vec<Arc<Layer>>> = Mutex::new(Vec::new());

fn layers_dir(chroot: &Path) -> PathBuf {
    chroot
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(".layers")
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ChrootError {
    let context = format!("{what} {}", path.display());
    move |e| ChrootError::io(context, e)
}

fn overlay(target: &Path, options: &str, flags: MsFlags) -> Result<(), ChrootError> {
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(options),
    )
    .map_err(|e| {
        ChrootError::io(
            format!("mounting an overlay on {} ({options})", target.display()),
            e.into(),
        )
    })
}

impl Layer {
    /// A new layer over `chroot` for privileged or user-namespaced machines; for privileged
    /// ones, its writable overlay mounted on [`Layer::template_root`]'s tree.
    pub(crate) fn create(chroot: &Path, private_users: bool) -> Result<Layer, ChrootError> {
        let id = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let layer = Layer {
            dir: layers_dir(chroot).join(id),
            chroot: chroot.into(),
            private_users,
        };
        let _root = ThreadRoot::acquire()?;
        // An earlier version made them 0755.
        crate::host::run_dir::secure(&layers_dir(chroot))?;
        crate::host::run_dir::secure(&layer.dir)?;
        // A user-namespaced layer mounts nothing here: no `build` or `tree`.
        let subs: &[&str] = if private_users {
            &["upper", "work"]
        } else {
            &["upper", "work", "build", "tree"]
        };
        for sub in subs {
            let path = layer.dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
        }
        let owner = ProcessId::current().map_or(String::new(), |p| format!("{p}\n"));
        let path = layer.dir.join("owner");
        std::fs::write(&path, owner).map_err(io("writing", &path))?;
        let pointer = pointer(&layer.dir)?;
        std::fs::write(&pointer, layer.dir.as_os_str().as_encoded_bytes())
            .map_err(io("writing", &pointer))?;
        if private_users {
            return Ok(layer);
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            chroot.display(),
            layer.dir.join("upper").display(),
            layer.dir.join("work").display()
        );
        overlay(&layer.dir.join("build"), &options, MsFlags::empty())?;
        Ok(layer)
    }

    /// The template machine's root while the set-up runs: writes land in the layer.
    pub(crate) fn template_root(&self) -> LayerRoot {
        LayerRoot {
            tree: self.dir.join("build"),
            lowers: vec![self.chroot.clone()],
            writable: Some(self.dir.clone()),
            private_users: self.private_users,
        }
    }

    /// What machines boot once the layer is sealed.
    pub(crate) fn root(&self) -> LayerRoot {
        LayerRoot {
            tree: self.dir.join("tree"),
            lowers: vec![self.dir.join("upper"), self.chroot.clone()],
            writable: None,
            private_users: self.private_users,
        }
    }

    /// After the template stopped: its overlay unmounted, the boot's own writes taken out,
    /// and the read-only tree mounted. `template_base` is the first host uid of the template's
    /// range (user-namespaced layers), which its files are given back from.
    pub(crate) fn seal(self, template_base: Option<u32>) -> Result<Arc<Layer>, ChrootError> {
        let _root = ThreadRoot::acquire()?;
        let build = self.dir.join("build");
        if !self.private_users {
            umount2(&build, MntFlags::empty()).map_err(|e| {
                ChrootError::io(format!("unmounting {}", build.display()), e.into())
            })?;
        }
        let upper = self.dir.join("upper");
        if self.private_users {
            // From what the host knows of the template, never from what its guest left (the
            // owner of `upper/` is the guest's to change).
            let base = template_base.ok_or_else(|| {
                ChrootError::io(
                    format!("sealing {}", upper.display()),
                    std::io::Error::other("the template's uid range is unknown"),
                )
            })?;
            crate::host::idmap::shift_down(&upper, base)
                .map_err(io("giving host root's ids to", &upper))?;
        }
        for artefact in BOOT_ARTEFACTS {
            remove_within(&upper, artefact);
        }
        if !self.private_users {
            let options = format!("lowerdir={}:{}", upper.display(), self.chroot.display());
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            overlay(&self.dir.join("tree"), &options, flags)?;
        }
        let layer = Arc::new(self);
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(layer.clone());
        Ok(layer)
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        if let Ok(_root) = ThreadRoot::acquire() {
            remove(&self.dir);
        }
    }
}

/// Removes `relative` below `upper`, a tree the guest wrote: only if no directory on the way
/// is a symlink, which the host would follow out of the layer (the guest has stopped, so
/// nothing changes between the check and the removal). The last component itself is removed,
/// never followed.
fn remove_within(upper: &Path, relative: &str) {
    let mut dir = upper.to_path_buf();
    let mut parts: Vec<&str> = relative.split('/').collect();
    let Some(last) = parts.pop() else { return };
    for part in parts {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            _ => return,
        }
    }
    let path = dir.join(last);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_dir() => {
            let _ = std::fs::remove_dir_all(&path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(&path);
        }
        Err(_) => {}
    }
}

/// The pointer to layer `dir` in the run directory.
fn pointer(dir: &Path) -> Result<PathBuf, ChrootError> {
    let id = dir.file_name().unwrap_or_default();
    Ok(crate::host::run_dir::private_dir("layers")?.join(id))
}

/// Unmounts a layer's overlays and removes it and its pointer (as root).
fn remove(dir: &Path) {
    for sub in ["tree", "build"] {
        // Detached: a machine still booting from it keeps what it has.
        let _ = umount2(&dir.join(sub), MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(dir);
    if let Ok(pointer) = pointer(dir) {
        let _ = std::fs::remove_file(pointer);
    }
}

/// Removes this process's layers: at exit, once its machines have stopped.
pub(crate) fn release_all() {
    let layers = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
    if let Ok(_root) = ThreadRoot::acquire() {
        for layer in layers {
            remove(&layer.dir);
        }
    }
}

/// Removes the layers whose process is dead; returns a line for each. Needs root.
pub(crate) fn sweep() -> Vec<String> {
    // None was ever made here (or the run directory is gone): nothing to sweep, and nothing
    // to make.
    if !crate::host::run_dir::run_dir().join("layers").is_dir() {
        return Vec::new();
    }
    let Ok(pointers) = crate::host::run_dir::private_dir("layers") else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(&pointers).into_iter().flatten().flatten() {
        let Ok(dir) = std::fs::read_to_string(entry.path()).map(PathBuf::from) else {
            continue;
        };
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|t| t.parse::<ProcessId>().ok());
        if owner.is_some_and(|o| o.is_alive()) {
            continue;
        }
        // Only what a pointer of ours names, and only a layer's own directory.
        if dir.parent().and_then(Path::file_name) == Some(std::ffi::OsStr::new(".layers")) {
            remove(&dir);
        }
        let _ = std::fs::remove_file(entry.path());
        removed.push(format!("set-up layer {}", dir.display()));
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artefacts_are_removed_without_following_the_guests_symlinks() {
        let scratch = std::env::temp_dir().join(format!("nspawn-layer-{}", std::process::id()));
        let (upper, outside) = (scratch.join("upper"), scratch.join("outside"));
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("var/lib")).unwrap();
        std::fs::create_dir_all(outside.join("systemd")).unwrap();
        std::fs::write(upper.join("etc/machine-id"), "id").unwrap();
        std::fs::write(outside.join("systemd/random-seed"), "host's").unwrap();
        // The guest made var/lib/systemd a way out of the layer.
        std::os::unix::fs::symlink(outside.join("systemd"), upper.join("var/lib/systemd")).unwrap();
        remove_within(&upper, "etc/machine-id");
        remove_within(&upper, "var/lib/systemd/random-seed");
        assert!(!upper.join("etc/machine-id").exists());
        assert!(
            outside.join("systemd/random-seed").exists(),
            "followed the guest's symlink"
        );
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
