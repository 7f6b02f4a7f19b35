//! Who a command runs as, read from the machine's own `/etc/passwd` and `/etc/group`.
//!
//! The agent parses the files itself: `getpwnam(3)` would load the machine's NSS modules into
//! a process that runs the host's libc.

use std::ffi::OsString;
use std::path::PathBuf;

/// A user of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group id, the primary one included.
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

impl Identity {
    /// The machine's root, without reading any file.
    pub fn root() -> Identity {
        Identity {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }

    /// Who a request runs as: root, or the user it names; `None` if the machine has no such
    /// user.
    pub fn of_request(user: Option<&str>) -> Option<Identity> {
        user.map_or_else(|| Some(Identity::root()), Identity::lookup)
    }

    /// Looks `name` up in the files of the current root (the machine's, in the agent).
    pub fn lookup(name: &str) -> Option<Identity> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        parse(&passwd, &group, name)
    }

    /// The environment a login shell of this user starts with, as `machinectl shell` gives it.
    pub fn environment(&self) -> Vec<(OsString, OsString)> {
        [
            ("PATH", PATH.into()),
            ("HOME", self.home.clone().into_os_string()),
            ("USER", self.name.clone().into()),
            ("LOGNAME", self.name.clone().into()),
            ("SHELL", self.shell.clone().into()),
            ("container", "systemd-nspawn".into()),
        ]
        .into_iter()
        .map(|(k, v): (&str, OsString)| (k.into(), v))
        .collect()
    }
}

/// The `PATH` commands get, as systemd sets it.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn parse(passwd: &str, group: &str, name: &str) -> Option<Identity> {
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == name)?;
    let gid: u32 = fields[3].parse().ok()?;
    let groups = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .chain(std::iter::once(gid))
        .collect();
    Some(Identity {
        name: name.into(),
        uid: fields[2].parse().ok()?,
        gid,
        groups,
        home: fields[5].into(),
        shell: fields[6].into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\nadm:x:4:bob,alice\n";

    #[test]
    fn users_are_read_from_the_guest_files() {
        let id = parse(PASSWD, GROUP, "alice").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![27, 4, 1000]);
        assert_eq!(id.home, Path::new("/home/alice"));
        assert_eq!(id.shell, "/bin/sh");
        assert!(parse(PASSWD, GROUP, "bob").is_none());
    }

    #[test]
    fn the_environment_is_a_login_one() {
        let env = parse(PASSWD, GROUP, "alice").unwrap().environment();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("HOME").unwrap(), "/home/alice");
        assert_eq!(get("LOGNAME").unwrap(), "alice");
        assert_eq!(get("PATH").unwrap(), PATH);
        assert_eq!(env.len(), 6);
    }
}
