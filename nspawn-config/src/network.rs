//! How a machine is networked, as written in `#[nspawn::test(network = "...")]` and in
//! `NSPAWN_NETWORK`: parsed the same way at compile time and at run time.

use std::fmt;

/// A machine's network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum NetworkSpec {
    /// The host's network namespace: its interfaces, addresses and ports.
    Host,
    /// A namespace of its own with loopback only.
    Private,
    /// A namespace and address of its own on a bridge of its own; it reaches the outside
    /// through the host (NAT), and only the test process reaches it. The default.
    #[default]
    Isolated,
    /// A bridge shared by the machines of this run that name the same zone: they reach each
    /// other by name, and, with `outside`, the outside through the host.
    Zone {
        /// The zone's name: lower-case letters, digits, `-` and `_`, at most 32.
        name: String,
        /// Whether this machine reaches the outside through the host (NAT).
        outside: bool,
    },
}

/// The forms accepted, for messages.
pub const NETWORK_FORMS: &str =
    "\"host\", \"private\", \"isolated\", \"zone:NAME\" or \"zone:NAME+outside\"";

impl NetworkSpec {
    /// Parses `host`, `private`, `isolated`, `zone:NAME` or `zone:NAME+outside`.
    pub fn parse(text: &str) -> Result<NetworkSpec, String> {
        match text {
            "host" => return Ok(NetworkSpec::Host),
            "private" => return Ok(NetworkSpec::Private),
            "isolated" => return Ok(NetworkSpec::Isolated),
            _ => {}
        }
        let Some(zone) = text.strip_prefix("zone:") else {
            return Err(format!(
                "unknown network {text:?}; expected {NETWORK_FORMS}"
            ));
        };
        let (name, outside) = match zone.strip_suffix("+outside") {
            Some(name) => (name, true),
            None => (zone, false),
        };
        check_zone_name(name)?;
        Ok(NetworkSpec::Zone {
            name: name.into(),
            outside,
        })
    }

    /// Whether the machine reaches the outside through the host.
    pub fn reaches_outside(&self) -> bool {
        match self {
            NetworkSpec::Host | NetworkSpec::Isolated => true,
            NetworkSpec::Private => false,
            NetworkSpec::Zone { outside, .. } => *outside,
        }
    }
}

/// A machine's network and the further zones it is on: `"zone:front+outside,zone:back"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Networks {
    /// Its network: its `host0`, its default route, its way out if it has one.
    pub first: NetworkSpec,
    /// Further zones, each through a link of its own, with no way out.
    pub also_on: Vec<String>,
}

impl Networks {
    /// Parses one network (see [`NetworkSpec::parse`]), or a comma-separated list of zones
    /// after an `isolated` or zone network: `"zone:front+outside,zone:back"`.
    pub fn parse(text: &str) -> Result<Networks, String> {
        let mut parts = text.split(',').map(str::trim);
        let first = NetworkSpec::parse(parts.next().unwrap_or_default())?;
        let mut also_on: Vec<String> = Vec::new();
        for part in parts {
            if matches!(first, NetworkSpec::Host | NetworkSpec::Private) {
                return Err(format!(
                    "a `{first}` machine is on no zone, so it cannot be on {part:?} too; \
                     start the list with \"isolated\" or \"zone:NAME\""
                ));
            }
            let name = match NetworkSpec::parse(part)? {
                NetworkSpec::Zone { outside: true, .. } => {
                    return Err(format!(
                        "{part:?}: only the first network of a list may reach the outside"
                    ))
                }
                NetworkSpec::Zone { name, .. } => name,
                _ => {
                    return Err(format!(
                        "{part:?}: after the first, a list names zones only"
                    ))
                }
            };
            let twice = also_on.contains(&name)
                || matches!(&first, NetworkSpec::Zone { name: n, .. } if *n == name);
            if twice {
                return Err(format!("zone {name:?} is named twice"));
            }
            also_on.push(name);
        }
        Ok(Networks { first, also_on })
    }
}

/// A zone name: it becomes part of host-side names, so it is kept plain.
pub fn check_zone_name(name: &str) -> Result<(), String> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if name.is_empty() || name.len() > 32 || !plain {
        return Err(format!(
            "zone name {name:?} must be 1 to 32 lower-case letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

/// A machine's alias: a host name its peers find it by in `/etc/hosts`, so nothing that could
/// end the line or add a name: letters, digits, `-`, `_` and `.` between labels.
pub fn check_alias(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "alias {name:?} is not a host name: labels of 1 to 63 letters, digits, `-` or `_`, \
             separated by dots, not starting with `-`"
        ));
    }
    Ok(())
}

impl std::str::FromStr for NetworkSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<NetworkSpec, String> {
        NetworkSpec::parse(text)
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first)?;
        self.also_on
            .iter()
            .try_for_each(|zone| write!(f, ",zone:{zone}"))
    }
}

impl fmt::Display for NetworkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkSpec::Host => f.write_str("host"),
            NetworkSpec::Private => f.write_str("private"),
            NetworkSpec::Isolated => f.write_str("isolated"),
            NetworkSpec::Zone { name, outside } => {
                write!(f, "zone:{name}{}", if *outside { "+outside" } else { "" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_puts_a_machine_on_further_zones() {
        let both = Networks::parse("zone:front+outside, zone:back").unwrap();
        assert_eq!(
            both.first,
            NetworkSpec::parse("zone:front+outside").unwrap()
        );
        assert_eq!(both.also_on, ["back"]);
        assert_eq!(
            Networks::parse("isolated").unwrap().also_on,
            Vec::<String>::new()
        );
        assert_eq!(both.to_string(), "zone:front+outside,zone:back");
        for (text, says) in [
            ("host,zone:a", "is on no zone"),
            ("zone:a,zone:b+outside", "only the first"),
            ("zone:a,isolated", "names zones only"),
            ("zone:a,zone:a", "named twice"),
            ("isolated,zone:b,zone:b", "named twice"),
            ("zone:a,zone:B", "lower-case"),
        ] {
            let err = Networks::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        for text in [
            "host",
            "private",
            "isolated",
            "zone:web",
            "zone:db-1+outside",
        ] {
            assert_eq!(NetworkSpec::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            NetworkSpec::parse("zone:web+outside").unwrap(),
            NetworkSpec::Zone {
                name: "web".into(),
                outside: true
            }
        );
    }

    #[test]
    fn bad_forms_say_what_is_accepted() {
        for (text, says) in [
            ("bridge", "expected \"host\""),
            ("zone:", "must be 1 to 32"),
            ("zone:Web", "must be 1 to 32"),
            ("zone:a b", "must be 1 to 32"),
            ("zone:web+inside", "must be 1 to 32"),
        ] {
            let err = NetworkSpec::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn only_private_and_closed_zones_stay_inside() {
        assert!(NetworkSpec::Host.reaches_outside());
        assert!(NetworkSpec::Isolated.reaches_outside());
        assert!(!NetworkSpec::Private.reaches_outside());
        assert!(!NetworkSpec::parse("zone:a").unwrap().reaches_outside());
        assert!(NetworkSpec::parse("zone:a+outside")
            .unwrap()
            .reaches_outside());
    }

    #[test]
    fn aliases_are_host_names_and_nothing_more() {
        for good in ["web", "db-1", "server_lazy", "a.example.org"] {
            assert!(check_alias(good).is_ok(), "{good}");
        }
        for bad in ["x\n1.2.3.4 y", "a b", "", "-x", "a..b", "a\tb", "a#b"] {
            assert!(
                check_alias(bad).unwrap_err().contains("not a host name"),
                "{bad:?}"
            );
        }
    }
}
