//! Booting the machines of upcoming modules ahead of need, so that a module's first test
//! usually finds its machine up.
//!
//! The runtime knows every selected test at start-up (the registry and the binary's filter),
//! and libtest runs them in name order, so the modules come in the order of their first
//! test's name. After each test takes its machine, the next modules in that order that nothing
//! has started are booted on threads of their own. A boot keeps a CPU busy, so at most one
//! boot per CPU is in flight, the boots tests wait for included (the first test of the run
//! starts the next module's boot beside its own), earliest-needed first; booting everything
//! at once is slower than booting just ahead (measured on 2 CPUs, 8 modules: 8 ahead at once
//! 2.1-2.2 s, 2 in flight 1.5-1.9 s). At most `NSPAWN_BOOT_AHEAD`
//! machines (by default two per CPU) are booted ahead and not yet taken. A boot ahead only
//! takes a host-wide slot nobody waits for, while half the cap stays free for other runs, and
//! never stops another machine for it. A machine booted ahead and never used (a run cut
//! short) is stopped at exit like any other.

use std::sync::Mutex;

use super::boot::AloneBoot;
use super::sharing::{boot_claimed, boots, claim_ahead, unclaim_ahead};
use super::test_info::TestInfo;
use super::upcoming;
use crate::cleanup::slots::{self, Slot};
use crate::machine::registry::{self, InFlight};

/// One scheduling pass at a time, so that two cannot both see room for the same boot.
static SCHEDULING: Mutex<()> = Mutex::new(());

/// How many machines may be booted ahead and unused at once: by default two per CPU.
fn depth() -> usize {
    crate::settings::lenient().boot_ahead.unwrap_or(2 * cpus())
}

/// How many boots may be in flight at once: one per CPU.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts the boots ahead there is room for.
pub(crate) fn schedule() {
    schedule_leaving(0);
}

/// Starts the boots ahead there is room for beside a test's own boot, which has not taken its
/// host-wide slot yet.
pub(crate) fn beside_own_boot() {
    schedule_leaving(1);
}

/// Starts the boots ahead there is room for, leaving `reserved` slots for boots of this
/// process about to take theirs.
fn schedule_leaving(reserved: usize) {
    let depth = depth();
    // Under nextest each process runs one test: the next modules are other processes' to boot.
    if depth == 0 || registry::closing() || super::nextest::active() {
        return;
    }
    let _one = SCHEDULING.lock().unwrap_or_else(|p| p.into_inner());
    let (modules_booting, unused) = boots();
    let booting = modules_booting + AloneBoot::in_flight();
    let mut room = depth
        .saturating_sub(unused)
        .min(cpus().saturating_sub(booting));
    for &info in upcoming::modules() {
        if room == 0 {
            break;
        }
        if !claim_ahead(info) {
            continue;
        }
        match slots::try_acquire_spare(reserved) {
            Ok(Some(slot)) => {
                start(info, slot);
                room -= 1;
            }
            _ => {
                // No spare slot now: the next test's start looks again.
                unclaim_ahead(info);
                break;
            }
        }
    }
}

fn start(info: &'static TestInfo, slot: Slot) {
    let in_flight = InFlight::begin();
    let spawned = std::thread::Builder::new()
        .name("nspawn-ahead".into())
        .spawn(move || {
            let _in_flight = in_flight;
            // Once it is up, one of its tests may take it at once, leaving room for the next.
            if boot_claimed(info, slot) {
                schedule();
            }
        });
    if spawned.is_err() {
        // Nothing will boot it: leave it to its first test.
        unclaim_ahead(info);
    }
}
