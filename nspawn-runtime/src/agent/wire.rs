//! What the runtime and the agent say to each other, and how it travels.
//!
//! Each message is a little-endian `u32` length and a postcard body, sent with one
//! `sendmsg(2)` on a Unix stream socket. File descriptors ride along as `SCM_RIGHTS`: the
//! agent hands back the files it opens and the call processes it forks, and receives the pipes
//! a command writes to. Data never passes through the agent.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::cmsg_space;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// At most this many descriptors travel with one message.
pub const MAX_FDS: usize = 5;
/// A message larger than this is refused: it can only come from a confused peer.
const MAX_LEN: u32 = 256 << 20;

/// Bytes of a path, argument or variable, as the OS has them (not necessarily UTF-8).
pub type Bytes = Vec<u8>;

/// What the runtime asks of the agent on a connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// `stat(2)`, following symlinks.
    Stat {
        /// The path inside the machine.
        path: Bytes,
    },
    /// `open(2)`; the descriptor comes back with [`Response::Opened`].
    Open {
        /// The path inside the machine.
        path: Bytes,
        /// `open(2)` flags.
        flags: i32,
        /// The mode of a created file, set exactly (whatever the umask).
        mode: u32,
    },
    /// Runs a program; its stdin (if `stdin`), stdout and stderr descriptors come along.
    Exec(Exec),
    /// A call process, forked ahead and handed over: [`Response::Spare`] comes with its
    /// socket and the read ends of its stdout and stderr. The runtime sends it an
    /// [`Invocation`] directly, and reads its [`Outcome`] from the same socket.
    Spare,
    /// Call processes pushed ahead on this connection, for as long as the runtime keeps it
    /// open: one [`Response::Spare`] now, and one more each time the last one pushed has
    /// exited. The runtime reads them when it needs them, so a call finds its process forked
    /// without asking for it.
    Spares,
    /// How a call process handed over ended: waits for it (killing its process group first
    /// if `kill`) for at most `timeout_ms`, then reaps it. [`Response::Exited`] or
    /// [`Response::TimedOut`].
    Finish {
        /// The PID [`Response::Spare`] gave.
        pid: u32,
        /// Kill it, and every process it started, first.
        kill: bool,
        /// How long to wait for it to exit.
        timeout_ms: Option<u64>,
    },
}

/// A function to run, sent by the runtime straight to a call process handed over by
/// [`Request::Spare`] (see [`super::callee`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Invocation {
    /// The entry point: its address minus the runtime's anchor function's, both in this same
    /// executable (never an absolute address, which differs between processes).
    pub entry: i64,
    /// The argument, as the entry point decodes it.
    pub arg: Bytes,
    /// The user to run as (default root).
    pub user: Option<String>,
}

/// What to check when a value does not cross.
pub const ROUND_TRIP: &str = "the argument and result types must come back from their own \
     Serialize as their Deserialize reads them (no skipped fields without defaults, no \
     custom impls that disagree)";

/// What a called function's process reports, straight to the runtime on its socket: a
/// little-endian `u32` length and the postcard body. The guest can tamper with that process,
/// so the runtime decodes this as untrusted data.
#[derive(Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// The function returned this value, encoded.
    Returned(Bytes),
    /// The function panicked.
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:column`, if the panic had one.
        location: Option<String>,
    },
    /// The call could not be made: the process could not become the user, the argument
    /// could not be decoded, or the result encoded.
    Failed(String),
    /// The entry point is not in this executable.
    BadEntry,
    /// The machine has no such user.
    NoSuchUser,
}

/// A program to run inside the machine.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exec {
    /// The program, looked up in `PATH` unless it has a slash.
    pub program: Bytes,
    /// Its arguments, without the program.
    pub args: Vec<Bytes>,
    /// Variables on top of the login-like environment.
    pub env: Vec<(Bytes, Bytes)>,
    /// The working directory (default: the user's home, or `/`).
    pub cwd: Option<Bytes>,
    /// The user to run as (default root).
    pub user: Option<String>,
    /// Kill the program's process group after this long.
    pub timeout_ms: Option<u64>,
    /// Whether a stdin descriptor comes first; otherwise stdin is `/dev/null`.
    pub stdin: bool,
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The agent is inside the machine and serving (first message on the control socket).
    Ready,
    /// What `stat(2)` said.
    Stat(Meta),
    /// The descriptor asked for comes with this message.
    Opened,
    /// The program has started (before its `Exited`): the runtime's proof that the agent
    /// took the command, which it waits for with a deadline even when the command has none.
    Started,
    /// The program ended; a raw wait status.
    Exited {
        /// As `waitpid(2)` gives it.
        status: i32,
    },
    /// A call process, forked ahead: its socket, then the read ends of its stdout and stderr,
    /// then copies of their write ends, come with this message.
    Spare {
        /// Its PID, as [`Request::Finish`] names it.
        pid: u32,
    },
    /// The program outlived its timeout and was killed, with its process group.
    TimedOut,
    /// The request failed.
    Failed {
        /// At which step.
        step: Step,
        /// The `errno`.
        errno: i32,
    },
}

impl Response {
    /// A failure at `step`, with the errno of `e`.
    pub fn failed(step: Step, e: &std::io::Error) -> Response {
        Response::Failed {
            step,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Metadata of a file inside the machine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Meta {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
}

/// Where a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Entering the machine (agent start-up).
    Enter,
    /// Resolving or opening the path.
    Path,
    /// The user is not in the machine's `/etc/passwd`.
    User,
    /// The working directory.
    Cwd,
    /// Starting the program (`ENOENT`: not found).
    Spawn,
    /// The request could not be understood.
    Protocol,
}

/// Why a message could not be received.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed the connection.
    Closed,
    /// Nothing came before the deadline.
    TimedOut,
    /// Any other failure.
    Io(std::io::Error),
}

impl From<std::io::Error> for RecvError {
    fn from(e: std::io::Error) -> Self {
        RecvError::Io(e)
    }
}

/// Sends `msg` with `fds` in one `sendmsg`.
pub fn send<T: Serialize>(sock: BorrowedFd, msg: &T, fds: &[RawFd]) -> std::io::Result<()> {
    let body = postcard::to_stdvec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_LEN)
        .ok_or_else(|| std::io::Error::other("message too large"))?
        .to_le_bytes();
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let iov = [IoSlice::new(&len), IoSlice::new(&body)];
    let total = len.len() + body.len();
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent < total {
        // A large message goes out in pieces; the descriptors went with the first.
        let all: Vec<u8> = len.iter().chain(&body).copied().collect();
        write_all(sock, &all[sent..])?;
    }
    Ok(())
}

/// Receives one message and the descriptors sent with it, waiting until `deadline` at most.
pub fn recv<T: DeserializeOwned>(
    sock: BorrowedFd,
    deadline: Option<Instant>,
) -> Result<(T, Vec<OwnedFd>), RecvError> {
    let mut len = [0u8; 4];
    let (got, fds) = wait_and_start(sock, &mut len, deadline)?;
    if got == 0 {
        return Err(RecvError::Closed);
    }
    read_exact(sock, &mut len[got..])?;
    let len = u32::from_le_bytes(len);
    if len > MAX_LEN {
        return Err(std::io::Error::other(format!("a message of {len} bytes")).into());
    }
    let mut body = vec![0u8; len as usize];
    read_exact(sock, &mut body)?;
    let msg = postcard::from_bytes(&body).map_err(std::io::Error::other)?;
    Ok((msg, fds))
}

/// Receives the start of a message, waiting until `deadline` at most: without one, in the
/// receive itself; with one, only once nothing was there (waiting first would cost a system
/// call more when the message has come).
fn wait_and_start(
    sock: BorrowedFd,
    len: &mut [u8; 4],
    deadline: Option<Instant>,
) -> Result<(usize, Vec<OwnedFd>), RecvError> {
    let mut flags = match deadline {
        Some(_) => MsgFlags::MSG_DONTWAIT,
        None => MsgFlags::empty(),
    };
    loop {
        match recv_start(sock, len, flags) {
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) if !flags.is_empty() => {
                wait_readable(sock, deadline)?;
                flags = MsgFlags::empty();
            }
            other => return other.map_err(|e| RecvError::Io(e.into())),
        }
    }
}

/// Receives the start of a message, with the descriptors that came with it.
fn recv_start(
    sock: BorrowedFd,
    len: &mut [u8; 4],
    flags: MsgFlags,
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(len)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: descriptors just received are ours.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

/// Waits until `fd` can be read, or fails at `deadline`.
pub fn wait_readable(fd: BorrowedFd, deadline: Option<Instant>) -> Result<(), RecvError> {
    loop {
        let timeout = crate::deadline::poll_timeout(deadline).ok_or(RecvError::TimedOut)?;
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RecvError::Io(e.into())),
        }
    }
}

fn read_exact(sock: BorrowedFd, mut buf: &mut [u8]) -> Result<(), RecvError> {
    while !buf.is_empty() {
        match nix::unistd::read(sock.as_raw_fd(), buf) {
            Ok(0) => return Err(RecvError::Closed),
            Ok(n) => buf = &mut buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(RecvError::Io(e.into())),
        }
    }
    Ok(())
}

fn write_all(sock: BorrowedFd, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(sock.as_fd(), buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_and_descriptors_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let req = Request::Open {
            path: b"/etc/hostname".to_vec(),
            flags: libc::O_RDONLY,
            mode: 0,
        };
        send(a.as_fd(), &req, &[file.as_raw_fd()]).unwrap();
        let (got, fds): (Request, _) = recv(b.as_fd(), None).unwrap();
        assert!(matches!(got, Request::Open { ref path, .. } if path == b"/etc/hostname"));
        assert_eq!(fds.len(), 1);
        let text = std::fs::read_to_string(format!("/proc/self/fd/{}", fds[0].as_raw_fd()));
        assert!(text.unwrap().contains("Pid:"));
    }

    #[test]
    fn large_messages_arrive_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let big = Request::Stat {
            path: vec![b'x'; 8 << 20],
        };
        let sender = std::thread::spawn(move || send(a.as_fd(), &big, &[]).unwrap());
        let (got, fds): (Request, _) = recv(b.as_fd(), None).unwrap();
        sender.join().unwrap();
        assert!(matches!(got, Request::Stat { path } if path.len() == 8 << 20));
        assert!(fds.is_empty());
    }

    #[test]
    fn a_closed_peer_and_a_deadline_are_told_apart() {
        let (a, b) = UnixStream::pair().unwrap();
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(matches!(
            recv::<Response>(b.as_fd(), Some(soon)),
            Err(RecvError::TimedOut)
        ));
        drop(a);
        assert!(matches!(
            recv::<Response>(b.as_fd(), None),
            Err(RecvError::Closed)
        ));
    }
}
