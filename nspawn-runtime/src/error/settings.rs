//! `NSPAWN_*` variables that do not parse.

/// `NSPAWN_*` environment variables with values that do not parse, all of them at once.
#[derive(thiserror::Error)]
#[error("invalid settings in the environment:\n  {}", problems.join("\n  "))]
#[non_exhaustive]
pub struct SettingsError {
    /// One line per variable: its value and what it accepts.
    pub problems: Vec<String>,
}

impl SettingsError {
    pub(crate) fn new(problems: Vec<String>) -> Self {
        SettingsError { problems }
    }
}
