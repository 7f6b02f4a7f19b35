//! Networks of machines: `host` (the host's), `private` (loopback only), and zones: bridges
//! on the host that the machines asking for the same zone share, each machine with its own
//! address, its peers' names in `/etc/hosts`, and, where asked, a way out through the host.
//! `isolated` is a zone of one machine with a way out.
//!
//! Everything a zone makes on the host (bridge, nft table, forwarding) is recorded and
//! removed by its process at the end, or by the sweep after a crash. A machine's own veth
//! goes with its network namespace.

pub mod firewall;
mod hosts;
mod link;
mod nat;
mod subnet;
mod way_out;
mod zone;

pub use nspawn_config::NetworkSpec as Network;
pub use zone::stale;
pub(crate) use zone::{leave_all, set_isolated_to_come, sweep, Hosts, Joining, Membership};
