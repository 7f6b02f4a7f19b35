//! The `/etc/hosts` a machine on zones sees: every machine of each of its zones by name, and
//! the other names (a group's roles) of the machines of its own group.
//!
//! Each machine has its own file on the host, bind-mounted read-only over `/etc/hosts`, and
//! rewritten in place (the bind holds the inode) whenever a machine joins or leaves the zone.

use std::net::Ipv4Addr;

/// A machine on a zone, as its peers know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub name: String,
    pub address: Ipv4Addr,
    /// Its other names; known to the machines of its group only, or to the whole zone when it
    /// has no group.
    pub aliases: Vec<String>,
    pub group: Option<u64>,
}

/// The hosts file for `me`, given each of its zones as the host's address there and the
/// zone's machines (`me` among them): the first zone's host address is `nspawn-host`.
pub(crate) fn render(me: &Peer, zones: &[(Ipv4Addr, Vec<Peer>)]) -> String {
    let mut text = String::from(
        "# Written by nspawn: the machines of this machine's zones.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some((host, _)) = zones.first() {
        text.push_str(&format!("{host}\tnspawn-host\n"));
    }
    for peer in zones.iter().flat_map(|(_, peers)| peers) {
        let mut names = vec![peer.name.as_str()];
        if peer.group.is_none() || peer.group == me.group {
            names.extend(peer.aliases.iter().map(String::as_str));
        }
        text.push_str(&format!("{}\t{}\n", peer.address, names.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, last: u8, aliases: &[&str], group: Option<u64>) -> Peer {
        Peer {
            name: name.into(),
            address: Ipv4Addr::new(10, 250, 0, last),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            group,
        }
    }

    #[test]
    fn roles_are_known_within_their_group_and_names_everywhere() {
        let server = peer("m-1", 2, &["server"], Some(1));
        let client = peer("m-2", 3, &["client"], Some(1));
        let other = peer("m-3", 4, &["server"], Some(2));
        let lone = peer("m-4", 5, &["db"], None);
        let peers = [server.clone(), client.clone(), other.clone(), lone];
        let text = render(&client, &[(Ipv4Addr::new(10, 250, 0, 1), peers.to_vec())]);
        assert!(text.contains("10.250.0.2\tm-1 server\n"), "{text}");
        assert!(text.contains("10.250.0.3\tm-2 client\n"), "{text}");
        assert!(
            text.contains("10.250.0.4\tm-3\n"),
            "another group's role is not ours: {text}"
        );
        assert!(text.contains("10.250.0.5\tm-4 db\n"), "{text}");
        assert!(text.contains("10.250.0.1\tnspawn-host\n"), "{text}");
        assert!(text.contains("127.0.0.1\tlocalhost\n"), "{text}");
    }

    #[test]
    fn a_machine_on_two_zones_lists_the_machines_of_both() {
        let proxy_front = peer("m-1", 2, &["proxy"], None);
        let proxy_back = Peer {
            address: Ipv4Addr::new(10, 250, 1, 2),
            ..proxy_front.clone()
        };
        let client = peer("m-2", 3, &[], None);
        let db = Peer {
            address: Ipv4Addr::new(10, 250, 1, 3),
            ..peer("m-3", 0, &["db"], None)
        };
        let zones = [
            (
                Ipv4Addr::new(10, 250, 0, 1),
                vec![proxy_front.clone(), client],
            ),
            (Ipv4Addr::new(10, 250, 1, 1), vec![proxy_back, db]),
        ];
        let text = render(&proxy_front, &zones);
        assert!(text.contains("10.250.0.3\tm-2\n"), "{text}");
        assert!(text.contains("10.250.1.3\tm-3 db\n"), "{text}");
        assert!(text.contains("10.250.0.1\tnspawn-host\n"), "{text}");
        assert!(!text.contains("10.250.1.1"), "one host line: {text}");
    }
}
