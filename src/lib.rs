//! Test against real, ephemeral, systemd-booted Debian containers.
//!
//! A test gets a *machine*: a throw-away copy of a Debian tree booted with
//! `systemd-nspawn --boot` in about half a second. It can install packages, write
//! configuration and start units in it; the copy is gone when the test is done, however the
//! run ends.
//!
//! # Setting a project up
//!
//! nspawn is not on crates.io yet: depend on a checkout (or on its git repository with
//! `git = "..."`). Once it is published, `nspawn = "0.1"` will do.
//!
//! ```toml
//! [dev-dependencies]
//! nspawn = { path = "../nspawn" }
//! ```
//!
//! Booting needs root; test code does not run as root. Install the `cargo nspawn` command
//! from the same checkout (`cargo install --locked --path ../nspawn/cargo-nspawn
//! --target-dir ~/.cache/cargo-nspawn`: without `--target-dir` cargo builds in the
//! checkout's own `target/`, which fails when the checkout is not yours), then run
//! `cargo nspawn init` in your project: it sets the cargo runner `sudo -E` (cargo compiles as
//! you and runs only the test binaries through sudo, which drop back to you before `main`),
//! keeps the chroots out of git and of `cargo package`, and writes a first test. Then
//! `cargo test`. The master chroots a test names are built on first use (or ahead with
//! `cargo nspawn make-chroots`); a workspace declares them in its `Cargo.toml`:
//!
//! ```toml
//! [workspace.metadata.nspawn.chroots.bookworm]
//!
//! [workspace.metadata.nspawn.chroots.web]
//! suite = "trixie"
//! include = ["nginx"]   # besides dbus and systemd, which every chroot has
//! ```
//!
//! # Writing tests
//!
//! [`test`] turns a function into a test that runs against a machine. All the tests of a
//! module that ask for the same chroot share one machine (booted by the first, stopped after
//! the last); `scope = "test"` gives a test a machine of its own.
//!
//! ```no_run
//! use nspawn::Machine;
//!
//! #[nspawn::test(chroot = "bookworm")]
//! fn dbus_runs(machine: &Machine) -> nspawn::Result<()> {
//!     machine.run(["systemctl", "is-active", "dbus"])?;
//!     Ok(())
//! }
//!
//! #[nspawn::test(chroot = "bookworm", scope = "test")]
//! fn starts_pristine(machine: &Machine) {
//!     assert!(!machine.exists("/etc/my-app.conf"));
//! }
//! ```
//!
//! With the `tokio` feature, a test may be an `async fn`, run on a runtime the attribute
//! builds (`flavor = "multi_thread"`, `worker_threads = N` as `#[tokio::test]`'s; do not add
//! `#[tokio::test]`). `Machine::asynchronous()` gives the calls as `async fn`s that keep the
//! runtime's other tasks going; a `Machine` clone is another handle on the same machine.
//!
//! [`setup`] marks a module's set-up: it runs once on each machine the module's tests get,
//! after the boot and before the first test.
//!
//! ```no_run
//! #[nspawn::setup(chroot = "bookworm")]
//! fn prepare(machine: &nspawn::Machine) -> nspawn::Result<()> {
//!     machine.run(["apt-get", "install", "-y", "jq"])?;
//!     Ok(())
//! }
//! # #[nspawn::test(chroot = "bookworm")]
//! # fn jq_is_installed(machine: &nspawn::Machine) {
//! #     assert!(machine.exists("/usr/bin/jq"));
//! # }
//! ```
//!
//! Options: `chroot = "<name>"` (a declared chroot, or a path containing `/` to any tree;
//! may be left out when the workspace declares one; `chroot = ["bookworm", "trixie"]` makes
//! one test per chroot, `name::bookworm` and `name::trixie`), `scope = "module" | "test"`, `inside`
//! (the body runs in the machine, see below), and `crate = "<path>"` if you renamed this
//! crate. Mistakes are compile errors on the offending
//! tokens, all at once.
//!
//! # Inside a machine
//!
//! [`Machine`] runs commands and reads and writes files as the machine's root, confined
//! like the container's own processes:
//!
//! ```no_run
//! # #[nspawn::test(chroot = "bookworm")]
//! # fn t(machine: &nspawn::Machine) -> nspawn::Result<()> {
//! machine.write(
//!     "/etc/systemd/system/greeter.service",
//!     "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo hello > /run/greeting'\n",
//! )?;
//! machine.run(["systemctl", "daemon-reload"])?;
//! machine.run(["systemctl", "start", "greeter"])?;
//! assert_eq!(machine.sh("cat /run/greeting")?, "hello\n");
//!
//! let out = machine
//!     .command("systemctl")
//!     .args(["is-active", "greeter"])
//!     .timeout(std::time::Duration::from_secs(5))
//!     .output()?;
//! assert!(out.status.success());
//! # Ok(()) }
//! ```
//!
//! [`Machine::call`] runs a function of your test binary inside the machine, in a process of
//! its own that starts clean: your library's code, acting on the machine as on a real host.
//! `#[nspawn::test(inside)]` runs a whole test body there.
//!
//! ```no_run
//! use std::path::Path;
//!
//! # #[nspawn::test(chroot = "bookworm")]
//! # fn t(machine: &nspawn::Machine) -> nspawn::Result<()> {
//! let exists = machine.call(|p: String| Path::new(&p).exists(), "/etc/my-app.conf".into())?;
//! # Ok(()) }
//!
//! #[nspawn::test(chroot = "bookworm", inside)]
//! fn hostname_is_set() -> std::io::Result<()> {
//!     assert!(!std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().is_empty());
//!     Ok(())
//! }
//! ```
//!
//! [`Machine::builder`] boots one with options (a private network, binds, unit properties,
//! timeouts) outside the attribute, for a custom harness or a benchmark:
//!
//! ```no_run
//! let machine = nspawn::Machine::builder("bookworm")
//!     .private_network(true)
//!     .boot_timeout(std::time::Duration::from_secs(30))
//!     .start()?;
//! machine.stop()?;
//! # Ok::<(), nspawn::Error>(())
//! ```
//!
//! Waits have a timeout and explain themselves: [`Machine::wait_for_unit`] (the unit's
//! status and journal tail), [`Machine::wait_until_running`] (the failed units),
//! [`Machine::wait_for_port`] (the ports that do listen); [`Machine::unit`] gives a unit's
//! state for assertions.
//!
//! Failures are an [`Error`] whose message says what happened and what to do: a command's
//! status and stderr, a boot's console tail, the command that builds a missing chroot.
//! [`privs`] is for the rare test code that needs root in the test process itself.
//!
//! The [`guide`] has the rest, chapter by chapter: chroots, networks, system tests, nextest
//! and CI, the sandbox, backends, every environment variable.

pub mod guide;

pub use nspawn_runtime::chroot::storage::Storage;
pub use nspawn_runtime::error::{ChrootError, HostError, SettingsError};
pub use nspawn_runtime::host::privs;
#[cfg(feature = "tokio")]
pub use nspawn_runtime::AsyncMachine;
pub use nspawn_runtime::{
    Call, Command, Error, Group, LinkFaults, Machine, MachineBuilder, Network, Port, Remote,
    Result, RoleSetup, UnitState, DEFAULT_CALL_TIMEOUT, DEFAULT_OUTPUT_LIMIT,
};

pub use nspawn_macros::{setup, test};

#[doc(hidden)]
pub mod __private {
    pub use nspawn_runtime::harness::{
        init_privileges, inside, inside_setup, run, run_group, BodyResult, Scope, SetupInfo,
        TestInfo,
    };
    pub use nspawn_runtime::inventory;

    #[cfg(feature = "tokio")]
    pub use nspawn_runtime::harness::{block_on, Flavor};
}
