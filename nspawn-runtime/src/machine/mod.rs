//! [`Machine`]: one ephemeral, systemd-booted container, booted with a [`MachineBuilder`];
//! commands run in it ([`Command`]) and files read and written through its agent.
//!
//! - `builder`: the options, and the boot;
//! - `lifecycle`: the running machine, its agent, keeping and stopping it;
//! - `power`: reboot, power off, crash and power on, on the same disk;
//! - `command`, `stdio`: commands, and their output;
//! - `console`: waiting for a line on the console;
//! - `call`: the test binary's own functions, run inside;
//! - `spin`: a short busy wait for a quick call's outcome;
//! - `files`: file calls;
//! - `tree`: directories copied in and out;
//! - `faults`: network faults: a link blocked, cut between two machines, delayed or lossy;
//! - `asynchronous`: the calls as `async fn`s (feature `tokio`);
//! - `units`: systemd units of the system and of users: state, properties, waits;
//! - `wait`: waiting for sockets and the system, packages and users;
//! - `port`: waiting for a TCP port, from inside, from another machine or the test process;
//! - `registry`: every machine of this process, stopped at exit and on signals;
//! - `attach`: handles on machines another process of the run owns (nextest).

#[cfg(feature = "tokio")]
mod asynchronous;
mod attach;
mod builder;
mod call;
mod command;
mod console;
mod faults;
mod files;
mod lifecycle;
mod port;
mod power;
pub(crate) mod registry;
mod spin;
mod stdio;
mod tree;
mod units;
mod verbs;
mod wait;

#[cfg(feature = "tokio")]
pub use asynchronous::AsyncMachine;
pub use attach::Published;
pub use builder::MachineBuilder;
pub use call::{Call, DEFAULT_CALL_TIMEOUT};
pub use command::Command;
pub use faults::LinkFaults;
pub use lifecycle::Machine;
pub use port::{Port, Remote};
pub use stdio::DEFAULT_OUTPUT_LIMIT;
pub use units::UnitState;
