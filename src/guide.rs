//! The guide: how to declare and build chroots, write tests, put machines on networks, test a
//! system across reboots and faults, run suites under nextest and in CI, and what a machine
//! may do to the host. The chapters are `docs/guide/*.md` in the repository; each Rust block
//! in them compiles as a doctest, and `examples/readme` runs its tests against real machines,
//! exactly as printed.
//!
//! 1. [`chroots`]: declaring the trees machines boot from, building, storing and removing them
//! 2. [`writing_tests`]: the attribute, set-ups, code inside the machine, async, waits, scopes
//! 3. [`networks`]: isolated machines, zones, several machines in one test
//! 4. [`system_tests`]: reboots, crashes, ports, network faults, groups declared once
//! 5. [`running`]: cleanup guarantees, keeping a machine for debugging, nextest, CI
//! 6. [`machines`]: what a machine is: the agent, user namespaces, the sandbox
//! 7. [`backends`]: booting directly or through machined, and who runs as root
//! 8. [`examples`]: the example suites of this repository
//! 9. [`environment`]: every environment variable

#[doc = include_str!("../docs/guide/chroots.md")]
pub mod chroots {}

#[doc = include_str!("../docs/guide/writing-tests.md")]
pub mod writing_tests {}

#[doc = include_str!("../docs/guide/networks.md")]
pub mod networks {}

#[doc = include_str!("../docs/guide/system-tests.md")]
pub mod system_tests {}

#[doc = include_str!("../docs/guide/running.md")]
pub mod running {}

#[doc = include_str!("../docs/guide/machines.md")]
pub mod machines {}

#[doc = include_str!("../docs/guide/backends.md")]
pub mod backends {}

#[doc = include_str!("../docs/guide/examples.md")]
pub mod examples {}

#[doc = include_str!("../docs/guide/environment.md")]
pub mod environment {}
