//! The runtime's errors, one type per audience, each variant carrying what its reader needs to
//! act, with a message that says what to do:
//!
//! - [`Error`]: what a test sees: machines, commands, calls, waits, networks. It wraps the
//!   others, so a test's `?` takes them all.
//! - [`ChrootError`]: declaring, locating and building chroots (`cargo nspawn`, on-demand
//!   builds).
//! - [`HostError`]: host programs, privileges, host I/O and host state, below both.
//! - [`SettingsError`]: `NSPAWN_*` variables that do not parse.
//!
//! Every type's `Debug` shows its message: a test returning `Result<(), nspawn::Error>` fails
//! with what happened and what to do, not with a struct dump.

mod chroot;
mod context;
mod host;
mod machine;
mod settings;
mod show;

pub use chroot::ChrootError;
pub(crate) use context::IoContext;
pub use host::HostError;
pub use machine::Error;
pub use settings::SettingsError;

/// Result with the runtime's test-facing [`Error`], or another error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Debug` as `Display`, so that `unwrap()` and a test's returned error show the message.
macro_rules! debug_shows_message {
    ($($error:ty),*) => {$(
        impl std::fmt::Debug for $error {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(self, f)
            }
        }
    )*};
}
debug_shows_message!(Error, ChrootError, HostError, SettingsError);

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_wrapped_error_keeps_its_message_and_its_source() {
        let missing = ChrootError::Missing {
            name: "bookworm".into(),
            path: PathBuf::from("/nowhere/bookworm"),
        };
        let shown = missing.to_string();
        let err = Error::from(missing);
        assert_eq!(err.to_string(), shown);
        assert_eq!(format!("{err:?}"), shown, "Debug shows the message");
        assert!(matches!(
            err,
            Error::Chroot(ChrootError::Missing { ref name, .. }) if name == "bookworm"
        ));

        // A test's `?` on host I/O: the I/O error stays reachable as the source, through
        // both wrappers.
        let io = std::io::Error::from_raw_os_error(libc_enoent());
        let err = Error::from(ChrootError::from(HostError::io("reading /x", io)));
        assert!(matches!(
            err,
            Error::Chroot(ChrootError::Host(HostError::Io { .. }))
        ));
        let source = err.source().expect("the I/O error is the source");
        assert_eq!(
            source.to_string(),
            std::io::Error::from_raw_os_error(libc_enoent()).to_string()
        );
    }

    fn libc_enoent() -> i32 {
        nix::errno::Errno::ENOENT as i32
    }
}
