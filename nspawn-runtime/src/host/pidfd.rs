//! Process handles that cannot be fooled by PID reuse (`pidfd_open(2)`), used to signal a
//! container's leader, to enter its namespaces and to wait for a process with a timeout.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A handle on a running process.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// Opens a handle on `pid`.
    pub fn open(pid: u32) -> std::io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new close-on-exec fd.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: ret is a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(ret as RawFd) };
        Ok(PidFd { fd, pid })
    }

    /// Takes over a pidfd received from elsewhere, for the process `pid`.
    pub(crate) fn from_owned(fd: OwnedFd, pid: u32) -> PidFd {
        PidFd { fd, pid }
    }

    /// A second handle on the same process.
    pub(crate) fn try_clone(&self) -> std::io::Result<PidFd> {
        Ok(PidFd {
            fd: self.fd.try_clone()?,
            pid: self.pid,
        })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The raw descriptor, for use in forked children.
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends `signal` (0 checks that the process lives).
    pub fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        send_signal(self.raw(), signal)
    }

    /// Whether the process has not exited yet.
    pub(crate) fn is_alive(&self) -> bool {
        !self.wait(Duration::ZERO)
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = crate::deadline::after(timeout);
        loop {
            // Once the deadline has passed, one last look without waiting.
            let left = crate::deadline::poll_timeout(Some(deadline)).unwrap_or(PollTimeout::ZERO);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, left) {
                Ok(n) => return n > 0,
                // A signal is no answer: under sudo, glibc interrupts every thread's wait each
                // time one thread changes the process's user.
                Err(nix::errno::Errno::EINTR) if left != PollTimeout::ZERO => {}
                Err(_) => return false,
            }
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `pidfd_send_signal(2)`.
fn send_signal(pidfd: RawFd, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain system call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_child_live_and_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        assert!(fd.is_alive());
        fd.signal(0).unwrap();
        assert!(fd.wait(Duration::from_secs(5)));
        child.wait().unwrap();
        assert!(!fd.is_alive());
    }

    extern "C" fn interrupt(_: libc::c_int) {}

    /// Signals that interrupt the wait (a handler without `SA_RESTART`, as glibc's set-uid
    /// broadcast is) do not end it.
    #[test]
    fn a_wait_outlasts_signals() {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        use std::os::unix::thread::JoinHandleExt;
        let handler = SigAction::new(
            SigHandler::Handler(interrupt),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: a handler that does nothing.
        unsafe { sigaction(Signal::SIGUSR2, &handler) }.unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("0.5")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        let waiter = std::thread::spawn(move || fd.wait(Duration::from_secs(60)));
        let thread = waiter.as_pthread_t();
        while !waiter.is_finished() {
            // SAFETY: the thread is not joined yet, so its handle is valid.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            waiter.join().unwrap(),
            "the wait ended before the process did"
        );
        child.wait().unwrap();
    }
}
