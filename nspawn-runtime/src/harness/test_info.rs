//! One `#[nspawn::test]`, as the macro describes it, and every such test of the binary.
//!
//! Each test registers a [`TestInfo`] with `inventory` (a static collected at link time). That
//! is how the runtime knows which tests a module has, and so when the last one that will run
//! has finished and the module's machine can stop: `inventory` needs nothing from the user and
//! sees tests in every module of the binary, unlike a count the macro could emit (it sees one
//! function at a time). The test binary's own filter arguments say which of them will run
//! ([`super::filter`]).

use nspawn_config::Networks;

use super::filter::Filter;

/// How widely a machine is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One machine for all tests of the module that ask for the same chroot.
    Module,
    /// A fresh machine for the test alone.
    Test,
}

/// One `#[nspawn::test]`, as the macro describes it.
#[derive(Debug)]
pub struct TestInfo {
    /// `module_path!()` of the test.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// The chroot to boot.
    pub chroot: &'static str,
    /// How the machine is shared.
    pub scope: Scope,
    /// Marked `#[ignore]`.
    pub ignored: bool,
    /// Marked `#[should_panic]`.
    pub expects_panic: bool,
    /// `CARGO_MANIFEST_DIR` of the crate, to find the workspace's chroots.
    pub manifest_dir: &'static str,
    /// `network = "..."` (checked by the macro); empty for the default.
    pub network: &'static str,
    /// `machines(role = "chroot", ...)` or a [`super::Group`]'s: the machines of a group,
    /// `(role, chroot)` in boot order; empty for a test of one machine.
    pub machines: &'static [(&'static str, &'static str)],
    /// A group's set-ups by role.
    pub setups: &'static [(&'static str, super::group::RoleSetup)],
    /// A group's tests run one after another.
    pub serial: bool,
    /// A group's networks by role, for roles not on the group's network.
    pub role_networks: &'static [(&'static str, &'static str)],
}

inventory::collect!(TestInfo);

impl TestInfo {
    /// A test of module `module` on a machine of `chroot` shared by the module, with every other
    /// option at the attribute's default: for code that calls the harness itself (a benchmark,
    /// our own tests), as the macro would.
    pub const fn module_test(
        module: &'static str,
        name: &'static str,
        chroot: &'static str,
        manifest_dir: &'static str,
    ) -> TestInfo {
        TestInfo {
            module,
            name,
            chroot,
            scope: Scope::Module,
            ignored: false,
            expects_panic: false,
            manifest_dir,
            network: "",
            machines: &[],
            setups: &[],
            serial: false,
            role_networks: &[],
        }
    }

    /// The name libtest knows the test by: the module path without the crate, then the name.
    pub fn test_name(&self) -> String {
        match self.module.split_once("::") {
            Some((_, path)) => format!("{path}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The network its machines are on, and the further zones: the attribute's, else a zone
    /// of its own for a group, else the default (`NSPAWN_NETWORK`, or `isolated`).
    pub(crate) fn networks(&self) -> Networks {
        if let Ok(networks) = Networks::parse(self.network) {
            return networks;
        }
        let first = match self.machines.is_empty() {
            true => crate::settings::lenient().network.clone(),
            false => crate::network::Network::Zone {
                name: group_zone(self.module, self.machines),
                outside: false,
            },
        };
        Networks {
            first,
            also_on: Vec::new(),
        }
    }

    /// The networks of a group's role: its own (see [`super::Group::role_networks`]), else
    /// the group's. A `Group` is const data, so its own are checked here, not at compile time.
    pub(crate) fn networks_of(&self, role: &str) -> crate::Result<Networks> {
        match self.role_networks.iter().find(|(r, _)| *r == role) {
            Some((_, text)) => Networks::parse(text).map_err(|reason| crate::Error::Network {
                network: text.to_string(),
                machine: format!("of role {role}"),
                reason,
            }),
            None => Ok(self.networks()),
        }
    }

    /// Whether this test is one the running binary will execute.
    pub(crate) fn selected(&self, filter: &Filter) -> bool {
        filter.selects(&self.test_name(), self.ignored)
    }
}

/// Every registered test of the binary.
pub fn registered() -> impl Iterator<Item = &'static TestInfo> {
    inventory::iter::<TestInfo>.into_iter()
}

/// The zone of a group that names none: one per (module, group), within a zone name's 32
/// characters.
fn group_zone(module: &str, machines: &[(&str, &str)]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (module, machines).hash(&mut hasher);
    format!("group-{:016x}", hasher.finish())
}
