//! Networks and groups through the attribute: modules on isolated networks serving the same
//! port side by side, a client and a server reaching each other by role, one group shared by
//! its module's tests, and all of it under sudo.

use std::sync::Mutex;

use nspawn::{Machine, Network};

use crate::common;

use common::{fetch, fetch_from_host, serve};

/// Two modules, each with a service on port 80, run in parallel: on isolated networks each
/// machine has its own port 80 (on the host network the second would fail to bind).
mod web_a {
    use super::*;

    #[nspawn::test(chroot = "bookworm", network = "isolated")]
    fn serves_port_80(m: &Machine) {
        serve(m, "page-a");
        assert_eq!(fetch_from_host(m.address().unwrap()), "page-a");
    }
}

mod web_b {
    use super::*;

    #[nspawn::test(chroot = "bookworm", network = "isolated")]
    fn serves_port_80(m: &Machine) {
        serve(m, "page-b");
        assert_eq!(fetch_from_host(m.address().unwrap()), "page-b");
    }
}

mod pair {
    use super::*;

    /// The names of the group's machines, as the first of its tests saw them.
    static SEEN: Mutex<Option<(String, String)>> = Mutex::new(None);

    fn same_group_as_siblings(server: &Machine, client: &Machine) {
        let names = (server.name().to_string(), client.name().to_string());
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(
            seen.get_or_insert(names.clone()),
            &names,
            "one group per module"
        );
    }

    #[nspawn::test(machines(server = "bookworm", client = "trixie"), network = "zone:web")]
    fn the_client_fetches_from_the_server_by_role(client: &Machine, server: &Machine) {
        same_group_as_siblings(server, client);
        assert_eq!(server.chroot(), "bookworm");
        assert_eq!(client.chroot(), "trixie");
        serve(server, "from-the-server");
        assert_eq!(
            client.call(fetch, "server".to_string()).unwrap(),
            Ok("from-the-server".to_string())
        );
        assert_eq!(
            fetch_from_host(server.address().unwrap()),
            "from-the-server"
        );
    }

    #[nspawn::test(machines(server = "bookworm", client = "trixie"), network = "zone:web")]
    fn each_knows_the_other_by_role_and_name(server: &Machine, client: &Machine) {
        same_group_as_siblings(server, client);
        let hosts = server.read_to_string("/etc/hosts").unwrap();
        let client_address = client.address().unwrap().to_string();
        let line = hosts
            .lines()
            .find(|l| l.starts_with(&format!("{client_address}\t")))
            .unwrap_or_else(|| panic!("no line for the client: {hosts}"));
        assert!(
            line.contains(client.name()) && line.contains("client"),
            "{hosts}"
        );
        server.run(["getent", "hosts", "client"]).unwrap();
        client.run(["getent", "hosts", server.name()]).unwrap();
    }

    #[nspawn::test(machines(one = "bookworm", two = "bookworm"))]
    fn a_group_without_a_network_gets_a_zone_of_its_own(one: &Machine, two: &Machine) {
        let Network::Zone { name, outside } = one.network() else {
            panic!("a group is on a zone: {:?}", one.network());
        };
        assert!(name.starts_with("group-") && !outside, "{name}");
        assert_eq!(one.network(), two.network());
        one.run(["getent", "hosts", "two"]).unwrap();
        assert_ne!(one.address(), two.address());
    }
}

/// Runs `under_sudo::*` again as the unprivileged probe user, as `sudo -E cargo test` would.
#[test]
fn zones_and_groups_work_under_sudo() {
    let (uid, gid) = common::probe_user();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["groups::under_sudo::", "--ignored", "--test-threads=2"])
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", gid.to_string())
        .env("SUDO_USER", common::PROBE_USER)
        .env("NSPAWN_UNDER_SUDO", "1");
    nspawn::privs::start_as_root(&mut cmd);
    let out = cmd.output().unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("2 passed"), "{report}");
}

mod under_sudo {
    use super::*;

    fn is_the_probe_user() {
        if std::env::var_os("NSPAWN_UNDER_SUDO").is_some() {
            assert_ne!(
                nix::unistd::geteuid().as_raw(),
                0,
                "test code runs as the user"
            );
        }
    }

    #[nspawn::test(chroot = "bookworm", network = "isolated")]
    #[ignore = "run by zones_and_groups_work_under_sudo"]
    fn an_isolated_service_is_reached(m: &Machine) {
        is_the_probe_user();
        serve(m, "as-the-user");
        assert_eq!(fetch_from_host(m.address().unwrap()), "as-the-user");
    }

    #[nspawn::test(
        machines(server = "bookworm", client = "bookworm"),
        network = "zone:sudo+outside"
    )]
    #[ignore = "run by zones_and_groups_work_under_sudo"]
    fn a_group_on_a_zone_works(server: &Machine, client: &Machine) {
        is_the_probe_user();
        serve(server, "group-as-the-user");
        assert_eq!(
            client.call(fetch, "server".to_string()).unwrap(),
            Ok("group-as-the-user".to_string())
        );
    }
}

/// A group declared once: tests name only the roles they use, hyphenated roles are host
/// names, per-role set-ups run once, and `serial` runs the tests one after another (also
/// under nextest, where each test is a process: what is counted is on disk, not in memory).
mod declared {
    use nspawn::{Group, Machine};

    use super::common::serve;

    fn serve_page(m: &Machine) -> nspawn::Result<()> {
        m.succeed("echo ran >> /var/lib/set-up-runs")?;
        serve(m, "from-the-set-up");
        Ok(())
    }

    const WEB: Group = Group::new(&[
        ("server-lazy", "bookworm"),
        ("client", "bookworm"),
        ("bystander", "bookworm"),
    ])
    .setups(&[("server-lazy", serve_page)])
    .serial();

    /// Runs `f` holding a directory of this run's that a test running at the same time would
    /// find there (`create_dir` fails on one that exists), across processes.
    fn alone<T>(f: impl FnOnce() -> T) -> T {
        let run =
            std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| std::process::id().to_string());
        let turn = std::env::temp_dir().join(format!("nspawn-serial-turn-{run}"));
        std::fs::create_dir(&turn).expect("serial: another test of the group is running");
        // Gone however the test ends.
        struct Turn(std::path::PathBuf);
        impl Drop for Turn {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _turn = Turn(turn);
        std::thread::sleep(std::time::Duration::from_millis(200));
        f()
    }

    #[nspawn::test(group = WEB)]
    fn the_client_reaches_the_lazy_server_by_role(client: &Machine, server_lazy: &Machine) {
        alone(|| {
            client.port(80).on("server-lazy").wait_open().unwrap();
            let page = client
                .call(super::fetch, "server-lazy".to_string())
                .unwrap();
            assert_eq!(page.unwrap(), "from-the-set-up");
            assert_eq!(
                server_lazy.succeed("hostname").unwrap().trim(),
                "server-lazy"
            );
            let runs = server_lazy.read_to_string("/var/lib/set-up-runs").unwrap();
            assert_eq!(runs, "ran\n", "the role's set-up ran once");
        })
    }

    #[nspawn::test(group = WEB)]
    fn a_test_names_only_what_it_uses(bystander: &Machine) {
        alone(|| {
            assert!(
                !bystander.exists("/var/lib/set-up-runs"),
                "no set-up of its own"
            )
        })
    }

    #[nspawn::test(group = WEB)]
    fn the_server_alone(server_lazy: &Machine) {
        alone(|| {
            assert_eq!(
                server_lazy.succeed("hostname").unwrap().trim(),
                "server-lazy"
            );
            server_lazy.port(80).wait_open().unwrap();
        })
    }
}

/// A group over two zones: the proxy is on both, the client on the front, the database on the
/// back; roles resolve on the zones a machine shares with them only. And a test's own
/// `network` list puts its machine on two zones.
mod front_and_back {
    use nspawn::{Group, Machine};

    use super::common::serve;

    fn serve_role(m: &Machine) -> nspawn::Result<()> {
        serve(m, m.succeed("hostname")?.trim());
        Ok(())
    }

    const SHOP: Group = Group::new(&[
        ("client", "bookworm"),
        ("proxy", "bookworm"),
        ("db", "bookworm"),
    ])
    .network("zone:shop-front")
    .role_networks(&[
        ("proxy", "zone:shop-front,zone:shop-back"),
        ("db", "zone:shop-back"),
    ])
    .setups(&[("proxy", serve_role), ("db", serve_role)]);

    #[nspawn::test(group = SHOP)]
    fn only_the_proxy_reaches_the_back(client: &Machine, proxy: &Machine, db: &Machine) {
        let fetch = |m: &Machine, host: &str| m.call(super::fetch, host.to_string()).unwrap();
        assert_eq!(fetch(proxy, "db"), Ok("db".into()));
        assert_eq!(fetch(client, "proxy"), Ok("proxy".into()));
        assert_eq!(fetch(db, "proxy"), Ok("proxy".into()));
        let unknown = fetch(client, "db").unwrap_err();
        assert!(unknown.starts_with("resolving db"), "{unknown}");
        assert!(fetch(db, "client").is_err());
        assert_eq!(proxy.address_on("shop-front"), proxy.address());
        assert!(proxy.address_on("shop-back").is_some());
        assert_eq!(db.address_on("shop-front"), None);
    }

    #[nspawn::test(chroot = "bookworm", network = "zone:lone-front,zone:lone-back")]
    fn a_network_list_puts_a_test_s_machine_on_both(m: &Machine) {
        assert_eq!(m.network().to_string(), "zone:lone-front");
        assert!(m.address_on("lone-back").is_some());
        assert_eq!(
            m.succeed("cat /sys/class/net/host1/carrier")
                .unwrap()
                .trim(),
            "1"
        );
    }
}
