//! The options of a boot, and the boot itself: [`MachineBuilder::start`].

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::registry;
use crate::backend::{self, Bind, BootSpec, HostsFile, Userns};
use crate::chroot;
use crate::chroot::layer::LayerRoot;
use crate::chroot::storage::{self};
use crate::cleanup::keep;
use crate::cleanup::slots;
use crate::cleanup::sweep;
use crate::cleanup::watchdog;
use crate::error::{Error, Result};
use crate::host::console;
use crate::host::idmap::Upper;
use crate::host::mount_ns;
use crate::host::privs;
use crate::network::{Joining, Membership, Network};
use crate::report::{self, Event};

use super::lifecycle::{BootAgain, Machine, State};

/// How long to wait for a free machine slot (see [`crate::cleanup::slots`]).
const SLOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Options for booting a [`Machine`].
///
/// ```no_run
/// use std::time::Duration;
/// use nspawn::Machine;
///
/// let machine = Machine::builder("bookworm")
///     .private_network(true)
///     .bind_ro("/usr/share/doc", "/mnt/doc")
///     .boot_timeout(Duration::from_secs(30))
///     .wait_until_running(true)
///     .start()?;
/// # Ok::<(), nspawn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use]
pub struct MachineBuilder {
    chroot: String,
    boot_timeout: Duration,
    stop_timeout: Duration,
    wait_timeout: Duration,
    network: Network,
    /// Further zones it is on, each through a link of its own.
    also_on: Vec<String>,
    /// Other names its zone's peers know it by.
    aliases: Vec<String>,
    /// The group (of one test's machines) whose peers also know its aliases.
    group: Option<u64>,
    /// A set-up layer's tree to boot instead of the chroot's own.
    tree: Option<LayerRoot>,
    /// A user namespace or not, whatever `NSPAWN_PRIVATE_USERS` says.
    private_users: Option<bool>,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    env: Vec<(String, String)>,
    args: Vec<OsString>,
    wait_until_running: bool,
    workspace: Option<PathBuf>,
    suppress_sync: bool,
    properties: Vec<String>,
}

impl MachineBuilder {
    fn new(chroot: &str) -> MachineBuilder {
        MachineBuilder {
            chroot: chroot.into(),
            boot_timeout: crate::settings::lenient().boot_timeout,
            stop_timeout: crate::settings::lenient().stop_timeout,
            wait_timeout: crate::settings::lenient().wait_timeout,
            network: crate::settings::lenient().network.clone(),
            also_on: Vec::new(),
            aliases: Vec::new(),
            group: None,
            tree: None,
            private_users: None,
            binds: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            wait_until_running: false,
            workspace: None,
            suppress_sync: false,
            properties: Vec::new(),
        }
    }

    /// `--suppress-sync=yes`: the machine's `fsync`s become no-ops, which speeds up package
    /// installs. Probed: ignored, with a warning, on nspawn older than systemd 250.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .suppress_sync(true)
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn suppress_sync(mut self, suppress: bool) -> Self {
        self.suppress_sync = suppress;
        self
    }

    /// A unit property for the machine's unit on the systemd backend, e.g. `"MemoryMax=512M"`
    /// or `"CPUWeight=50"`, on top of the defaults (`KillMode=mixed`, `Type=notify`,
    /// `Slice=machine.slice`, `Delegate=yes`, `TasksMax=16384`, `WatchdogSec=3min`, ...).
    /// Properties the host's systemd is too old for are left out with a warning. The direct
    /// backend has no unit and ignores them.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .property("MemoryMax=512M")
    ///     .property("TasksMax=256")
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn property(mut self, property: &str) -> Self {
        self.properties.push(property.into());
        self
    }

    /// Where to find the chroots: a directory of the Cargo workspace that holds
    /// `test_chroots/` (default: found from `CARGO_MANIFEST_DIR` or the current directory).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .workspace(env!("CARGO_MANIFEST_DIR"))
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn workspace(mut self, dir: impl AsRef<Path>) -> Self {
        self.workspace = Some(dir.as_ref().into());
        self
    }

    /// How long to wait for the machine to boot (default 60 s).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .boot_timeout(std::time::Duration::from_secs(30))
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// How long to wait for the machine to stop (default 10 s).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .stop_timeout(std::time::Duration::from_secs(5))
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// How long a verb's script may run, and its retries last (default 60 s, or
    /// `NSPAWN_WAIT_TIMEOUT`): see [`Machine::succeed`].
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .wait_timeout(std::time::Duration::from_secs(300))
    ///     .start()?;
    /// machine.run(["systemd-run", "--on-active=2", "touch", "/run/slow-service.ready"])?;
    /// machine.wait_until_succeeds("test -e /run/slow-service.ready")?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// A private network namespace (only loopback): the same as `.network(Network::Private)`
    /// (and `false`, as `.network(Network::Host)`).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .private_network(true)
    ///     .start()?;
    /// assert_eq!(machine.sh("ls /sys/class/net")?, "lo\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn private_network(self, private: bool) -> Self {
        self.network(if private {
            Network::Private
        } else {
            Network::Host
        })
    }

    /// The machine's network (default: `isolated`, or `NSPAWN_NETWORK`):
    ///
    /// - `Network::Isolated`: an address of its own (see [`Machine::address`]), the outside
    ///   through the host (NAT); only the test process reaches it, and its services never
    ///   clash with the host's or another machine's;
    /// - `Network::Host`: the host's interfaces and ports, as the seed had it;
    /// - `Network::Private`: loopback only;
    /// - `Network::Zone { name, outside }`: a bridge shared with the machines of this run on
    ///   the same zone, which reach each other by name (`/etc/hosts`), and, with `outside`,
    ///   the outside through the host.
    ///
    /// The forms of the attribute also parse: `"zone:web+outside".parse::<Network>()`.
    ///
    /// ```no_run
    /// use nspawn::{Machine, Network};
    ///
    /// let web = Network::Zone { name: "web".into(), outside: false };
    /// let server = Machine::builder("bookworm").network(web.clone()).start()?;
    /// let client = Machine::builder("bookworm").network(web).start()?;
    /// client.run(["getent", "hosts", server.name()])?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Another name the machine's zone peers know it by (in their `/etc/hosts`), such as
    /// `"db"`; no effect on `host` and `private` networks.
    ///
    /// ```no_run
    /// use nspawn::{Machine, Network};
    ///
    /// let zone = Network::Zone { name: "app".into(), outside: false };
    /// let db = Machine::builder("bookworm").network(zone.clone()).alias("db").start()?;
    /// let app = Machine::builder("bookworm").network(zone).start()?;
    /// app.run(["getent", "hosts", "db"])?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn alias(mut self, name: &str) -> Self {
        self.aliases.push(name.into());
        self
    }

    /// A network and further zones at once, as a test's `network = "..."` gives them.
    pub(crate) fn networks(self, networks: &nspawn_config::Networks) -> Self {
        let mut builder = self.network(networks.first.clone());
        builder.also_on.extend(networks.also_on.iter().cloned());
        builder
    }

    /// Puts the machine on zone `zone` too, through a link of its own (`host1` inside for the
    /// first such zone, `host2` for the next), besides its network's: a front and a back
    /// network, with a proxy on both. The zone's machines know it by name (and aliases) at its
    /// address there ([`Machine::address_on`]); it has no way out through this zone, and its
    /// default route stays its network's. Its network must be `isolated` or a zone.
    ///
    /// ```no_run
    /// use nspawn::{Machine, Network};
    ///
    /// let zone = |name: &str| Network::Zone { name: name.into(), outside: false };
    /// let db = Machine::builder("bookworm").network(zone("back")).alias("db").start()?;
    /// let proxy = Machine::builder("bookworm").network(zone("front")).also_on("back").start()?;
    /// let client = Machine::builder("bookworm").network(zone("front")).start()?;
    /// proxy.succeed("getent hosts db")?;
    /// client.fail("getent hosts db")?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn also_on(mut self, zone: &str) -> Self {
        self.also_on.push(zone.into());
        self
    }

    /// Runs the machine in a user namespace of its own (`true`: its root is an unprivileged
    /// host uid, and an error where the host cannot) or privileged (`false`: its root is the
    /// host's root, for the rare test that needs what only that allows, such as a container
    /// that runs containers itself), whatever `NSPAWN_PRIVATE_USERS` says. See the guide's
    /// table of what a guest can reach in each mode (`nspawn::guide::machines`).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .private_users(false)
    ///     .arg("--capability=all")
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn private_users(mut self, private: bool) -> Self {
        self.private_users = Some(private);
        self
    }

    /// Boots a set-up layer (see `chroot::layer`) instead of the chroot's own tree.
    pub(crate) fn tree(mut self, tree: LayerRoot) -> Self {
        self.private_users = Some(tree.private_users);
        self.tree = Some(tree);
        self
    }

    /// Makes the machine one of a group whose members alone know each other's aliases.
    pub(crate) fn group(mut self, group: u64) -> Self {
        self.group = Some(group);
        self
    }

    /// Binds a host path into the machine, read-write.
    ///
    /// The machine's root then writes there as root: files it creates are root's. So when test
    /// code runs as the invoking user (under sudo), a path that user cannot write is refused at
    /// [`start`](Self::start), and a read-only bind needs a path the user can read.
    ///
    /// ```no_run
    /// let shared = std::env::temp_dir().join(format!("shared-{}", std::process::id()));
    /// std::fs::create_dir(&shared)?;
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .bind(&shared, "/mnt/shared")
    ///     .start()?;
    /// machine.succeed("echo hello > /mnt/shared/greeting")?;
    /// assert_eq!(std::fs::read_to_string(shared.join("greeting"))?, "hello\n");
    /// # std::fs::remove_dir_all(&shared)?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn bind(mut self, host: impl AsRef<Path>, guest: impl AsRef<Path>) -> Self {
        self.binds
            .push((host.as_ref().into(), guest.as_ref().into(), false));
        self
    }

    /// Binds a host path into the machine, read-only.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .bind_ro("/usr/share/doc", "/mnt/doc")
    ///     .start()?;
    /// assert!(machine.exists("/mnt/doc"));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn bind_ro(mut self, host: impl AsRef<Path>, guest: impl AsRef<Path>) -> Self {
        self.binds
            .push((host.as_ref().into(), guest.as_ref().into(), true));
        self
    }

    /// Sets an environment variable for the machine's init (`--setenv`).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .env("LANG", "C.UTF-8")
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds an argument to the `systemd-nspawn` command line, e.g. `--capability=all`.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .arg("--hostname=under-test")
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// Adds arguments to the `systemd-nspawn` command line.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .args(["--hostname=under-test", "--capability=CAP_NET_ADMIN"])
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// After boot, also wait for `systemctl is-system-running --wait`, for tests that need
    /// every unit up. A degraded system is then a boot error listing the failed units.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .wait_until_running(true)
    ///     .start()?;
    /// machine.run(["systemctl", "is-system-running"])?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn wait_until_running(mut self, wait: bool) -> Self {
        self.wait_until_running = wait;
        self
    }

    /// The chroot this builder boots.
    ///
    /// ```no_run
    /// let builder = nspawn::Machine::builder("bookworm");
    /// assert_eq!(builder.chroot(), "bookworm");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn chroot(&self) -> &str {
        &self.chroot
    }

    /// Boots the machine.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .private_network(true)
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn start(self) -> Result<Machine> {
        let dir = self.prepare()?;
        let slot = slots::acquire(SLOT_TIMEOUT)?;
        self.boot(dir, slot)
    }

    /// Boots the machine on a host-wide slot already held (a spare one, for a machine booted
    /// ahead of need: see `harness::ahead`).
    pub(crate) fn start_on(self, slot: slots::Slot) -> Result<Machine> {
        let dir = self.prepare()?;
        self.boot(dir, slot)
    }

    /// Everything before a slot: settings, privileges, binds, the chroot (built if need be),
    /// the sweep and the watchdog. Returns the chroot's directory.
    fn prepare(&self) -> Result<PathBuf> {
        crate::settings::get()?;
        privs::require_root("booting a machine")?;
        self.check_binds()?;
        self.check_names()?;
        let dir = chroot::ensure(&self.chroot, self.workspace.as_deref())?;
        sweep::at_startup(dir.parent());
        watchdog::ensure_started();
        registry::install_hooks_once();
        Ok(self.tree.as_ref().map_or(dir, |tree| tree.tree.clone()))
    }

    /// The machine's places on its network's zone (if it has one) and on the further zones,
    /// sharing one hosts file.
    fn join_zones(&self, name: &str) -> Result<Vec<Membership>> {
        let hosts = crate::network::Hosts::default();
        let further = self.also_on.iter().map(|zone| Network::Zone {
            name: zone.clone(),
            outside: false,
        });
        let mut memberships = Vec::new();
        for (link, network) in std::iter::once(self.network.clone())
            .chain(further)
            .enumerate()
        {
            let joined = Membership::join(&Joining {
                network: &network,
                machine: name,
                aliases: &self.aliases,
                group: self.group,
                hosts: &hosts,
                link,
            })?;
            memberships.extend(joined);
        }
        Ok(memberships)
    }

    fn boot(self, dir: PathBuf, slot: slots::Slot) -> Result<Machine> {
        let name = format!(
            "nspawn-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let span = tracing::info_span!("machine", name = %name, chroot = %self.chroot);
        let started = Instant::now();
        let (log, log_file) = console::create_log(&name)?;
        let memberships = self.join_zones(&name)?;
        let mut spec = self.spec(dir);
        if crate::backend::private_users::decide(self.private_users, &spec.dir)? {
            spec.userns = Some(self.userns(&spec.dir));
        }
        spec.extra_args
            .splice(0..0, memberships.iter().flat_map(Membership::nspawn_args));
        if let Some(membership) = memberships.first() {
            spec.hosts = Some(HostsFile {
                dir: crate::host::run_dir::private_dir("hosts")?,
                text: membership.hosts_text(),
            });
        }
        span.in_scope(
            || tracing::debug!(storage = %spec.storage, log = %log.display(), "starting"),
        );
        let kept_log = log_file
            .try_clone()
            .map_err(|e| Error::io("duplicating the console log's descriptor", e))?;
        let running = backend::boot(&spec, &name, &log, log_file, None)?;
        if let Err(e) = running.record(&name, &spec.dir).save() {
            crate::report::warning(
                Some(&name),
                format_args!(
                    "no ownership record, a crash would leave it to `cargo nspawn gc`: {e}"
                ),
            );
        }
        let leader = running.leader().try_clone();
        let nspawn_pid = running.nspawn_pid();
        let handle: registry::Handle = Arc::new(Mutex::new(Some(running)));
        registry::register(&name, handle.clone());
        let leader = leader.map_err(|e| Error::io("duplicating the leader pidfd", e))?;
        let machine = Machine::new(State {
            leader: Mutex::new(Arc::new(leader)),
            again: Some(BootAgain {
                spec: spec.clone(),
                log_file: kept_log,
            }),
            name,
            chroot: self.chroot.clone(),
            storage: spec.storage,
            log,
            running: handle,
            agent: Mutex::new(None),
            slot: Mutex::new(Some(slot)),
            stop_timeout: self.stop_timeout,
            wait_timeout: self.wait_timeout,
            span,
            network: self.network.clone(),
            address: memberships.first().map(|m| m.address().into()),
            memberships: Mutex::new(memberships),
            boot_time: std::sync::OnceLock::new(),
            lost: std::sync::OnceLock::new(),
        });
        machine.configure_network(spec.hosts.as_ref(), nspawn_pid)?;
        // The way-out probe (a few ms) runs while the guest's systemd finishes booting.
        std::thread::scope(|scope| {
            let probe = scope.spawn(|| machine.check_way_out());
            let running = match self.wait_until_running {
                true => machine.wait_running(self.boot_timeout.saturating_sub(started.elapsed())),
                false => Ok(()),
            };
            let way_out = probe.join().unwrap_or_else(|_| {
                Err(Error::io(
                    "checking the machine's way out",
                    std::io::Error::other("the probe's thread panicked"),
                ))
            });
            running.and(way_out)
        })?;
        let _ = machine.0.boot_time.set(started.elapsed());
        let boot_ms = (started.elapsed().as_secs_f64() * 1e3).round();
        report::count_boot(boot_ms);
        machine
            .0
            .span
            .in_scope(|| tracing::info!(boot_ms, leader = machine.leader_pid(), "ready"));
        report::event(Event::Ready {
            machine: machine.0.name.clone(),
            chroot: machine.0.chroot.clone(),
            boot_ms: boot_ms as u64,
        });
        Ok(machine)
    }

    /// Checks the names the machine takes on its zones. Aliases end up in the guests'
    /// `/etc/hosts`: a line break or a space would add entries. Further zones need a network
    /// namespace with a zone of its own, and each once.
    fn check_names(&self) -> Result<()> {
        let error = |reason: String| Error::Network {
            network: self.network.to_string(),
            machine: format!("of chroot {}", self.chroot),
            reason,
        };
        for alias in &self.aliases {
            nspawn_config::check_alias(alias).map_err(error)?;
        }
        if !self.also_on.is_empty() && matches!(self.network, Network::Host | Network::Private) {
            return Err(error(format!(
                "also_on({:?}) needs the machine's network to be `isolated` or a zone, not {}",
                self.also_on[0], self.network
            )));
        }
        for (i, zone) in self.also_on.iter().enumerate() {
            nspawn_config::check_zone_name(zone).map_err(error)?;
            let twice = self.also_on[..i].contains(zone)
                || matches!(&self.network, Network::Zone { name, .. } if name == zone);
            if twice {
                return Err(error(format!(
                    "the machine is on zone {zone:?} once already"
                )));
            }
        }
        Ok(())
    }

    /// Test code running as the invoking user gets no host path through a bind that the user
    /// could not reach: checked with the user's own credentials (this thread's).
    fn check_binds(&self) -> Result<()> {
        use nix::unistd::{access, AccessFlags};
        if privs::dropped_user().is_none() || nix::unistd::Uid::effective().is_root() {
            return Ok(());
        }
        for (host, _, read_only) in &self.binds {
            let (mode, needs) = if *read_only {
                (AccessFlags::R_OK, "read")
            } else {
                (AccessFlags::R_OK | AccessFlags::W_OK, "write")
            };
            if let Err(e) = access(host.as_path(), mode) {
                return Err(Error::BindRefused {
                    host: host.clone(),
                    reason: format!(
                        "the test's user cannot {needs} it ({e}), and the machine's root would"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The layers of a user-namespaced machine's root.
    fn userns(&self, dir: &Path) -> Userns {
        match &self.tree {
            Some(tree) => Userns {
                lowers: tree.lowers.clone(),
                upper: tree.writable.clone().map_or(Upper::Tmpfs, Upper::Dir),
            },
            None => Userns {
                lowers: vec![dir.to_path_buf()],
                upper: Upper::Tmpfs,
            },
        }
    }

    fn spec(&self, dir: PathBuf) -> BootSpec {
        BootSpec {
            chroot: self.chroot.clone(),
            storage: storage::storage_of(&dir),
            dir,
            tied_to_process: keep::mode() == keep::Keep::Never,
            boot_timeout: self.boot_timeout,
            private_network: self.network == Network::Private,
            binds: self
                .binds
                .iter()
                .map(|(host, guest, read_only)| Bind {
                    host: host.clone(),
                    guest: guest.clone(),
                    read_only: *read_only,
                })
                .collect(),
            env: self.env.clone(),
            extra_args: self.args.clone(),
            suppress_sync: self.suppress_sync,
            properties: self.properties.clone(),
            writable: self.tree.as_ref().is_some_and(|t| t.writable.is_some()),
            userns: None,
            hosts: None,
        }
    }
}

impl Machine {
    /// Boots a machine from the master chroot `chroot` (a name under the chroots directory,
    /// or a path) with default options.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.stop()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn start(chroot: &str) -> Result<Machine> {
        Machine::builder(chroot).start()
    }

    /// Options for booting a machine from `chroot`.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::builder("bookworm")
    ///     .boot_timeout(std::time::Duration::from_secs(30))
    ///     .start()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn builder(chroot: &str) -> MachineBuilder {
        MachineBuilder::new(chroot)
    }

    /// Gives a machine on a zone its address and route, before anything is asked of it, and
    /// hands the zone its hosts file.
    fn configure_network(&self, hosts: Option<&HostsFile>, nspawn_pid: u32) -> Result<()> {
        if let Some(hosts) = hosts {
            let memberships = self.0.memberships.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(membership) = memberships.first() {
                let path = mount_ns::hosts_path(&hosts.dir);
                let file = mount_ns::open_hosts(nspawn_pid, &path).map_err(|e| {
                    self.network_error(format!("opening its hosts file failed: {e}"))
                })?;
                membership.attach_hosts(file);
            }
        }
        self.configure_address(&self.current_leader())
    }

    /// Gives the container of `leader` its address and route on the machine's zone, if it
    /// is on one: at each boot.
    pub(super) fn configure_address(&self, leader: &crate::host::pidfd::PidFd) -> Result<()> {
        let memberships = self.0.memberships.lock().unwrap_or_else(|p| p.into_inner());
        for membership in memberships.iter() {
            membership.configure(leader).map_err(|e| {
                self.network_error(format!(
                    "configuring its address in the machine failed: {e}"
                ))
            })?;
        }
        Ok(())
    }

    fn network_error(&self, reason: String) -> Error {
        Error::Network {
            network: self.0.network.to_string(),
            machine: self.0.name.clone(),
            reason,
        }
    }

    /// Proves that the machine's way out, if it has one, passes the host's firewall.
    fn check_way_out(&self) -> Result<()> {
        let memberships = self.0.memberships.lock().unwrap_or_else(|p| p.into_inner());
        // Only its network's zone may give it a way out.
        let Some(membership) = memberships.first() else {
            return Ok(());
        };
        membership
            .check_way_out(&self.current_leader())
            .map_err(|e| self.network_error(e.to_string()))
    }

    fn wait_running(&self, timeout: Duration) -> Result<()> {
        match self.wait_until_running(timeout) {
            Err(Error::NotReady {
                problem, detail, ..
            }) => Err(Error::Boot {
                machine: self.0.name.clone(),
                chroot: self.0.chroot.clone(),
                reason: format!("the system {problem}\n{detail}"),
                log: self.0.log.clone(),
                tail: console::tail(&self.0.log, 20).into(),
            }),
            other => other,
        }
    }
}
