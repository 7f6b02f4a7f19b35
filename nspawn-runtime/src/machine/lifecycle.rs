//! A running [`Machine`]: what it is, its agent, and the ways it ends (stopped, kept for
//! debugging, or dropped).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::registry;
use crate::agent::wire::{RecvError, Request, Response};
use crate::agent::Agent;
use crate::chroot::storage::Storage;
use crate::cleanup::records::Record;
use crate::cleanup::slots;
use crate::error::{Error, Result};
use crate::host::pidfd::PidFd;
use crate::network::{Membership, Network};
use crate::report::{self, Event};

/// A running, ephemeral copy of a master chroot, booted with systemd.
///
/// Changes made inside are thrown away when it stops: it runs on a btrfs snapshot or on a
/// tmpfs overlay of the master chroot, which is never modified.
///
/// ```no_run
/// use nspawn::Machine;
///
/// let machine = Machine::start("bookworm")?;
/// machine.write("/etc/motd", "hello\n")?;
/// assert_eq!(machine.sh("cat /etc/motd")?, "hello\n");
/// machine.stop()?;
/// # Ok::<(), nspawn::Error>(())
/// ```
///
/// A clone is another handle on the same machine, to hand to a thread or a task: the machine
/// stops when the last handle is dropped, or at the first [`Machine::stop`].
#[derive(Debug, Clone)]
pub struct Machine(pub(super) Arc<State>);

/// What a [`Machine`] handle shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(super) name: String,
    pub(super) chroot: String,
    pub(super) storage: Storage,
    pub(super) log: PathBuf,
    /// The container's init, replaced at each boot on the same disk (see `power`).
    pub(super) leader: Mutex<Arc<PidFd>>,
    /// How it boots again; `None` on a handle of another process's machine.
    pub(super) again: Option<BootAgain>,
    pub(super) running: registry::Handle,
    pub(super) agent: Mutex<Option<Arc<Agent>>>,
    pub(super) slot: Mutex<Option<slots::Slot>>,
    pub(super) stop_timeout: Duration,
    /// A verb's default timeout (see `verbs`).
    pub(super) wait_timeout: Duration,
    pub(super) span: tracing::Span,
    pub(super) network: Network,
    /// Its places on zones, left when it stops: its network's zone first (if it has one),
    /// then those of [`MachineBuilder::also_on`](super::builder::MachineBuilder::also_on).
    pub(super) memberships: Mutex<Vec<Membership>>,
    /// Its address on its zone.
    pub(super) address: Option<std::net::IpAddr>,
    /// From nspawn's start to ready: no chroot build, no wait for a slot.
    pub(super) boot_time: std::sync::OnceLock<Duration>,
    /// Why it cannot run any more, when that was a failure to boot it again (not a stop):
    /// what is asked of it later says so, not just that it is not running.
    pub(super) lost: std::sync::OnceLock<String>,
}

impl Machine {
    /// The machine's name, unique on the host, and its hostname.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// assert_eq!(machine.sh("hostname")?.trim(), machine.name());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// How long it took from nspawn's start to ready, once it is (a chroot's build on
    /// demand and a wait for a slot before it are not in it).
    pub(crate) fn boot_time(&self) -> Option<Duration> {
        self.0.boot_time.get().copied()
    }

    /// The chroot it was booted from.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// assert_eq!(machine.chroot(), "bookworm");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn chroot(&self) -> &str {
        &self.0.chroot
    }

    /// How the master chroot is stored, and so how this machine was made from it.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// println!("booted on {}", machine.storage());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn storage(&self) -> Storage {
        self.0.storage
    }

    /// The container's PID 1, as seen from the host.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// println!("the container's PID 1 is {} on the host", machine.leader_pid());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn leader_pid(&self) -> u32 {
        self.current_leader().pid()
    }

    /// The init of the machine's latest boot, alive or not.
    pub(crate) fn current_leader(&self) -> Arc<PidFd> {
        self.0
            .leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The console log of the machine.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// println!("console: {}", machine.log_path().display());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn log_path(&self) -> &Path {
        &self.0.log
    }

    /// The machine's network, as it was asked for.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm").private_network(true).start()?;
    /// assert_eq!(machine.network(), &nspawn::Network::Private);
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn network(&self) -> &Network {
        &self.0.network
    }

    /// The machine's address on its zone (`isolated` and `zone:` networks), which the test
    /// process reaches directly: a service the machine runs is at this address. `None` on
    /// `host` (use `127.0.0.1`) and `private` networks (nothing reaches them).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use nspawn::{Machine, Network};
    ///
    /// let machine = Machine::builder("bookworm").network(Network::Isolated).start()?;
    /// machine.run(["apt-get", "install", "-y", "openssh-server"])?;
    /// machine.wait_for_port(22, Duration::from_secs(10))?;
    /// let address = machine.address().expect("an isolated machine has an address");
    /// let ssh = std::net::TcpStream::connect((address, 22))?; // from the test process
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn address(&self) -> Option<std::net::IpAddr> {
        self.0.address
    }

    /// The machine's address on zone `zone`, its network's or one of
    /// [`MachineBuilder::also_on`](super::builder::MachineBuilder::also_on): what the
    /// machines of that zone reach it at. `None` if it is not on that zone.
    ///
    /// ```no_run
    /// use nspawn::{Machine, Network};
    ///
    /// let front = Network::Zone { name: "front".into(), outside: false };
    /// let proxy = Machine::builder("bookworm").network(front).also_on("back").start()?;
    /// assert_ne!(proxy.address_on("front"), proxy.address_on("back"));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn address_on(&self, zone: &str) -> Option<std::net::IpAddr> {
        let memberships = self.0.memberships.lock().unwrap_or_else(|p| p.into_inner());
        memberships
            .iter()
            .find(|m| m.zone_key() == zone)
            .map(|m| m.address().into())
    }

    /// Whether the machine is up. A reboot the guest asked for (`systemctl reboot`) is
    /// followed: this waits for its next boot.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// assert!(machine.is_running());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.leader().is_ok()
    }

    /// The container's init, following a reboot the guest asked for.
    pub(crate) fn leader(&self) -> Result<Arc<PidFd>> {
        let leader = self.current_leader();
        if leader.is_alive() {
            return Ok(leader);
        }
        self.follow_reboot()
    }

    /// The machine's agent, started on first use, and again if it died.
    pub(crate) fn agent(&self) -> Result<Arc<Agent>> {
        if let Some(agent) = self.live_agent() {
            return Ok(agent);
        }
        // Not under the agent's lock: following a reboot takes the machine's.
        let leader = self.leader()?;
        let mut current = self.0.agent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(agent) = current.as_ref().filter(|a| a.is_alive()) {
            return Ok(agent.clone());
        }
        let started = Instant::now();
        let agent = Agent::start(&self.0.name, &leader).map_err(|e| Error::Agent {
            machine: self.0.name.clone(),
            during: "to start".into(),
            reason: e.to_string(),
        })?;
        self.0.span.in_scope(|| {
            tracing::debug!(
                pid = agent.pid(),
                start_ms = started.elapsed().as_secs_f64() * 1e3,
                "agent ready"
            )
        });
        let agent = Arc::new(agent);
        *current = Some(agent.clone());
        Ok(agent)
    }

    /// The running agent, if there is one: a call's fast path, one liveness check.
    fn live_agent(&self) -> Option<Arc<Agent>> {
        let current = self.0.agent.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|a| a.is_alive()).cloned()
    }

    /// The agent's PID on the host, starting it if needed: for tests of the runtime.
    #[doc(hidden)]
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// println!("agent: {}", machine.agent_pid()?);
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn agent_pid(&self) -> Result<u32> {
        self.agent().map(|a| a.pid())
    }

    /// One request to the agent, for `op` (what the caller was doing, for messages).
    pub(crate) fn ask(&self, request: &Request, op: &str) -> Result<(Response, Vec<OwnedFd>)> {
        let agent = self.agent()?;
        agent
            .call(request)
            .map_err(|e| self.agent_lost(&agent, op, e))
    }

    /// The error for a call the agent did not answer.
    pub(crate) fn agent_lost(&self, agent: &Agent, during: &str, e: RecvError) -> Error {
        if !self.current_leader().is_alive() {
            if let Err(stopped) = self.leader() {
                return stopped;
            }
        }
        let reason = match e {
            RecvError::Closed => agent.exit_description(),
            RecvError::TimedOut => format!(
                "it did not answer in time (agent pid {}, stopped or stuck?)",
                agent.pid()
            ),
            RecvError::Io(e) => e.to_string(),
        };
        Error::Agent {
            machine: self.0.name.clone(),
            during: during.into(),
            reason,
        }
    }

    /// The error for an answer that does not fit the question.
    pub(crate) fn agent_confused(&self, during: &str, answer: &Response) -> Error {
        Error::Agent {
            machine: self.0.name.clone(),
            during: during.into(),
            reason: format!("unexpected answer {answer:?}"),
        }
    }

    pub(crate) fn guest_error(
        &self,
        op: &'static str,
        path: &Path,
        source: std::io::Error,
    ) -> Error {
        Error::Guest {
            op,
            path: path.into(),
            machine: self.0.name.clone(),
            source,
        }
    }

    /// Leaves the machine running after the test process ends, for debugging, and says how
    /// to get in. `cargo nspawn gc --kept` removes it.
    pub(crate) fn keep(&self, why: &str) {
        let Some(running) = self
            .0
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        registry::unregister(&self.0.name);
        let mut record = Record::all()
            .into_iter()
            .find(|r| r.name == self.0.name)
            .unwrap_or_else(|| running.record(&self.0.name, Path::new("")));
        record.kept = true;
        let _ = record.save();
        drop(running);
        self.0.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        report::event(Event::Kept {
            machine: self.0.name.clone(),
        });
        report::count_kept();
        report::announce(&format!(
            "kept machine {} ({why}). Get in with: cargo nspawn shell {}   \
             Remove it with: cargo nspawn gc --kept",
            self.0.name, self.0.name
        ));
    }

    /// Stops the machine: its container is killed and nspawn removes the snapshot or overlay.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.write("/root/scratch", "gone after the stop")?;
    /// machine.stop()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn stop(self) -> Result<()> {
        self.0.shutdown()
    }

    /// Stops the machine on a thread of its own: the caller goes on at once, and the process
    /// waits for the stop before it exits (see [`registry::InFlight`]).
    pub(crate) fn stop_in_background(&self) {
        let in_flight = registry::InFlight::begin();
        let machine = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nspawn-stop".into())
            .spawn(move || {
                let _in_flight = in_flight;
                if let Err(e) = machine.shutdown() {
                    crate::report::error(
                        Some(&machine.0.name),
                        format_args!("stopping in the background: {e}"),
                    );
                }
            });
        // Without a thread, the machine (dropped with the closure) stopped here.
        if let Err(e) = spawned {
            crate::report::warning(
                None,
                format_args!("no thread to stop a machine in the background: {e}"),
            );
        }
    }
}

/// What a machine's next boot on the same disk needs.
#[derive(Debug)]
pub(crate) struct BootAgain {
    /// How it was booted.
    pub spec: crate::backend::BootSpec,
    /// The console log, open: the next boot writes on.
    pub log_file: std::fs::File,
}

impl State {
    /// Stops the machine through a shared reference; later calls do nothing.
    pub(crate) fn shutdown(&self) -> Result<()> {
        let Some(mut running) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        registry::unregister(&self.name);
        self.agent.lock().unwrap_or_else(|p| p.into_inner()).take();
        let started = Instant::now();
        let result = running.stop(self.stop_timeout);
        self.span.in_scope(|| {
            tracing::info!(
                stop_ms = (started.elapsed().as_secs_f64() * 1e3).round(),
                nspawn = running.nspawn_pid(),
                ok = result.is_ok(),
                "stopped"
            )
        });
        report::event(Event::Stopped {
            machine: self.name.clone(),
        });
        if result.is_ok() {
            Record::remove(&self.name);
        }
        // Its veths went with it; its addresses, and each zone it was the last of, go now.
        self.memberships
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        result
    }
}

impl Machine {
    /// A handle on a machine of this state.
    pub(crate) fn new(state: State) -> Machine {
        Machine(Arc::new(state))
    }

    /// Stops the machine through a shared handle; later calls do nothing.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.0.shutdown()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            crate::report::error(
                Some(&self.name),
                format_args!("stopping on drop failed: {e}"),
            );
        }
    }
}
