//! Ownership records: one file per running machine under `/run/nspawn-rs/machines/`, naming
//! the process that owns it by PID *and* start time (PIDs are reused), so that a sweep can
//! prove a machine's owner is dead before it removes anything. `/run` is a tmpfs: the
//! records go away with a reboot, like the machines themselves.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::privs::ThreadRoot;

pub use crate::host::process::ProcessId;
pub use crate::host::run_dir::private_dir;
pub use crate::host::run_dir::run_dir;

fn records_dir() -> PathBuf {
    run_dir().join("machines")
}

/// What the runtime knows of a machine it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Machine name.
    pub name: String,
    /// The test process that started it.
    pub owner: ProcessId,
    /// `systemd-nspawn`.
    pub nspawn: ProcessId,
    /// The container's PID 1.
    pub leader: ProcessId,
    /// The master chroot's directory.
    pub chroot: PathBuf,
    /// The ephemeral snapshot, when the chroot is a subvolume.
    pub snapshot: Option<PathBuf>,
    /// The machine's cgroup directories (direct backend).
    pub cgroups: Vec<PathBuf>,
    /// The machine's unit (systemd backend).
    #[serde(default)]
    pub unit: Option<String>,
    /// Left running on purpose (`NSPAWN_KEEP`); only `cargo nspawn gc --kept` removes it.
    #[serde(default)]
    pub kept: bool,
}

impl Record {
    fn path(name: &str) -> PathBuf {
        records_dir().join(format!("{name}.toml"))
    }

    /// Writes the record (as root: `/run` belongs to root).
    pub fn save(&self) -> Result<()> {
        let text = toml::to_string(self)
            .map_err(|e| Error::io("serializing a machine record", std::io::Error::other(e)))?;
        let dir = private_dir("machines")?;
        let path = dir.join(format!("{}.toml", self.name));
        let tmp = dir.join(format!(".{}.toml.tmp", self.name));
        Ok(crate::host::run_dir::write_whole(&path, &tmp, &text)?)
    }

    /// Removes the record of machine `name`.
    pub(crate) fn remove(name: &str) {
        if let Ok(_root) = ThreadRoot::acquire() {
            let _ = std::fs::remove_file(Record::path(name));
        }
    }

    /// Every record on the host (none, without root: only root may read them).
    pub fn all() -> Vec<Record> {
        Record::scan().records
    }

    /// The records directory, read once: the records, and the files that are no record (a
    /// temporary file a killed process left, or a record an older version left half
    /// written), with the machine each file names.
    pub(crate) fn scan() -> Scan {
        let _root = ThreadRoot::acquire();
        let mut scan = Scan::default();
        let Ok(entries) = std::fs::read_dir(records_dir()) else {
            return scan;
        };
        for path in entries.flatten().map(|e| e.path()) {
            // A temporary file is no record even when whole: a killed process left it before
            // its rename, and only its own path removes it.
            let temporary = path.extension().is_some_and(|e| e == "tmp");
            let record = std::fs::read_to_string(&path)
                .ok()
                .filter(|_| !temporary)
                .and_then(|t| toml::from_str::<Record>(&t).ok());
            match record {
                Some(record) => scan.records.push(record),
                None => scan
                    .unreadable
                    .extend(named_machine(&path).map(|m| (m, path))),
            }
        }
        scan
    }
}

/// What [`Record::scan`] found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The records.
    pub records: Vec<Record>,
    /// Files that are no record, with the machine each names.
    pub unreadable: Vec<(String, PathBuf)>,
}

/// The machine a file of the records directory names: `<name>.toml` or `.<name>.toml.tmp`.
fn named_machine(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let name = file.trim_start_matches('.');
    let name = name
        .strip_suffix(".toml.tmp")
        .or(name.strip_suffix(".toml"))?;
    Some(name.to_string())
}

/// The snapshot an `--ephemeral` nspawn works on: it holds a lock on `.#<snapshot>.lck` beside
/// it, and the lock's name gives the snapshot's.
pub(crate) fn snapshot_of(nspawn_pid: u32) -> Option<PathBuf> {
    let fds = std::fs::read_dir(format!("/proc/{nspawn_pid}/fd")).ok()?;
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .find_map(|target| snapshot_from_lock(&target))
}

/// The lock file nspawn holds for a snapshot: `/c/.#machine.x` has `/c/.#.#machine.x.lck`.
pub(crate) fn lock_of(snapshot: &Path) -> PathBuf {
    let name = snapshot.file_name().unwrap_or_default().to_string_lossy();
    snapshot.with_file_name(format!(".#{name}.lck"))
}

/// `/c/.#.#machine.x.lck` names the snapshot `/c/.#machine.x`.
pub(crate) fn snapshot_from_lock(lock: &Path) -> Option<PathBuf> {
    let name = lock.file_name()?.to_str()?;
    let snapshot = name.strip_prefix(".#")?.strip_suffix(".lck")?;
    snapshot
        .starts_with(".#machine.")
        .then(|| lock.with_file_name(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_name_their_snapshot() {
        assert_eq!(
            snapshot_from_lock(Path::new("/c/.#.#machine.bw80b85ce2.lck")),
            Some(PathBuf::from("/c/.#machine.bw80b85ce2"))
        );
        assert_eq!(snapshot_from_lock(Path::new("/c/other.lck")), None);
        let snapshot = Path::new("/c/.#machine.bw80b85ce2");
        assert_eq!(
            snapshot_from_lock(&lock_of(snapshot)).as_deref(),
            Some(snapshot)
        );
    }

    #[test]
    fn records_round_trip() {
        let me = ProcessId::current().unwrap();
        let r = Record {
            name: "nspawn-1-abc".into(),
            owner: me,
            nspawn: me,
            leader: me,
            chroot: "/c/bookworm".into(),
            snapshot: Some("/c/.#machine.x".into()),
            cgroups: vec!["/sys/fs/cgroup/unified/nspawn-nspawn-1-abc".into()],
            unit: None,
            kept: false,
        };
        let text = toml::to_string(&r).unwrap();
        assert_eq!(toml::from_str::<Record>(&text).unwrap(), r);
    }
}
