//! `NSPAWN_KEEP=failed|all`: leave machines running after their tests, for debugging.

/// Which machines to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Stop every machine (the default).
    Never,
    /// Keep the machines of failed tests.
    Failed,
    /// Keep every machine.
    All,
}

/// The mode from `NSPAWN_KEEP`.
pub fn mode() -> Keep {
    match std::env::var("NSPAWN_KEEP").as_deref() {
        Ok("failed") => Keep::Failed,
        Ok("all") => Keep::All,
        Ok(other) if !other.is_empty() => {
            tracing::warn!(
                "NSPAWN_KEEP={other:?} is neither \"failed\" nor \"all\"; keeping nothing"
            );
            Keep::Never
        }
        _ => Keep::Never,
    }
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
pub trait Outcome {
    /// Whether the test failed.
    fn failed(&self) -> bool;
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
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
