//! `NSPAWN_KEEP=failed|all`: leave machines running after their tests, for debugging.

pub(crate) use crate::settings::Keep;

/// The mode from `NSPAWN_KEEP`.
pub(crate) fn mode() -> Keep {
    crate::settings::lenient().keep
}

/// Whether a machine whose tests ended so should be kept.
pub(crate) fn wanted(failed: bool) -> bool {
    match mode() {
        Keep::Never => false,
        Keep::Failed => failed,
        Keep::All => true,
    }
}
