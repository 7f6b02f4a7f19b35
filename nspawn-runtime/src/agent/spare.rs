//! A call process as the runtime holds it, once the agent has handed it over
//! ([`Request::Spare`](super::wire::Request::Spare)): the runtime sends it its request and
//! reads its output and outcome itself, so a call crosses no thread of the agent. The process
//! is the guest's to tamper with: what comes from it is untrusted data, read with limits.

use std::os::fd::{AsFd, OwnedFd};

use super::wire::{self, Invocation, Response};

/// A call process of the machine, waiting for its request.
#[derive(Debug)]
pub(crate) struct Spare {
    /// Its PID, as the agent knows it (for [`Request::Finish`](super::wire::Request::Finish)).
    pub(crate) pid: u32,
    sock: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    held: [OwnedFd; 2],
}

/// The streams a call process's run comes back on: its stdout, its stderr, its socket, which
/// carries the outcome, and write ends of the first two, which the runtime holds until the
/// outcome has come (see [`Spare::into_streams`]).
pub(crate) struct Streams {
    /// Its standard output.
    pub(crate) stdout: OwnedFd,
    /// Its standard error.
    pub(crate) stderr: OwnedFd,
    /// Its socket.
    pub(crate) outcome: OwnedFd,
    /// Write ends of `stdout` and `stderr`.
    pub(crate) held: [OwnedFd; 2],
}

impl Spare {
    /// The process an answer hands over, or the answer if it hands over none.
    pub(crate) fn handed(answer: Response, fds: Vec<OwnedFd>) -> Result<Spare, Response> {
        let Response::Spare { pid } = answer else {
            return Err(answer);
        };
        let Ok([sock, stdout, stderr, out, err]) = <[OwnedFd; 5]>::try_from(fds) else {
            let missing = std::io::Error::from_raw_os_error(libc::EBADF);
            return Err(Response::failed(wire::Step::Protocol, &missing));
        };
        Ok(Spare {
            pid,
            sock,
            stdout,
            stderr,
            held: [out, err],
        })
    }

    /// Sends the process its request: from here on it runs.
    pub(crate) fn start(&self, invocation: &Invocation) -> std::io::Result<()> {
        wire::send(self.sock.as_fd(), invocation, &[])
    }

    /// What its run comes back on. While the runtime holds write ends of its outputs, the
    /// process closing its own makes no end-of-file: the runtime is woken once, by the
    /// outcome, not once per stream as the process finishes.
    pub(crate) fn into_streams(self) -> Streams {
        Streams {
            stdout: self.stdout,
            stderr: self.stderr,
            outcome: self.sock,
            held: self.held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect()
    }

    #[test]
    fn only_a_spare_with_all_its_descriptors_is_taken() {
        let other = Spare::handed(Response::Opened, fds(5)).unwrap_err();
        assert!(matches!(other, Response::Opened));
        let short = Spare::handed(Response::Spare { pid: 7 }, fds(3)).unwrap_err();
        assert!(matches!(
            short,
            Response::Failed {
                step: wire::Step::Protocol,
                errno: libc::EBADF
            }
        ));
        let spare = Spare::handed(Response::Spare { pid: 7 }, fds(5)).unwrap();
        assert_eq!(spare.pid, 7);
    }
}
