//! What `#[nspawn::test]` expands to calls into here. Not a public API: use the attribute.
//!
//! A test runs on a machine of its module's (`sharing`; across processes under nextest:
//! `nextest`) or on one of its own, booted
//! (`boot`) from the chroot its [`TestInfo`] names; a failure to set the machine up fails
//! the test, never passes for the panic a `#[should_panic]` test expects.

mod ahead;
mod boot;
mod filter;
mod group;
mod inside;
mod keeper;
mod layered;
mod nextest;
mod outcome;
#[cfg(feature = "tokio")]
mod runtime;
mod serial;
mod setup;
mod sharing;
mod test_info;
mod upcoming;
mod warm;

pub use warm::end_keepers as end_warm_keepers;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

pub use group::{Group, RoleSetup};
pub use inside::{inside, inside_setup};
use outcome::{fail, note_failure};
pub use outcome::{BodyResult, TestOutcome};
#[cfg(feature = "tokio")]
pub use runtime::{block_on, Flavor};
pub use setup::SetupInfo;
pub use test_info::{registered, Scope, TestInfo};

use crate::cleanup::keep;
use crate::machine::Machine;
use crate::report::{self, Event};
use boot::boot;

/// Runs before `main` (the macro puts it in `.init_array`): becomes the agent or the watchdog
/// in their processes (see the `agent` and `watchdog` modules), otherwise drops root.
pub extern "C" fn init_privileges() {
    crate::agent::run_if_requested();
    crate::cleanup::watchdog::run_if_requested();
    crate::chroot::run_if_requested();
    crate::host::privs::init();
}

/// Runs a test body against its machine. A machine that fails to boot fails the test with the
/// boot error.
#[track_caller]
pub fn run<R: TestOutcome>(info: &'static TestInfo, body: impl FnOnce(&Machine) -> R) -> R {
    run_group(info, |machines| body(&machines[0]))
}

/// Runs a test body against its machines: a group's (`machines(...)`) in the order of the
/// test's parameters, or a test's one machine.
#[track_caller]
pub fn run_group<R: TestOutcome>(info: &'static TestInfo, body: impl FnOnce(&[Machine]) -> R) -> R {
    crate::host::privs::init();
    let body = move |machines: &[Machine]| {
        // Stays open (and locked) until the body is done.
        let _turn = match serial::turn(info) {
            Ok(turn) => turn,
            Err(e) => return fail(info, &e, None),
        };
        timed(info, || body(machines))
    };
    if let Some(id) = nextest::keeper_id() {
        nextest::keep(info, &id);
    }
    if let Some(key) = warm::keeper_key() {
        warm::keep(info, &key);
    }
    // A test waiting for a machine slot may stop an idle machine its module shares.
    crate::cleanup::slots::set_room_maker(sharing::evict_idle);
    crate::network::set_isolated_to_come(upcoming::isolated_to_come);
    match info.scope {
        Scope::Test => run_alone(info, body),
        Scope::Module if nextest::active() => match nextest::attach(info) {
            Ok(attached) => body(&attached.machines),
            Err(e) => fail(info, &e, None),
        },
        Scope::Module => {
            // The first test of a module starts the next modules' boots beside its own.
            let lease = sharing::Lease::acquire(info, ahead::beside_own_boot);
            // This module's machine is taken: the next ones may boot meanwhile.
            ahead::schedule();
            let mut lease = match lease {
                Ok(lease) => lease,
                Err(e) => return fail(info, &e, None),
            };
            let result = catch_unwind(AssertUnwindSafe(|| body(lease.machines())));
            if result.as_ref().map_or(true, TestOutcome::failed) {
                note_failure(info, lease.machines());
                lease.set_failed();
            }
            result.unwrap_or_else(|panic| resume_unwind(panic))
        }
    }
}

#[track_caller]
fn run_alone<R: TestOutcome>(info: &'static TestInfo, body: impl FnOnce(&[Machine]) -> R) -> R {
    upcoming::alone_begins(info);
    let booting = boot::AloneBoot::begin();
    // With a set-up layer, the machine has the set-up's result already.
    let (machines, set_up) = match layered::boot(info) {
        Some(Ok(machine)) => (vec![machine], true),
        Some(Err(e)) => return fail(info, &e, None),
        None => match boot(info, &info.test_name(), None) {
            Ok(machines) => (machines, false),
            Err(e) => return fail(info, &e, None),
        },
    };
    drop(booting);
    for machine in &machines {
        report::event(Event::TestBoot {
            test: info.test_name(),
            machine: machine.name().into(),
        });
    }
    let prepared = if set_up {
        Ok(())
    } else {
        setup::run_for_all(info, &machines)
    };
    if let Err(why) = prepared {
        for machine in machines {
            if keep::wanted(true) {
                machine.keep("its module's set-up failed");
            } else {
                let _ = machine.stop();
            }
        }
        return fail(info, &why, None);
    }
    let result = catch_unwind(AssertUnwindSafe(|| body(&machines)));
    let failed = result.as_ref().map_or(true, TestOutcome::failed);
    if failed {
        note_failure(info, &machines);
    }
    // Every machine is stopped (or kept); the first failure to stop is reported.
    let mut stopped = Ok(());
    for machine in machines {
        let this = if keep::wanted(failed) {
            machine.keep(&format!("test {}", info.test_name()));
            Ok(())
        } else {
            machine.stop()
        };
        stopped = stopped.and(this);
    }
    match (result, stopped) {
        (Ok(outcome), Ok(())) => outcome,
        (Ok(outcome), Err(e)) => fail(info, &e, Some(outcome)),
        (Err(panic), stopped) => {
            if let Err(e) = stopped {
                eprintln!(
                    "nspawn: {}: stopping its machine failed too: {e}",
                    info.test_name()
                );
            }
            resume_unwind(panic)
        }
    }
}

/// Runs a test's body, recording in the event log how long it took (also when it panics).
fn timed<R>(info: &TestInfo, body: impl FnOnce() -> R) -> R {
    struct Ran<'a>(&'a TestInfo, std::time::Instant);
    impl Drop for Ran<'_> {
        fn drop(&mut self) {
            if !report::logging() {
                return;
            }
            report::event(Event::Ran {
                test: self.0.test_name(),
                us: u64::try_from(self.1.elapsed().as_micros()).unwrap_or(u64::MAX),
            });
        }
    }
    let _ran = Ran(info, std::time::Instant::now());
    // The body's machines, calls and waits are this span's children, for a subscriber.
    let _test = tracing::info_span!("test", name = %info.test_name()).entered();
    body()
}
