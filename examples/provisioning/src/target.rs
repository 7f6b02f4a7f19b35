//! What actions need from a system.

use crate::Result;

/// The result of a command on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A system that actions can provision.
pub trait Target {
    /// Runs a command; a non-zero exit is not an error here.
    fn command(&self, argv: &[&str]) -> Result<CommandOutput>;

    /// Reads a file; `None` when it does not exist.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// Writes a file with the given mode, replacing it.
    fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<()>;

    /// Runs a command that must succeed, returning its standard output.
    fn check(&self, argv: &[&str]) -> Result<String> {
        let out = self.command(argv)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "`{}` failed ({:?}): {}",
                argv.join(" "),
                out.code,
                out.stderr.trim()
            )
            .into())
        }
    }
}
