//! A command's standard streams, on the test process's side: the pipes it gets, and the loop
//! that feeds its stdin and gathers its output while waiting for the agent's answer. A call
//! ([`super::call`]) has one stream more, its process's socket, which carries its outcome: the
//! loop then ends as soon as that is whole, without the agent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags};

use crate::agent::wire::{RecvError, Response};
use crate::agent::{Conn, Streams};
use crate::deadline::poll_timeout;

/// The program's standard streams: pipes, or this process's own stdout and stderr.
pub(crate) struct Pipes {
    stdin: Option<(OwnedFd, OwnedFd)>,
    output: Option<[(OwnedFd, OwnedFd); 2]>,
}

/// This side of the streams.
pub(crate) struct Ours {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    outcome: Option<OwnedFd>,
    /// A call's write ends of its outputs, let go once the outcome has come (or its socket
    /// closed without one): until then, only data wakes the loop.
    held: Option<[OwnedFd; 2]>,
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
        })
    }

    /// The ends the program gets: `[stdin], stdout, stderr`.
    pub(crate) fn theirs(&self) -> Vec<RawFd> {
        let stdin = self.stdin.iter().map(|(read, _)| read.as_raw_fd());
        let output: Vec<RawFd> = match &self.output {
            Some(pipes) => pipes.iter().map(|(_, write)| write.as_raw_fd()).collect(),
            None => vec![libc::STDOUT_FILENO, libc::STDERR_FILENO],
        };
        stdin.chain(output).collect()
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
            outcome: None,
            held: None,
        }
    }
}

/// How long output may stay open once the program has exited: long enough for what it wrote
/// last, short enough that a background job holding the pipe does not hold the test.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

impl Ours {
    /// A call process's streams: its stdout, its stderr, and its socket for the outcome.
    pub(crate) fn of_call(streams: Streams) -> Ours {
        Ours {
            stdin: None,
            stdout: Some(streams.stdout),
            stderr: Some(streams.stderr),
            outcome: Some(streams.outcome),
            held: Some(streams.held),
        }
    }
}

/// How a run ended.
pub(crate) struct Pumped {
    /// The agent's last word on the program; `None` when a call's outcome came without one.
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

/// A run's streams, and what came on them so far: [`pump`] may go over them more than once
/// (a call's, first alone, then with the agent's answer on how its process ended).
pub(crate) struct Gathering {
    ours: Ours,
    stdout: Capped,
    stderr: Capped,
    outcome: Capped,
    drain_until: Option<Instant>,
    held_open: bool,
}

impl Gathering {
    /// Gathers from `ours`, keeping at most `limit` bytes of each.
    pub(crate) fn new(ours: Ours, limit: usize) -> Gathering {
        Gathering {
            ours,
            stdout: Capped::new(limit),
            stderr: Capped::new(limit),
            outcome: Capped::new(limit.saturating_add(4)),
            drain_until: None,
            held_open: false,
        }
    }

    /// Stops waiting for a call's outcome (what came of it is kept), and lets go of its
    /// write ends of the outputs: from now on, their end is seen.
    pub(crate) fn let_go(&mut self) {
        self.ours.outcome = None;
        self.ours.held = None;
    }

    /// Whether a call's outcome came whole.
    pub(crate) fn has_outcome(&self) -> bool {
        whole_message(&self.outcome.kept).is_some()
    }

    /// What went past the limit, if anything: `"stdout"`, `"stderr"` or `"result"`.
    pub(crate) fn over(&self) -> Option<&'static str> {
        [
            (&self.stdout, "stdout"),
            (&self.stderr, "stderr"),
            (&self.outcome, "result"),
        ]
        .into_iter()
        .find_map(|(c, name)| c.over.then_some(name))
    }

    /// What came, with the agent's last word if there was one.
    pub(crate) fn into_pumped(self, reply: Option<Response>) -> Pumped {
        Pumped {
            reply,
            outcome: whole_message(&self.outcome.kept).map(<[u8]>::to_vec),
            over: self.over(),
            stdout: self.stdout.kept,
            stderr: self.stderr.kept,
            held_open: self.held_open,
        }
    }

    fn outputs_open(&self) -> bool {
        self.ours.stdout.is_some() || self.ours.stderr.is_some()
    }

    fn drain_from_now(&mut self) {
        self.drain_until
            .get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
    }
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

/// Feeds stdin and gathers stdout and stderr until the agent says how the program ended on
/// `conn` and both outputs reached end-of-file (as `std::process::Child::wait_with_output`
/// would), or [`DRAIN_GRACE`] after the exit; returns the agent's answer.
///
/// A call's run ends with `None` as soon as its outcome is whole and its outputs closed, and,
/// without `conn`, also when its socket closed without a whole outcome. With
/// `start_deadline`, the agent must acknowledge the start by then. A timeout or a failure is
/// returned at once.
pub(crate) fn pump(
    mut conn: Option<&mut Conn>,
    run: &mut Gathering,
    mut input: Option<&[u8]>,
    deadline: Option<Instant>,
    mut start_deadline: Option<Instant>,
) -> std::result::Result<Option<Response>, RecvError> {
    if let Some(fd) = &run.ours.stdin {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(std::io::Error::from)?;
    }
    let mut reply: Option<Response> = None;
    loop {
        let outputs_open = run.outputs_open();
        let held_open = run.drain_until.is_some_and(|d| Instant::now() >= d);
        let whole = run.has_outcome();
        if let Some(r) = reply.take() {
            let exited = matches!(r, Response::Exited { .. });
            if !exited || !(outputs_open || run.ours.outcome.is_some()) || held_open {
                run.held_open = exited && outputs_open;
                return Ok(Some(r));
            }
            reply = Some(r);
        } else if whole && (!outputs_open || held_open) {
            run.held_open = outputs_open;
            return Ok(None);
        } else if conn.is_none() && run.ours.outcome.is_none() && !whole {
            return Ok(None);
        }
        let wait_until = match (start_deadline, reply.is_some() || whole) {
            (_, true) => run.drain_until,
            (Some(start), false) => Some(deadline.map_or(start, |d| d.min(start))),
            (None, false) => deadline,
        };
        let want_reply = reply
            .is_none()
            .then(|| conn.as_deref().map(Conn::fd))
            .flatten();
        let ready = match poll(want_reply, &run.ours, wait_until) {
            Err(RecvError::TimedOut) if run.drain_until.is_some() => continue,
            other => other?,
        };
        if ready.stdin {
            feed(&mut run.ours.stdin, &mut input);
        }
        if ready.stdout {
            drain(&mut run.ours.stdout, &mut run.stdout)?;
        }
        if ready.stderr {
            drain(&mut run.ours.stderr, &mut run.stderr)?;
        }
        if ready.outcome {
            drain(&mut run.ours.outcome, &mut run.outcome)?;
            let kept = &run.outcome.kept;
            if whole_message(kept).is_some() || declared(kept) > run.outcome.limit {
                run.outcome.over |= whole_message(kept).is_none();
                run.ours.outcome = None;
                run.drain_from_now();
            }
            if run.ours.outcome.is_none() {
                run.ours.held = None;
                // The process let go of its outputs before it wrote its outcome: unless
                // something it started holds them, they are at their end now, and reading
                // them at once spares a wait in `poll`.
                drain(&mut run.ours.stdout, &mut run.stdout)?;
                drain(&mut run.ours.stderr, &mut run.stderr)?;
            }
        }
        if ready.conn {
            let Some(conn) = conn.as_deref_mut() else {
                continue;
            };
            match conn.recv(None)?.0 {
                Response::Started => start_deadline = None,
                r => {
                    reply = Some(r);
                    run.drain_from_now();
                    // The program is gone: whatever it did not read, it never will.
                    run.ours.stdin = None;
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
    conn: Option<BorrowedFd>,
    ours: &Ours,
    deadline: Option<Instant>,
) -> std::result::Result<Ready, RecvError> {
    let wanted = [
        (conn, PollFlags::POLLIN),
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
    // One buffer per thread, not one per read: clearing 64 KiB costs more than a short read.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
    }
    let read = BUF.with_borrow_mut(|buf| {
        let n = read_now(fd.as_fd(), buf)?;
        out.take(&buf[..n]);
        Ok::<usize, nix::errno::Errno>(n)
    });
    match read {
        Ok(0) => *pipe = None,
        Ok(_) | Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Reads what is there without waiting, whatever the descriptor's own flags say. A call's
/// pipes are made inside the machine, and what the call starts there can open them again: a
/// reader there that empties one between our `poll` and our read would leave a waiting read
/// stuck past every deadline. Where the kernel does not take `RWF_NOWAIT` for a pipe, the
/// descriptor is made non-blocking instead (which a guest sharing it could undo).
fn read_now(fd: BorrowedFd, buf: &mut [u8]) -> nix::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over `buf`, which outlives the call; offset -1 reads at the current
    // position, as `read` does (pipes and sockets have none).
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    match nix::errno::Errno::result(n) {
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            nix::unistd::read(fd.as_raw_fd(), buf)
        }
        other => other.map(|n| n as usize),
    }
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

    #[test]
    fn a_read_never_waits_for_data_even_on_a_blocking_pipe() {
        let (read, write) = pipe().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut pipe = Some(read);
            let mut out = Capped::new(16);
            let empty = drain(&mut pipe, &mut out).map(|()| pipe.is_some());
            nix::unistd::write(&write, b"hi").unwrap();
            let some = drain(&mut pipe, &mut out).map(|()| out.kept.clone());
            drop(write);
            let end = drain(&mut pipe, &mut out).map(|()| pipe.is_none());
            tx.send((empty, some, end)).unwrap();
        });
        // Only a bound on a hang: a waiting read would never return.
        let (empty, some, end) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a read waited for data on an empty pipe");
        assert!(empty.unwrap(), "an empty pipe stays open");
        assert_eq!(some.unwrap(), b"hi");
        assert!(end.unwrap(), "end-of-file closes it");
    }
}
