//! [`Machine`]: one ephemeral, systemd-booted container, booted with a [`MachineBuilder`];
//! commands run in it ([`Command`]) and files read and written through its agent.
//!
//! - `builder`: the options, and the boot;
//! - `lifecycle`: the running machine, its agent, keeping and stopping it;
//! - `command`, `stdio`: commands, and their output;
//! - `call`: the test binary's own functions, run inside;
//! - `files`: file calls;
//! - `asynchronous`: the calls as `async fn`s (feature `tokio`);
//! - `wait`: waiting for units, sockets and the system, and their state;
//! - `registry`: every machine of this process, stopped at exit and on signals;
//! - `attach`: handles on machines another process of the run owns (nextest).

#[cfg(feature = "tokio")]
mod asynchronous;
mod attach;
mod builder;
mod call;
mod command;
mod files;
mod lifecycle;
pub(crate) mod registry;
mod stdio;
mod verbs;
mod wait;

#[cfg(feature = "tokio")]
pub use asynchronous::AsyncMachine;
pub use attach::Published;
pub use builder::MachineBuilder;
pub use call::{Call, DEFAULT_CALL_TIMEOUT};
pub use command::Command;
pub use lifecycle::Machine;
pub use stdio::DEFAULT_OUTPUT_LIMIT;
pub use wait::UnitState;
