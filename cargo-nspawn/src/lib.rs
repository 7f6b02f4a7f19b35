//! `cargo nspawn`: the command line of every project that uses nspawn. It builds the master
//! chroots a workspace declares, lists them, reports how machines will run here, removes what
//! crashed runs left, opens a shell in a kept machine, and sets a project up.
//!
//! It acts on the workspace around the current directory, found as cargo finds it, and says
//! which. It needs root only for what needs root: run as a user, it re-runs itself through
//! `sudo` for those commands, and never leaves root-owned files in `target/` or `~/.cargo`
//! (it compiles nothing).
//!
//! This repository's `cargo xtask` offers the same commands through this library.

mod chroots;
mod cli;
mod doctor;
mod error;
mod init;
mod machines;
mod sudo;
mod workspace;

pub use chroots::{make as make_chroots, MakeChroots};
pub use cli::{run, Command};
pub use error::CliError;
pub use sudo::own_args;
pub use workspace::find as find_workspace;
