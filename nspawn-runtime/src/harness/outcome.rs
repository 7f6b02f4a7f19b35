//! What a test body returned, as the harness reads it.

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
