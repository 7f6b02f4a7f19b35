//! One machine (or group of machines) per (module, chroot, network, group), shared by the
//! module's tests like `setUpClass`: the first
//! test boots it, tests arriving meanwhile wait for that boot, and the machine stops when the
//! last of the module's selected tests has finished. A boot failure is kept and given to every
//! test that needed the machine, without booting again.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};

use super::boot::{boot, Group};
use super::filter::Filter;
use super::test_info::{registered, Scope, TestInfo};
use crate::cleanup::keep;
use crate::cleanup::slots::Slot;
use crate::machine::Machine;
use crate::report::{self, Event};

/// A boot error shared by every test that needed the machine.
pub(super) type SharedError = Arc<str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    module: &'static str,
    chroot: &'static str,
    network: &'static str,
    machines: &'static [(&'static str, &'static str)],
}

impl Key {
    pub(super) fn of(info: &TestInfo) -> Key {
        Key {
            module: info.module,
            chroot: info.chroot,
            network: info.network,
            machines: info.machines,
        }
    }
}

enum Phase {
    Idle,
    Booting,
    Up(Arc<Group>),
    Failed(SharedError),
}

struct State {
    phase: Phase,
    /// Selected tests of the module that have not finished yet.
    remaining: usize,
    /// Tests running on the machine now.
    active: usize,
    /// Whether one of its tests failed (for `NSPAWN_KEEP=failed`).
    failed: bool,
    /// Whether a test has taken the machine yet (a machine booted ahead has not).
    used: bool,
    /// Booted, or booting, ahead of its tests.
    ahead: bool,
    /// A boot ahead was tried and could not be made: its first test boots it.
    ahead_refused: bool,
}

/// The machines of one [`Key`], and the tests waiting for them.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

static SHARED: LazyLock<Mutex<HashMap<Key, Arc<Shared>>>> = LazyLock::new(Default::default);

/// How many selected tests each [`Key`] has in this run.
static EXPECTED: LazyLock<HashMap<Key, usize>> = LazyLock::new(|| {
    let filter = Filter::from_env();
    let mut counts = HashMap::new();
    for info in registered().filter(|i| i.scope == Scope::Module && i.selected(&filter)) {
        *counts.entry(Key::of(info)).or_insert(0) += 1;
    }
    counts
});

fn shared(key: Key) -> Arc<Shared> {
    let mut all = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    all.entry(key)
        .or_insert_with(|| {
            Arc::new(Shared {
                state: Mutex::new(State {
                    phase: Phase::Idle,
                    remaining: EXPECTED.get(&key).copied().unwrap_or(1),
                    active: 0,
                    failed: false,
                    used: false,
                    ahead: false,
                    ahead_refused: false,
                }),
                changed: Condvar::new(),
            })
        })
        .clone()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A test's use of its module's machine; finishing the last one stops the machine.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    machines: Arc<Group>,
    failed: bool,
}

impl Lease {
    /// The machine of the test's module, booting it if this test is the first; `booting` is
    /// called once that boot has begun (to start others beside it).
    pub(crate) fn acquire(info: &'static TestInfo, booting: fn()) -> Result<Lease, SharedError> {
        let shared = shared(Key::of(info));
        let mut state = shared.lock();
        state.used = true;
        loop {
            match &state.phase {
                Phase::Up(machines) => {
                    let machines = machines.clone();
                    state.active += 1;
                    drop(state);
                    return Ok(Lease {
                        shared,
                        machines,
                        failed: false,
                    });
                }
                Phase::Failed(e) => return Err(e.clone()),
                Phase::Booting => {
                    state = shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner())
                }
                Phase::Idle => {
                    state.phase = Phase::Booting;
                    drop(state);
                    booting();
                    let phase = boot_module(info, None);
                    state = shared.lock();
                    state.phase = phase;
                    shared.changed.notify_all();
                }
            }
        }
    }

    /// The module's machines: one, or a group in the order of the test's parameters.
    pub(crate) fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// Records that the test failed (its result, or a panic).
    pub(crate) fn set_failed(&mut self) {
        self.failed = true;
    }
}

fn boot_module(info: &'static TestInfo, spare: Option<Slot>) -> Phase {
    match boot_for_module(info, spare) {
        Ok(machines) => Phase::Up(Arc::new(machines)),
        Err(why) => Phase::Failed(why),
    }
}

/// Boots a module's machines and runs its set-up on them, with their events; a failure is
/// what every test that needed them fails with.
pub(super) fn boot_for_module(
    info: &'static TestInfo,
    spare: Option<Slot>,
) -> Result<Group, SharedError> {
    let ahead = spare.is_some();
    let machines = match super::warm::claim(info) {
        // The slot a boot ahead took goes back: the keeper's machine holds one of its own.
        Some(machine) => {
            drop(spare);
            Ok(vec![machine])
        }
        None => boot(info, info.module, spare),
    };
    let machines = machines.map_err(|e| {
        if !ahead {
            report::event(Event::ModuleBootFailed {
                module: info.module.into(),
                chroot: info.chroot.into(),
            });
        }
        SharedError::from(e.to_string())
    })?;
    for machine in &machines {
        report::event(Event::ModuleBoot {
            module: info.module.into(),
            chroot: machine.chroot().into(),
            machine: machine.name().into(),
            ahead,
        });
    }
    if let Err(why) = super::setup::run_for_all(info, &machines) {
        for machine in &machines {
            if keep::wanted(true) {
                machine.keep("its module's set-up failed");
            } else if let Err(e) = machine.shutdown() {
                crate::report::error(
                    Some(machine.name()),
                    format_args!("stopping after a failed set-up: {e}"),
                );
            }
        }
        return Err(why.into());
    }
    Ok(machines)
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.failed |= self.failed;
        state.active -= 1;
        state.remaining = state.remaining.saturating_sub(1);
        if state.active > 0 || state.remaining > 0 {
            return;
        }
        let phase = std::mem::replace(&mut state.phase, Phase::Idle);
        let failed = state.failed;
        drop(state);
        if let Phase::Up(machines) = phase {
            for machine in machines.iter() {
                if keep::wanted(failed) {
                    let why = if failed {
                        "a test of its module failed"
                    } else {
                        "NSPAWN_KEEP=all"
                    };
                    machine.keep(why);
                } else {
                    // The last test's thread goes on to the next test at once.
                    machine.stop_in_background();
                }
            }
        }
    }
}

/// Claims the machine of `info`'s module for a boot ahead of its tests: only one nothing has
/// started or used, with tests left, and not a group (whose machines take a slot each). The
/// boot itself is [`boot_claimed`].
pub(super) fn claim_ahead(info: &'static TestInfo) -> bool {
    if !info.machines.is_empty() {
        return false;
    }
    let shared = shared(Key::of(info));
    let mut state = shared.lock();
    if !matches!(state.phase, Phase::Idle)
        || state.used
        || state.ahead_refused
        || state.remaining == 0
    {
        return false;
    }
    state.phase = Phase::Booting;
    state.ahead = true;
    true
}

/// Boots a claimed machine ahead, on `spare`; returns whether it is up. If it fails, the
/// module is left as it was and not tried ahead again: its first test boots it, and reports
/// the failure itself.
pub(super) fn boot_claimed(info: &'static TestInfo, spare: Slot) -> bool {
    let shared = shared(Key::of(info));
    let phase = match boot_module(info, Some(spare)) {
        Phase::Failed(_) => Phase::Idle,
        up => up,
    };
    let mut state = shared.lock();
    let up = matches!(phase, Phase::Up(_));
    state.ahead = up;
    state.ahead_refused = !up;
    state.phase = phase;
    shared.changed.notify_all();
    up
}

/// Whether `info`'s module machine is still to boot: nothing has started it, or it was
/// stopped to free a slot, and it has tests left.
pub(super) fn not_started(info: &'static TestInfo) -> bool {
    let shared = shared(Key::of(info));
    let state = shared.lock();
    matches!(state.phase, Phase::Idle) && state.remaining > 0
}

/// Gives back a claim whose boot never started.
pub(super) fn unclaim_ahead(info: &'static TestInfo) {
    let shared = shared(Key::of(info));
    let mut state = shared.lock();
    state.phase = Phase::Idle;
    state.ahead = false;
    shared.changed.notify_all();
}

/// Every module machine of this process, taken out of the map's lock.
fn all_shared() -> Vec<Arc<Shared>> {
    SHARED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect()
}

/// Module machines of this process now booting (ahead or for a waiting test), and machines
/// booted or booting ahead that no test has taken yet.
pub(super) fn boots() -> (usize, usize) {
    let (mut booting, mut unused) = (0, 0);
    for shared in all_shared() {
        let state = shared.lock();
        let phase_booting = matches!(state.phase, Phase::Booting);
        booting += usize::from(phase_booting);
        unused += usize::from(
            state.ahead && !state.used && (phase_booting || matches!(state.phase, Phase::Up(_))),
        );
    }
    (booting, unused)
}

/// Stops one machine of this process that no test is using, to free a host-wide slot for a
/// test that waits. Its module boots it again if it has tests left. Without this, test threads
/// that all wait for slots held by idle machines of modules with tests still to come would
/// wait forever.
pub(crate) fn evict_idle() -> bool {
    for shared in all_shared() {
        let mut state = shared.lock();
        if state.active > 0 || !matches!(state.phase, Phase::Up(_)) {
            continue;
        }
        let phase = std::mem::replace(&mut state.phase, Phase::Idle);
        drop(state);
        if let Phase::Up(machines) = phase {
            for machine in machines.iter() {
                report::event(Event::Evicted {
                    machine: machine.name().into(),
                });
                if let Err(e) = machine.shutdown() {
                    crate::report::error(
                        Some(machine.name()),
                        format_args!("stopping an idle machine: {e}"),
                    );
                }
            }
        }
        return true;
    }
    false
}
