//! Failures of the host below chroots and machines: its programs, privileges, I/O and state.

use std::path::PathBuf;

use super::show::tail_block;

/// A host program, privilege, file or piece of host state failed us.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The operation needs root and the process cannot get it.
    #[error("{action} needs root privileges. Run it as root, or with sudo: {command}")]
    #[non_exhaustive]
    NotRoot {
        /// What was being done.
        action: String,
        /// The exact command line to run instead.
        command: String,
    },

    /// Host packages are missing and cannot be installed by this process.
    #[error("missing host packages: {}. Install them with: apt-get install {}", packages.join(" "), packages.join(" "))]
    #[non_exhaustive]
    MissingPackages {
        /// Debian package names.
        packages: Vec<String>,
    },

    /// A host program failed.
    #[error("`{command}` failed ({status}){}", tail_block(stderr))]
    #[non_exhaustive]
    Command {
        /// The command line.
        command: String,
        /// How it ended: `status.code()` is its exit code, `None` when a signal ended it.
        status: std::process::ExitStatus,
        /// The end of its error output.
        stderr: String,
    },

    /// Host state of ours (under `/run/nspawn-rs`) that someone else could control.
    #[error(
        "refusing to use {path}: {problem}. Another local user may have made it to block or \
         hijack runs: check it, remove it as root, and run again"
    )]
    #[non_exhaustive]
    UnsafeState {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// A host I/O operation failed.
    #[error("{context}: {source}")]
    #[non_exhaustive]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl HostError {
    /// Wraps an I/O error with what was being done, naming the path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HostError::Io {
            context: context.into(),
            source,
        }
    }

    /// `action` needs root; `command` is the exact command line to run instead.
    pub fn not_root(action: impl Into<String>, command: impl Into<String>) -> Self {
        HostError::NotRoot {
            action: action.into(),
            command: command.into(),
        }
    }

    /// The host program `command` ended as `status`, with `stderr`'s end as the reason.
    pub fn command(
        command: impl Into<String>,
        status: std::process::ExitStatus,
        stderr: impl Into<String>,
    ) -> Self {
        HostError::Command {
            command: command.into(),
            status,
            stderr: stderr.into(),
        }
    }
}
