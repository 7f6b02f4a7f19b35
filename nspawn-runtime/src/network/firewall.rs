//! Living with the host's own firewall. A zone's nft table decides what its machines may
//! reach, but a packet passes only if *every* filter on the forward hook accepts it: Docker
//! and ufw set iptables' `FORWARD` policy to `DROP`, and with `br_netfilter` loaded even the
//! traffic between two machines of one bridge goes through it. So, as libvirt does, a zone
//! whose bridge such a chain would drop gets two rules of its own at the top of that chain
//! (`-i <bridge>` and `-o <bridge>`, `ACCEPT`, commented with the zone's tag), added with the
//! zone and removed with it, or by the sweep with the zone's record. They open nothing the
//! zone's own table does not allow: its drops still hold.
//!
//! A filter we do not add to, a chain of the host's own nft rules that drops by default,
//! makes the zone an error that names the exact command that lets the bridges through, until
//! the chain has a rule for them. Filters that accept by policy and drop in their rules
//! (firewalld's) cannot be judged from their listing: a zone with a way out proves it with a
//! packet (see `super::way_out`), whose failure names firewalld's command where it runs.

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::host::privs;
use crate::host::tools;

use super::subnet::ZoneRecord;

/// The iptables programs, for IPv4 and IPv6.
const IPTABLES: [&str; 2] = ["iptables", "ip6tables"];

/// What the host's firewall looks like to zones, one line per finding, for `doctor`.
pub fn report() -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(if bridged() {
        "br_netfilter: on (traffic between machines of a zone goes through the forward filters)"
            .to_string()
    } else {
        "br_netfilter: off".to_string()
    });
    for program in IPTABLES {
        if tools::which(program).is_none() {
            continue;
        }
        lines.push(if restrictive(program) {
            format!("{program}: FORWARD drops by policy or has rules (Docker, ufw): zones add ACCEPT rules for their bridge")
        } else {
            format!("{program}: FORWARD accepts")
        });
    }
    if std::path::Path::new("/run/docker.sock").exists() {
        lines.push("docker: running".into());
    }
    let ufw = std::fs::read_to_string("/etc/ufw/ufw.conf").unwrap_or_default();
    if ufw.lines().any(|l| l.trim() == "ENABLED=yes") {
        lines.push("ufw: enabled".into());
    }
    let chains = host_chains();
    if let Some(remedy) = firewalld_remedy(&chains) {
        lines.push(format!("firewalld: running; {remedy}"));
    }
    match known_blocker(&chains).or_else(|| firewalld_between_machines(&chains)) {
        None => lines.push("no other forward chain drops zone traffic by policy".into()),
        Some(remedy) => lines.push(format!("blocked: {remedy}")),
    }
    lines
}

/// Lets the zone's bridge through every iptables `FORWARD` chain that would drop it; fails,
/// naming the command that fixes it, if another filter would.
pub(crate) fn open(zone: &ZoneRecord) -> Result<()> {
    for program in IPTABLES {
        if restrictive(program) {
            for dir in ["-i", "-o"] {
                iptables(program, &rule("-I", dir, zone))?;
            }
        }
    }
    // One listing for every check: each is an `nft` run.
    let chains = host_chains();
    match known_blocker(&chains).or_else(|| firewalld_between_machines(&chains)) {
        None => Ok(()),
        Some(remedy) => Err(Error::io(
            "letting the zone's traffic through the host's firewall",
            std::io::Error::other(remedy),
        )),
    }
}

/// firewalld's remedy, when traffic between the machines of a bridge goes through its
/// forward chain (`br_netfilter` on, as Docker sets it) and our subnets are not among its
/// trusted sources: it rejects that traffic (seen in the trixie VM: "no connection").
fn firewalld_between_machines(chains: &str) -> Option<String> {
    if !bridged() || firewalld_remedy(chains).is_none() {
        return None;
    }
    let mut cmd = tools::command(tools::NFT.program);
    cmd.args(["list", "table", "inet", "firewalld"]);
    privs::start_as_root(&mut cmd);
    let trusted = tools::run(&mut cmd)
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(ZONES_SUBNETS));
    (!trusted).then(|| {
        format!("br_netfilter sends the traffic between a zone's machines through firewalld: {FIREWALLD_REMEDY}")
    })
}

/// The subnets zones take their /24s from.
const ZONES_SUBNETS: &str = "10.250.0.0/16";

/// The remedy for the first forward filter that drops zone traffic by default and has no
/// rule for our bridges yet, if any.
pub(crate) fn known_blocker(chains: &str) -> Option<String> {
    blockers(chains)
        .into_iter()
        .find(|b| !b.lets_bridges_through())
        .map(|b| b.remedy())
}

/// firewalld's command that lets the zones through, if firewalld's table is there.
pub(crate) fn firewalld_remedy(chains: &str) -> Option<&'static str> {
    let firewalld = chains
        .lines()
        .any(|l| l.trim().starts_with("table inet firewalld"));
    firewalld.then_some(FIREWALLD_REMEDY)
}

const FIREWALLD_REMEDY: &str = "firewalld filters forwarded traffic: let nspawn's zones \
    (10.250.0.0/16) through with `firewall-cmd --zone=trusted --add-source=10.250.0.0/16` \
    (add --permanent to keep it), or set NSPAWN_NETWORK=host";

/// Removes the zone's rules from every iptables `FORWARD` chain; returns what it removed.
pub(crate) fn close(zone: &ZoneRecord) -> Vec<String> {
    let mut removed = Vec::new();
    for program in IPTABLES {
        // Never a command that could make a chain only to find it empty.
        if !restrictive(program) {
            continue;
        }
        for dir in ["-i", "-o"] {
            // A rule added twice (the sweep and its owner at once) goes twice.
            while iptables(program, &rule("-D", dir, zone)).is_ok() {
                removed.push(format!("{program} FORWARD {dir} {} rule", zone.bridge()));
            }
        }
    }
    removed
}

/// `iptables <verb> FORWARD <dir> <bridge> -m comment --comment <tag> -j ACCEPT`.
fn rule(verb: &str, dir: &str, zone: &ZoneRecord) -> Vec<String> {
    [
        verb,
        "FORWARD",
        dir,
        &zone.bridge(),
        "-m",
        "comment",
        "--comment",
        &zone.tag(),
        "-j",
        "ACCEPT",
    ]
    .map(String::from)
    .to_vec()
}

fn iptables(program: &str, args: &[String]) -> Result<()> {
    let mut cmd = tools::command(program);
    cmd.args(["-w", "5"]).args(args);
    privs::start_as_root(&mut cmd);
    tools::run(&mut cmd)?;
    Ok(())
}

/// Whether `program`'s `FORWARD` chain could drop a zone's traffic: it has a `DROP` policy or
/// rules (Docker's and ufw's jumps). Asked without making the chain: for the nf_tables
/// flavour through `nft`, since listing with iptables-nft creates its table.
fn restrictive(program: &str) -> bool {
    if tools::which(program).is_none() {
        return false;
    }
    let mut listing = if nf_tables(program) {
        let family = if program == "iptables" { "ip" } else { "ip6" };
        let mut cmd = tools::command(tools::NFT.program);
        cmd.args(["list", "chain", family, "filter", "FORWARD"]);
        cmd
    } else {
        let mut cmd = tools::command(program);
        cmd.args(["-w", "5", "-S", "FORWARD"]);
        cmd
    };
    privs::start_as_root(&mut listing);
    tools::run(&mut listing).is_ok_and(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        chain_restricts(&text)
    })
}

/// Whether `program` is iptables' nf_tables flavour (asked once per process).
fn nf_tables(program: &str) -> bool {
    static FLAVOURS: OnceLock<Vec<bool>> = OnceLock::new();
    let flavours = FLAVOURS.get_or_init(|| {
        IPTABLES
            .iter()
            .map(|program| {
                let mut version = tools::command(program);
                version.arg("-V");
                tools::run(&mut version)
                    .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("nf_tables"))
            })
            .collect()
    });
    IPTABLES
        .iter()
        .position(|p| *p == program)
        .is_some_and(|i| flavours[i])
}

/// Whether a `FORWARD` chain, as `iptables -S` or `nft list chain` shows it, has a `DROP`
/// policy or any rule.
fn chain_restricts(listing: &str) -> bool {
    listing.lines().map(str::trim).any(|line| {
        let header = line.is_empty()
            || line == "}"
            || line.starts_with("table ")
            || line.starts_with("chain ")
            || line == "-P FORWARD ACCEPT";
        let accepting_type = line.starts_with("type ") && line.contains("policy accept");
        !header && !accepting_type
    })
}

/// Whether `br_netfilter` sends bridged traffic through the forward filters.
fn bridged() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|v| v.trim() == "1")
}

/// The host's nft ruleset as `nft list chains` shows it; empty if it cannot be read.
pub(crate) fn host_chains() -> String {
    let mut cmd = tools::command(tools::NFT.program);
    cmd.args(["list", "chains"]);
    privs::start_as_root(&mut cmd);
    tools::run(&mut cmd)
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// The host's own forward-hook chains (not our zones'), as `family table chain (policy)`,
/// and iptables-legacy's `FORWARD` if it filters: where a dropped packet may have gone.
pub(crate) fn forward_chains(chains: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (mut table, mut chain) = (String::new(), String::new());
    for line in chains.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["table", family, name, ..] => table = format!("{family} {name}"),
            ["chain", name, ..] => chain = name.to_string(),
            _ => {}
        }
        if line.contains("hook forward") && !table.contains(" nspawn_z") {
            let policy = if line.contains("policy drop") {
                "drop"
            } else {
                "accept"
            };
            found.push(format!("{table} {chain} (policy {policy})"));
        }
    }
    for program in IPTABLES {
        if !nf_tables(program) && restrictive(program) {
            found.push(format!("{program}-legacy FORWARD"));
        }
    }
    found
}

/// A forward-hook chain of the host's that drops what it does not know, and that we do not
/// open ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocker {
    pub family: String,
    pub table: String,
    pub chain: String,
}

impl Blocker {
    /// Whether the chain has a rule of the user's for our bridges (the remedy, applied).
    fn lets_bridges_through(&self) -> bool {
        let mut cmd = tools::command(tools::NFT.program);
        cmd.args(["list", "chain", &self.family, &self.table, &self.chain]);
        privs::start_as_root(&mut cmd);
        tools::run(&mut cmd)
            .is_ok_and(|out| mentions_bridges(&String::from_utf8_lossy(&out.stdout)))
    }

    /// What the user runs to let the zones' bridges through.
    pub(crate) fn remedy(&self) -> String {
        let Blocker {
            family,
            table,
            chain,
        } = self;
        format!(
            "the host's nft chain {family} {table} {chain} drops forwarded traffic by default \
             and would drop the zone's: let nspawn's bridges through with `nft insert rule \
             {family} {table} {chain} iifname \"nspawn-z*\" accept; nft insert rule {family} \
             {table} {chain} oifname \"nspawn-z*\" accept` (or set NSPAWN_NETWORK=host)"
        )
    }
}

/// Whether a chain listing has an accepting rule for our bridges' names.
fn mentions_bridges(listing: &str) -> bool {
    listing
        .lines()
        .any(|l| l.contains("\"nspawn-z*\"") && l.trim_end().ends_with("accept"))
}

/// The forward chains in `chains` (`nft list chains`) that would drop a zone's traffic by
/// default: base chains on the forward hook with a `drop` policy, but not our own tables'
/// nor iptables' `filter` tables, which [`open`] handles.
pub(crate) fn blockers(chains: &str) -> Vec<Blocker> {
    let mut found = Vec::new();
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<String> = None;
    for line in chains.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["table", family, name, ..] => table = Some((family.into(), name.into())),
            ["chain", name, ..] => chain = Some(name.into()),
            _ => {}
        }
        let (Some((family, name)), Some(chain_name)) = (&table, &chain) else {
            continue;
        };
        let forward = line.contains("hook forward");
        let ours = name.starts_with("nspawn_z");
        let iptables = name == "filter" && matches!(family.as_str(), "ip" | "ip6");
        let drops = line.contains("policy drop");
        if forward && drops && !ours && !iptables {
            found.push(Blocker {
                family: family.clone(),
                table: name.clone(),
                chain: chain_name.clone(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAINS: &str = "table inet nspawn_z3 {
	chain forward {
		type filter hook forward priority filter; policy accept;
	}
}
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
	chain DOCKER-USER {
	}
}
table inet mine {
	chain fw {
		type filter hook forward priority filter; policy drop;
	}
	chain in {
		type filter hook input priority filter; policy drop;
	}
}
table inet firewalld {
	chain filter_FORWARD {
		type filter hook forward priority filter + 10; policy accept;
	}
}
";

    #[test]
    fn only_foreign_dropping_forward_chains_block() {
        let found = blockers(CHAINS);
        let names: Vec<(&str, &str)> = found
            .iter()
            .map(|b| (b.table.as_str(), b.chain.as_str()))
            .collect();
        assert_eq!(names, [("mine", "fw")]);
    }

    #[test]
    fn a_chain_with_the_remedy_applied_lets_the_bridges_through() {
        let chain = "table inet mine {\n\tchain fw {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tiifname \"nspawn-z*\" accept\n\t}\n}\n";
        assert!(mentions_bridges(chain));
        assert!(!mentions_bridges(&chain.replace(" accept", " drop")));
        assert!(!mentions_bridges("table inet mine {\n}\n"));
    }

    #[test]
    fn a_forward_chain_restricts_with_a_drop_policy_or_rules() {
        assert!(chain_restricts("-P FORWARD DROP\n"));
        assert!(chain_restricts(
            "-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n"
        ));
        assert!(!chain_restricts("-P FORWARD ACCEPT\n"));
        let nft = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n";
        assert!(!chain_restricts(nft));
        assert!(chain_restricts(
            &nft.replace("policy accept", "policy drop")
        ));
        assert!(chain_restricts(&nft.replace(
            "policy accept;",
            "policy accept;\n\t\tcounter jump DOCKER-USER"
        )));
    }

    #[test]
    fn the_remedy_is_a_command_to_run() {
        let found = blockers(CHAINS);
        let nft = found[0].remedy();
        assert!(
            nft.contains("nft insert rule inet mine fw iifname \"nspawn-z*\" accept"),
            "{nft}"
        );
        assert!(
            FIREWALLD_REMEDY.contains("firewall-cmd --zone=trusted --add-source=10.250.0.0/16"),
            "{FIREWALLD_REMEDY}"
        );
    }
}
