//! What nextest's keepers and warm keepers share: the test binary started again to run one
//! test in keeper mode, in a session of its own, outliving the process that starts it.

use std::fs::File;
use std::path::Path;

use super::test_info::TestInfo;
use crate::host::privs::ThreadRoot;
use crate::host::process::ProcessId;

/// Starts this test binary as a keeper (`marker=value`, with `env`) running `info`'s test, its
/// stderr to `log`; the keeper's process.
pub(super) fn start(
    marker: &str,
    value: &str,
    info: &TestInfo,
    log: &Path,
    env: &[(&str, String)],
) -> crate::Result<Option<ProcessId>> {
    let null = File::open("/dev/null").map_err(|e| crate::Error::io("opening /dev/null", e))?;
    let mut cmd = crate::host::helper::command(marker, value.into(), null.into());
    // A keeper boots as the test process would, and may run set-ups, test code: it drops to
    // the invoking user as a test binary does.
    for var in ["SUDO_UID", "SUDO_GID", "SUDO_USER", "NSPAWN_USER"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let stderr = {
        let _root = ThreadRoot::acquire()?;
        File::create(log).map_err(|e| crate::Error::io(format!("creating {}", log.display()), e))?
    };
    cmd.args([
        "--exact",
        &info.test_name(),
        "--include-ignored",
        "--test-threads=1",
    ])
    .stderr(stderr);
    let keeper = cmd.spawn().map_err(|e| {
        crate::Error::io(format!("starting the keeper of module {}", info.module), e)
    })?;
    let id = ProcessId::of(keeper.id());
    // Not waited for: it outlives this process, and init reaps it.
    std::mem::forget(keeper);
    Ok(id)
}

/// Ends a keeper with what its work came to; the exit handlers stop whatever is still up.
pub(super) fn exit(what: &str, result: crate::Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("nspawn {what}: {e}");
            1
        }
    };
    std::process::exit(code)
}
