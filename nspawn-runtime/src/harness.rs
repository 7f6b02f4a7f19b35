//! What `#[nspawn::test]` expands to calls into here. Not a public API: use the attribute.
//!
//! Each test registers a [`TestInfo`] with `inventory` (a static collected at link time). That
//! is how the runtime knows which tests a module has, and so when the last one that will run
//! has finished and the module's machine can stop: `inventory` needs nothing from the user and
//! sees tests in every module of the binary, unlike a count the macro could emit (it sees one
//! function at a time). The test binary's own filter arguments say which of them will run
//! ([`crate::filter`]).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::filter::Filter;
use crate::keep::{self, Outcome};
use crate::machine::Machine;
use crate::sharing;

/// How widely a machine is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One machine for all tests of the module that ask for the same chroot.
    Module,
    /// A fresh machine for the test alone.
    Test,
}

/// One `#[nspawn::test]`, as the macro describes it.
#[derive(Debug)]
pub struct TestInfo {
    /// `module_path!()` of the test.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// The chroot to boot.
    pub chroot: &'static str,
    /// How the machine is shared.
    pub scope: Scope,
    /// Marked `#[ignore]`.
    pub ignored: bool,
    /// Marked `#[should_panic]`.
    pub expects_panic: bool,
    /// `CARGO_MANIFEST_DIR` of the crate, to find the workspace's chroots.
    pub manifest_dir: &'static str,
}

inventory::collect!(TestInfo);

impl TestInfo {
    /// The name libtest knows the test by: the module path without the crate, then the name.
    pub fn test_name(&self) -> String {
        match self.module.split_once("::") {
            Some((_, path)) => format!("{path}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// Whether this test is one the running binary will execute.
    pub fn selected(&self, filter: &Filter) -> bool {
        filter.selects(&self.test_name(), self.ignored)
    }
}

/// Every registered test of the binary.
pub fn registered() -> impl Iterator<Item = &'static TestInfo> {
    inventory::iter::<TestInfo>.into_iter()
}

/// Runs before `main` (the macro puts it in `.init_array`): becomes the agent or the watchdog
/// in their processes (see the `agent` and `watchdog` modules), otherwise drops root.
pub extern "C" fn init_privileges() {
    crate::agent::run_if_requested();
    crate::watchdog::run_if_requested();
    crate::privs::init();
}

/// Runs a test body against its machine. A machine that fails to boot fails the test with the
/// boot error.
pub fn run<R: Outcome>(info: &'static TestInfo, body: impl FnOnce(&Machine) -> R) -> R {
    crate::privs::init();
    match info.scope {
        Scope::Test => run_alone(info, body),
        Scope::Module => {
            let mut lease = match sharing::Lease::acquire(info) {
                Ok(lease) => lease,
                Err(e) => return fail(info, &e, None),
            };
            let result = catch_unwind(AssertUnwindSafe(|| body(lease.machine())));
            if result.as_ref().map_or(true, Outcome::failed) {
                lease.set_failed();
            }
            result.unwrap_or_else(|panic| resume_unwind(panic))
        }
    }
}

fn run_alone<R: Outcome>(info: &'static TestInfo, body: impl FnOnce(&Machine) -> R) -> R {
    let machine = match boot(info, &info.test_name()) {
        Ok(machine) => machine,
        Err(e) => return fail(info, &e, None),
    };
    crate::events::event(&format!(
        "test-boot {} {}",
        info.test_name(),
        machine.name()
    ));
    let result = catch_unwind(AssertUnwindSafe(|| body(&machine)));
    let failed = result.as_ref().map_or(true, Outcome::failed);
    let stopped = if keep::wanted(failed) {
        machine.keep(&format!("test {}", info.test_name()));
        Ok(())
    } else {
        machine.stop()
    };
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

/// A failure of ours, not of the test body, fails the test: by a panic with the error, except
/// in a `#[should_panic]` test, which a panic would pass. There the error goes to stderr and
/// the test returns without panicking, which fails it ("did not panic as expected").
fn fail<R: Outcome>(info: &TestInfo, error: &dyn std::fmt::Display, outcome: Option<R>) -> R {
    if info.expects_panic {
        if let Some(outcome) = outcome.or_else(R::not_run) {
            eprintln!(
                "nspawn: {} failed: {error}\n(reported without a panic: the test expects one, \
                 and the failure of its machine must not pass for it)",
                info.test_name()
            );
            return outcome;
        }
    }
    panic!("{error}")
}

/// Boots the machine a test asks for, saying so on stderr with the boot time.
pub(crate) fn boot(info: &TestInfo, purpose: &str) -> crate::Result<Machine> {
    let started = std::time::Instant::now();
    let machine = Machine::builder(info.chroot)
        .workspace(info.manifest_dir)
        .start()?;
    crate::events::announce(&format!(
        "booted {} ({}) for {purpose} in {:.2} s",
        machine.name(),
        info.chroot,
        started.elapsed().as_secs_f64()
    ));
    Ok(machine)
}

/// A boot error shared by every test that needed the machine.
pub(crate) type SharedError = Arc<str>;
