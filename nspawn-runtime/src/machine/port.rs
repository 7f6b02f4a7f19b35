//! Waiting for a TCP port to open or close, from wherever the test needs: inside the machine,
//! from another machine of its zone, or from the test process. An error lists what listens
//! in the server machine, with addresses: a server bound to the wrong address shows at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::lifecycle::Machine;
use crate::error::{Error, Result};
use crate::network::Network;

/// How long one connection attempt may take.
const ATTEMPT: Duration = Duration::from_millis(300);

/// Where a port is: a host name or address as the connecting side resolves it, or a machine
/// (its zone address, or its name).
#[derive(Debug, Clone)]
pub enum Remote {
    /// A name (resolved where the connection starts: a machine's `/etc/hosts` knows its zone)
    /// or an address.
    Name(String),
    /// A machine of this process.
    Machine(Machine),
}

impl From<&str> for Remote {
    fn from(name: &str) -> Remote {
        Remote::Name(name.into())
    }
}

impl From<String> for Remote {
    fn from(name: String) -> Remote {
        Remote::Name(name)
    }
}

impl From<IpAddr> for Remote {
    fn from(address: IpAddr) -> Remote {
        Remote::Name(address.to_string())
    }
}

impl From<&Machine> for Remote {
    fn from(machine: &Machine) -> Remote {
        Remote::Machine(machine.clone())
    }
}

/// Where the connection starts.
#[derive(Debug, Clone)]
enum Origin {
    /// Inside this machine, to one of its own addresses.
    Itself,
    /// Inside this machine, to another host.
    To(Remote),
    /// The test process, to this machine.
    Test,
}

/// A wait for TCP port on a machine, made by [`Machine::port`].
///
/// ```no_run
/// # #[nspawn::test(machines(web = "bookworm", client = "bookworm"), network = "zone:docs-port+outside")]
/// # fn f(web: &nspawn::Machine, client: &nspawn::Machine) -> nspawn::Result<()> {
/// # web.run(["apt-get", "install", "-y", "nginx"])?;
/// web.port(80).wait_open()?; // inside web, on any address it listens on
/// web.port(80).from_test().wait_open()?; // from the test process, at web's address
/// client.port(80).on(web).wait_open()?; // from inside client, at web's address
/// client.port(80).on("web").wait_open()?; // the same, by the name client resolves
/// web.run(["systemctl", "stop", "nginx"])?;
/// web.port(80).wait_closed()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a port does nothing until waited for"]
pub struct Port<'m> {
    machine: &'m Machine,
    port: u16,
    from: Origin,
    timeout: Duration,
}

impl Machine {
    /// A wait for TCP `port`, from inside this machine to itself unless told otherwise; with
    /// the machine's [`wait_timeout`](Machine::wait_timeout).
    pub fn port(&self, port: u16) -> Port<'_> {
        Port {
            machine: self,
            port,
            from: Origin::Itself,
            timeout: self.wait_timeout(),
        }
    }
}

impl<'m> Port<'m> {
    /// The port on `remote`, connected to from inside this machine (its resolver, routes and
    /// firewall): "can the client reach the server".
    pub fn on(mut self, remote: impl Into<Remote>) -> Self {
        self.from = Origin::To(remote.into());
        self
    }

    /// The port on this machine, connected to from the test process, at the machine's zone
    /// address (`127.0.0.1` on the host's network).
    pub fn from_test(mut self) -> Self {
        self.from = Origin::Test;
        self
    }

    /// How long to wait, instead of the machine's [`wait_timeout`](Machine::wait_timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Waits until a connection to the port succeeds.
    pub fn wait_open(&self) -> Result<()> {
        let mut last = String::new();
        if self.poll(|| match self.try_connect()? {
            Ok(()) => Ok(true),
            Err(e) => {
                last = e;
                Ok(false)
            }
        })? {
            return Ok(());
        }
        Err(self.not_ready(format!("accepts no connection (last: {last})")))
    }

    /// Waits until the port is closed: nothing listens on it (inside the machine itself), or
    /// a connection fails (from elsewhere).
    pub fn wait_closed(&self) -> Result<()> {
        if self.poll(|| Ok(self.try_connect()?.is_err()))? {
            return Ok(());
        }
        Err(self.not_ready("still accepts connections".into()))
    }

    /// One attempt; `Err` inside is why the connection failed.
    fn try_connect(&self) -> Result<std::result::Result<(), String>> {
        let port = self.port;
        match &self.from {
            Origin::Itself => self.machine.call(connect_locally, port),
            Origin::To(remote) => self
                .machine
                .call(connect_to, (host_of(remote, self.machine)?, port)),
            Origin::Test => Ok(connect_to((host_of_test(self.machine)?, port))),
        }
    }

    fn poll(&self, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
        let what = format!("port {}", self.port);
        super::wait::poll(&what, self.timeout, || Ok(done()?.then_some(()))).map(|d| d.is_some())
    }

    /// The error of a wait that timed out, with what listens on the server.
    fn not_ready(&self, problem: String) -> Error {
        let (what, server) = match &self.from {
            Origin::Itself => (
                format!("port {} (from inside)", self.port),
                Some(self.machine),
            ),
            Origin::To(remote) => {
                let host = host_of(remote, self.machine).unwrap_or_default();
                let server = match remote {
                    Remote::Machine(m) => Some(m),
                    Remote::Name(_) => None,
                };
                (
                    format!(
                        "{host}:{} (from machine {})",
                        self.port,
                        self.machine.name()
                    ),
                    server,
                )
            }
            Origin::Test => {
                let host = host_of_test(self.machine).unwrap_or_default();
                (
                    format!("{host}:{} (from the test process)", self.port),
                    Some(self.machine),
                )
            }
        };
        let detail = match server {
            Some(server) => match server.call(listening_tcp, ()) {
                Ok(l) if l.is_empty() => {
                    format!("nothing listens on TCP in machine {}", server.name())
                }
                Ok(l) => format!(
                    "listening on TCP in machine {}: {}",
                    server.name(),
                    l.join(", ")
                ),
                Err(e) => format!("what listens in machine {} is unknown: {e}", server.name()),
            },
            None => "pass the server's Machine to .on(..) to see what listens there".into(),
        };
        Error::NotReady {
            machine: self.machine.name().to_string(),
            what,
            problem: format!("{problem} after {:.1} s", self.timeout.as_secs_f64()),
            detail: detail.into(),
        }
    }
}

/// The host a machine connects to for `remote`: a machine's zone address, else its name.
fn host_of(remote: &Remote, client: &Machine) -> Result<String> {
    Ok(match remote {
        Remote::Name(name) => name.clone(),
        Remote::Machine(m) => match (m.address(), m.network()) {
            (Some(address), _) => address.to_string(),
            (None, Network::Host) if client.network() == &Network::Host => "127.0.0.1".into(),
            (None, _) => {
                return Err(Error::Network {
                    network: m.network().to_string(),
                    machine: m.name().into(),
                    reason: format!(
                        "machine {} cannot reach it: it has no address on a zone",
                        client.name()
                    ),
                })
            }
        },
    })
}

/// Where the test process reaches the machine.
fn host_of_test(machine: &Machine) -> Result<String> {
    match (machine.address(), machine.network()) {
        (Some(address), _) => Ok(address.to_string()),
        (None, Network::Host) => Ok("127.0.0.1".into()),
        (None, network) => Err(Error::Network {
            network: network.to_string(),
            machine: machine.name().into(),
            reason: "the test process cannot reach a machine on a private network".into(),
        }),
    }
}

/// Connects to `host:port`, trying every address the name resolves to (run where the
/// connection is to start).
fn connect_to((host, port): (String, u16)) -> std::result::Result<(), String> {
    let addresses: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    try_each(&addresses)
}

/// Connects to whatever listens on `port` in this machine, at the address it listens on (a
/// wildcard at loopback). Run inside.
fn connect_locally(port: u16) -> std::result::Result<(), String> {
    let addresses: Vec<SocketAddr> = listening_sockets()
        .into_iter()
        .filter(|a| a.port() == port)
        .map(|a| match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, port).into(),
            IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, port).into(),
            _ => a,
        })
        .collect();
    if addresses.is_empty() {
        return Err(format!("nothing listens on port {port}"));
    }
    try_each(&addresses)
}

fn try_each(addresses: &[SocketAddr]) -> std::result::Result<(), String> {
    let mut last = String::from("no address");
    for address in addresses {
        match TcpStream::connect_timeout(address, ATTEMPT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}

/// What listens on TCP in this machine, as `address:port` (run inside).
fn listening_tcp((): ()) -> Vec<String> {
    let mut found: Vec<String> = listening_sockets().iter().map(|a| a.to_string()).collect();
    found.sort();
    found.dedup();
    found
}

/// The listening sockets of `/proc/net/tcp{,6}` (in the network namespace of the caller).
pub(super) fn listening_sockets() -> Vec<SocketAddr> {
    let mut found = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN.
            if fields.get(3) != Some(&"0A") {
                continue;
            }
            if let Some(address) = fields.get(1).and_then(|f| parse_proc_address(f, v6)) {
                found.push(address);
            }
        }
    }
    found
}

/// `0100007F:0016` (v4) or 32 hex digits and a port (v6): the kernel prints each 32-bit
/// word of the address in host byte order.
fn parse_proc_address(field: &str, v6: bool) -> Option<SocketAddr> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..address.len() / 8)
        .map(|i| u32::from_str_radix(address.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match (v6, bytes.len()) {
        (false, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        (true, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_are_read_in_host_byte_order() {
        assert_eq!(
            parse_proc_address("0100007F:0016", false),
            Some("127.0.0.1:22".parse().unwrap())
        );
        assert_eq!(
            parse_proc_address("0203FA0A:1F90", false),
            Some("10.250.3.2:8080".parse().unwrap())
        );
        assert_eq!(
            parse_proc_address("00000000000000000000000001000000:0050", true),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_proc_address("00000000000000000000000000000000:0050", true),
            Some("[::]:80".parse().unwrap())
        );
        assert_eq!(parse_proc_address("zz:0050", false), None);
    }
}
