//! A minimal, real provisioning library in the spirit of Ansible or Transilience: *actions*
//! bring the system they run on to a desired state and report whether they changed
//! anything. They are ordinary Rust acting on the local system (`std::fs`,
//! `std::process::Command`), with no notion of a remote target; the tests run them inside
//! real machines with `nspawn::Machine::call` and `#[nspawn::test(inside)]`.
//!
//! ```no_run
//! use provisioning_example::{Action, FileContent, UserExists};
//!
//! # fn f() -> provisioning_example::Result<()> {
//! let report = UserExists::system("app").apply()?;
//! assert!(report.changed);
//! FileContent::new("/etc/app.conf", "port = 8080\n").mode(0o640).apply()?;
//! # Ok(()) }
//! ```

mod actions;
mod error;
mod system;

pub use actions::{apply, apply_all, Action, DebInstalled, FileContent, Report, Step};
pub use actions::{UnitRunning, UserExists};
pub use error::{Error, Result};
