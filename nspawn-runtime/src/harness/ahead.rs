//! Booting the machines of upcoming modules ahead of need, so that a module's first test
//! usually finds its machine up.
//!
//! The runtime knows every selected test at start-up (the registry and the binary's filter),
//! and libtest runs them in name order, so the modules come in the order of their first
//! test's name. After each test takes its machine, the next modules in that order that nothing
//! has started are booted on threads of their own, a few at a time: as many as
//! `NSPAWN_BOOT_AHEAD` says, by default one per CPU (booting everything at once is slower
//! than booting just ahead). A boot ahead only takes a host-wide slot nobody waits
//! for, while half the cap stays free for other runs, and never stops another machine for it.
//! A machine booted ahead and never used (a run cut short) is stopped at exit like any other.

use std::sync::{LazyLock, Mutex};

use super::filter::Filter;
use super::sharing::{ahead_unused, boot_claimed, claim_ahead, unclaim_ahead, Key};
use super::test_info::{registered, Scope, TestInfo};
use crate::cleanup::slots::{self, Slot};
use crate::machine::registry::{self, InFlight};

/// One test of each module machine ([`Key`]) with selected tests, in the order libtest reaches them.
static ORDER: LazyLock<Vec<&'static TestInfo>> = LazyLock::new(|| {
    let filter = Filter::from_env();
    let mut tests: Vec<(String, &'static TestInfo)> = registered()
        .filter(|i| i.scope == Scope::Module && i.selected(&filter))
        .map(|i| (i.test_name(), i))
        .collect();
    tests.sort_by(|a, b| a.0.cmp(&b.0));
    let mut firsts: Vec<&'static TestInfo> = Vec::new();
    for (_, info) in tests {
        if !firsts.iter().any(|f| Key::of(f) == Key::of(info)) {
            firsts.push(info);
        }
    }
    firsts
});

/// One scheduling pass at a time, so that two cannot both see room for the same boot.
static SCHEDULING: Mutex<()> = Mutex::new(());

/// How many machines may be booted ahead and unused at once: by default one per CPU (a boot
/// keeps a CPU busy; measured on 2 CPUs, 8 modules: 2 ahead 1.5-1.7 s, 1 ahead 2.3-2.5 s,
/// 8 ahead 2.1-2.2 s).
fn depth() -> usize {
    crate::settings::lenient()
        .boot_ahead
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Starts the boots ahead there is room for.
pub(crate) fn schedule() {
    let depth = depth();
    // Under nextest each process runs one test: the next modules are other processes' to boot.
    if depth == 0 || registry::closing() || super::nextest::active() {
        return;
    }
    let _one = SCHEDULING.lock().unwrap_or_else(|p| p.into_inner());
    let mut room = depth.saturating_sub(ahead_unused());
    for info in ORDER.iter() {
        if room == 0 {
            break;
        }
        if !claim_ahead(info) {
            continue;
        }
        match slots::try_acquire_spare() {
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
