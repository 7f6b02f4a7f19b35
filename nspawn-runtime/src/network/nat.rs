//! A zone's packet filter and NAT: one nft table of its own per zone (`inet nspawn_zN`), so
//! that the host's own rules are never touched and removing the table removes everything.
//!
//! The table's forward chain keeps a zone to itself: traffic within the bridge passes,
//! machines in the `outside` set reach out (masqueraded as the host) and get their answers,
//! everything else forwarded to or from the bridge is dropped (another zone, the host's
//! other networks, and anybody routing through the host to the zone). The test process
//! reaches the machines directly: that is the host's own traffic, not forwarded.
//!
//! The host itself is walled off too. Its input chain drops what the zone's machines send to
//! the host (a service listening on `0.0.0.0` or `::` would otherwise answer at the bridge's
//! addresses), but for answers to the host's own connections and IPv6 neighbour discovery.
//! Its output chain lets only root and the test's user open connections to the zone, so
//! another local user cannot reach a service in a machine.
//!
//! A last forward chain counts and drops the probe that proves a way out open (see
//! `super::way_out`).
//!
//! Reaching out needs the host's IPv4 forwarding on. If it was off, the first zone that needs
//! it turns it on and leaves a marker; when no zone that needed it is left (at the end of the
//! run, or by the sweep after a crash) it is turned off again.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use super::subnet::{hand_down, ZoneRecord};
use super::way_out;
use crate::error::{Error, HostError, Result};
use crate::host::privs::{self, ThreadRoot};
use crate::host::tools::{self, NFT};

const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";
/// That a zone turned forwarding on, and the lock of the decision: in `/run`, root's, one for
/// the host (not in a run directory: forwarding is the host's).
const FORWARDING_MARKER: &str = "/run/nspawn-rs-forwarding-was-off";
const FORWARDING_LOCK: &str = "/run/nspawn-rs-forwarding.lock";

fn nft() -> std::process::Command {
    let mut cmd = tools::command(NFT.program);
    cmd.args(["-f", "-"]);
    privs::start_as_root(&mut cmd);
    cmd
}

/// Installs the zone's table; `nft` holds `zones` (see [`hand_down`]).
pub(crate) fn install(zone: &ZoneRecord, zones: &Flock<std::fs::File>) -> Result<()> {
    let (table, bridge, cidr) = (zone.table(), zone.bridge(), zone.cidr());
    let tag = zone.tag();
    let users = match privs::dropped_user() {
        Some((uid, _)) if uid != 0 => format!("0, {uid}"),
        _ => "0".to_string(),
    };
    let script = format!(
        "table inet {table} {{\n\
           comment \"{tag}\"\n\
           set outside {{ type ipv4_addr; }}\n\
           chain forward {{\n\
             type filter hook forward priority filter; policy accept;\n\
             iifname \"{bridge}\" oifname \"{bridge}\" accept\n\
             iifname \"{bridge}\" ip saddr @outside accept\n\
             oifname \"{bridge}\" ip daddr @outside ct state established,related accept\n\
             iifname \"{bridge}\" drop\n\
             oifname \"{bridge}\" drop\n\
           }}\n\
           chain input {{\n\
             type filter hook input priority filter; policy accept;\n\
             iifname \"{bridge}\" ct state established,related accept\n\
             iifname \"{bridge}\" icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
             iifname \"{bridge}\" drop\n\
           }}\n\
           chain output {{\n\
             type filter hook output priority filter; policy accept;\n\
             oifname \"{bridge}\" meta l4proto {{ tcp, udp }} ct state new meta skuid != {{ {users} }} drop\n\
           }}\n\
           chain postrouting {{\n\
             type nat hook postrouting priority srcnat; policy accept;\n\
             ip saddr @outside ip daddr != {cidr} masquerade\n\
           }}\n\
           {way_out}\
         }}\n",
        way_out = way_out::nft_rules(&bridge),
    );
    let mut cmd = nft();
    hand_down(&mut cmd, zones);
    tools::run_with_input(&mut cmd, &script)?;
    Ok(())
}

/// Whether the zone's table exists and is this zone's (its comment is the zone's tag).
pub(crate) fn is_ours(zone: &ZoneRecord) -> bool {
    let mut cmd = tools::command(NFT.program);
    cmd.args(["list", "table", "inet", &zone.table()]);
    privs::start_as_root(&mut cmd);
    tools::run(&mut cmd).is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout).contains(&format!("comment \"{}\"", zone.tag()))
    })
}

/// Removes the zone's tables, its bridge table too if a cut made it; one that is already
/// gone is no error.
pub(crate) fn remove(zone: &ZoneRecord) -> Result<()> {
    // Adding a table that exists does nothing: the bridge table's delete always succeeds, in
    // the same transaction.
    let table = zone.table();
    let script = format!(
        "add table bridge {table}\ndelete table bridge {table}\ndelete table inet {table}\n"
    );
    match tools::run_with_input(&mut nft(), &script) {
        Err(HostError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        other => Ok(other.map(drop)?),
    }
}

/// Lets the machine at `address` reach out, or stops it (`allow` false).
pub(crate) fn outside(zone: &ZoneRecord, address: Ipv4Addr, allow: bool) -> Result<()> {
    let verb = if allow { "add" } else { "delete" };
    let script = format!(
        "{verb} element inet {} outside {{ {address} }}\n",
        zone.table()
    );
    tools::run_with_input(&mut nft(), &script)?;
    Ok(())
}

/// Cuts the link between the machines at `a` and `b` of the zone, both ways, or mends it
/// (`cut` false). Traffic between two ports of a bridge is not routed: the rule is in a
/// `bridge` table of the zone's own, made at the first cut, removed with the zone's.
pub(crate) fn cut(zone: &ZoneRecord, a: Ipv4Addr, b: Ipv4Addr, cut: bool) -> Result<()> {
    let table = zone.table();
    let verb = if cut { "add" } else { "delete" };
    // Each line is idempotent: the table, set and chain are made at the first cut, and the
    // one rule is written afresh.
    let script = format!(
        "add table bridge {table}\n\
         add set bridge {table} cut {{ type ipv4_addr . ipv4_addr; }}\n\
         add chain bridge {table} forward {{ type filter hook forward priority filter; policy accept; }}\n\
         flush chain bridge {table} forward\n\
         add rule bridge {table} forward ip saddr . ip daddr @cut drop\n\
         {verb} element bridge {table} cut {{ {a} . {b}, {b} . {a} }}\n"
    );
    match tools::run_with_input(&mut nft(), &script) {
        // Mending a link that was not cut.
        Err(HostError::Command { stderr, .. }) if !cut && stderr.contains("No such file") => Ok(()),
        other => Ok(other.map(drop)?),
    }
}

/// Turns the host's IPv4 forwarding on for a zone that reaches out, marking it if it was off.
pub(crate) fn need_forwarding() -> Result<()> {
    let _lock = forwarding_lock()?;
    let _root = ThreadRoot::acquire()?;
    if read_forwarding()? {
        return Ok(());
    }
    let marker = marker();
    std::fs::write(
        &marker,
        "IPv4 forwarding was off before nspawn turned it on\n",
    )
    .map_err(|e| Error::io(format!("writing {}", marker.display()), e))?;
    std::fs::write(FORWARDING, "1")
        .map_err(|e| Error::io(format!("turning IPv4 forwarding on ({FORWARDING})"), e))
}

/// Turns forwarding off again if a zone turned it on and no zone is left on the host. The
/// zones are read under the lock: a zone records that it reaches out before it takes the lock
/// to turn forwarding on, so either it is seen here or it turns forwarding on again after.
///
/// Forwarding is the host's, not a run's: runs under other run directories (whose records
/// we do not see) may need it too. So the marker and the lock are host-wide, and while any
/// zone bridge of anybody's stands (ours is gone by now), it stays on: the last zone to go,
/// whichever run it is of, turns it off.
pub(crate) fn release_forwarding() {
    let Ok(_lock) = forwarding_lock() else {
        return;
    };
    let live = ZoneRecord::all();
    let Ok(_root) = ThreadRoot::acquire() else {
        return;
    };
    let marker = marker();
    let others = !super::link::bridges().is_empty();
    if !marker.exists() || others || live.iter().any(|z| z.outside && z.owner.is_alive()) {
        return;
    }
    if std::fs::write(FORWARDING, "0").is_ok() {
        let _ = std::fs::remove_file(&marker);
    }
}

/// The subnet indexes of the zone tables on the host (`inet nspawn_zN`).
pub(crate) fn tables() -> Vec<u8> {
    let mut cmd = tools::command(NFT.program);
    cmd.args(["list", "tables", "inet"]);
    privs::start_as_root(&mut cmd);
    let Ok(out) = tools::run(&mut cmd) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet nspawn_z")?.parse().ok())
        .collect()
}

/// Whether a marker says forwarding was turned on by a zone.
pub(crate) fn marked() -> bool {
    let marker = marker();
    let Ok(_root) = ThreadRoot::acquire() else {
        return false;
    };
    marker.exists()
}

fn read_forwarding() -> Result<bool> {
    std::fs::read_to_string(FORWARDING)
        .map(|v| v.trim() != "0")
        .map_err(|e| Error::io(format!("reading {FORWARDING}"), e))
}

/// Host-wide, whatever the run directory: see [`release_forwarding`].
fn marker() -> PathBuf {
    PathBuf::from(FORWARDING_MARKER)
}

fn forwarding_lock() -> Result<Flock<std::fs::File>> {
    Ok(crate::host::run_dir::lock_file(
        Path::new(FORWARDING_LOCK),
        nix::fcntl::FlockArg::LockExclusive,
    )?)
}
