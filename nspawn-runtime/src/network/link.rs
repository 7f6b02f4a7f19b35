//! Links and addresses, with iproute2's `ip` run as root in a forked child: a zone's bridge
//! on the host, and a machine's `host0` inside its network namespace.
//!
//! The machine's side is configured from the host, entering only the machine's network
//! namespace (through the leader's pidfd, so a reused PID cannot redirect it), with the
//! host's own `ip`: nothing of the guest's file system runs, and the guest needs no
//! iproute2 and no networkd.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::Command;

use std::fs::File;

use nix::fcntl::Flock;

use super::subnet::hand_down;
use crate::error::Result;
use crate::host::pidfd::PidFd;
use crate::host::privs;
use crate::host::tools::{self, IP};

/// `ip -batch -`, as root.
fn ip_batch() -> Command {
    let mut cmd = tools::command(IP.program);
    cmd.args(["-batch", "-"]);
    privs::start_as_root(&mut cmd);
    cmd
}

/// Makes bridge `name`, marked with `tag` (its alias), with the host's address `host/24` on
/// it, up; `ip` holds `zones` (see [`hand_down`]).
pub(crate) fn create_bridge(
    name: &str,
    tag: &str,
    host: Ipv4Addr,
    zones: &Flock<File>,
) -> Result<()> {
    let script = format!(
        "link add {name} type bridge\n\
         link set dev {name} alias \"{tag}\"\n\
         addr add {host}/24 dev {name}\n\
         link set {name} up\n"
    );
    let mut cmd = ip_batch();
    hand_down(&mut cmd, zones);
    tools::run_with_input(&mut cmd, &script).map(drop)
}

/// Deletes bridge `name`; one that is already gone is no error.
pub(crate) fn delete_bridge(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    tools::run_with_input(&mut ip_batch(), &format!("link del {name}\n")).map(drop)
}

/// The alias of interface `name` (empty if it has none or does not exist).
pub(crate) fn alias(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new("/sys/class/net")
            .join(name)
            .join("ifalias"),
    )
    .map(|a| a.trim().to_string())
    .unwrap_or_default()
}

/// Whether the host has interface `name`.
pub(crate) fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Gives the machine whose PID 1 is `leader` its address on `host0`, and with a
/// `gateway`, its default route.
pub(crate) fn configure_guest(
    leader: &PidFd,
    address: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    let mut script = format!(
        "addr add {address}/24 dev host0\n\
         link set host0 up\n"
    );
    if let Some(gateway) = gateway {
        script.push_str(&format!("route add default via {gateway} dev host0\n"));
    }
    let mut cmd = ip_batch();
    let pidfd = leader.raw();
    // SAFETY: one raw system call between fork and exec, on the child's only thread.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(pidfd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    tools::run_with_input(&mut cmd, &script).map(drop)
}

/// The subnet indexes of the zone bridges on the host (`nspawn-zN`).
pub(crate) fn bridges() -> Vec<u8> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("nspawn-z")?
                .parse()
                .ok()
        })
        .collect()
}
