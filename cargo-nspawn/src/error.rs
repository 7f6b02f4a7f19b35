//! What `cargo nspawn` reports when a command fails.

use std::path::PathBuf;

use nspawn_runtime::error::{ChrootError, HostError};

/// A command of `cargo nspawn` failed. Its message says what to do; `main` prints it after
/// `error: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Reading the declarations, building, importing or removing chroots failed.
    #[error(transparent)]
    Chroot(#[from] ChrootError),

    /// The host failed: a program, privileges or I/O.
    #[error(transparent)]
    Host(#[from] HostError),

    /// The runtime failed while inspecting or cleaning up machines.
    #[error(transparent)]
    Runtime(#[from] nspawn_runtime::Error),

    /// A file `init` edits does not parse or has an unexpected shape.
    #[error("{path}: {message}")]
    #[non_exhaustive]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// `init` found no `Cargo.toml` at or above the directory.
    #[error(
        "no Cargo package found at or above {start}: run `cargo nspawn init` inside your crate"
    )]
    #[non_exhaustive]
    NoPackage {
        /// Where the search started.
        start: PathBuf,
    },

    /// The command was asked for in a way it cannot work.
    #[error("cargo nspawn {command}: {message}")]
    #[non_exhaustive]
    Usage {
        /// The subcommand.
        command: &'static str,
        /// What to do instead.
        message: String,
    },

    /// `shell` was given a machine that is not running.
    #[error(
        "machine {machine} is not running; running machines: {}",
        if running.is_empty() { "none".to_string() } else { running.join(", ") }
    )]
    #[non_exhaustive]
    NotRunning {
        /// The name given.
        machine: String,
        /// The machines that are running.
        running: Vec<String>,
    },
}

impl CliError {
    /// Wraps an I/O error with what was being done, naming the path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HostError::io(context, source).into()
    }
}
