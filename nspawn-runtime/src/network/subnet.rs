//! The host-wide side of a zone: its /24 of `10.250.0.0/16`, its bridge and nft table names,
//! and an ownership record per zone under `/run/nspawn-rs/zones/`, so that the sweep can
//! remove a dead run's zones (their machines go with their network namespaces).
//!
//! A subnet is taken by creating its record with `O_EXCL`; one that overlaps a route of the
//! host (its own networks, or another run's bridge under another run directory), or whose
//! bridge exists, is skipped.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::privs::ThreadRoot;
use crate::host::process::ProcessId;
use crate::host::run_dir::private_dir;

/// The first two octets of every zone's subnet.
const BASE: [u8; 2] = [10, 250];

/// A zone's host-wide resources, as recorded for the sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ZoneRecord {
    /// The test process that made it.
    pub owner: ProcessId,
    /// The third octet of its subnet.
    pub index: u8,
    /// Whether this zone turned the host's IPv4 forwarding on (see `nat`).
    #[serde(default)]
    pub outside: bool,
}

impl ZoneRecord {
    /// The bridge on the host.
    pub(crate) fn bridge(&self) -> String {
        bridge_name(self.index)
    }

    /// The nft table of its filter and NAT.
    pub(crate) fn table(&self) -> String {
        format!("nspawn_z{}", self.index)
    }

    /// Address `host` of its subnet (1 is the host's, on the bridge).
    pub(crate) fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(BASE[0], BASE[1], self.index, host)
    }

    /// What marks the bridge (its alias) and the table (its comment) as this zone's: a run
    /// under another run directory may use the same names after this one is gone, and a
    /// sweep must not take those down.
    pub(crate) fn tag(&self) -> String {
        format!("nspawn-zone {} {}", self.owner.pid, self.owner.start)
    }

    /// The subnet, as `10.250.N.0/24`.
    pub(crate) fn cidr(&self) -> String {
        format!("{}/24", self.address(0))
    }

    /// Every zone record on the host.
    pub(crate) fn all() -> Vec<ZoneRecord> {
        record_files()
            .into_iter()
            .filter_map(|(_, _, parsed)| parsed)
            .collect()
    }

    /// Takes a free subnet for a zone of this process.
    pub(crate) fn allocate() -> Result<ZoneRecord> {
        let owner = ProcessId::current().ok_or_else(|| {
            Error::io(
                "reading this process's start time",
                std::io::Error::other("no /proc/self/stat"),
            )
        })?;
        let taken = host_routes();
        let dir = private_dir("zones")?;
        let _root = ThreadRoot::acquire()?;
        for index in 0..=255u8 {
            let record = ZoneRecord {
                owner,
                index,
                outside: false,
            };
            // Another run (under another run directory) may hold it without our record.
            let bridge = std::path::Path::new("/sys/class/net").join(bridge_name(index));
            if taken.iter().any(|route| route.overlaps(index)) || bridge.exists() {
                continue;
            }
            let text = toml::to_string(&record)
                .map_err(|e| Error::io("serializing a zone record", std::io::Error::other(e)))?;
            let created = create_new(
                &record_path_in(&dir, index),
                &temporary_in(&dir, &record),
                &text,
            );
            match created {
                Ok(()) => return Ok(record),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("writing a zone record in {}", dir.display()),
                        e,
                    ))
                }
            }
        }
        Err(Error::io(
            "finding a free subnet for a zone",
            std::io::Error::other(
                "all 256 subnets of 10.250.0.0/16 are taken by other zones or the host's routes; \
                 `cargo nspawn gc` removes zones of dead runs",
            ),
        ))
    }

    /// Rewrites the record (after `outside` changed), whole or not at all: a process killed
    /// meanwhile leaves the old record, which the sweep reads.
    pub(crate) fn save(&self) -> Result<()> {
        let text = toml::to_string(self)
            .map_err(|e| Error::io("serializing a zone record", std::io::Error::other(e)))?;
        let dir = private_dir("zones")?;
        Ok(crate::host::run_dir::write_whole(
            &record_path_in(&dir, self.index),
            &temporary_in(&dir, self),
            &text,
        )?)
    }

    /// The zone a bridge's alias (`tag`) names as `index`'s, for a record that could not be
    /// read: its owner, and a way out assumed (forwarding is then checked against the live
    /// zones' records).
    pub(crate) fn from_tag(index: u8, tag: &str) -> Option<ZoneRecord> {
        let owner = tag.strip_prefix("nspawn-zone ")?.parse().ok()?;
        Some(ZoneRecord {
            owner,
            index,
            outside: true,
        })
    }

    /// The indexes and paths of record files that do not parse (a process killed while it
    /// wrote one, before records were written whole).
    pub(crate) fn unreadable() -> Vec<(u8, PathBuf)> {
        record_files()
            .into_iter()
            .filter(|(_, _, parsed)| parsed.is_none())
            .map(|(index, path, _)| (index, path))
            .collect()
    }

    /// Temporary record files (`.N.PID.tmp`): a process killed between writing one and
    /// putting it in place leaves it.
    pub(crate) fn temporaries() -> Vec<PathBuf> {
        zone_files()
            .into_iter()
            .filter(|path| {
                let name = file_name(path);
                name.starts_with('.') && name.ends_with(".tmp")
            })
            .collect()
    }

    /// Removes the record: the subnet is free again.
    pub(crate) fn remove(&self) {
        if let (Ok(dir), Ok(_root)) = (private_dir("zones"), ThreadRoot::acquire()) {
            let _ = std::fs::remove_file(temporary_in(&dir, self));
            let _ = std::fs::remove_file(record_path_in(&dir, self.index));
        }
    }
}

/// A host-wide lock of the zones, `name.lock` under `/run/nspawn-rs/zones/`: `zones` while a
/// subnet is taken and its bridge made, or a dead run's zones are taken down (so that a sweep
/// never takes down a zone made meanwhile on a subnet it just freed); `forwarding` while IPv4
/// forwarding is turned on or off. Taken in that order when both are.
pub(crate) fn host_lock(name: &str) -> Result<Flock<std::fs::File>> {
    let path = private_dir("zones")?.join(format!("{name}.lock"));
    Ok(crate::host::run_dir::lock_file(
        &path,
        FlockArg::LockExclusive,
    )?)
}

/// Makes the program `cmd` starts hold `lock` too (it inherits the locked descriptor): the lock
/// is then released only when that program is gone as well. A program that makes a bridge or
/// a table for us finishes its work even if we are killed meanwhile; a sweep waits for it this
/// way, instead of sweeping before the thing it removes exists.
pub(crate) fn hand_down(cmd: &mut std::process::Command, lock: &Flock<std::fs::File>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = lock.as_raw_fd();
    // SAFETY: one fcntl on an open descriptor, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// The bridge of subnet `index`: ours by its prefix, within the 15 bytes of an interface name.
pub(crate) fn bridge_name(index: u8) -> String {
    format!("nspawn-z{index}")
}

fn record_path_in(dir: &std::path::Path, index: u8) -> PathBuf {
    dir.join(format!("{index}.toml"))
}

/// Every file under the zones' directory (records, hosts files, locks), read as root.
pub(crate) fn zone_files() -> Vec<PathBuf> {
    let Ok(dir) = private_dir("zones") else {
        return Vec::new();
    };
    let _root = ThreadRoot::acquire();
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// A path's file name, as text.
pub(crate) fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The record files on the host (`N.toml`), each with its index, and its record if it parses.
fn record_files() -> Vec<(u8, PathBuf, Option<ZoneRecord>)> {
    let _root = ThreadRoot::acquire();
    zone_files()
        .into_iter()
        .filter_map(|path| {
            let index = file_name(&path).strip_suffix(".toml")?.parse::<u8>().ok()?;
            let text = std::fs::read_to_string(&path).ok()?;
            Some((index, path, toml::from_str(&text).ok()))
        })
        .collect()
}

/// Where `record` is written before it takes its place: hidden from [`ZoneRecord::all`],
/// which reads `N.toml`, and the owner's own (two runs may try the same subnet at once).
fn temporary_in(dir: &std::path::Path, record: &ZoneRecord) -> PathBuf {
    dir.join(format!(".{}.{}.tmp", record.index, record.owner.pid))
}

/// Creates `path` with `text`, failing with `AlreadyExists` if it exists: written whole to
/// `temporary` first and linked into place (a link, unlike a rename, never replaces), so the
/// record is never seen empty.
fn create_new(
    path: &std::path::Path,
    temporary: &std::path::Path,
    text: &str,
) -> std::io::Result<()> {
    std::fs::write(temporary, text)?;
    let linked = std::fs::hard_link(temporary, path);
    let _ = std::fs::remove_file(temporary);
    linked
}

/// An IPv4 route of the host: destination and mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    destination: u32,
    mask: u32,
}

impl Route {
    /// Whether it overlaps `10.250.index.0/24` (a default route overlaps nothing we take).
    fn overlaps(&self, index: u8) -> bool {
        if self.mask == 0 {
            return false;
        }
        let ours = u32::from(Ipv4Addr::new(BASE[0], BASE[1], index, 0));
        let mask = self.mask & 0xffff_ff00;
        ours & mask == self.destination & mask
    }
}

/// The host's IPv4 routes (main table), from `/proc/net/route`.
fn host_routes() -> Vec<Route> {
    std::fs::read_to_string("/proc/net/route")
        .map(|text| parse_routes(&text))
        .unwrap_or_default()
}

/// `/proc/net/route` prints each address as the host-order integer of its network-order bytes.
fn parse_routes(text: &str) -> Vec<Route> {
    let address = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(Route {
                destination: address(fields.get(1)?)?,
                mask: address(fields.get(7)?)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_the_host_are_read_in_network_order() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                    br0\t0000FA0A\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[1].destination,
            u32::from(Ipv4Addr::new(192, 0, 2, 0))
        );
        assert_eq!(routes[1].mask, u32::from(Ipv4Addr::new(255, 255, 255, 0)));
        assert!(!routes[0].overlaps(3), "the default route takes nothing");
        assert!(!routes[1].overlaps(3));
        assert!(
            routes[2].overlaps(3),
            "a route to 10.250.0.0/16 takes every subnet"
        );
    }

    #[test]
    fn a_route_to_one_subnet_takes_only_that_one() {
        let route = Route {
            destination: u32::from(Ipv4Addr::new(10, 250, 7, 0)),
            mask: u32::from(Ipv4Addr::new(255, 255, 255, 0)),
        };
        assert!(route.overlaps(7));
        assert!(!route.overlaps(8));
        let wide = Route {
            destination: u32::from(Ipv4Addr::new(10, 0, 0, 0)),
            mask: u32::from(Ipv4Addr::new(255, 0, 0, 0)),
        };
        assert!(wide.overlaps(0) && wide.overlaps(255));
    }

    #[test]
    fn names_fit_an_interface_name() {
        let record = ZoneRecord {
            owner: ProcessId { pid: 1, start: 1 },
            index: 255,
            outside: false,
        };
        assert!(record.bridge().len() <= 15);
        assert_eq!(record.cidr(), "10.250.255.0/24");
        assert_eq!(record.address(1), Ipv4Addr::new(10, 250, 255, 1));
    }
}
