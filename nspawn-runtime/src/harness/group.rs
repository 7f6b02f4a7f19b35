//! A group of machines declared once for a module: its roles and their chroots, its network,
//! per-role set-ups, and whether its tests run one after another. Each test names only the
//! roles it uses, by parameter name; a role's name is also its machine's host name.

use crate::machine::Machine;

/// A role's set-up: run once on the role's machine after the group boots, before any test.
pub type RoleSetup = fn(&Machine) -> crate::Result<()>;

/// Machines declared once, as a `const`, for the tests of a module that name it with
/// `#[nspawn::test(group = NAME)]`. Each test takes `&Machine` parameters named after the
/// roles it uses (`server_lazy` for the role `server-lazy`); a name that is no role of the
/// group is a compile error. All tests naming the group share its machines, booted at the
/// first of them.
///
/// ```
/// use nspawn::{Group, Machine};
///
/// fn install_sshd(server: &Machine) -> nspawn::Result<()> {
///     server.succeed("apt-get install -y openssh-server")?;
///     Ok(())
/// }
///
/// const SSH: Group = Group::new(&[
///     ("server", "bookworm"),
///     ("server-lazy", "bookworm"),
///     ("client", "bookworm"),
/// ])
/// .network("zone:ssh+outside")
/// .setups(&[("server", install_sshd), ("server-lazy", install_sshd)])
/// .serial();
///
/// assert_eq!(SSH.index_of("server_lazy"), 1);
/// ```
///
/// A test then takes the roles it uses:
///
/// ```no_run
/// # use nspawn::{Group, Machine};
/// # fn install_nginx(server: &Machine) -> nspawn::Result<()> {
/// #     server.succeed("apt-get install -y nginx")?;
/// #     Ok(())
/// # }
/// # fn install_curl(client: &Machine) -> nspawn::Result<()> {
/// #     client.succeed("apt-get install -y curl")?;
/// #     Ok(())
/// # }
/// # const WEB: Group = Group::new(&[("server", "bookworm"), ("client", "bookworm")])
/// #     .network("zone:web+outside")
/// #     .setups(&[("server", install_nginx), ("client", install_curl)]);
/// #[nspawn::test(group = WEB)]
/// fn the_client_fetches_the_page(server: &Machine, client: &Machine) -> nspawn::Result<()> {
///     server.port(80).wait_open()?;
///     client.succeed("curl -sf http://server/ | grep -q nginx")?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// `(role, chroot)`, in boot order.
    pub machines: &'static [(&'static str, &'static str)],
    /// As `network = "..."` on the attribute; empty for a zone of the group's own.
    pub network: &'static str,
    /// `(role, set-up)`.
    pub setups: &'static [(&'static str, RoleSetup)],
    /// Whether the group's tests run one after another.
    pub serial: bool,
    /// `(role, networks)` for roles not on the group's network.
    pub role_networks: &'static [(&'static str, &'static str)],
}

impl Group {
    /// A group of `(role, chroot)` machines, on a zone of its own with no way out.
    pub const fn new(machines: &'static [(&'static str, &'static str)]) -> Group {
        Group {
            machines,
            network: "",
            setups: &[],
            serial: false,
            role_networks: &[],
        }
    }

    /// Its network, as the attribute's `network = "..."` reads it (`zone:NAME+outside`...).
    pub const fn network(self, network: &'static str) -> Group {
        Group { network, ..self }
    }

    /// Networks by role, for roles not on the group's network, as `network` reads them plus
    /// lists: `"zone:back"`, or `"zone:front,zone:back"` for a machine on both (its first
    /// network gives its default route and any way out; see
    /// [`MachineBuilder::also_on`](crate::MachineBuilder::also_on)). Zones named here are the
    /// run's, as `network = "zone:NAME"`'s are. Checked when the group boots.
    ///
    /// ```
    /// use nspawn::Group;
    ///
    /// const SHOP: Group = Group::new(&[("client", "bookworm"), ("proxy", "bookworm"), ("db", "bookworm")])
    ///     .network("zone:shop-front")
    ///     .role_networks(&[("proxy", "zone:shop-front,zone:shop-back"), ("db", "zone:shop-back")]);
    /// assert_eq!(SHOP.role_networks.len(), 2);
    /// ```
    pub const fn role_networks(
        self,
        role_networks: &'static [(&'static str, &'static str)],
    ) -> Group {
        Group {
            role_networks,
            ..self
        }
    }

    /// Set-ups by role, each run once on its role's machine after the group boots.
    pub const fn setups(self, setups: &'static [(&'static str, RoleSetup)]) -> Group {
        Group { setups, ..self }
    }

    /// The group's tests run one after another, each with the machines to itself (also
    /// across nextest's processes): for sequential scripts that share state.
    pub const fn serial(self) -> Group {
        Group {
            serial: true,
            ..self
        }
    }

    /// The index of the role a test parameter names: the role itself, or with its `_`
    /// for `-`. Panics (at compile time, where the attribute asks) if there is none.
    pub const fn index_of(&self, parameter: &str) -> usize {
        let mut i = 0;
        while i < self.machines.len() {
            if names_role(parameter.as_bytes(), self.machines[i].0.as_bytes()) {
                return i;
            }
            i += 1;
        }
        panic!("a parameter of this test names no role of its group (roles are matched by name, `_` for `-`)")
    }
}

/// Whether parameter name `p` names role `r`: equal, a `_` of `p` standing for a `-` of `r`.
const fn names_role(p: &[u8], r: &[u8]) -> bool {
    if p.len() != r.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if p[i] != r[i] && !(p[i] == b'_' && r[i] == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// A role's host name: the role, with `_` (no host name may have one) as `-`.
pub(crate) fn host_name(role: &str) -> String {
    role.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Group = Group::new(&[("server", "bookworm"), ("server-lazy", "trixie")]);

    #[test]
    fn parameters_name_roles_with_underscores_for_hyphens() {
        assert_eq!(G.index_of("server"), 0);
        assert_eq!(G.index_of("server_lazy"), 1);
        assert_eq!(G.index_of("server-lazy"), 1);
        assert!(std::panic::catch_unwind(|| G.index_of("client")).is_err());
        assert_eq!(host_name("server_lazy"), "server-lazy");
    }
}
