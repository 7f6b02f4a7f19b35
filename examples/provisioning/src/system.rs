//! Running programs on the local system, as the actions need it.

use std::process::{Command, Output};

use crate::{Error, Result};

/// Runs `argv`; a non-zero exit is not an error here.
pub fn run(argv: &[&str]) -> Result<Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error("an empty command".into()))?;
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error(format!("`{program}`: {e}")))
}

/// Runs `argv`, which must succeed; returns its standard output.
pub fn check(argv: &[&str]) -> Result<String> {
    let out = run(argv)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error(format!(
        "`{}` failed ({}): {}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
