//! The machine's init, as the agent's children concern it: they live in its PID namespace
//! (commands, call processes) without being its children, so it never gets a `SIGCHLD` for
//! them.
//!
//! That matters at shutdown. systemd's last killing spree signals every process left, then
//! waits for each to be gone, looking again only when a `SIGCHLD` wakes it. A child of ours
//! that it killed stays a zombie until the agent reaps it a moment later, and nothing wakes
//! the init after that: it waited its whole timeout, 10 s, before powering off. So the agent
//! sends the init a `SIGCHLD` of its own after reaping a child that a signal ended.

use std::sync::{Arc, OnceLock};

use crate::host::pidfd::PidFd;

static INIT: OnceLock<Arc<PidFd>> = OnceLock::new();

/// Keeps the machine's leader (its init), for [`reaped`].
pub fn keep(leader: Arc<PidFd>) {
    let _ = INIT.set(leader);
}

/// After a child of the agent was reaped with wait status `status`: wakes the init if a
/// signal ended the child (the init may have sent it, and be waiting for it to be gone). A
/// child that exited by itself is not the init's business, and costs the init nothing.
pub fn reaped(status: i32) {
    if !libc::WIFSIGNALED(status) {
        return;
    }
    if let Some(init) = INIT.get() {
        // SIGCHLD does nothing to a process that is not waiting for one.
        let _ = init.signal(libc::SIGCHLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that blocks `SIGCHLD` from its start (it inherits this thread's mask) and exits
    /// 0 once one comes, 1 if none comes within a minute.
    fn waiting_for_sigchld() -> libc::pid_t {
        // SAFETY: plain system calls; after fork, the child makes only async-signal-safe ones.
        unsafe {
            let mut chld: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut chld);
            libc::sigaddset(&mut chld, libc::SIGCHLD);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &chld, &mut old);
            let pid = libc::fork();
            if pid == 0 {
                let minute = libc::timespec {
                    tv_sec: 60,
                    tv_nsec: 0,
                };
                let got = libc::sigtimedwait(&chld, std::ptr::null_mut(), &minute);
                libc::_exit(i32::from(got != libc::SIGCHLD));
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            assert!(pid > 0, "fork failed");
            pid
        }
    }

    fn exit_code(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_init_is_woken_after_a_child_a_signal_ended() {
        let init = waiting_for_sigchld();
        keep(Arc::new(PidFd::open(init as u32).unwrap()));
        // A child that exited by itself wakes nothing; one SIGKILL ended does.
        reaped(0);
        reaped(libc::SIGKILL);
        assert_eq!(exit_code(init), 0, "the init got no SIGCHLD");
    }
}
