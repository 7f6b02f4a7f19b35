//! The runtime of the `nspawn` test framework: master chroots, ephemeral machines booted from
//! them, and the privilege helper.
//!
//! Users depend on the `nspawn` facade crate; this crate's public items are also the building
//! blocks of a project's own xtask (see [`chroot::build`]).

mod agent;
pub mod backend;
pub mod cgroup;
pub mod chroot;
pub mod config;
pub mod console;
mod deadline;
pub mod error;
mod events;
mod exec;
pub mod filter;
mod guest;
#[doc(hidden)]
pub mod harness;
mod helper;
pub mod host;
pub mod keep;
mod limits;
mod machine;
pub mod notify;
pub mod pidfd;
pub mod privs;
pub mod probe;
pub mod registry;
pub mod settings;
mod sharing;
pub mod slots;
pub mod state;
mod stdio;
pub mod storage;
pub mod sweep;
mod watchdog;

#[doc(hidden)]
pub use inventory;

pub use backend::Bind;
pub use error::{Error, Result};
pub use exec::Command;
pub use machine::{Machine, MachineBuilder};
