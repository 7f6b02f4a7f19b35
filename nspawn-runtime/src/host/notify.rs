//! The `NOTIFY_SOCKET` we hand to `systemd-nspawn`: it reports the container's leader PID
//! (`X_NSPAWN_LEADER_PID=`) and, with `--notify-ready=yes`, `READY=1` once the container's
//! systemd has started up.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{HostError, IoContext, Result};

/// One field of a notification datagram that we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// The container's PID 1, as seen from the host.
    LeaderPid(u32),
    /// The container has booted.
    Ready,
    /// A status text.
    Status(String),
}

/// Parses a datagram (newline-separated `KEY=VALUE` fields), ignoring fields we don't use.
pub(crate) fn parse(datagram: &[u8]) -> Vec<Message> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            match key {
                "X_NSPAWN_LEADER_PID" => value.trim().parse().ok().map(Message::LeaderPid),
                "READY" if value.trim() == "1" => Some(Message::Ready),
                "STATUS" => Some(Message::Status(value.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// A bound notification socket, removed when dropped.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a socket for machine `name` in `dir`.
    pub(crate) fn bind(dir: &Path, name: &str) -> Result<NotifySocket, HostError> {
        let path = dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).context(|| format!("binding {}", path.display()))?;
        Ok(NotifySocket { socket, path })
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for a datagram. `None` when nothing came.
    pub(crate) fn recv(&self, timeout: Duration) -> Option<Vec<Message>> {
        let _ = self
            .socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(parse(&buf[..n])),
            Err(_) => None,
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // Bound as root, in a directory only root enters.
        let _root = crate::host::privs::ThreadRoot::acquire();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_nspawn_sends() {
        assert_eq!(
            parse(b"STATUS=Container running.\nX_NSPAWN_LEADER_PID=5463"),
            vec![
                Message::Status("Container running.".into()),
                Message::LeaderPid(5463)
            ]
        );
        assert_eq!(parse(b"READY=1\n"), vec![Message::Ready]);
        assert_eq!(parse(b"READY=0\nWATCHDOG=1\n"), vec![]);
    }

    #[test]
    fn receives_datagrams_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = NotifySocket::bind(dir.path(), "m").unwrap();
        assert_eq!(sock.recv(Duration::from_millis(10)), None);
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", sock.path())
            .unwrap();
        assert_eq!(
            sock.recv(Duration::from_secs(5)),
            Some(vec![Message::Ready])
        );
        let path = sock.path().to_path_buf();
        drop(sock);
        assert!(!path.exists());
    }
}
