//! A module's set-up, the real `setUpClass`: a function marked `#[nspawn::setup]` runs once
//! on each machine its module's tests get, after the boot and before the first test. A
//! failure (an error or a panic) fails every test that needed the machine, with its message,
//! without running the set-up again for each.
//!
//! Set-ups register with `inventory`, as tests do: a module without one pays nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::test_info::TestInfo;
use crate::machine::Machine;
use crate::report::{self, Event};

/// One `#[nspawn::setup]`, as the macro describes it.
#[derive(Debug)]
pub struct SetupInfo {
    /// `module_path!()` of the function: it sets up this module's machines.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// The chroot whose machines it sets up.
    pub chroot: &'static str,
    /// The function, its result made a message.
    pub run: fn(&Machine) -> Result<(), String>,
}

inventory::collect!(SetupInfo);

/// Whether `module` has a set-up for `chroot`.
pub(crate) fn has_setup(module: &str, chroot: &str) -> bool {
    inventory::iter::<SetupInfo>
        .into_iter()
        .any(|s| s.module == module && s.chroot == chroot)
}

/// Runs the set-up of `info`'s module on each machine of a test, for the machine's chroot,
/// then a group's set-ups of each role on the role's machine.
pub(crate) fn run_for_all(info: &TestInfo, machines: &[Machine]) -> Result<(), String> {
    machines.iter().try_for_each(|m| run_for(info, m))?;
    // The roles' set-ups (package installs, mostly) run side by side.
    let outcomes: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = info
            .machines
            .iter()
            .zip(machines)
            .map(|(&(role, _), machine)| scope.spawn(move || run_role(info, role, machine)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap_or_else(|p| Err(panic_message(&*p))))
            .collect()
    });
    outcomes.into_iter().collect()
}

/// Runs the group's set-ups of `role` on its machine.
fn run_role(info: &TestInfo, role: &str, machine: &Machine) -> Result<(), String> {
    for (_, setup) in info.setups.iter().filter(|(r, _)| *r == role) {
        let outcome = catch_unwind(AssertUnwindSafe(|| setup(machine)))
            .map(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
        report::event(Event::Setup {
            module: info.module.into(),
            machine: machine.name().into(),
            ok: outcome.is_ok(),
        });
        outcome.map_err(|e| {
            format!(
                "the set-up of role {role} of module {} failed on machine {}: {e}",
                info.module,
                machine.name()
            )
        })?;
    }
    Ok(())
}

/// Runs the set-up of `info`'s module and `machine`'s chroot on it, when the module has one.
fn run_for(info: &TestInfo, machine: &Machine) -> Result<(), String> {
    let chroot = machine.chroot();
    let setups: Vec<&SetupInfo> = inventory::iter::<SetupInfo>
        .into_iter()
        .filter(|s| s.module == info.module && s.chroot == chroot)
        .collect();
    let setup = match setups.as_slice() {
        [] => return Ok(()),
        [one] => *one,
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.name).collect();
            return Err(format!(
                "module {} has {} set-ups for chroot {}: {}; keep one",
                info.module,
                many.len(),
                chroot,
                names.join(", ")
            ));
        }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| (setup.run)(machine)))
        .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
    let event = |ok: bool| Event::Setup {
        module: info.module.into(),
        machine: machine.name().into(),
        ok,
    };
    report::event(event(outcome.is_ok()));
    outcome.map_err(|why| {
        format!(
            "the set-up `{}` of module {} failed on machine {}: {why}",
            setup.name,
            info.module,
            machine.name()
        )
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
