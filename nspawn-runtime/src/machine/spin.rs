//! A short busy wait for a quick call's outcome, before the test thread sleeps in `poll`.
//!
//! A call's process runs on another CPU. If the test thread sleeps while it runs, the
//! outcome must wake it: the call process sends a wake-up interrupt to the thread's CPU,
//! which must come out of its idle state before the thread runs. A thread that waits on its
//! CPU for at most [`BUDGET`] sees an outcome that comes meanwhile without either. On this
//! project's 2-CPU virtual machines it took 10-20% off a no-op call's median among other
//! operations, and nothing off calls 1 ms apart (`benches/README.md`, Calls).
//!
//! It costs the test thread's CPU time, at most [`BUDGET`] a call, and nothing of anyone
//! else's: the loop yields its CPU to whatever else is runnable there, and a thread whose
//! calls typically take longer than the budget (calls that do real work) does not spin at
//! all. Nor does a call while the agent is still forking a process for the next ones (calls
//! back to back): the call decides that (see `call`), as only it knows.

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// How long the test thread waits on its CPU at most, for each call.
const BUDGET: Duration = Duration::from_micros(200);

thread_local! {
    /// How long this thread's calls take, as a moving average; zero before its first.
    static TYPICAL: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Waits on this CPU until `fd` is readable, [`BUDGET`] passes or `deadline` comes, if this
/// thread's calls are typically quicker than the budget; reads nothing.
pub(super) fn briefly(fd: BorrowedFd, deadline: Option<Instant>) {
    if !worth_it() {
        return;
    }
    let until = Instant::now() + BUDGET;
    let until = deadline.map_or(until, |d| d.min(until));
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0);
        if ready || Instant::now() >= until {
            return;
        }
        std::thread::yield_now();
    }
}

/// Whether this thread's calls are typically quick enough to wait for on the CPU.
fn worth_it() -> bool {
    TYPICAL.get() < BUDGET
}

/// Records how long a call of this thread took, from its request to its outcome.
pub(super) fn took(elapsed: Duration) {
    // A quarter of the new one: a call a little past the budget among quick ones does not
    // stop the wait; a much slower one stops it until a few quick ones have come.
    TYPICAL.set((TYPICAL.get() * 3 + elapsed) / 4);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_thread_of_slow_calls_stops_waiting_and_quick_ones_make_it_wait_again() {
        assert!(worth_it(), "a thread's first call is waited for");
        took(Duration::from_micros(50));
        assert!(worth_it());
        took(Duration::from_millis(2));
        assert!(
            !worth_it(),
            "one call of 2 ms is past the budget on average"
        );
        for _ in 0..20 {
            took(Duration::from_micros(60));
        }
        assert!(worth_it(), "quick calls bring it back under");
    }

    #[test]
    fn the_wait_reads_nothing_and_ends_when_nothing_comes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // Nothing is ever written: it ends at the budget.
        briefly(ours.as_fd(), None);
        std::io::Write::write_all(&mut &theirs, b"x").unwrap();
        briefly(ours.as_fd(), Some(Instant::now()));
        briefly(ours.as_fd(), None);
        let mut byte = [0u8; 1];
        ours.set_nonblocking(true).unwrap();
        assert_eq!(std::io::Read::read(&mut &ours, &mut byte).unwrap(), 1);
        assert_eq!(&byte, b"x");
    }
}
