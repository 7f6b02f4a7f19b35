//! What was being done, added to host I/O results.

use super::host::HostError;

/// Adds what was being done to a host I/O result.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> std::result::Result<T, HostError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> std::result::Result<T, HostError> {
        self.map_err(|e| HostError::io(context(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> std::result::Result<T, HostError> {
        self.map_err(|e| HostError::io(context(), e.into()))
    }
}
