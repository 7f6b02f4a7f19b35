//! A serial group's turn: its tests run one after another, each with the machines to
//! itself. A lock file per (run, module, group), so that it holds across nextest's processes
//! as well as between threads (each test opens the file itself: `flock` excludes other opens).

use std::hash::{Hash, Hasher};

use nix::fcntl::{Flock, FlockArg};

use super::test_info::TestInfo;
use crate::error::Result;

/// Held while a test of a serial group runs; `None` for everything else.
pub(crate) fn turn(info: &TestInfo) -> Result<Option<Flock<std::fs::File>>> {
    if !info.serial {
        return Ok(None);
    }
    // One run: the nextest run's id, or this process.
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| std::process::id().to_string());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (run, info.module, info.machines).hash(&mut hasher);
    let dir = crate::host::run_dir::private_dir("serial")?;
    let path = dir.join(format!("{:016x}.lock", hasher.finish()));
    Ok(Some(crate::host::run_dir::lock_file(
        &path,
        FlockArg::LockExclusive,
    )?))
}
