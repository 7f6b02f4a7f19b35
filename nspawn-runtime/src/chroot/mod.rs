//! Master chroots: where they are, whether they are built and current, and building them.
//!
//! A downstream project's own xtask can be this short:
//!
//! ```no_run
//! use nspawn_runtime::chroot::{self, BuildOptions};
//! use nspawn_runtime::chroot::config::Workspace;
//!
//! let ws = Workspace::from_env()?;
//! chroot::build(&ws, &[], &BuildOptions::default())?;
//! # Ok::<(), nspawn_runtime::Error>(())
//! ```

pub mod archive;
mod build;
pub mod config;
mod deb_cache;
mod extend;
mod in_use;
pub(crate) mod layer;
mod locate;
mod on_demand;
pub mod profile;
mod progress;
pub mod remove;
mod status;
pub mod storage;
mod tool_run;

pub use build::{build, build_one, Bootstrapper, BuildOptions, Outcome};
pub use in_use::LOWERS_ENV;
pub use locate::locate;
pub use on_demand::{ensure, run_if_requested};
pub use progress::Progress;
pub use status::{status, write_cachedir_tag, Status, STAMP};
