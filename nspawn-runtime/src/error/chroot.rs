//! Failures of declaring, locating and building chroots.

use std::path::PathBuf;

use super::host::HostError;
use super::settings::SettingsError;
use super::show::tail_block;

/// A chroot could not be read from its declaration, found, or built.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ChrootError {
    /// The chroot declarations in `Cargo.toml` are malformed.
    #[error("{path}: {message}")]
    #[non_exhaustive]
    Config {
        /// The manifest that holds the declaration.
        path: PathBuf,
        /// What is wrong, naming the key or value and what is accepted.
        message: String,
    },

    /// No Cargo workspace was found to read declarations from or to put chroots in.
    #[error(
        "no Cargo workspace found above {start}: run from inside the project, or set \
         NSPAWN_CHROOTS_DIR to the directory that holds the chroots"
    )]
    #[non_exhaustive]
    WorkspaceNotFound {
        /// Where the search started.
        start: PathBuf,
    },

    /// A chroot was asked for that the workspace does not declare.
    #[error("chroot {name:?} is not declared; declared chroots: {}", declared.join(", "))]
    #[non_exhaustive]
    Undeclared {
        /// The name asked for.
        name: String,
        /// The names that are declared.
        declared: Vec<String>,
    },

    /// A `chroot = "..."` that is neither a valid name nor a path.
    #[error("chroot {name:?} cannot be named so: {reason}")]
    #[non_exhaustive]
    BadName {
        /// What the test asked for.
        name: String,
        /// What a name may hold.
        reason: String,
    },

    /// The master chroot has not been built yet.
    #[error("chroot {name:?} is missing: {path} does not exist. Build it with `cargo nspawn make-chroots {name}`")]
    #[non_exhaustive]
    Missing {
        /// Chroot name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },

    /// Building a chroot failed.
    #[error(
        "building chroot {name:?} failed during {phase}: {reason}\nlast lines of {log}:{}",
        tail_block(tail)
    )]
    #[non_exhaustive]
    Build {
        /// Chroot name.
        name: String,
        /// The phase that failed.
        phase: String,
        /// What happened.
        reason: String,
        /// The full log of the build tools.
        log: PathBuf,
        /// The last lines of that log.
        tail: Box<str>,
    },

    /// A chroot exists but was built from another declaration.
    #[error(
        "chroot {name:?} at {path} was built from a different declaration. \
         Rebuild it with `cargo nspawn make-chroots --force {name}`"
    )]
    #[non_exhaustive]
    Outdated {
        /// Chroot name.
        name: String,
        /// Its directory.
        path: PathBuf,
    },

    /// `NSPAWN_*` variables do not parse (`NSPAWN_CHROOTS_DIR` decides where chroots are).
    #[error(transparent)]
    Settings(#[from] SettingsError),

    /// The host failed the build or the lookup: a program, privileges or I/O.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl ChrootError {
    /// Wraps an I/O error with what was being done, naming the path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HostError::io(context, source).into()
    }
}
