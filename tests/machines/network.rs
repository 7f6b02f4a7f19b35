//! Networks: zones whose machines reach each other by name, private machines that reach
//! nothing, isolated machines that reach out and that the test process reaches, and nothing
//! left on the host afterwards.

use nspawn::{Machine, Network};

use crate::common;

use common::{connects, fetch, fetch_from_host, serve};

const CHROOT: &str = "bookworm";

fn zone(name: &str, outside: bool) -> Network {
    Network::Zone {
        name: name.into(),
        outside,
    }
}

#[test]
fn machines_of_a_zone_reach_each_other_by_name_and_alias() {
    let server = Machine::builder(CHROOT)
        .network(zone("t-names", false))
        .alias("server")
        .start()
        .unwrap();
    let client = Machine::builder(CHROOT)
        .network(zone("t-names", false))
        .start()
        .unwrap();
    serve(&server, "hello-from-server");
    let by_alias = client.call(fetch, "server".to_string()).unwrap();
    assert_eq!(by_alias, Ok("hello-from-server".to_string()));
    let by_name = client.call(fetch, server.name().to_string()).unwrap();
    assert_eq!(by_name, Ok("hello-from-server".to_string()));
    let hosts = client.read_to_string("/etc/hosts").unwrap();
    assert!(hosts.contains(client.name()), "{hosts}");
    // Its own file, owned by its root in either mode (not `nobody`), and read-only.
    assert_eq!(client.sh("stat -c %U /etc/hosts").unwrap(), "root\n");
    assert!(client.sh("echo x >> /etc/hosts").is_err());
    // The server ran before the client joined: its hosts file was rewritten.
    let hosts = server.read_to_string("/etc/hosts").unwrap();
    assert!(hosts.contains(client.name()), "{hosts}");
    assert_ne!(server.address(), client.address());
    assert!(server.address().is_some());
}

#[test]
fn a_private_machine_reaches_no_other_machine() {
    let server = Machine::builder(CHROOT)
        .network(zone("t-private", false))
        .start()
        .unwrap();
    serve(&server, "unreachable");
    let private = Machine::builder(CHROOT)
        .private_network(true)
        .start()
        .unwrap();
    assert_eq!(private.address(), None);
    let address = server.address().unwrap();
    assert!(!private.call(connects, (address, 80)).unwrap());
    assert_eq!(private.sh("ls /sys/class/net").unwrap(), "lo\n");
}

#[test]
fn the_test_process_reaches_a_service_in_an_isolated_machine() {
    let one = Machine::builder(CHROOT)
        .network(Network::Isolated)
        .start()
        .unwrap();
    let two = Machine::builder(CHROOT)
        .network(Network::Isolated)
        .start()
        .unwrap();
    // Both on port 80: each has its own.
    serve(&one, "page-one");
    serve(&two, "page-two");
    assert_eq!(fetch_from_host(one.address().unwrap()), "page-one");
    assert_eq!(fetch_from_host(two.address().unwrap()), "page-two");
    // Each is alone on its network.
    assert!(!one.call(connects, (two.address().unwrap(), 80)).unwrap());
    // Its bridge is marked as this process's, so that no other run's sweep takes it down.
    let std::net::IpAddr::V4(address) = one.address().unwrap() else {
        panic!("an IPv4 address")
    };
    let bridge = format!("/sys/class/net/nspawn-z{}/ifalias", address.octets()[2]);
    let alias = std::fs::read_to_string(&bridge).unwrap();
    assert!(
        alias.starts_with(&format!("nspawn-zone {} ", std::process::id())),
        "{bridge}: {alias}"
    );
}

#[test]
fn only_machines_with_a_way_out_reach_the_mirror() {
    let closed = Machine::builder(CHROOT)
        .network(zone("t-closed", false))
        .start()
        .unwrap();
    let text = common::apt_update(&closed);
    assert!(text.contains("Failed to fetch"), "{text}");
    assert!(
        !text.contains("Hit:") && !text.contains("Get:"),
        "a closed zone reached the mirror: {text}"
    );

    let open = Machine::builder(CHROOT)
        .network(zone("t-open", true))
        .start()
        .unwrap();
    let text = common::apt_update(&open);
    assert!(text.contains("Get:") || text.contains("Hit:"), "{text}");
    assert!(!text.contains("Failed to fetch"), "{text}");
}

#[test]
fn no_idle_zone_is_kept_once_no_isolated_machine_is_to_come() {
    // The fixture's `zones_to_come`, one test at a time: an isolated machine of its own, then
    // a test on the host's network that looks for a zone of its process left standing. As
    // root, and as a user under sudo.
    let (uid, gid) = common::probe_user();
    let sudo = [
        ("SUDO_UID", uid.to_string()),
        ("SUDO_GID", gid.to_string()),
        ("SUDO_USER", common::PROBE_USER.to_string()),
        ("FIXTURE_EXPECT_UID", uid.to_string()),
    ];
    for env in [&[][..], &sudo[..]] {
        let mut cmd = std::process::Command::new(common::fixture_binary());
        cmd.args(["--ignored", "--test-threads=1", "zones_to_come::"])
            .env("NSPAWN_CHROOTS_DIR", common::chroots_dir())
            .env_remove("NSPAWN_NETWORK")
            .envs(env.iter().map(|(k, v)| (k, v)));
        nspawn::privs::start_as_root(&mut cmd);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{env:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("2 passed"), "{env:?}: {stdout}");
    }
}

#[test]
fn a_zone_whose_record_was_left_empty_is_swept_by_its_bridges_owner() {
    // What a run killed while it wrote its record left (records are written whole now): an
    // empty record, and the bridge and table tagged with the dead owner.
    // Making links and tables and sweeping them takes root: under sudo, regain it.
    let _root = nspawn::privs::root().unwrap();
    let (index, tag) = (250, "nspawn-zone 4194000 1");
    let (bridge, table) = (format!("nspawn-z{index}"), format!("nspawn_z{index}"));
    let record = std::path::PathBuf::from(format!("/run/nspawn-rs/zones/{index}.toml"));
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", common::report(&out));
    };
    sh(&format!(
        "ip link add {bridge} type bridge && ip link set dev {bridge} alias '{tag}' && \
         nft add table inet {table} '{{ comment \"{tag}\"; }}'"
    ));
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    std::fs::write(&record, "").unwrap();
    // And a temporary record file of another killed writer, two minutes old.
    let temporary = record.with_file_name(format!(".{index}.4194001.tmp"));
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::create(&temporary)
        .and_then(|f| f.set_modified(old))
        .unwrap();
    let removed = nspawn_runtime::cleanup::sweep::sweep(&Default::default()).unwrap();
    let gone = !std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .exists()
        && !record.exists()
        && !temporary.exists()
        && !std::process::Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .unwrap()
            .status
            .success();
    if !gone {
        // Leave the host as it was for the next run, then fail.
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("ip link del {bridge}; nft delete table inet {table}"),
            ])
            .status();
        let _ = std::fs::remove_file(&record);
        let _ = std::fs::remove_file(&temporary);
    }
    assert!(gone, "swept: {removed:?}");
}

/// The bridge's IPv6 link-local address, with its scope, as the machine at `address` sees it.
fn bridge_v6(address: std::net::IpAddr) -> Option<std::net::SocketAddrV6> {
    let std::net::IpAddr::V4(v4) = address else {
        return None;
    };
    let bridge = format!("nspawn-z{}", v4.octets()[2]);
    let out = std::process::Command::new("ip")
        .args(["-6", "-o", "addr", "show", "dev", &bridge, "scope", "link"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)?;
    let ip: std::net::Ipv6Addr = addr.split('/').next()?.parse().ok()?;
    Some(std::net::SocketAddrV6::new(ip, 0, 0, 0))
}

/// Inside a machine: whether `[v6%host0]:port` answers within 3 s.
fn connects_v6((ip, port): (std::net::Ipv6Addr, u16)) -> bool {
    // SAFETY: a C string of ours.
    let scope = unsafe { libc::if_nametoindex(c"host0".as_ptr()) };
    let target = std::net::SocketAddrV6::new(ip, port, 0, scope);
    std::net::TcpStream::connect_timeout(&target.into(), std::time::Duration::from_secs(3)).is_ok()
}

#[test]
fn an_isolated_machine_reaches_no_service_of_the_host() {
    // Host services on every address, v4 and v6, as a careless daemon listens.
    let v4 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::]:0").unwrap();
    let m = Machine::builder(CHROOT)
        .network(Network::Isolated)
        .start()
        .unwrap();
    // The host's side of the zone: its bridge, `.1` of the machine's subnet.
    let std::net::IpAddr::V4(own) = m.address().unwrap() else {
        panic!("an IPv4 address")
    };
    let [a, b, c, _] = own.octets();
    let gateway = std::net::IpAddr::from([a, b, c, 1]);
    let port = v4.local_addr().unwrap().port();
    assert!(
        !m.call(connects, (gateway, port)).unwrap(),
        "{gateway}:{port}"
    );
    let link_local = bridge_v6(m.address().unwrap()).expect("the bridge has a link-local address");
    let port6 = v6.local_addr().unwrap().port();
    assert!(
        !m.call(connects_v6, (*link_local.ip(), port6)).unwrap(),
        "[{}]:{port6}",
        link_local.ip()
    );
    // The test process still reaches the machine, and the machine the outside world's answers.
    serve(&m, "still-here");
    assert_eq!(fetch_from_host(m.address().unwrap()), "still-here");
}

#[test]
fn another_local_user_cannot_reach_a_machine() {
    let m = Machine::builder(CHROOT)
        .network(Network::Isolated)
        .start()
        .unwrap();
    serve(&m, "for-the-test-only");
    let address = m.address().unwrap();
    assert_eq!(fetch_from_host(address), "for-the-test-only");
    // `nobody`, from a root child: neither root nor the test's user (under sudo either).
    let script = format!("exec 3<>/dev/tcp/{address}/80 && head -c 100 <&3");
    let mut other = std::process::Command::new("runuser");
    other.args(["-u", "nobody", "--", "timeout", "5", "bash", "-c", &script]);
    nspawn::privs::start_as_root(&mut other);
    let out = other.output().unwrap();
    assert!(
        !out.status.success(),
        "nobody reached the machine: {}",
        common::report(&out)
    );
}

/// Marks the re-run under sudo, which must not recurse.
const UNDER_SUDO: &str = "NSPAWN_NETWORK_UNDER_SUDO";

/// The host's walls let the test's user through, and only it, when the test runs as a sudo
/// user: the three tests of the walls again, as an unprivileged user's test binary.
#[test]
fn the_walls_hold_under_sudo() {
    if std::env::var_os(UNDER_SUDO).is_some() {
        return;
    }
    let tests = [
        "--exact",
        "network::the_test_process_reaches_a_service_in_an_isolated_machine",
        "network::an_isolated_machine_reaches_no_service_of_the_host",
        "network::another_local_user_cannot_reach_a_machine",
    ];
    common::rerun_under_sudo(&tests, UNDER_SUDO, 3);
}

/// Marks the child process that runs apt without a way out.
const NO_WAY_OUT: &str = "NSPAWN_TEST_NO_WAY_OUT";

/// In a child process: `apt-get update` on a zone with no way out (it exits 0 all the same).
#[test]
#[ignore = "run by a_program_that_looks_for_the_outside_without_a_way_out_is_told_why"]
fn apt_without_a_way_out() {
    if std::env::var_os(NO_WAY_OUT).is_none() {
        return;
    }
    let zone = Network::Zone {
        name: "t-no-way-out".into(),
        outside: false,
    };
    let m = Machine::builder(CHROOT).network(zone).start().unwrap();
    let update = m
        .command("apt-get")
        .args(["-o", "Acquire::Retries=0", "update"])
        .output()
        .unwrap();
    println!("\napt-get update: {}", update.status);
    m.stop().unwrap();
}

#[test]
fn a_program_that_looks_for_the_outside_without_a_way_out_is_told_why() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "network::apt_without_a_way_out",
            "--ignored",
            "--nocapture",
        ])
        .env(NO_WAY_OUT, "1");
    nspawn::privs::start_as_root(&mut child);
    let out = child.output().unwrap();
    let report = common::report(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains(
            "could not reach the outside: its network, zone:t-no-way-out, has no way out"
        ),
        "{report}"
    );
}

/// Inside a machine: how long a TCP connection to `host:80` took to open, in ms.
fn connect_ms(host: String) -> Result<u128, String> {
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 80))
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let started = std::time::Instant::now();
    std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed().as_millis())
}

#[test]
fn links_are_blocked_cut_between_two_machines_and_impaired() {
    use std::time::Duration;
    let zone = zone("faults", false);
    let server = Machine::builder(CHROOT)
        .network(zone.clone())
        .start()
        .unwrap();
    let client = Machine::builder(CHROOT)
        .network(zone.clone())
        .start()
        .unwrap();
    let bystander = Machine::builder(CHROOT).network(zone).start().unwrap();
    serve(&server, "up");
    let short = Duration::from_millis(800);
    client.port(80).on(&server).wait_open().unwrap();

    server.block().unwrap();
    assert_eq!(
        server
            .succeed("cat /sys/class/net/host0/carrier")
            .unwrap()
            .trim(),
        "0"
    );
    client
        .port(80)
        .on(&server)
        .timeout(short)
        .wait_closed()
        .unwrap();
    server
        .port(80)
        .from_test()
        .timeout(short)
        .wait_closed()
        .unwrap();
    let err = client
        .port(80)
        .on(&server)
        .timeout(short)
        .wait_open()
        .unwrap_err();
    assert!(err.to_string().contains("accepts no connection"), "{err}");
    server.unblock().unwrap();
    client.port(80).on(&server).wait_open().unwrap();
    assert_eq!(
        client
            .call(fetch, server.name().to_string())
            .unwrap()
            .unwrap(),
        "up"
    );

    // A partition: client and server lose each other, and nothing else.
    client.block_from(&server).unwrap();
    client
        .port(80)
        .on(&server)
        .timeout(short)
        .wait_closed()
        .unwrap();
    bystander.port(80).on(&server).wait_open().unwrap();
    server.port(80).from_test().wait_open().unwrap();
    client.unblock_from(&server).unwrap();
    client.unblock_from(&server).unwrap();
    client.port(80).on(&server).wait_open().unwrap();

    let elsewhere = Machine::builder(CHROOT)
        .network(Network::Private)
        .start()
        .unwrap();
    let err = elsewhere.block().unwrap_err();
    assert!(err.to_string().contains("needs a link of its own"), "{err}");
    let err = client.block_from(&elsewhere).unwrap_err();
    assert!(err.to_string().contains("needs a link of its own"), "{err}");

    let slow = nspawn::LinkFaults {
        delay: Duration::from_millis(150),
        ..Default::default()
    };
    match server.impair(slow) {
        Ok(()) => {
            // A lower bound only: the SYN and its answer each wait 150 ms on the server's link.
            let ms = client
                .call(connect_ms, server.name().to_string())
                .unwrap()
                .unwrap();
            assert!(ms >= 290, "a connection through a 150 ms link took {ms} ms");
            server.impair(nspawn::LinkFaults::default()).unwrap();
        }
        Err(e) => assert!(e.to_string().contains("CONFIG_NET_SCH_NETEM"), "{e}"),
    }
    server.impair(nspawn::LinkFaults::default()).unwrap();
}

/// A front and a back zone, with a proxy on both: the proxy reaches the back by name, the
/// client on the front does not, and blocking the proxy takes down both of its links.
#[test]
fn a_machine_on_two_zones_links_them_and_only_it_reaches_both() {
    let db = Machine::builder(CHROOT)
        .network(zone("t-back", false))
        .alias("db")
        .start()
        .unwrap();
    let proxy = Machine::builder(CHROOT)
        .network(zone("t-front", false))
        .also_on("t-back")
        .alias("proxy")
        .start()
        .unwrap();
    let client = Machine::builder(CHROOT)
        .network(zone("t-front", false))
        .start()
        .unwrap();
    serve(&db, "from-db");
    serve(&proxy, "from-proxy");
    assert_eq!(proxy.address_on("t-front"), proxy.address());
    assert_ne!(proxy.address_on("t-back"), proxy.address());
    assert!(proxy.address_on("t-back").is_some());
    assert_eq!(client.address_on("t-back"), None);

    assert_eq!(
        proxy.call(fetch, "db".to_string()).unwrap(),
        Ok("from-db".into())
    );
    // Its back address, which db's hosts file lists, from db; its front one from the client.
    assert_eq!(
        db.call(fetch, "proxy".to_string()).unwrap(),
        Ok("from-proxy".into())
    );
    assert_eq!(
        client.call(fetch, "proxy".to_string()).unwrap(),
        Ok("from-proxy".into())
    );
    let unknown = client.call(fetch, "db".to_string()).unwrap().unwrap_err();
    assert!(unknown.starts_with("resolving db"), "{unknown}");
    let by_address = db.address().unwrap().to_string();
    assert!(client.call(fetch, by_address).unwrap().is_err());
    let hosts = proxy.read_to_string("/etc/hosts").unwrap();
    assert!(
        hosts.contains(db.name()) && hosts.contains(client.name()),
        "{hosts}"
    );

    proxy.block().unwrap();
    for link in ["host0", "host1"] {
        let carrier = proxy
            .succeed(&format!("cat /sys/class/net/{link}/carrier"))
            .unwrap();
        assert_eq!(carrier.trim(), "0", "{link}");
    }
    assert!(db.call(fetch, "proxy".to_string()).unwrap().is_err());
    proxy.unblock().unwrap();
    assert_eq!(
        proxy.call(fetch, "db".to_string()).unwrap(),
        Ok("from-db".into())
    );
    // A partition on the zone they share.
    proxy.block_from(&db).unwrap();
    assert!(proxy.call(fetch, "db".to_string()).unwrap().is_err());
    assert_eq!(
        client.call(fetch, "proxy".to_string()).unwrap(),
        Ok("from-proxy".into())
    );
    proxy.unblock_from(&db).unwrap();
    assert_eq!(
        proxy.call(fetch, "db".to_string()).unwrap(),
        Ok("from-db".into())
    );
}

#[test]
fn further_zones_need_a_zone_of_the_machine_s_own() {
    let err = Machine::builder(CHROOT)
        .network(Network::Host)
        .also_on("t-back")
        .start()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("needs the machine's network to be"),
        "{err}"
    );
    let err = Machine::builder(CHROOT)
        .network(zone("t-twice", false))
        .also_on("t-twice")
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("once already"), "{err}");
}
