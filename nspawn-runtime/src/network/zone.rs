//! The zones of this process and their members.
//!
//! A zone is made when its first machine joins: a subnet and record ([`ZoneRecord`]), a
//! bridge with the host's address, and its nft table. Each member gets the next free address,
//! its hosts file, and, if it reaches out, a place in the table's `outside` set. The zone is
//! taken down when its last member leaves, or at exit ([`leave_all`]); after a crash, the
//! sweep takes down the zones of dead runs ([`sweep`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use nspawn_config::NetworkSpec;

use super::hosts::{self, Peer};
use super::subnet::{file_name, host_lock, zone_files, ZoneRecord};
use super::{firewall, link, nat, way_out};
use crate::error::{Error, Result};
use crate::host::privs::ThreadRoot;
use crate::host::run_dir::private_dir;

/// A zone of this process.
struct Zone {
    record: Mutex<ZoneRecord>,
    /// Members, with their hosts files.
    members: Mutex<Vec<(Peer, Hosts)>>,
    /// Whether a machine's probe has passed the host's forward filters (see [`way_out`]).
    way_out_proven: AtomicBool,
}

/// A machine's hosts file, shared by its places on its zones: one file lists the peers of
/// every zone the machine is on.
pub(crate) type Hosts = Arc<MachineHosts>;

/// A machine's hosts file, once its machine runs (see [`Membership::attach_hosts`]), and the
/// zones it lists.
#[derive(Debug, Default)]
pub(crate) struct MachineHosts {
    file: Mutex<Option<std::fs::File>>,
    /// In the order the machine joined them: the first is the one `nspawn-host` names.
    zones: Mutex<Vec<Weak<Zone>>>,
}

impl MachineHosts {
    /// The file's text for `me`: the host, then every machine of each of its zones.
    fn text(&self, me: &Peer) -> String {
        let zones: Vec<Arc<Zone>> = lock(&self.zones).iter().filter_map(Weak::upgrade).collect();
        let views: Vec<(Ipv4Addr, Vec<Peer>)> = zones
            .iter()
            .map(|zone| {
                // One lock at a time: a zone's members are never locked while its record is.
                let host = zone.lock_record().address(1);
                (host, zone.peers())
            })
            .collect();
        hosts::render(me, &views)
    }

    /// Writes the file again, if the machine runs. The file stays locked while its text is
    /// made, so that of two rewrites the last one written saw the latest members.
    fn rewrite(&self, me: &Peer) {
        let file = lock(&self.file);
        let Some(file) = file.as_ref() else {
            return;
        };
        let text = self.text(me);
        if let Err(e) = crate::host::mount_ns::rewrite(file, &text) {
            crate::report::warning(
                Some(&me.name),
                format_args!("rewriting its hosts file: {e}"),
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Zones by key: the zone's name, or `@machine` for an isolated machine's zone of its own.
static ZONES: LazyLock<Mutex<HashMap<String, Arc<Zone>>>> = LazyLock::new(Default::default);

/// Isolated zones whose machine has stopped, kept for the next isolated machine: making and
/// removing a bridge and a table costs about 60 ms of kernel time each way. Only touched
/// with `ZONES` locked.
static IDLE: Mutex<Vec<Arc<Zone>>> = Mutex::new(Vec::new());
/// At most this many idle isolated zones are kept.
const IDLE_MAX: usize = 4;

/// How many isolated machines the run has still to boot, if the test harness knows.
static TO_COME: OnceLock<fn() -> usize> = OnceLock::new();

/// Sets how the zones learn how many isolated machines are still to boot: no more idle zones
/// are kept than will be used, since taking one down at exit holds the exit up (each bridge's
/// removal waits about 35 ms for the kernel), while during the run it overlaps the tests.
/// The first setting stays.
pub(crate) fn set_isolated_to_come(to_come: fn() -> usize) {
    let _ = TO_COME.set(to_come);
}

/// How many idle isolated zones are worth keeping now.
fn idle_wanted() -> usize {
    TO_COME
        .get()
        .map_or(IDLE_MAX, |to_come| to_come().min(IDLE_MAX))
}

/// A machine's place on a zone; leaving it (drop) frees the address and, for the last
/// member, the zone.
#[derive(Debug)]
pub(crate) struct Membership {
    key: String,
    zone: Arc<Zone>,
    me: Peer,
    outside: bool,
    hosts: Hosts,
    link: Link,
}

/// How a machine is linked to a zone's bridge.
#[derive(Debug, Clone)]
enum Link {
    /// Its `host0`, whose host end nspawn puts on the bridge (`--network-bridge`).
    Bridge,
    /// A further veth (`--network-veth-extra`): `guest` inside, `host_end` on the host,
    /// which is put on the bridge at each boot.
    Extra { host_end: String, guest: String },
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("record", &self.record)
            .finish()
    }
}

/// What a machine asks of its zone.
pub(crate) struct Joining<'a> {
    pub network: &'a NetworkSpec,
    pub machine: &'a str,
    pub aliases: &'a [String],
    pub group: Option<u64>,
    /// The machine's hosts file, shared by all its zones.
    pub hosts: &'a Hosts,
    /// 0 for the machine's first zone (its `host0`), then 1, 2, ... for each further one.
    pub link: usize,
}

impl Membership {
    /// Joins the zone `joining.network` names (made if need be); `None` for networks without a
    /// zone (`host`, `private`).
    pub(crate) fn join(joining: &Joining<'_>) -> Result<Option<Membership>> {
        let (key, outside) = match joining.network {
            NetworkSpec::Host | NetworkSpec::Private => return Ok(None),
            NetworkSpec::Isolated => (format!("@{}", joining.machine), true),
            NetworkSpec::Zone { name, outside } => {
                nspawn_config::check_zone_name(name)
                    .map_err(|reason| network_error(joining, reason))?;
                (name.clone(), *outside)
            }
        };
        let mut zones = ZONES.lock().unwrap_or_else(|p| p.into_inner());
        let idle = || {
            let isolated = joining.network == &NetworkSpec::Isolated;
            isolated.then(|| lock_idle().pop()).flatten()
        };
        let zone = match zones.get(&key).cloned().or_else(idle) {
            Some(zone) => zone,
            None => Arc::new(make_zone().map_err(|e| network_error(joining, e.to_string()))?),
        };
        zones.insert(key.clone(), zone.clone());
        let membership = zone
            .admit(joining, key.clone(), outside)
            .map_err(|e| network_error(joining, e.to_string()));
        if membership.is_err() && zone.is_empty() {
            zones.remove(&key);
            zone.take_down();
        }
        membership.map(Some)
    }

    /// The nspawn arguments: the veth on the zone's bridge.
    pub(crate) fn nspawn_args(&self) -> Vec<OsString> {
        match &self.link {
            Link::Bridge => {
                let bridge = self.zone.lock_record().bridge();
                vec![format!("--network-bridge={bridge}").into()]
            }
            Link::Extra { host_end, guest } => {
                vec![format!("--network-veth-extra={host_end}:{guest}").into()]
            }
        }
    }

    /// The machine's `/etc/hosts` as its zones stand now.
    pub(crate) fn hosts_text(&self) -> String {
        self.hosts.text(&self.me)
    }

    /// Hands the zones the machine's hosts file, open for writing (it is the machine's own:
    /// see `crate::host::mount_ns`), and brings it up to date: machines may have joined since
    /// it was written.
    pub(crate) fn attach_hosts(&self, file: std::fs::File) {
        *lock(&self.hosts.file) = Some(file);
        self.hosts.rewrite(&self.me);
    }

    /// Configures the booted machine's side: its address, and its route out if it has one;
    /// for a further link, its host end is put on the bridge first.
    pub(crate) fn configure(&self, leader: &crate::host::pidfd::PidFd) -> Result<()> {
        let record = self.zone.lock_record().clone();
        let gateway = self.outside.then(|| record.address(1));
        match &self.link {
            Link::Bridge => link::configure_guest(leader, "host0", self.me.address, gateway),
            Link::Extra { host_end, guest } => {
                link::enslave(host_end, &record.bridge())?;
                link::configure_guest(leader, guest, self.me.address, gateway)
            }
        }
    }

    /// The zone's name (`@machine` for an isolated machine's own).
    pub(crate) fn zone_key(&self) -> &str {
        &self.key
    }

    /// Proves that the host's forward filters let the machine's traffic out (see
    /// [`way_out`]): for every isolated machine (an idle zone's proof may be stale: the host's
    /// firewall may have changed since), and once for a named zone, whose later members share
    /// the same path.
    pub(crate) fn check_way_out(&self, leader: &crate::host::pidfd::PidFd) -> Result<()> {
        let isolated = self.key.starts_with('@');
        if !self.outside || (!isolated && self.zone.way_out_proven.load(Ordering::Acquire)) {
            return Ok(());
        }
        let record = self.zone.lock_record().clone();
        way_out::check(&record, leader)?;
        self.zone.way_out_proven.store(true, Ordering::Release);
        Ok(())
    }

    /// The machine's address on the zone.
    pub(crate) fn address(&self) -> Ipv4Addr {
        self.me.address
    }

    /// Takes the machine's link down (`up` false) or up again, at the host's end of its veth:
    /// the guest sees no carrier, as with a cable pulled.
    pub(crate) fn set_link(&self, up: bool) -> Result<()> {
        link::set_up(&self.host_end()?, up)
    }

    /// The host's end of the machine's veth, on the zone's bridge.
    fn host_end(&self) -> Result<String> {
        match &self.link {
            Link::Bridge => {
                let bridge = self.zone.lock_record().bridge();
                link::host_end(&bridge, &self.me.name)
            }
            Link::Extra { host_end, .. } => Ok(host_end.clone()),
        }
    }

    /// The machine's end of the link, inside it.
    fn guest_end(&self) -> &str {
        match &self.link {
            Link::Bridge => "host0",
            Link::Extra { guest, .. } => guest,
        }
    }

    /// This machine's end of a link, to cut from another machine's (see [`Membership::cut_from`]).
    pub(crate) fn end(&self) -> LinkEnd {
        LinkEnd {
            zone: self.zone.clone(),
            address: self.me.address,
            name: self.me.name.clone(),
        }
    }

    /// Whether `other` is on this zone.
    pub(crate) fn shares_zone(&self, other: &LinkEnd) -> bool {
        Arc::ptr_eq(&self.zone, &other.zone)
    }

    /// Cuts or mends the link between this machine and `other`, of the same zone.
    pub(crate) fn cut_from(&self, other: &LinkEnd, cut: bool) -> std::result::Result<(), String> {
        if !self.shares_zone(other) {
            return Err(format!(
                "{} is not on the same zone (only machines of one zone share a link)",
                other.name
            ));
        }
        let record = self.zone.lock_record().clone();
        super::nat::cut(&record, self.me.address, other.address, cut).map_err(|e| e.to_string())
    }

    /// Delay, jitter and loss on the machine's link, each way.
    pub(crate) fn impair(
        &self,
        leader: &crate::host::pidfd::PidFd,
        delay: std::time::Duration,
        jitter: std::time::Duration,
        loss_percent: f64,
    ) -> Result<()> {
        let ends = (self.host_end()?, self.guest_end());
        link::netem(ends, leader, delay, jitter, loss_percent)
    }
}

/// A machine's end of a link on its zone.
#[derive(Debug)]
pub(crate) struct LinkEnd {
    zone: Arc<Zone>,
    address: Ipv4Addr,
    name: String,
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Asked before `ZONES` is locked: the harness looks at its own state for it.
        let wanted = self.key.starts_with('@').then(idle_wanted);
        let mut zones = ZONES.lock().unwrap_or_else(|p| p.into_inner());
        if !zones
            .get(&self.key)
            .is_some_and(|z| Arc::ptr_eq(z, &self.zone))
        {
            // Taken down already (at exit, by `leave_all`).
            return;
        }
        let record = self.zone.lock_record().clone();
        let empty = {
            let mut members = self.zone.lock_members();
            members.retain(|(peer, _)| peer.name != self.me.name);
            members.is_empty()
        };
        self.zone.rewrite_hosts();
        if empty {
            zones.remove(&self.key);
            // An isolated zone waits for the next isolated machine (its way out stays: that
            // machine gets the same address, and has one too), if one is still to come.
            let mut going = vec![self.zone.clone()];
            if let Some(wanted) = wanted {
                let mut idle = lock_idle();
                idle.push(self.zone.clone());
                let surplus = idle.len().saturating_sub(wanted);
                going = idle.drain(..surplus).collect();
            }
            // The whole zone goes, its table with it; others may make zones meanwhile.
            drop(zones);
            for zone in going {
                zone.take_down();
            }
        } else if self.outside {
            // The address may go to a machine that has no way out.
            if let Err(e) = nat::outside(&record, self.me.address, false) {
                crate::report::warning(
                    Some(&self.me.name),
                    format_args!("closing its way out: {e}"),
                );
            }
        }
    }
}

impl Zone {
    fn lock_record(&self) -> std::sync::MutexGuard<'_, ZoneRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_members(&self) -> std::sync::MutexGuard<'_, Vec<(Peer, Hosts)>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.lock_members().is_empty()
    }

    /// The zone's machines as their peers know them.
    fn peers(&self) -> Vec<Peer> {
        self.lock_members().iter().map(|(p, _)| p.clone()).collect()
    }

    /// Writes every member's hosts file again, with the zone's members unlocked: a member's
    /// file lists the members of its other zones too, which are locked one at a time.
    fn rewrite_hosts(&self) {
        let members: Vec<(Peer, Hosts)> = self.lock_members().clone();
        for (me, hosts) in &members {
            hosts.rewrite(me);
        }
    }

    /// Gives a machine an address and a hosts file, and its way out if it asks.
    fn admit(
        self: &Arc<Zone>,
        joining: &Joining<'_>,
        key: String,
        outside: bool,
    ) -> Result<Membership> {
        let record = self.lock_record().clone();
        let mut members = self.lock_members();
        let used: Vec<Ipv4Addr> = members.iter().map(|(p, _)| p.address).collect();
        let address = (2..=254)
            .map(|host| record.address(host))
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                Error::io(
                    "admitting a machine",
                    std::io::Error::other("the zone is full: 253 machines"),
                )
            })?;
        if outside {
            self.open_way_out(address)?;
        }
        let me = Peer {
            name: joining.machine.into(),
            address,
            aliases: joining.aliases.to_vec(),
            group: joining.group,
        };
        let hosts = joining.hosts.clone();
        members.push((me.clone(), hosts.clone()));
        drop(members);
        lock(&hosts.zones).push(Arc::downgrade(self));
        self.rewrite_hosts();
        let link = match joining.link {
            0 => Link::Bridge,
            n => Link::Extra {
                host_end: extra_host_end(joining.machine, n),
                guest: format!("host{n}"),
            },
        };
        Ok(Membership {
            key,
            zone: self.clone(),
            me,
            outside,
            hosts,
            link,
        })
    }

    /// Forwarding on, the zone recorded as needing it, the address in the `outside` set.
    fn open_way_out(&self, address: Ipv4Addr) -> Result<()> {
        let mut record = self.lock_record();
        if !record.outside {
            record.outside = true;
            record.save()?;
        }
        nat::need_forwarding()?;
        nat::outside(&record, address, true)
    }

    fn take_down(&self) {
        let record = self.lock_record().clone();
        for line in take_down(&record, Whose::Ours) {
            tracing::debug!("{line}");
        }
    }
}

/// A new zone: a subnet, its bridge and its table, undone if any step fails. A run under
/// another run directory (whose records we do not see) may make the same bridge at the same
/// moment: then the next subnet is tried.
fn make_zone() -> Result<Zone> {
    crate::host::tools::ensure(
        &[crate::host::tools::IP, crate::host::tools::NFT],
        &|line| crate::report::announce(line),
    )?;
    let zones = host_lock("zones")?;
    let mut attempts = 0;
    loop {
        let record = ZoneRecord::allocate()?;
        let bridge =
            link::create_bridge(&record.bridge(), &record.tag(), record.address(1), &zones);
        let theirs =
            link::exists(&record.bridge()) && link::alias(&record.bridge()) != record.tag();
        if bridge.is_err() && theirs && attempts < 8 {
            // Made meanwhile by a run under another run directory: keep away from it.
            record.remove();
            attempts += 1;
            continue;
        }
        let filtered = bridge
            .and_then(|()| nat::install(&record, &zones))
            .and_then(|()| firewall::open(&record));
        if let Err(e) = filtered {
            take_down(&record, Whose::Ours);
            return Err(e);
        }
        return Ok(Zone {
            record: Mutex::new(record),
            members: Mutex::new(Vec::new()),
            way_out_proven: AtomicBool::new(false),
        });
    }
}

/// Whether a zone's table and bridge are known to be this process's own, or only recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whose {
    /// This process made them and has not taken them down: no other run can hold the names.
    Ours,
    /// A dead run's record: under another run directory, a live run may have made its own
    /// under the same names since, so only what carries the record's tag goes.
    Recorded,
}

/// Removes a zone's table, bridge, hosts files and record.
fn take_down(record: &ZoneRecord, whose: Whose) -> Vec<String> {
    let mut removed = Vec::new();
    // The table before the bridge: while the bridge stands, no other run takes the subnet
    // (and its table's name).
    if whose == Whose::Ours || nat::is_ours(record) {
        match nat::remove(record) {
            Ok(()) => removed.push(format!("nft table inet {}", record.table())),
            Err(e) => crate::report::warning(
                None,
                format_args!("removing nft table {}: {e}", record.table()),
            ),
        }
    }
    removed.extend(firewall::close(record));
    let bridge = record.bridge();
    if link::exists(&bridge) && link::alias(&bridge) == record.tag() {
        match link::delete_bridge(&bridge) {
            Ok(()) => removed.push(format!("bridge {bridge}")),
            Err(e) => crate::report::warning(None, format_args!("removing bridge {bridge}: {e}")),
        }
    }
    if let Ok(dir) = private_dir("zones") {
        let prefix = format!("z{}-", record.index);
        let _root = ThreadRoot::acquire();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    record.remove();
    if record.outside {
        nat::release_forwarding();
    }
    removed
}

/// Rewrites the hosts file of every member whose machine runs.
/// The host's end of a machine's further link `n`: a name of its own (at most 15
/// characters), made from the machine's, which nspawn gives the host's end of the veth.
fn extra_host_end(machine: &str, n: usize) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    machine.hash(&mut hasher);
    format!("vx{n}-{:08x}", hasher.finish() as u32)
}

fn lock_idle() -> std::sync::MutexGuard<'static, Vec<Arc<Zone>>> {
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

fn network_error(joining: &Joining<'_>, reason: String) -> Error {
    Error::Network {
        network: joining.network.to_string(),
        machine: joining.machine.into(),
        reason,
    }
}

/// Takes down every zone of this process (at exit, after its machines stopped).
pub(crate) fn leave_all() {
    let zones: Vec<Arc<Zone>> = {
        let mut zones = ZONES.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Arc<Zone>> = zones.drain().map(|(_, z)| z).collect();
        all.append(&mut lock_idle());
        all
    };
    // Side by side: most of a take-down is the kernel's waiting, which overlaps.
    std::thread::scope(|scope| {
        for zone in &zones {
            scope.spawn(|| zone.take_down());
        }
    });
}

/// Takes down the zones of dead runs; returns a line for each thing removed.
pub(crate) fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    // No zone was ever made under this run directory (or it is gone): nothing to take down,
    // and no lock to make.
    let dir = crate::host::run_dir::run_dir().join("zones");
    if !dir.is_dir() {
        return removed;
    }
    // Not `host_lock`, which makes its directory: a scratch run directory removed after the
    // check above (by a test, as its run ends) must stay removed.
    let Ok(_zones) = crate::host::run_dir::lock_file(
        &dir.join("zones.lock"),
        nix::fcntl::FlockArg::LockExclusive,
    ) else {
        return removed;
    };
    for record in ZoneRecord::all()
        .into_iter()
        .filter(|r| !r.owner.is_alive())
    {
        let mut lines = take_down(&record, Whose::Recorded);
        lines.push(format!(
            "zone {} of dead process {}",
            record.cidr(),
            record.owner.pid
        ));
        removed.extend(lines);
    }
    removed.extend(unreadable_records());
    removed.extend(stale_temporaries());
    removed.extend(stray_hosts_files().into_iter().filter_map(|path| {
        let _root = ThreadRoot::acquire().ok()?;
        std::fs::remove_file(&path).ok()?;
        Some(format!("hosts file {}", path.display()))
    }));
    removed
}

/// Removes the temporary record files left by killed processes (a live one puts its file in
/// place within moments of writing it).
fn stale_temporaries() -> Vec<String> {
    ZoneRecord::temporaries()
        .into_iter()
        .filter(|path| older_than_a_minute(path))
        .filter_map(|path| {
            let _root = ThreadRoot::acquire().ok()?;
            std::fs::remove_file(&path).ok()?;
            Some(format!("temporary zone record {}", path.display()))
        })
        .collect()
}

/// Takes down the zones whose record cannot be read, by the owner their bridge's alias names
/// (a dead one only); a record with no bridge is removed once it is a minute old (a live
/// process writes its record whole before it makes the bridge).
fn unreadable_records() -> Vec<String> {
    let mut removed = Vec::new();
    for (index, path) in ZoneRecord::unreadable() {
        let bridge = super::subnet::bridge_name(index);
        let owner = ZoneRecord::from_tag(index, &link::alias(&bridge));
        match owner {
            Some(record) if !record.owner.is_alive() => {
                removed.extend(take_down(&record, Whose::Recorded));
                removed.push(format!(
                    "zone {} of dead process {} (unreadable record)",
                    record.cidr(),
                    record.owner.pid
                ));
            }
            Some(_) => {}
            None if !link::exists(&bridge) && older_than_a_minute(&path) => {
                let _root = ThreadRoot::acquire();
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(format!("unreadable zone record {}", path.display()));
                }
            }
            None => {}
        }
    }
    removed
}

fn older_than_a_minute(path: &std::path::Path) -> bool {
    let _root = ThreadRoot::acquire();
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() >= 60))
}

/// Hosts files of zones that have no record (a machine joined as its zone was taken down).
fn stray_hosts_files() -> Vec<PathBuf> {
    let indexes: Vec<u8> = ZoneRecord::all().iter().map(|r| r.index).collect();
    zone_files()
        .into_iter()
        .filter(|path| {
            let name = file_name(path);
            let index = Some(name.as_str())
                .filter(|n| n.ends_with(".hosts"))
                .and_then(|n| n.strip_prefix('z')?.split_once('-')?.0.parse::<u8>().ok());
            index.is_some_and(|i| !indexes.contains(&i))
        })
        .collect()
}

/// What is left on this host of zones whose run is dead: records, bridges, nft tables, and a
/// forwarding marker no live zone needs. The sweep removes them; tests and `doctor` look.
pub fn stale() -> Vec<String> {
    let records = ZoneRecord::all();
    let live = |index: u8| {
        records
            .iter()
            .any(|r| r.index == index && r.owner.is_alive())
    };
    let mut left: Vec<String> = records
        .iter()
        .filter(|r| !r.owner.is_alive())
        .map(|r| format!("zone record {} of dead process {}", r.cidr(), r.owner.pid))
        .collect();
    for index in link::bridges() {
        if !live(index) {
            left.push(format!("bridge {}", super::subnet::bridge_name(index)));
        }
    }
    for index in nat::tables() {
        if !live(index) {
            left.push(format!("nft table inet nspawn_z{index}"));
        }
    }
    left.extend(
        stray_hosts_files()
            .iter()
            .map(|p| format!("hosts file {}", p.display())),
    );
    // Any zone bridge, of any run, keeps forwarding on (see `nat::release_forwarding`).
    let zones_stand = !link::bridges().is_empty();
    if nat::marked() && !zones_stand && !records.iter().any(|r| r.outside && r.owner.is_alive()) {
        left.push("IPv4 forwarding left on (marker /run/nspawn-rs-forwarding-was-off)".into());
    }
    left
}
