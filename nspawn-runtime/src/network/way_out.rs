//! Proof that a zone's way out is open, taken when its first machine that reaches out is up.
//!
//! Reading the host's rules cannot tell: a forward chain may drop in its last rule, jump to
//! chains of its own, or belong to a tool we do not know. So a packet is sent from the
//! machine's network namespace towards the outside (UDP to [`PROBE`], an address reserved for
//! documentation, RFC 5737), and the zone's table counts it in a forward chain that runs after
//! every other one (priority [`LAST`]) and drops it there: it never leaves the host. Counted,
//! every forward filter of the host let it through; not counted, one dropped it, and the boot
//! fails saying so, rather than a machine whose `apt-get update` fails and exits 0.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::pidfd::PidFd;
use crate::host::privs::{self, ThreadRoot};
use crate::host::tools::{self, IP, NFT};

use super::firewall;
use super::subnet::ZoneRecord;

/// Where the probe goes: TEST-NET-3, never a real peer.
pub(crate) const PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 9);
/// The probe chain's priority on the forward hook: after firewalld (`filter + 10`), Docker's
/// and ufw's iptables (`filter`) and any host table that follows the usual priorities.
pub(crate) const LAST: i32 = 1_000_000;
// firewalld's forward chain is at `filter + 10`: the probe's must come after it.
const _: () = assert!(LAST > 10);

/// The named counter in the zone's table.
pub(crate) const COUNTER: &str = "way_out";

/// How long a probe may take to be counted before the way out counts as blocked. Only a
/// blocked way out waits for it; an open one is counted within a millisecond or so.
const PATIENCE: Duration = Duration::from_secs(5);
const RESEND: Duration = Duration::from_millis(100);

/// The zone table's part that counts and drops the probe (nft syntax, inside the table).
pub(crate) fn nft_rules(bridge: &str) -> String {
    let (address, port) = (PROBE.ip(), PROBE.port());
    format!(
        "counter {COUNTER} {{ }}\n\
         chain way_out {{\n\
           type filter hook forward priority {LAST}; policy accept;\n\
           iifname \"{bridge}\" ip daddr {address} udp dport {port} counter name \"{COUNTER}\" drop\n\
         }}\n"
    )
}

/// Fails unless a packet from the machine whose PID 1 is `leader` passes the host's forward
/// filters towards the outside. A host with no route out is not a firewall: it passes, with
/// a warning.
pub(crate) fn check(zone: &ZoneRecord, leader: &PidFd) -> Result<()> {
    let socket = socket_in(leader)?;
    // A zone kept for the next isolated machine has counted its last machine's probes.
    let before = counted(zone)?;
    let start = Instant::now();
    loop {
        // A send can fail while the machine's neighbour entry for the gateway is resolved.
        let _ = socket.send_to(b"nspawn way-out probe", PROBE);
        if counted(zone)? > before {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            break;
        }
        std::thread::sleep(RESEND);
    }
    if !host_routes_out() {
        // Not the firewall's doing, and not silent either: on stderr, past the test harness.
        crate::report::announce(&format!(
            "the host has no route to {}: machines that reach out will find nothing",
            PROBE.ip()
        ));
        return Ok(());
    }
    Err(blocked(zone))
}

/// A UDP socket in the machine's network namespace, made by a thread of its own that enters
/// it as root and ends: the socket stays in that namespace, whichever thread sends on it.
fn socket_in(leader: &PidFd) -> Result<UdpSocket> {
    let pidfd = leader.raw();
    let made = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _root = ThreadRoot::acquire()?;
                // SAFETY: setns with a pidfd we hold for the call; it changes only this
                // thread's network namespace, and the thread ends right after.
                if unsafe { libc::setns(pidfd, libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::io(
                        "entering the machine's network namespace",
                        std::io::Error::last_os_error(),
                    ));
                }
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .map_err(|e| Error::io("making a socket in the machine", e))
            })
            .join()
    });
    made.unwrap_or_else(|_| {
        Err(Error::io(
            "making a socket in the machine",
            std::io::Error::other("the thread that made it panicked"),
        ))
    })
}

/// Packets the zone's probe counter has seen.
fn counted(zone: &ZoneRecord) -> Result<u64> {
    let mut cmd = tools::command(NFT.program);
    cmd.args(["list", "counter", "inet", &zone.table(), COUNTER]);
    privs::start_as_root(&mut cmd);
    let out = tools::run(&mut cmd)?;
    Ok(packets(&String::from_utf8_lossy(&out.stdout)))
}

/// The `packets N` of an `nft list counter` listing (0 if absent).
fn packets(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "packets")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(0)
}

fn host_routes_out() -> bool {
    let mut cmd = tools::command(IP.program);
    cmd.args(["-4", "route", "get", &PROBE.ip().to_string()]);
    tools::run(&mut cmd).is_ok()
}

/// What blocked the probe, as far as the host's chains tell, and what lets it through.
fn blocked(zone: &ZoneRecord) -> Error {
    let context = "checking the machine's way out";
    let chains = firewall::host_chains();
    if let Some(remedy) = firewall::known_blocker(&chains) {
        return Error::io(context, std::io::Error::other(remedy));
    }
    // firewalld, where it runs, is the likeliest cause: its command comes first.
    let firewalld = firewall::firewalld_remedy(&chains)
        .map(|remedy| format!("{remedy}. "))
        .unwrap_or_default();
    let found = firewall::forward_chains(&chains);
    let suspects = if found.is_empty() {
        "no nft forward chain of the host's is visible: an iptables-legacy FORWARD rule, or the \
         machine's own firewall"
            .to_string()
    } else {
        found.join(", ")
    };
    Error::io(
        context,
        std::io::Error::other(format!(
            "{firewalld}a packet from the machine to the outside ({PROBE}/udp, counted and dropped by \
             nspawn's own last forward chain) never got past the host's forward filters in {} \
             s: its way out is blocked. Forward chains on this host: {suspects}. Let nspawn's \
             bridges through the one that drops it, for example `nft insert rule <family> \
             <table> <chain> iifname \"nspawn-z*\" accept; nft insert rule <family> <table> \
             <chain> oifname \"nspawn-z*\" accept`, or `iptables -I FORWARD -i nspawn-z+ -j \
             ACCEPT; iptables -I FORWARD -o nspawn-z+ -j ACCEPT` (or set NSPAWN_NETWORK=host). \
             Zone bridge: {}",
            PATIENCE.as_secs(),
            zone.bridge()
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_listing_gives_its_packets() {
        let listing =
            "table inet nspawn_z3 {\n\tcounter way_out {\n\t\tpackets 7 bytes 140\n\t}\n}\n";
        assert_eq!(packets(listing), 7);
        assert_eq!(packets("table inet nspawn_z3 {\n}\n"), 0);
    }

    #[test]
    fn the_probe_chain_runs_after_the_usual_filters_and_drops_only_the_probe() {
        let rules = nft_rules("nspawn-z3");
        assert!(rules.contains(&format!("priority {LAST};")), "{rules}");
        assert!(
            rules.contains("iifname \"nspawn-z3\" ip daddr 203.0.113.1 udp dport 9"),
            "{rules}"
        );
    }
}
