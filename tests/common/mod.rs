//! Helpers shared by the integration tests: finding what a machine may have left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace's chroots directory, as the runtime sees it.
pub fn chroots_dir() -> PathBuf {
    std::env::var_os("NSPAWN_CHROOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("test_chroots"))
}

/// PIDs of processes whose command line names the machine.
pub fn processes_of(machine: &str) -> Vec<u32> {
    let needle = format!("--machine={machine}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Ephemeral snapshots (`.#machine.*`) in a directory.
pub fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with(".#machine.") && !n.ends_with(".lck")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Everything a machine may leave: processes, the propagate dir, its cgroups.
pub fn leftovers_of(machine: &str) -> Vec<String> {
    let mut left: Vec<String> = processes_of(machine)
        .iter()
        .map(|p| format!("process {p}"))
        .collect();
    let propagate = Path::new("/run/systemd/nspawn/propagate").join(machine);
    if propagate.exists() {
        left.push(propagate.display().to_string());
    }
    for hierarchy in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup",
    ] {
        let cg = Path::new(hierarchy).join(format!("nspawn-{machine}"));
        if cg.exists() {
            left.push(cg.display().to_string());
        }
    }
    left
}
