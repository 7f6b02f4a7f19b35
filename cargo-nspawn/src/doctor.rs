//! `cargo nspawn doctor`: how machines will run here, and what is missing.

use nspawn_runtime::backend;
use nspawn_runtime::chroot;
use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::cleanup::{records, slots};
use nspawn_runtime::host::{console, probe, tools};

use crate::error::CliError;

/// Prints one line per fact: backend, privileges, nspawn, network, chroots, inotify, cap,
/// machines.
pub fn report(ws: &Workspace) -> Result<(), CliError> {
    match backend::selected() {
        Ok((kind, why)) => println!("backend:    {kind} ({why})"),
        Err(e) => println!("backend:    none: {e}"),
    }
    let who = match (tools::is_root(), std::env::var("SUDO_USER")) {
        (true, Ok(user)) => format!("root under sudo (tests will run as {user})"),
        (true, Err(_)) => "root, not under sudo (tests run as root)".into(),
        (false, _) => "not root: tests run their binaries through sudo with the runner \
                       `cargo nspawn init` sets up, then drop back to you"
            .into(),
    };
    println!("privileges: {who}");
    match probe::nspawn_version() {
        Some(v) => println!(
            "nspawn:     systemd-nspawn {v}{}",
            if probe::nspawn_has_suppress_sync() {
                ", --suppress-sync available"
            } else {
                ""
            }
        ),
        None => println!("nspawn:     not installed (apt-get install systemd-container)"),
    }
    let dir = ws.chroots_dir();
    private_users(&dir);
    network();
    println!("chroots:    {}", dir.display());
    for def in ws.chroots()? {
        let state = chroot::status(&dir, &def).describe(&def.name);
        println!("  {:<10} {state}", def.name);
    }
    let cap = slots::cap();
    println!(
        "inotify:    fs.inotify.max_user_instances = {}",
        console::inotify_limit()
    );
    println!(
        "cap:        {} machines at once ({})",
        cap.machines, cap.reason
    );
    let records = records::Record::all();
    let kept = records.iter().filter(|r| r.kept).count();
    if tools::is_root() {
        println!(
            "machines:   {} running from tests, {kept} kept for debugging",
            records.len() - kept
        );
    } else {
        println!("machines:   only root can read the records of running machines");
    }
    Ok(())
}

/// Whether machines get a user namespace here, and why not.
fn private_users(chroots: &std::path::Path) {
    use nspawn_runtime::settings::PrivateUsers;
    let mode = nspawn_runtime::settings::lenient().private_users;
    if mode == PrivateUsers::No {
        println!("users:      privileged machines (NSPAWN_PRIVATE_USERS=no): their root is the host's root");
        return;
    }
    if !tools::is_root() {
        println!("users:      only root can check whether machines get a user namespace here");
        return;
    }
    let probe_dir = if chroots.is_dir() {
        chroots
    } else {
        std::path::Path::new("/")
    };
    match backend::private_users::why_not(probe_dir) {
        None => println!(
            "users:      a user namespace per machine: its root is an unprivileged host uid"
        ),
        Some(why) if mode == PrivateUsers::Yes => {
            println!("users:      none, and NSPAWN_PRIVATE_USERS=yes makes boots fail: {why}")
        }
        Some(why) => {
            println!("users:      privileged machines (their root is the host's root): {why}")
        }
    }
}

/// Whether the default network (`isolated`, and zones) can be made here, and what a crashed
/// run left of zones.
fn network() {
    let default = &nspawn_runtime::settings::lenient().network;
    let missing: Vec<&str> = [tools::IP, tools::NFT]
        .iter()
        .filter(|t| !tools::has(**t))
        .map(|t| t.package)
        .collect();
    let tools = if missing.is_empty() {
        "ip and nft present".to_string()
    } else {
        format!("missing for zones: apt-get install {}", missing.join(" "))
    };
    println!("network:    default {default}; {tools}");
    if tools::is_root() && missing.is_empty() {
        for line in nspawn_runtime::network::firewall::report() {
            println!("  {line}");
        }
    }
    if tools::is_root() {
        let stale = nspawn_runtime::network::stale();
        if !stale.is_empty() {
            println!(
                "  left by dead runs (cargo nspawn gc removes them): {}",
                stale.join("; ")
            );
        }
    }
}
