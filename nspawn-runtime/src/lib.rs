//! The runtime of the `nspawn` test framework: master chroots, ephemeral machines booted from
//! them, and the privilege helper.
//!
//! Users depend on the `nspawn` facade crate; this crate's public items are also the building
//! blocks of a project's own xtask (see [`chroot::build`]).
//!
//! The folders are layers, each using only those below it (`tests/layers.rs` checks it):
//!
//! - `harness/`: what `#[nspawn::test]` calls: test descriptions, sharing a machine per module;
//! - `machine/`: a [`Machine`], its builder, commands, files, and the machines of this process;
//! - `backend/`: booting with `systemd-nspawn`, directly or as a systemd unit;
//! - `agent/`: the process inside each machine that runs commands and opens files;
//! - `cleanup/`: what makes sure nothing outlives a run: records, slots, sweep, watchdog;
//! - `network/`: zones: bridges, addresses, NAT, and the hosts files of their machines;
//! - `chroot/`: declarations, storage, building master chroots;
//! - `host/`: the host's facilities: privileges, cgroups, pidfds, tools, console logs;
//! - and at the bottom, files every layer may use: [`error`], [`settings`], [`report`].

mod agent;
pub mod backend;
pub mod chroot;
pub mod cleanup;
mod deadline;
pub mod error;
#[doc(hidden)]
pub mod harness;
pub mod host;
mod machine;
pub mod network;
pub mod report;
pub mod settings;
mod text;

#[doc(hidden)]
pub use inventory;

pub use error::{Error, Result};
pub use harness::{Group, RoleSetup};
#[cfg(feature = "tokio")]
pub use machine::AsyncMachine;
pub use machine::{
    Call, Command, LinkFaults, Machine, MachineBuilder, Port, Remote, UnitState,
    DEFAULT_CALL_TIMEOUT, DEFAULT_OUTPUT_LIMIT,
};
pub use network::Network;

/// Building blocks the project's own tests and benchmarks reach for; not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::host::cgroup::MachineCgroup;
    pub use crate::host::pidfd::PidFd;
}
