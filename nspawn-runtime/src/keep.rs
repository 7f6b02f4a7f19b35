//! `NSPAWN_KEEP=failed|all`: leave machines running after their tests, for debugging.

pub use crate::settings::Keep;

/// The mode from `NSPAWN_KEEP`.
pub fn mode() -> Keep {
    crate::settings::lenient().keep
}

/// Whether a machine whose tests ended so should be kept.
pub fn wanted(failed: bool) -> bool {
    match mode() {
        Keep::Never => false,
        Keep::Failed => failed,
        Keep::All => true,
    }
}

/// What a test returned, as far as keeping its machine goes.
pub trait Outcome: Sized {
    /// Whether the test failed.
    fn failed(&self) -> bool;

    /// What a test that did not run returns, for a failure to report without a panic (see
    /// `harness`); only `()`, the one return type `#[should_panic]` allows, has one.
    fn not_run() -> Option<Self> {
        None
    }
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
    }

    fn not_run() -> Option<Self> {
        Some(())
    }
}

impl<T, E> Outcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}

impl Outcome for std::process::ExitCode {
    fn failed(&self) -> bool {
        *self != std::process::ExitCode::SUCCESS
    }
}
