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
}

/// Feeds stdin and gathers stdout and stderr until the agent says how the program ended and
/// both outputs reached end-of-file (as `std::process::Child::wait_with_output` would), or
/// [`DRAIN_GRACE`] after the exit. The agent must acknowledge the start by `start_deadline`;
/// a timeout or a failure is returned at once.
pub(crate) fn pump(
    conn: &mut Conn,
    mut ours: Ours,
    mut input: Option<&[u8]>,
    deadline: Option<Instant>,
    start_deadline: Instant,
) -> std::result::Result<Pumped, RecvError> {
    if let Some(fd) = &ours.stdin {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(std::io::Error::from)?;
    }
    let (mut stdout, mut stderr, mut outcome) = (Vec::new(), Vec::new(), Vec::new());
    let mut reply: Option<Response> = None;
    let mut started = false;
    let mut drain_until = None;
    loop {
        let outputs_open = ours.stdout.is_some() || ours.stderr.is_some();
        let held_open = drain_until.is_some_and(|d| Instant::now() >= d);
        let whole = whole_message(&outcome);
        if let Some(r) = reply.take() {
            let exited = matches!(r, Response::Exited { .. } | Response::Ended { .. });
            if !exited || !(outputs_open || ours.outcome.is_some()) || held_open {
                return Ok(Pumped {
                    reply: Some(r),
                    outcome: whole.map(<[u8]>::to_vec),
                    stdout,
                    stderr,
                    held_open: exited && outputs_open,
                });
            }
            reply = Some(r);
        } else if let Some(body) = whole.filter(|_| !outputs_open || held_open) {
            return Ok(Pumped {
                reply: None,
                outcome: Some(body.to_vec()),
                stdout,
                stderr,
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
            if whole_message(&outcome).is_some() || outcome.len() > MAX_OUTCOME {
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

/// Past this, a call's outcome is garbage (it can only come from a tampered process).
const MAX_OUTCOME: usize = 256 << 20;

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
fn drain(pipe: &mut Option<OwnedFd>, out: &mut Vec<u8>) -> std::io::Result<()> {
    let Some(fd) = pipe else { return Ok(()) };
    let mut buf = [0u8; 64 * 1024];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(0) => *pipe = None,
        Ok(n) => out.extend_from_slice(&buf[..n]),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
