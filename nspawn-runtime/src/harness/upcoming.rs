//! What the run has still to boot, from the registry of tests and the binary's filter: the
//! module machines in the order libtest reaches them (for boots ahead), how many isolated
//! machines are still to come (so that no more idle isolated zones are kept than will be
//! used), and how many machines of their own a module's tests take (a set-up layer pays
//! from the second).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use super::filter::Filter;
use super::sharing::{not_started, Key};
use super::test_info::{registered, Scope, TestInfo};
use crate::network::Network;

/// One test of each module machine ([`Key`]) with selected tests, in the order libtest
/// reaches them (name order).
static MODULES: LazyLock<Vec<&'static TestInfo>> = LazyLock::new(|| {
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

/// Selected tests with an isolated machine of their own that have not begun.
static ALONE_TO_COME: LazyLock<AtomicUsize> = LazyLock::new(|| {
    let filter = Filter::from_env();
    AtomicUsize::new(
        registered()
            .filter(|i| i.scope == Scope::Test && i.selected(&filter) && isolated(i))
            .count(),
    )
});

/// Selected tests with one machine of their own, per (module, chroot).
static ALONE: LazyLock<HashMap<(&'static str, &'static str), usize>> = LazyLock::new(|| {
    let filter = Filter::from_env();
    let mut counts = HashMap::new();
    for info in registered()
        .filter(|i| i.scope == Scope::Test && i.machines.is_empty() && i.selected(&filter))
    {
        *counts.entry((info.module, info.chroot)).or_insert(0) += 1;
    }
    counts
});

/// How many selected tests of `module` have one machine of their own on `chroot` in this run
/// (under cargo-nextest, where each process runs one test: at most one).
pub(super) fn alone_tests(module: &str, chroot: &str) -> usize {
    ALONE.get(&(module, chroot)).copied().unwrap_or(0)
}

/// One test of each module machine of the run, in the order libtest reaches them.
pub(super) fn modules() -> &'static [&'static TestInfo] {
    &MODULES
}

/// Records that a test with a machine of its own begins.
pub(super) fn alone_begins(info: &TestInfo) {
    if isolated(info) {
        let _ = ALONE_TO_COME.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(n.saturating_sub(1))
        });
    }
}

/// How many isolated machines the run has still to boot: module machines nothing has
/// started, and tests with a machine of their own that have not begun.
pub(super) fn isolated_to_come() -> usize {
    let modules = MODULES
        .iter()
        .filter(|info| isolated(info) && not_started(info))
        .count();
    modules + ALONE_TO_COME.load(Ordering::SeqCst)
}

fn isolated(info: &TestInfo) -> bool {
    info.machines.is_empty() && info.networks().first == Network::Isolated
}
