//! What a test body returned, as the harness reads it, and how a failure of ours fails a
//! test.

use super::test_info::TestInfo;
use crate::machine::Machine;

/// What a test returned, as far as keeping its machine goes.
pub trait TestOutcome: Sized {
    /// Whether the test failed.
    fn failed(&self) -> bool;

    /// What a test that did not run returns, for a failure to report without a panic (see
    /// `harness`); only `()`, the one return type `#[should_panic]` allows, has one.
    fn not_run() -> Option<Self> {
        None
    }
}

impl TestOutcome for () {
    fn failed(&self) -> bool {
        false
    }

    fn not_run() -> Option<Self> {
        Some(())
    }
}

impl<T, E> TestOutcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}

impl TestOutcome for std::process::ExitCode {
    fn failed(&self) -> bool {
        *self != std::process::ExitCode::SUCCESS
    }
}

/// What a set-up or an `inside` test body returns: `()` or a `Result` whose error is shown
/// with `Debug`, as libtest shows a failing test's.
pub trait BodyResult {
    /// The outcome as a message on failure.
    fn into_result(self) -> Result<(), String>;
}

impl BodyResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Debug> BodyResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// A failure of ours, not of the test body, fails the test: by a panic with the error, except
/// in a `#[should_panic]` test, which a panic would pass. There the error goes to stderr and
/// the test returns without panicking, which fails it ("did not panic as expected").
#[track_caller]
pub(crate) fn fail<R: TestOutcome>(
    info: &TestInfo,
    error: &dyn std::fmt::Display,
    outcome: Option<R>,
) -> R {
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

/// Says, with a failed test's own output (libtest shows it with the failure), which machines
/// it ran on, where their console logs are, and how to look inside one.
pub(crate) fn note_failure(info: &TestInfo, machines: &[Machine]) {
    let keeping = crate::cleanup::keep::wanted(true);
    for machine in machines {
        let hint = if keeping {
            String::new()
        } else {
            format!(
                "; NSPAWN_KEEP=failed keeps it running after the run, for `cargo nspawn shell \
                 {}` (and `journalctl -b` there)",
                machine.name()
            )
        };
        eprintln!(
            "nspawn: {} failed on machine {} ({}); its console log: {}{hint}",
            info.test_name(),
            machine.name(),
            machine.chroot(),
            machine.log_path().display()
        );
    }
}
