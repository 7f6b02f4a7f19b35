//! A minimal, real provisioning library in the spirit of Ansible or Transilience: *actions*
//! bring a system to a desired state and report whether they changed anything.
//!
//! Actions run against a [`Target`]: anything that can run commands and read and write
//! files. `nspawn::Machine` is one (see [`machine`]); an SSH connection or the local host
//! could be others, with the same actions.
//!
//! ```no_run
//! use provisioning_example::{Action, FileContent, UserExists};
//!
//! # fn f(machine: &nspawn::Machine) -> provisioning_example::Result<()> {
//! let report = UserExists::system("app").apply(machine)?;
//! assert!(report.changed);
//! FileContent::new("/etc/app.conf", "port = 8080\n").mode(0o640).apply(machine)?;
//! # Ok(()) }
//! ```

mod actions;
pub mod machine;
mod target;

pub use actions::{Action, DebInstalled, FileContent, Report, UnitRunning, UserExists};
pub use target::{CommandOutput, Target};

/// Errors of actions: what the target reported, or a command that failed.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of actions.
pub type Result<T> = std::result::Result<T, Error>;
