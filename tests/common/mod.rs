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

/// What a run of the fixture suite did, from its event log.
#[derive(Debug, Default)]
pub struct Events {
    pub lines: Vec<String>,
}

impl Events {
    pub fn read(path: &Path) -> Events {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Events {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    fn with(&self, kind: &str) -> Vec<Vec<String>> {
        self.lines
            .iter()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f[0] == kind)
            .collect()
    }

    /// Machines booted for a module (`fixture::alpha`).
    pub fn module_boots(&self, module: &str) -> Vec<String> {
        self.with("module-boot")
            .into_iter()
            .filter(|f| f[1] == module)
            .map(|f| f[3].clone())
            .collect()
    }

    /// Machines booted for single tests.
    pub fn test_boots(&self) -> Vec<String> {
        self.with("test-boot")
            .into_iter()
            .map(|f| f[2].clone())
            .collect()
    }

    /// Every machine that became ready.
    pub fn machines(&self) -> Vec<String> {
        self.with("ready")
            .into_iter()
            .map(|f| f[1].clone())
            .collect()
    }

    /// Machines stopped while the tests ran (not by the exit cleanup).
    pub fn stopped(&self) -> Vec<String> {
        self.with("stopped")
            .into_iter()
            .map(|f| f[1].clone())
            .collect()
    }

    /// Machines the exit cleanup had to stop.
    pub fn stopped_at_exit(&self) -> Vec<String> {
        self.with("stopped-at-exit")
            .into_iter()
            .map(|f| f[1].clone())
            .collect()
    }
}

/// Builds the fixture suite (`tests/fixture`) once and returns its test binary.
pub fn fixture_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args([
                "test",
                "--test",
                "fixture",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"]["name"] == "fixture")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the fixture's executable")
    })
    .clone()
}

/// Asserts that none of the machines left anything behind.
pub fn assert_nothing_left(machines: &[String]) {
    for m in machines {
        assert_eq!(leftovers_of(m), Vec::<String>::new(), "machine {m}");
    }
    assert_eq!(snapshots_in(&chroots_dir()), Vec::<PathBuf>::new());
}
