//! System tests in the NixOS test driver's style, on Debian machines booted by nspawn: see
//! `tests/`. The crate has no code of its own; its tests are the example.
//!
//! - `tests/openssh.rs` ports part of nixpkgs' `nixos/tests/openssh.nix`;
//! - `tests/services.rs`: a web server reached by name, and while it is cut off; a database
//!   that keeps its data across a reboot and recovers after a crash.
