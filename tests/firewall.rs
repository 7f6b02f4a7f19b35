//! Zones next to the host's own firewall. The test makes this host look like one with Docker
//! (iptables' FORWARD policy DROP, `br_netfilter` passing bridged traffic through it) and
//! restores it after; then machines of a zone must still reach each other, an isolated one
//! the mirror, and nothing of ours may stay in the host's chains. A forward filter we cannot
//! open must make the boot fail with the command that fixes it, and so must one that accepts
//! by policy but drops a machine's way out in a rule (found by the way-out probe).
//!
//! The host's firewall is host-wide: the tests of this binary take turns ([`TURN`]), and no
//! other binary of the suite runs at the same time under `cargo test`.

mod common;

use std::process::Command;
use std::sync::Mutex;

use nspawn::{Machine, Network};

const CHROOT: &str = "bookworm";

/// One test at a time changes the host's firewall.
static TURN: Mutex<()> = Mutex::new(());

/// Marks the child process that runs the Docker-like scenario.
const SCENARIO: &str = "NSPAWN_FIREWALL_SCENARIO";

/// Runs `script` in a shell started as root; its stdout.
fn as_root(script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    nspawn::privs::start_as_root(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{script}: {}", common::report(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host made to filter as Docker's does, until dropped.
struct DockerLike {
    had_table: bool,
    policy: String,
    /// `bridge-nf-call-iptables` before, if `br_netfilter` was there.
    bridged: Option<String>,
    loaded_module: bool,
}

const BRIDGED: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

impl DockerLike {
    fn new() -> DockerLike {
        let had_table =
            !as_root("nft list table ip filter >/dev/null 2>&1 && echo yes; true").is_empty();
        let policy = as_root("iptables -w 5 -S FORWARD | sed -n 's/^-P FORWARD //p'")
            .trim()
            .to_string();
        let bridged = std::fs::read_to_string(BRIDGED).ok();
        // Docker loads it; a kernel with it built in (this workplace's) has it already.
        let loaded_module = bridged.is_none();
        if loaded_module {
            as_root("modprobe br_netfilter");
        }
        as_root(&format!(
            "iptables -w 5 -P FORWARD DROP && iptables -w 5 -A FORWARD -j DROP -m comment \
             --comment nspawn-test-docker && echo 1 > {BRIDGED}"
        ));
        DockerLike {
            had_table,
            policy,
            bridged: bridged.map(|b| b.trim().to_string()),
            loaded_module,
        }
    }
}

impl Drop for DockerLike {
    fn drop(&mut self) {
        let mut script = format!(
            "iptables -w 5 -D FORWARD -j DROP -m comment --comment nspawn-test-docker; \
             iptables -w 5 -P FORWARD {}",
            if self.policy.is_empty() {
                "ACCEPT"
            } else {
                &self.policy
            }
        );
        if !self.had_table {
            script.push_str("; nft delete table ip filter");
        }
        match &self.bridged {
            Some(value) => script.push_str(&format!("; echo {value} > {BRIDGED}")),
            None if self.loaded_module => script.push_str("; rmmod br_netfilter || true"),
            None => {}
        }
        as_root(&script);
    }
}

/// The scenario, in a process of its own so that its zones are gone when it ends.
#[test]
#[ignore = "run by zones_work_next_to_a_docker_like_forward_policy"]
fn scenario() {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    let zone = Network::Zone {
        name: "t-fw".into(),
        outside: false,
    };
    let server = Machine::builder(CHROOT)
        .network(zone.clone())
        .alias("server")
        .start()
        .unwrap();
    let client = Machine::builder(CHROOT).network(zone).start().unwrap();
    common::serve(&server, "hello-through-forward");
    // TCP between two machines of one bridge: what br_netfilter sends through FORWARD.
    let page = client.call(common::fetch, "server".to_string()).unwrap();
    assert_eq!(page, Ok("hello-through-forward".to_string()));
    let isolated = Machine::builder(CHROOT)
        .network(Network::Isolated)
        .start()
        .unwrap();
    let text = common::apt_update(&isolated);
    println!("\napt: {text}");
}

/// Runs [`scenario`] in a child process (so that its zones are gone when it ends) and checks
/// what it saw: zone traffic, the isolated machine's mirror, and no rule of its left.
fn scenario_passes() {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "scenario", "--ignored", "--nocapture"])
        .env(SCENARIO, "1");
    // Under sudo this process has dropped to the user; the child boots machines.
    nspawn::privs::start_as_root(&mut child);
    let child = child
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Only the scenario's zones are gone: this process may keep an isolated zone (with its
    // rules, on a host whose FORWARD chain is Docker's) for its next isolated machine.
    let theirs = format!("nspawn-zone {} ", child.id());
    let out = child.wait_with_output().unwrap();
    let left = as_root("iptables -w 5 -S FORWARD; ip6tables -w 5 -S FORWARD 2>/dev/null; true");
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    let apt = report.split("apt: ").nth(1).unwrap_or_default();
    assert!(apt.contains("Get:") || apt.contains("Hit:"), "{report}");
    assert!(!apt.contains("Failed to fetch"), "{report}");
    assert!(!left.contains(&theirs), "rules left behind:\n{left}");
}

#[test]
fn zones_work_next_to_a_docker_like_forward_policy() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    if firewalld_runs() {
        eprintln!("firewalld runs here: see under_firewalld_the_boot_names_its_command_and_the_command_works");
        return;
    }
    let docker = DockerLike::new();
    let passed = std::panic::catch_unwind(scenario_passes);
    drop(docker);
    passed.unwrap();
}

/// Boots a machine on `network` while the host has a forward chain `inet <table> fw` of its
/// own, with `policy` and, if any, `rule`; the chain is gone again when it returns.
fn boot_next_to(
    table: &str,
    policy: &str,
    rule: Option<&str>,
    network: Network,
) -> nspawn::Result<Machine> {
    let mut script = format!(
        "nft add table inet {table} && nft add chain inet {table} fw '{{ type filter hook \
         forward priority 0; policy {policy}; }}'"
    );
    if let Some(rule) = rule {
        script.push_str(&format!(" && nft add rule inet {table} fw {rule}"));
    }
    as_root(&script);
    let result = Machine::builder(CHROOT).network(network).start();
    as_root(&format!("nft delete table inet {table}"));
    result
}

/// The error of a boot that had to fail.
fn boot_error(result: nspawn::Result<Machine>) -> String {
    match result {
        Ok(_) => panic!("the boot succeeded past a forward filter that drops its traffic"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_forward_filter_that_cannot_be_opened_fails_the_boot_with_the_command_that_works() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    if firewalld_runs() {
        eprintln!("firewalld runs here and would still block after this chain's command");
        return;
    }
    let table = "nspawn_test_blocker";
    as_root(&format!(
        "nft add table inet {table} && nft add chain inet {table} fw '{{ type filter hook \
         forward priority 0; policy drop; }}'"
    ));
    let text = boot_error(Machine::builder(CHROOT).network(Network::Isolated).start());
    // The command as the message gives it, run as it is.
    let command = text.split('`').nth(1).unwrap_or_default().to_string();
    let fixed = command
        .contains("nft insert rule inet nspawn_test_blocker fw iifname \"nspawn-z*\" accept")
        .then(|| {
            as_root(&command);
            Machine::builder(CHROOT).network(Network::Isolated).start()
        });
    as_root(&format!("nft delete table inet {table}"));
    let Some(fixed) = fixed else {
        panic!("no command to run in: {text}")
    };
    // Booting proves the way out too: its probe passed the chain.
    fixed.unwrap();
}

#[test]
fn an_isolated_machine_whose_way_out_a_last_rule_drops_fails_the_boot() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    // Accepting by policy, so no listing of policies can tell: only a packet can.
    let rule = Some("iifname \"nspawn-z*\" drop");
    let result = boot_next_to("nspawn_test_last_rule", "accept", rule, Network::Isolated);
    let text = boot_error(result);
    assert!(text.contains("its way out is blocked"), "{text}");
    assert!(
        text.contains("inet nspawn_test_last_rule fw (policy accept)"),
        "{text}"
    );
}

#[test]
fn a_zone_machine_without_a_way_out_boots_next_to_a_filter_that_drops_the_outside() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    // Only the way out is checked, and only for machines that have one.
    let rule = Some("iifname \"nspawn-z*\" oifname != \"nspawn-z*\" drop");
    let zone = Network::Zone {
        name: "t-fw-inner".into(),
        outside: false,
    };
    boot_next_to("nspawn_test_no_way_out", "accept", rule, zone).unwrap();
}

/// Whether firewalld runs on this host.
fn firewalld_runs() -> bool {
    as_root("firewall-cmd --state 2>/dev/null; true").trim() == "running"
}

/// Where firewalld runs (`cargo xtask vm-test --firewall firewalld firewall`), an isolated
/// machine's boot fails with firewalld's command, and so does a zone's with Docker beside it;
/// once the command is run, the Docker-like scenario passes. Elsewhere there is nothing to
/// check, and it says so.
#[test]
fn under_firewalld_the_boot_names_its_command_and_the_command_works() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    if !firewalld_runs() {
        eprintln!("firewalld does not run on this host: nothing to check");
        return;
    }
    let command = "firewall-cmd --zone=trusted --add-source=10.250.0.0/16";
    // Its way out, found by the probe.
    let text = boot_error(Machine::builder(CHROOT).network(Network::Isolated).start());
    assert!(text.contains(command), "{text}");
    // With Docker beside it (br_netfilter on), even a zone without a way out.
    let docker = DockerLike::new();
    let zone = Network::Zone {
        name: "t-fw-firewalld".into(),
        outside: false,
    };
    let text = boot_error(Machine::builder(CHROOT).network(zone).start());
    as_root(command);
    let passed = std::panic::catch_unwind(scenario_passes);
    as_root("firewall-cmd --zone=trusted --remove-source=10.250.0.0/16");
    drop(docker);
    assert!(text.contains(command), "{text}");
    passed.unwrap();
}
