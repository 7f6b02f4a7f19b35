//! What the host's systemd can do, asked of it rather than assumed: options and unit
//! properties that only some versions accept.

use std::process::Command;
use std::sync::OnceLock;

/// The version of a systemd tool (`systemd 252 (252.39-1~deb12u2)` gives 252).
fn version_of(program: &str) -> Option<u32> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `systemd-nspawn --version`.
pub fn nspawn_version() -> Option<u32> {
    static V: OnceLock<Option<u32>> = OnceLock::new();
    *V.get_or_init(|| version_of("systemd-nspawn"))
}

/// The version of the systemd that manages units (`systemctl --version`).
pub(crate) fn systemd_version() -> Option<u32> {
    static V: OnceLock<Option<u32>> = OnceLock::new();
    *V.get_or_init(|| version_of("systemctl"))
}

/// Whether `systemd-nspawn` accepts `--suppress-sync` (systemd 250 and later).
pub fn nspawn_has_suppress_sync() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| {
        Command::new("systemd-nspawn")
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--suppress-sync"))
    })
}

/// Unit properties that need a minimum systemd version.
const PROPERTY_SINCE: &[(&str, u32)] = &[
    ("MemoryMax", 231),
    ("MemoryHigh", 231),
    ("MemorySwapMax", 232),
    ("CPUWeight", 231),
    ("IOWeight", 230),
    ("TasksMax", 227),
    ("ManagedOOMMemoryPressure", 247),
];

/// Whether the host's systemd accepts a unit property (`Key=Value`), by the version that
/// introduced it. Properties not in our table are assumed to be accepted; systemd-run then
/// reports them if not.
pub(crate) fn property_supported(property: &str, systemd: Option<u32>) -> bool {
    let key = property.split('=').next().unwrap_or_default();
    match (PROPERTY_SINCE.iter().find(|(k, _)| *k == key), systemd) {
        (Some((_, since)), Some(version)) => version >= *since,
        _ => true,
    }
}

/// Whether this host can run the backend; the reason when not.
pub(crate) fn systemd_available() -> std::result::Result<(), String> {
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if init.trim() != "systemd" {
        return Err(format!("PID 1 is {:?}, not systemd", init.trim()));
    }
    for tool in ["systemd-run", "machinectl"] {
        if crate::host::tools::which(tool).is_none() {
            return Err(format!(
                "{tool} is not installed (apt-get install systemd-container)"
            ));
        }
    }
    let out = std::process::Command::new("machinectl")
        .args(["list", "--no-legend"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("machinectl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "machined is not reachable: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether systemd still has the machine's unit loaded.
pub(crate) fn systemd_unit_loaded(name: &str) -> bool {
    std::process::Command::new("systemctl")
        .args([
            "show",
            &format!("{name}.service"),
            "--property=LoadState",
            "--value",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "loaded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_follow_the_version_that_introduced_them() {
        assert!(property_supported("MemoryMax=1G", Some(252)));
        assert!(!property_supported("MemoryMax=1G", Some(229)));
        assert!(property_supported("Nice=5", Some(200)));
        assert!(property_supported("MemoryMax=1G", None));
    }

    #[test]
    fn the_local_nspawn_is_probed() {
        if crate::host::tools::has(crate::host::tools::NSPAWN) {
            let v = nspawn_version().expect("systemd-nspawn --version names a version");
            assert!(v >= 230, "{v}");
            assert_eq!(nspawn_has_suppress_sync(), v >= 250);
        }
    }
}
