//! What makes sure nothing outlives a run, however it ends: ownership records, the host-wide
//! cap on machines, machines kept for debugging, the sweep of what crashed runs left, and the
//! watchdog that sweeps when the test process is killed.

pub(crate) mod keep;
pub mod records;
pub mod slots;
pub mod sweep;
pub(crate) mod watchdog;
