//! Booting the machines a test asks for: one, or a group booted in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::test_info::TestInfo;
use crate::cleanup::slots::Slot;
use crate::machine::Machine;

/// The machines of one test: one, or a group in the order of the test's parameters.
pub(crate) type Group = Vec<Machine>;

/// Boots of machines of tests' own (`scope = "test"`) in flight.
static ALONE_BOOTING: AtomicUsize = AtomicUsize::new(0);

/// A boot of a test's own machines, counted while it lasts (boots ahead leave room for it).
pub(super) struct AloneBoot(());

impl AloneBoot {
    pub(super) fn begin() -> AloneBoot {
        ALONE_BOOTING.fetch_add(1, Ordering::SeqCst);
        AloneBoot(())
    }

    /// How many are in flight.
    pub(super) fn in_flight() -> usize {
        ALONE_BOOTING.load(Ordering::SeqCst)
    }
}

impl Drop for AloneBoot {
    fn drop(&mut self) {
        ALONE_BOOTING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Boots what a test asks for, saying so on stderr with the boot time. With `spare`, a slot
/// taken for a boot ahead of any test (a single machine only).
pub(crate) fn boot(info: &TestInfo, purpose: &str, spare: Option<Slot>) -> crate::Result<Group> {
    if info.machines.is_empty() {
        return boot_one(info, purpose, spare, None).map(|m| vec![m]);
    }
    boot_group(info, purpose)
}

/// Boots a test's one machine: with `spare`, ahead of need on that slot; with `tree`, from a
/// set-up layer's tree (writable or not) instead of its chroot's own.
pub(crate) fn boot_one(
    info: &TestInfo,
    purpose: &str,
    spare: Option<Slot>,
    tree: Option<crate::chroot::layer::LayerRoot>,
) -> crate::Result<Machine> {
    let started = std::time::Instant::now();
    let ahead = spare.is_some();
    let networks = info.networks();
    let on = match networks.first {
        crate::network::Network::Host => String::new(),
        _ => format!(" on {networks}"),
    };
    let mut builder = Machine::builder(info.chroot)
        .workspace(info.manifest_dir)
        .networks(&networks);
    if let Some(tree) = tree {
        builder = builder.tree(tree);
    }
    let machine = match spare {
        Some(slot) => builder.start_on(slot)?,
        None => builder.start()?,
    };
    crate::report::announce(&format!(
        "booted {} ({}){on} for {purpose}{} in {}",
        machine.name(),
        info.chroot,
        if ahead { ", ahead of its tests," } else { "" },
        boot_time(&machine, started.elapsed())
    ));
    Ok(machine)
}

/// A machine's boot time, and apart from it, what came before it (a chroot built on demand, a
/// wait for a slot) when that took long enough to count: the run's summary averages boots only.
fn boot_time(machine: &Machine, total: std::time::Duration) -> String {
    let boot = machine.boot_time().unwrap_or(total);
    let before = total.saturating_sub(boot);
    let mut line = format!("{:.2} s", boot.as_secs_f64());
    if before >= std::time::Duration::from_millis(500) {
        line.push_str(&format!(
            " ({:.1} s before it: its chroot's build, or a wait for a free slot)",
            before.as_secs_f64()
        ));
    }
    line
}

/// Boots a group's machines in parallel (each takes its host-wide slot), each knowing the
/// others by their roles. If one fails, the others are stopped and the first error returned.
fn boot_group(info: &TestInfo, purpose: &str) -> crate::Result<Group> {
    let started = std::time::Instant::now();
    let network = info.networks();
    let group = group_id();
    let booted: Vec<crate::Result<Machine>> = std::thread::scope(|scope| {
        let boots: Vec<_> = info
            .machines
            .iter()
            .map(|&(role, chroot)| {
                let host_name = super::group::host_name(role);
                let networks = info.networks_of(role);
                let mut builder = Machine::builder(chroot)
                    .workspace(info.manifest_dir)
                    .networks(networks.as_ref().unwrap_or(&network))
                    .alias(role)
                    .arg(format!("--hostname={host_name}"))
                    .group(group);
                if host_name != role {
                    builder = builder.alias(&host_name);
                }
                scope.spawn(move || networks.and_then(|_| builder.start()))
            })
            .collect();
        boots
            .into_iter()
            .map(|boot| boot.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // Dropping the machines that did boot stops them.
    let group: Group = booted.into_iter().collect::<crate::Result<_>>()?;
    let roles: Vec<String> = info
        .machines
        .iter()
        .zip(&group)
        .map(|(&(role, chroot), m)| {
            let own = info.role_networks.iter().find(|(r, _)| *r == role);
            let on = own.map_or(String::new(), |(_, networks)| format!(", on {networks}"));
            format!("{role}={} ({chroot}{on})", m.name())
        })
        .collect();
    crate::report::announce(&format!(
        "booted {} on {network} for {purpose} in {:.2} s",
        roles.join(", "),
        started.elapsed().as_secs_f64()
    ));
    Ok(group)
}

/// A group's identity among this process's groups.
fn group_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
