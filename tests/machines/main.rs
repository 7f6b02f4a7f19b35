//! The integration tests that need root, built chroots and real machines, and nothing more: no
//! process, host resource or host firewall of their own. One binary, a module per area; the
//! tests that do need one (killing test processes, exhausting inotify, changing the host's
//! firewall, leftovers of crashed runs, nextest, on-demand builds, the systemd backend) are
//! binaries of their own beside it (`tests/*.rs`).
//!
//! A test that runs this binary again names its tests with their module (`network::...`).

#[path = "../common/mod.rs"]
mod common;

mod agent;
#[cfg(feature = "tokio")]
mod async_tests;
mod call;
mod groups;
mod machine;
mod network;
mod power;
mod privileges;
mod profile;
mod sandbox;
mod sharing;
mod spans;
mod storage;
mod userns;
mod wait;
mod warm;
