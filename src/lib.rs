//! Test against real, ephemeral, systemd-booted Debian containers.
//!
//! ```no_run
//! #[nspawn::test(chroot = "bookworm")]
//! fn dbus_runs(machine: &nspawn::Machine) -> nspawn::Result<()> {
//!     machine.run(["systemctl", "is-active", "dbus"])?;
//!     Ok(())
//! }
//! ```
//!
//! See the README for setting up chroots and running tests under `sudo -E`.

pub use nspawn_runtime::chroot::storage::Storage;
pub use nspawn_runtime::host::privs;
pub use nspawn_runtime::{Command, Error, Machine, MachineBuilder, Result};

pub use nspawn_macros::test;

#[doc(hidden)]
pub mod __private {
    pub use nspawn_runtime::harness::{init_privileges, run, Scope, TestInfo};
    pub use nspawn_runtime::inventory;
}
