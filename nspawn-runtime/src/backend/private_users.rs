//! Whether a machine runs in a user namespace of its own (its root an unprivileged host uid)
//! or privileged (its root the host's root): `NSPAWN_PRIVATE_USERS`, what the host can do,
//! and a machine's own request.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::settings::PrivateUsers;

/// The systemd version whose nspawn has `--private-users-ownership` and `:idmap` binds.
const NSPAWN_SINCE: u32 = 250;

/// Whether a machine booted from `dir` gets a user namespace. `requested` is the machine's
/// own choice (`MachineBuilder::private_users`), which wins over the setting.
pub(crate) fn decide(requested: Option<bool>, dir: &Path) -> Result<bool> {
    let mode = match requested {
        Some(true) => PrivateUsers::Yes,
        Some(false) => PrivateUsers::No,
        None => crate::settings::get()?.private_users,
    };
    if mode == PrivateUsers::No {
        return Ok(false);
    }
    match (why_not(dir), mode) {
        (None, _) => Ok(true),
        (Some(reason), PrivateUsers::Yes) => Err(Error::PrivateUsersUnavailable { reason }),
        (Some(reason), _) => {
            fallback_once(&reason);
            Ok(false)
        }
    }
}

/// Why this host cannot run user-namespaced machines from `dir`; `None` when it can.
pub fn why_not(dir: &Path) -> Option<String> {
    match crate::host::probe::nspawn_version() {
        Some(v) if v >= NSPAWN_SINCE => {}
        v => {
            return Some(format!(
                "systemd-nspawn {} is older than {NSPAWN_SINCE}, which has \
                 --private-users-ownership and idmapped binds",
                v.map_or("of unknown version".into(), |v| v.to_string())
            ))
        }
    }
    // Idmapped mounts are a file system's feature: probed once per file system.
    type Probes = Mutex<HashMap<u64, std::result::Result<(), String>>>;
    static PROBES: OnceLock<Probes> = OnceLock::new();
    // A layer's directory may not be made yet: its file system is its parent's.
    let dir = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let device = std::fs::metadata(dir).map_or(0, |m| m.dev());
    let mut probes = PROBES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    probes
        .entry(device)
        .or_insert_with(|| crate::host::idmap::probe(dir))
        .clone()
        .err()
}

/// Says once per process that machines run privileged, and why.
fn fallback_once(reason: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::report::announce(&format!(
            "machines run privileged here (their root is the host's root): {reason}; \
             NSPAWN_PRIVATE_USERS=no says this is meant"
        ))
    });
}
