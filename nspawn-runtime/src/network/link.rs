//! Links and addresses, with iproute2's `ip` run as root in a forked child: a zone's bridge
//! on the host, and a machine's `host0` (and further links) inside its network namespace.
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
use crate::error::{Error, HostError, Result};
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
    tools::run_with_input(&mut cmd, &script)?;
    Ok(())
}

/// Deletes bridge `name`; one that is already gone is no error.
pub(crate) fn delete_bridge(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    tools::run_with_input(&mut ip_batch(), &format!("link del {name}\n"))?;
    Ok(())
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

/// Gives the machine whose PID 1 is `leader` its address on `dev` (`host0`, or a further
/// link's `hostN`), and with a `gateway`, its default route.
pub(crate) fn configure_guest(
    leader: &PidFd,
    dev: &str,
    address: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    let mut script = format!(
        "addr add {address}/24 dev {dev}\n\
         link set {dev} up\n"
    );
    if let Some(gateway) = gateway {
        script.push_str(&format!("route add default via {gateway} dev {dev}\n"));
    }
    tools::run_with_input(&mut in_netns(ip_batch(), leader), &script)?;
    Ok(())
}

/// `cmd`, run in the network namespace of the machine whose PID 1 is `leader`, and in
/// nothing else of it.
fn in_netns(mut cmd: Command, leader: &PidFd) -> Command {
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
    cmd
}

/// The host's end of machine `machine`'s veth, a port of `bridge`: nspawn names it
/// `vb-<machine>`, shortened to 15 characters with the whole name as its altname. Found from
/// the host's side only: nothing the guest says (its `host0`'s peer index, which guest root
/// can point at any host interface through a veth of its own) picks the interface.
pub(crate) fn host_end(bridge: &str, machine: &str) -> Result<String> {
    let mut cmd = tools::command(IP.program);
    cmd.args(["-o", "link", "show", "master", bridge]);
    let out = tools::run(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = format!("vb-{machine}");
    text.lines()
        .find_map(|line| port_named(line, &wanted))
        .ok_or_else(|| {
            Error::io(
                "finding the host's end of a machine's veth",
                std::io::Error::other(format!(
                    "no port of {bridge} is {wanted}, by name or altname"
                )),
            )
        })
}

/// The interface of an `ip -o link` line if it is `wanted`, by name or altname:
/// `7: vb-nspawn-3U0ZM@if2: <...> ...\    altname vb-nspawn-31872-d7a84d8a`.
fn port_named(line: &str, wanted: &str) -> Option<String> {
    let name = line.split(": ").nth(1)?.split('@').next()?;
    let altnames = line
        .split(|c: char| c.is_whitespace() || c == '\\')
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == "altname" && w[1] == wanted);
    (name == wanted || altnames).then(|| name.to_string())
}

/// Puts host interface `port` (a further link's host end) on `bridge`, up.
pub(crate) fn enslave(port: &str, bridge: &str) -> Result<()> {
    let script = format!("link set dev {port} master {bridge}\nlink set dev {port} up\n");
    tools::run_with_input(&mut ip_batch(), &script)?;
    Ok(())
}

/// Sets host interface `name` up or down.
pub(crate) fn set_up(name: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    Ok(
        tools::run_with_input(&mut ip_batch(), &format!("link set dev {name} {state}\n"))
            .map(drop)?,
    )
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

/// Delay (with jitter) and loss on both ends of a machine's veth, so that each way gets
/// them; nothing of the kind when all are zero.
pub(crate) fn netem(
    (host_end, guest_end): (String, &str),
    leader: &PidFd,
    delay: std::time::Duration,
    jitter: std::time::Duration,
    loss_percent: f64,
) -> Result<()> {
    let clear = delay.is_zero() && jitter.is_zero() && loss_percent == 0.0;
    let args = |dev: &str| -> Vec<String> {
        let mut args: Vec<String> = [
            "qdisc",
            if clear { "del" } else { "replace" },
            "dev",
            dev,
            "root",
        ]
        .map(String::from)
        .to_vec();
        if !clear {
            let ms = |d: std::time::Duration| format!("{:.3}ms", d.as_secs_f64() * 1e3);
            args.extend(["netem".into(), "delay".into(), ms(delay), ms(jitter)]);
            args.extend(["loss".into(), format!("{loss_percent}%")]);
        }
        args
    };
    let tc = |dev: &str| {
        let mut cmd = tools::command(tools::TC.program);
        cmd.args(args(dev));
        privs::start_as_root(&mut cmd);
        cmd
    };
    for mut cmd in [tc(&host_end), in_netns(tc(guest_end), leader)] {
        match tools::run(&mut cmd) {
            Ok(_) => {}
            // Clearing what was never set.
            Err(HostError::Command { stderr, .. })
                if clear
                    && (stderr.contains("handle of zero") || stderr.contains("No such file")) => {}
            Err(HostError::Command { stderr, .. }) if stderr.contains("qdisc kind is unknown") => {
                return Err(Error::io(
                    "delaying or losing a machine's packets",
                    std::io::Error::other(
                        "this kernel has no netem queueing discipline (CONFIG_NET_SCH_NETEM; \
                         try `modprobe sch_netem`)",
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_port_is_known_by_its_name_or_altname() {
        let line = "22602: vb-nspawn-3U0ZM@if2: <UP> mtu 1500 master nspawn-z0 state DOWN\\    \
                    link/ether 32:60:19:63:ae:ac link-netnsid 0\\    altname vb-nspawn-31872-d7a84d8a";
        let found = super::port_named(line, "vb-nspawn-31872-d7a84d8a");
        assert_eq!(found.as_deref(), Some("vb-nspawn-3U0ZM"));
        assert_eq!(super::port_named(line, "vb-nspawn-31872-d7a84d8"), None);
        assert_eq!(
            super::port_named("5: vb-short@if2: <UP>", "vb-short").as_deref(),
            Some("vb-short")
        );
    }
}
