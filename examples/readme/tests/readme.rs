//! The Rust blocks of the README, the guide and the crate docs, each in a module of its own
//! (see `build.rs`): they compile, and their tests boot real machines, as a user's crate
//! would.

#[allow(unused_imports)]
mod prelude {
    pub use nspawn::{Machine, Network};
    pub use std::path::Path;
    pub use std::time::Duration;
}

include!(concat!(env!("OUT_DIR"), "/readme.rs"));
