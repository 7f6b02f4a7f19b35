//! A command's standard streams, on the test process's side: the pipes it gets, and the loop
//! that feeds its stdin and gathers its output while waiting for the agent's answer. A call
//! ([`super::call`]) has one pipe more, that its process writes its outcome to: the loop ends
//! as soon as that is whole, without waiting for the agent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags};

use crate::agent::wire::{poll_timeout, RecvError, Response};
use crate::agent::Conn;

/// The program's standard streams: pipes, or this process's own stdout and stderr.
pub(crate) struct Pipes {
    stdin: Option<(OwnedFd, OwnedFd)>,
    output: Option<[(OwnedFd, OwnedFd); 2]>,
    outcome: Option<(OwnedFd, OwnedFd)>,
}

/// This side of the pipes.
pub(crate) struct Ours {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    outcome: Option<OwnedFd>,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

impl Pipes {
    pub(crate) fn new(stdin: bool, capture: bool) -> std::io::Result<Pipes> {
        Ok(Pipes {
            stdin: stdin.then(pipe).transpose()?,
            output: if capture {
                Some([pipe()?, pipe()?])
            } else {
                None
            },
            outcome: None,
        })
    }

    /// A call's: output captured, and its outcome pipe.
    pub(crate) fn for_call() -> std::io::Result<Pipes> {
        Ok(Pipes {
            outcome: Some(pipe()?),
            ..Pipes::new(false, true)?
        })
    }

    /// The ends the program gets: `[stdin], stdout, stderr, [outcome]`.
    pub(crate) fn theirs(&self) -> Vec<RawFd> {
        let stdin = self.stdin.iter().map(|(read, _)| read.as_raw_fd());
        let output: Vec<RawFd> = match &self.output {
            Some(pipes) => pipes.iter().map(|(_, write)| write.as_raw_fd()).collect(),
            None => vec![libc::STDOUT_FILENO, libc::STDERR_FILENO],
        };
        let outcome = self.outcome.iter().map(|(_, write)| write.as_raw_fd());
        stdin.chain(output).chain(outcome).collect()
    }

    /// Closes the program's ends here, so that its exit is seen as end-of-file.
    pub(crate) fn into_ours(self) -> Ours {
        let [stdout, stderr] = match self.output {
            Some([(out, _), (err, _)]) => [Some(out), Some(err)],
            None => [None, None],
        };
        Ours {
            stdin: self.stdin.map(|(_, write)| write),
            stdout,
            stderr,
            outcome: self.outcome.map(|(read, _)| read),
        }
    }
}

/// How long output may stay open once the program has exited: long enough for what it wrote
/// last, short enough that a background job holding the pipe does not hold the test.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How a command's run through the agent ended.
pub(crate) struct Pumped {
    /// The agent's last word on the program; `None` when a call's outcome came first (the
    /// agent's word is then still owed on the connection).
    pub reply: Option<Response>,
    /// A call's outcome message, when it came whole.
    pub outcome: Option<Vec<u8>>,
    /// Its output.
    pub stdout: Vec<u8>,
    /// Its error output.
    pub stderr: Vec<u8>,
    /// The program exited, but something still held its output open after [`DRAIN_GRACE`].
    pub held_open: bool,
    /// What went past the limit, if anything: `"stdout"`, `"stderr"` or `"result"`. Output past
    /// it was read and thrown away (the program was not held up); a result past it is
    /// never complete.
    pub over: Option<&'static str>,
}

/// What the test process keeps of a machine's output, or of a call's result, at most by
/// default: guest-controlled sizes must not take the test process's memory, which no machine
/// limit covers. `Command::output_limit` and `Call::output_limit` change it.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 << 20;

/// An output kept up to a limit; what comes past it is read and thrown away.
struct Capped {
    kept: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Capped {
    fn new(limit: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            limit,
            over: false,
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        let taken = bytes.len().min(room);
        // Grown by doubling, but never past the limit: the limit is what may be held.
        let len = self.kept.len();
        if len + taken > self.kept.capacity() {
            let want = (self.kept.capacity() * 2).clamp(len + taken, self.limit.max(len + taken));
            self.kept.reserve_exact(want - len);
        }
        self.kept.extend_from_slice(&bytes[..taken]);
        self.over |= bytes.len() > room;
    }
}

/// Feeds stdin and gathers stdout and stderr until the agent says how the program ended and
/// both outputs reached end-of-file (as `std::process::Child::wait_with_output` would), or
/// [`DRAIN_GRACE`] after the exit. The agent must acknowledge the start by `start_deadline`;
/// a timeout or a failure is returned at once.
pub(crate) fn pump(
    conn: &mut Conn,
    mut ours: Ours,
    mut input: Option<&[u8]>,
    deadlines: (Option<Instant>, Instant),
    limit: usize,
) -> std::result::Result<Pumped, RecvError> {
    let (deadline, start_deadline) = deadlines;
    if let Some(fd) = &ours.stdin {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(std::io::Error::from)?;
    }
    let (mut stdout, mut stderr) = (Capped::new(limit), Capped::new(limit));
    let mut outcome = Capped::new(limit.saturating_add(4));
    let over = |o: &Capped, e: &Capped, r: &Capped| {
        [(o, "stdout"), (e, "stderr"), (r, "result")]
            .into_iter()
            .find_map(|(c, name)| c.over.then_some(name))
    };
    let mut reply: Option<Response> = None;
    let mut started = false;
    let mut drain_until = None;
    loop {
        let outputs_open = ours.stdout.is_some() || ours.stderr.is_some();
        let held_open = drain_until.is_some_and(|d| Instant::now() >= d);
        let whole = whole_message(&outcome.kept);
        if let Some(r) = reply.take() {
            let exited = matches!(r, Response::Exited { .. } | Response::Ended { .. });
            if !exited || !(outputs_open || ours.outcome.is_some()) || held_open {
                return Ok(Pumped {
                    reply: Some(r),
                    outcome: whole.map(<[u8]>::to_vec),
                    over: over(&stdout, &stderr, &outcome),
                    stdout: stdout.kept,
                    stderr: stderr.kept,
                    held_open: exited && outputs_open,
                });
            }
            reply = Some(r);
        } else if let Some(body) = whole.filter(|_| !outputs_open || held_open) {
            return Ok(Pumped {
                reply: None,
                outcome: Some(body.to_vec()),
                over: over(&stdout, &stderr, &outcome),
                stdout: stdout.kept,
                stderr: stderr.kept,
                held_open: outputs_open,
            });
        }
        let wait_until = match (started, reply.is_some() || whole.is_some()) {
            (_, true) => drain_until,
            (false, false) => Some(deadline.map_or(start_deadline, |d| d.min(start_deadline))),
            (true, false) => deadline,
        };
        let ready = poll(conn.fd(), &ours, reply.is_none(), wait_until);
        let ready = match ready {
            Err(RecvError::TimedOut) if drain_until.is_some() => continue,
            other => other?,
        };
        if ready.stdin {
            feed(&mut ours.stdin, &mut input);
        }
        if ready.stdout {
            drain(&mut ours.stdout, &mut stdout)?;
        }
        if ready.stderr {
            drain(&mut ours.stderr, &mut stderr)?;
        }
        if ready.outcome {
            drain(&mut ours.outcome, &mut outcome)?;
            if whole_message(&outcome.kept).is_some() || declared(&outcome.kept) > limit {
                outcome.over |= whole_message(&outcome.kept).is_none();
                ours.outcome = None;
                drain_until.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
            }
        }
        if ready.conn {
            match conn.recv(None)?.0 {
                Response::Started => started = true,
                r => {
                    reply = Some(r);
                    drain_until.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
                    // The program is gone: whatever it did not read, it never will.
                    ours.stdin = None;
                }
            }
        }
    }
}

/// The length a message's prefix announces (0 until the prefix is there).
fn declared(buf: &[u8]) -> usize {
    buf.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
}

/// The body of a length-prefixed message, once all of it is there.
fn whole_message(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    buf.get(4..4 + len)
}

/// Which descriptors `poll` found ready.
struct Ready {
    conn: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    outcome: bool,
}

fn poll(
    conn: BorrowedFd,
    ours: &Ours,
    want_reply: bool,
    deadline: Option<Instant>,
) -> std::result::Result<Ready, RecvError> {
    let wanted = [
        (want_reply.then_some(conn), PollFlags::POLLIN),
        (ours.stdin.as_ref().map(|f| f.as_fd()), PollFlags::POLLOUT),
        (ours.stdout.as_ref().map(|f| f.as_fd()), PollFlags::POLLIN),
        (ours.stderr.as_ref().map(|f| f.as_fd()), PollFlags::POLLIN),
        (ours.outcome.as_ref().map(|f| f.as_fd()), PollFlags::POLLIN),
    ];
    let which: Vec<usize> = (0..wanted.len())
        .filter(|i| wanted[*i].0.is_some())
        .collect();
    let mut fds: Vec<PollFd> = wanted
        .iter()
        .filter_map(|(fd, flags)| fd.map(|fd| PollFd::new(fd, *flags)))
        .collect();
    let timeout = poll_timeout(deadline).ok_or(RecvError::TimedOut)?;
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(RecvError::Io(e.into())),
    }
    let mut got = [false; 5];
    for (fd, slot) in fds.iter().zip(which) {
        got[slot] = fd.any().unwrap_or(false);
    }
    let [conn, stdin, stdout, stderr, outcome] = got;
    Ok(Ready {
        conn,
        stdin,
        stdout,
        stderr,
        outcome,
    })
}

/// Writes what the pipe takes; closes it when all is written or the program stopped reading.
fn feed(pipe: &mut Option<OwnedFd>, input: &mut Option<&[u8]>) {
    let Some(fd) = pipe else { return };
    let rest = input.unwrap_or_default();
    match nix::unistd::write(fd.as_fd(), rest) {
        Ok(n) if n < rest.len() => *input = Some(&rest[n..]),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
        _ => *pipe = None,
    }
}

/// Reads what is there; closes the pipe at end-of-file.
fn drain(pipe: &mut Option<OwnedFd>, out: &mut Capped) -> std::io::Result<()> {
    let Some(fd) = pipe else { return Ok(()) };
    let mut buf = [0u8; 64 * 1024];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(0) => *pipe = None,
        Ok(n) => out.take(&buf[..n]),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_limit_is_counted_not_kept() {
        let mut c = Capped::new(5);
        c.take(b"abc");
        assert!(!c.over);
        c.take(b"defg");
        assert_eq!((c.kept.as_slice(), c.over), (&b"abcde"[..], true));
        c.take(b"h");
        assert_eq!(c.kept.len(), 5);
        assert_eq!(c.kept.capacity(), 5, "never more room than the limit");
        assert_eq!(declared(&[9, 0, 0, 0]), 9);
        assert_eq!(declared(&[9, 0]), 0);
    }

    #[test]
    fn an_outcome_is_whole_only_with_all_its_bytes() {
        assert_eq!(whole_message(&[]), None);
        assert_eq!(whole_message(&[3, 0, 0]), None);
        assert_eq!(whole_message(&[3, 0, 0, 0, 1, 2]), None);
        assert_eq!(
            whole_message(&[3, 0, 0, 0, 1, 2, 3]),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(whole_message(&[0, 0, 0, 0]), Some(&[][..]));
        // A length past what can fit never completes, whatever follows.
        assert_eq!(whole_message(&[0xff, 0xff, 0xff, 0xff, 1]), None);
    }
}
