//! What the VM runs, on a disk of its own: the workspace's sources at the same absolute path
//! (tests find their chroot declarations through `CARGO_MANIFEST_DIR`), the chroots the
//! tests boot, and the test binaries, built on the host (the VM emulates its CPU: 20-25x
//! slower). The guest mounts it over that path.

use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_nspawn::CliError;
use nspawn_runtime::host::tools;

use super::image::make_disk;
use super::{io, step};

/// What is left out of the workspace's copy: build output, chroots (only those named go
/// in), history.
const LEFT_OUT: &[&str] = &["target", "test_chroots", ".git"];

/// Builds the test binaries of `tests` (target names) and returns their paths.
pub fn build_tests(workspace: &Path, tests: &[String]) -> Result<Vec<PathBuf>, CliError> {
    step(&format!("building {} on the host", tests.join(", ")));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["test", "--no-run", "--message-format=json"]);
    for test in tests {
        cmd.args(["--test", test]);
    }
    let out = tools::run(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["target"]["name"]
                .as_str()
                .is_some_and(|n| tests.iter().any(|t| t == n))
        })
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect();
    if found.len() != tests.len() {
        return Err(io(
            workspace,
            std::io::Error::other(format!("cargo built {found:?} for tests {tests:?}")),
        ));
    }
    Ok(found)
}

/// Makes the payload disk at `disk` from the workspace, the chroots `chroots` and `binaries`.
pub fn make(
    workspace: &Path,
    chroots: &[&str],
    binaries: &[PathBuf],
    stage: &Path,
    disk: &Path,
) -> Result<(), CliError> {
    let _ = std::fs::remove_dir_all(stage);
    std::fs::create_dir_all(stage.join("test_chroots")).map_err(|e| io(stage, e))?;
    for entry in std::fs::read_dir(workspace)
        .map_err(|e| io(workspace, e))?
        .flatten()
    {
        let name = entry.file_name();
        if !LEFT_OUT.contains(&name.to_string_lossy().as_ref()) {
            copy(&entry.path(), &stage.join(&name), false)?;
        }
    }
    let dir = workspace.join("test_chroots");
    copy(
        &dir.join("CACHEDIR.TAG"),
        &stage.join("test_chroots/CACHEDIR.TAG"),
        false,
    )?;
    for chroot in chroots {
        // Hard links: the chroot is only read, and mkfs copies it anyway.
        copy(
            &dir.join(chroot),
            &stage.join("test_chroots").join(chroot),
            true,
        )?;
    }
    for binary in binaries {
        let inside = binary.strip_prefix(workspace).map_err(|_| {
            io(
                binary,
                std::io::Error::other("not below the workspace (CARGO_TARGET_DIR?)"),
            )
        })?;
        let to = stage.join(inside);
        std::fs::create_dir_all(to.parent().unwrap_or(stage)).map_err(|e| io(&to, e))?;
        copy(binary, &to, false)?;
    }
    step("making the payload disk");
    make_disk(stage, disk, "4G")?;
    std::fs::remove_dir_all(stage).map_err(|e| io(stage, e))
}

fn copy(from: &Path, to: &Path, link: bool) -> Result<(), CliError> {
    let mut cmd = tools::command("cp");
    cmd.arg(if link { "-al" } else { "-a" }).arg(from).arg(to);
    tools::run(&mut cmd)?;
    Ok(())
}
