//! Network faults, as the NixOS test driver's `block()`/`unblock()` and more: a machine's
//! link taken down, the link between two machines of a zone cut, and delay and loss on a
//! link (`tc netem`). Everything is done from the host, where the guest cannot undo it, and
//! holds for the machine's current boot (a reboot brings a fresh link).

use std::time::Duration;

use super::lifecycle::Machine;
use crate::error::{Error, Result};
use crate::network::Membership;

/// Delay, jitter and loss on a machine's link, each way (see [`Machine::impair`]).
///
/// ```
/// use std::time::Duration;
/// let slow = nspawn::LinkFaults {
///     delay: Duration::from_millis(100),
///     loss_percent: 1.0,
///     ..Default::default()
/// };
/// assert!(!slow.is_none());
/// assert!(nspawn::LinkFaults::default().is_none());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFaults {
    /// Added to every packet, each way.
    pub delay: Duration,
    /// Random variation of the delay, either side of it.
    pub jitter: Duration,
    /// Packets dropped at random, in percent, each way.
    pub loss_percent: f64,
}

impl LinkFaults {
    /// Whether these are no faults at all (what clears them).
    pub fn is_none(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero() && self.loss_percent == 0.0
    }
}

impl Machine {
    /// Takes the machine's link down, as a pulled cable: nothing reaches it and it reaches
    /// nothing, on its zone or out, until [`Machine::unblock`]. For machines on a zone
    /// (`zone:NAME`, `isolated`); a machine on further zones
    /// ([`MachineBuilder::also_on`](crate::MachineBuilder::also_on)) loses every link.
    ///
    /// ```no_run
    /// # #[nspawn::test(
    /// #     machines(server = "bookworm", client = "bookworm"),
    /// #     network = "zone:docs-block+outside"
    /// # )]
    /// # fn f(server: &nspawn::Machine, client: &nspawn::Machine) -> nspawn::Result<()> {
    /// # server.run(["apt-get", "install", "-y", "nginx"])?;
    /// # client.run(["apt-get", "install", "-y", "curl"])?;
    /// # server.wait_for_port(80, std::time::Duration::from_secs(10))?;
    /// server.block()?;
    /// client.fail("curl --max-time 2 http://server/")?;
    /// server.unblock()?;
    /// client.succeed("curl --max-time 5 http://server/")?;
    /// # Ok(()) }
    /// ```
    pub fn block(&self) -> Result<()> {
        self.set_link(false)
    }

    /// Brings the machine's link up again after [`Machine::block`].
    pub fn unblock(&self) -> Result<()> {
        self.set_link(true)
    }

    /// Cuts the link between this machine and `other` (of the same zone), both ways, while
    /// both keep every other link: a network partition. [`Machine::unblock_from`] mends it.
    ///
    /// ```no_run
    /// # #[nspawn::test(machines(a = "bookworm", b = "bookworm"), network = "zone:docs-cut+outside")]
    /// # fn f(a: &nspawn::Machine, b: &nspawn::Machine) -> nspawn::Result<()> {
    /// # a.run(["apt-get", "install", "-y", "iputils-ping"])?;
    /// a.block_from(b)?;
    /// a.fail(&format!("ping -c1 -W1 {}", b.name()))?;
    /// a.unblock_from(b)?;
    /// a.succeed(&format!("ping -c1 -W2 {}", b.name()))?;
    /// # Ok(()) }
    /// ```
    pub fn block_from(&self, other: &Machine) -> Result<()> {
        self.cut_from(other, true)
    }

    /// Mends the link that [`Machine::block_from`] cut; one that was not cut is no error.
    pub fn unblock_from(&self, other: &Machine) -> Result<()> {
        self.cut_from(other, false)
    }

    /// Delays and loses the machine's packets, each way (`tc netem` on both ends of its
    /// link); `LinkFaults::default()` clears them. The kernel needs netem
    /// (`CONFIG_NET_SCH_NETEM`): without it, the error says so.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// use std::time::Duration;
    /// let slow = nspawn::LinkFaults { delay: Duration::from_millis(200), ..Default::default() };
    /// match machine.impair(slow) {
    ///     Ok(()) => machine.impair(nspawn::LinkFaults::default())?,
    ///     // A kernel without netem: skip, as `tests/machines/network.rs` does.
    ///     Err(e) if e.to_string().contains("CONFIG_NET_SCH_NETEM") => eprintln!("skipped: {e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn impair(&self, faults: LinkFaults) -> Result<()> {
        let leader = self.leader()?;
        self.on_zone("delaying or losing its packets", |m| {
            m.impair(&leader, faults.delay, faults.jitter, faults.loss_percent)
        })
    }

    fn set_link(&self, up: bool) -> Result<()> {
        self.leader()?;
        let doing = if up { "unblocking it" } else { "blocking it" };
        self.on_zone(doing, |m| m.set_link(up))
    }

    /// Cuts the links on every zone the two share (the first when they share none, for its
    /// message).
    fn cut_from(&self, other: &Machine, cut: bool) -> Result<()> {
        // Their lock is let go before ours is taken: two machines cutting each other at
        // once must not wait on each other.
        let theirs: Vec<_> = other
            .0
            .memberships
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(Membership::end)
            .collect();
        if theirs.is_empty() {
            return Err(self.not_on_zone(other, "cutting its link to another machine"));
        }
        self.on_zones("cutting its link to another machine", |mine| {
            let shared: Vec<_> = mine
                .iter()
                .flat_map(|m| {
                    theirs
                        .iter()
                        .filter(|t| m.shares_zone(t))
                        .map(move |t| (m, t))
                })
                .collect();
            let pairs = match shared.is_empty() {
                true => vec![(&mine[0], &theirs[0])],
                false => shared,
            };
            for (mine, theirs) in pairs {
                mine.cut_from(theirs, cut)
                    .map_err(|reason| Error::Network {
                        network: self.network().to_string(),
                        machine: self.name().into(),
                        reason,
                    })?;
            }
            Ok(())
        })
    }

    /// Runs `act` on each of the machine's places on zones, or says it has none.
    fn on_zone(&self, doing: &str, act: impl Fn(&Membership) -> Result<()>) -> Result<()> {
        self.on_zones(doing, |memberships| memberships.iter().try_for_each(&act))
    }

    /// Runs `act` on the machine's places on zones (never empty), or says it has none.
    fn on_zones(&self, doing: &str, act: impl FnOnce(&[Membership]) -> Result<()>) -> Result<()> {
        let memberships = self.0.memberships.lock().unwrap_or_else(|p| p.into_inner());
        match memberships.is_empty() {
            false => act(&memberships),
            true => Err(self.not_on_zone(self, doing)),
        }
    }

    fn not_on_zone(&self, machine: &Machine, doing: &str) -> Error {
        Error::Network {
            network: machine.network().to_string(),
            machine: machine.name().into(),
            reason: format!(
                "{doing} needs a link of its own: boot it on a zone (Network::Zone or Network::Isolated)"
            ),
        }
    }
}
