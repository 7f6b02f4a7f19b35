//! The zygote: a single-threaded copy of the agent, forked as soon as the agent is inside the
//! machine, that forks one process per [`Machine::call`](crate::Machine::call).
//!
//! A call runs Rust code of the test binary, so it must start from a fork, and `fork` is only
//! sound in a process with one thread: another thread may hold a lock (the allocator's,
//! stdout's, the environment's) that the child would find taken forever. The agent serves
//! its connections from many threads, so it forks the zygote before it starts any, and the
//! zygote forks the calls. Each call is a fresh copy of the agent as it was on entering the
//! machine: nothing a call does (a global it sets, a thread it leaves running, a panic) reaches
//! the next one.
//!
//! The zygote enters the machine's PID namespace for its children, and makes them with
//! `clone3(CLONE_PARENT)`: they are the agent's children, not its own, so the agent's
//! connection thread that takes one waits for it, kills it on timeout and reaps it exactly as
//! it does a command ([`super::spawn`]).
//!
//! Call processes are forked one ahead: a call takes a *spare*, already forked and waiting
//! for its request on a socket of its own, sends the request to it directly, and orders the
//! next spare, which the zygote forks while the call runs. After the first call a machine
//! therefore has one idle process of ours in it; before it, none.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use super::callee::Spawn;
use super::wire;
use crate::host::pidfd::PidFd;

/// A call process forked ahead, waiting for its request.
#[derive(Debug)]
pub struct Spare {
    /// Its PID (in the agent's PID namespace).
    pub pid: u32,
    /// Where its request goes, with its descriptors.
    pub sock: OwnedFd,
}

impl Spare {
    /// Hands the spare its request, with `fds` (stdout, stderr, outcome pipe, end signal).
    pub fn send(&self, spawn: &Spawn, fds: [BorrowedFd; 4]) -> std::io::Result<()> {
        wire::send(self.sock.as_fd(), spawn, &fds.map(|fd| fd.as_raw_fd()))
    }
}

/// The agent's handle on its zygote.
#[derive(Debug)]
pub struct Zygote {
    state: Mutex<State>,
    pid: libc::pid_t,
}

#[derive(Debug)]
struct State {
    sock: OwnedFd,
    /// A spare was ordered and not yet received.
    ordered: bool,
    /// A spare received and not yet taken.
    ready: Option<Spare>,
}

impl Zygote {
    /// Forks the zygote. The agent must still have one thread, be inside the machine but for
    /// the PID namespace, and `leader` be the machine's leader.
    pub fn start(leader: &PidFd) -> std::io::Result<Zygote> {
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: the agent has one thread here (see `server`), so the child may run anything.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            let code = zygote(theirs.into(), leader);
            // SAFETY: ending the zygote without exit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(Zygote {
            state: Mutex::new(State {
                sock: ours.into(),
                ordered: false,
                ready: None,
            }),
            pid,
        })
    }

    /// Reaps the spare if it died idle. When the machine's init exits (a `poweroff` inside),
    /// the kernel kills every process of the machine and makes the init wait until they are
    /// all reaped: our spare is our child, so until we reap it the machine cannot finish.
    /// Called whenever a child of the agent exits.
    pub fn reap_idle(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.ordered && readable_now(state.sock.as_fd()) {
            if let Ok(spare) = receive(state.sock.as_fd()) {
                state.ready = Some(spare);
            }
            state.ordered = false;
        }
        let died = state.ready.as_ref().is_some_and(|spare| {
            // SAFETY: reaping our own child, without blocking.
            unsafe {
                libc::waitpid(
                    spare.pid as libc::pid_t,
                    std::ptr::null_mut(),
                    libc::WNOHANG,
                ) > 0
            }
        });
        if died {
            state.ready = None;
        }
    }

    /// Ends the zygote and the spare it made, and reaps both, before the agent exits. The
    /// spare lives in the machine's PID namespace: left to die as an orphan, it would be a
    /// zombie that only the host's init reaps, and until then the machine's init cannot
    /// finish exiting (a stop took 1.1-1.7 s instead of 30-70 ms).
    pub fn shutdown(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(spare) = state.ready.take() {
            kill_and_reap(spare.pid as libc::pid_t);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        if state.ordered {
            if let Ok((Ok(pid), _sock)) =
                wire::recv::<Result<u32, i32>>(state.sock.as_fd(), Some(deadline))
            {
                kill_and_reap(pid as libc::pid_t);
            }
        }
        kill_and_reap(self.pid);
    }

    /// A spare call process: the one ordered, or a new one.
    pub fn take(&self) -> std::io::Result<Spare> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(spare) = state.ready.take() {
            return Ok(spare);
        }
        if !state.ordered {
            wire::send(state.sock.as_fd(), &(), &[])?;
        }
        state.ordered = false;
        receive(state.sock.as_fd())
    }

    /// Orders the next spare, unless one is ready or on its way: after a call, so that
    /// forking it does not compete with the call for the CPUs.
    pub fn order(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.ordered && state.ready.is_none() {
            state.ordered = wire::send(state.sock.as_fd(), &(), &[]).is_ok();
        }
    }
}

/// Kills and reaps a child of the agent that has not been reaped yet (so its PID is still
/// its own).
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: signalling and waiting for our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn readable_now(sock: BorrowedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

fn receive(sock: BorrowedFd) -> std::io::Result<Spare> {
    let (answer, fds) = wire::recv::<Result<u32, i32>>(sock, None).map_err(|e| match e {
        wire::RecvError::Io(e) => e,
        _ => std::io::Error::other("the zygote is gone"),
    })?;
    let pid = answer.map_err(std::io::Error::from_raw_os_error)?;
    let sock = fds
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))?;
    Ok(Spare { pid, sock })
}

/// The zygote's life: forks a spare for each order, until the agent goes away.
fn zygote(sock: OwnedFd, leader: &PidFd) -> i32 {
    // SAFETY: plain system calls in a single-threaded process; the agent is outside the
    // machine's PID namespace, so `getppid` is its real PID here.
    unsafe {
        let agent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != agent {
            return 1;
        }
    }
    crate::host::helper::close_inherited(&[sock.as_raw_fd(), leader.raw()]);
    if super::spawn::enter_pid_namespace(leader).is_err() {
        return 1;
    }
    // SAFETY: the leader's descriptor is ours alone from here, and no longer needed.
    unsafe { libc::close(leader.raw()) };
    super::callee::prepare_zygote();
    while wire::recv::<()>(sock.as_fd(), None).is_ok() {
        let sent = match fork_spare() {
            Ok((pid, theirs)) => {
                wire::send(sock.as_fd(), &Ok::<u32, i32>(pid), &[theirs.as_raw_fd()])
            }
            Err(e) => wire::send(
                sock.as_fd(),
                &Err::<u32, i32>(e.raw_os_error().unwrap_or(libc::EIO)),
                &[],
            ),
        };
        if sent.is_err() {
            return 0;
        }
    }
    0
}

/// `clone_args` of `clone3(2)`, its first version.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Forks a spare as a sibling of the zygote (a child of the agent); returns its PID and the
/// socket its request goes to.
fn fork_spare() -> std::io::Result<(u32, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    let args = CloneArgs {
        flags: libc::CLONE_PARENT as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack is fork: the child gets a copy of
    // this single-threaded process and returns here with 0.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // Only its own socket: with the zygote's, a guest that took control of the call could
        // order processes of it.
        let keep: Vec<_> = std::iter::once(ours.as_raw_fd())
            .chain(super::callee::inherited())
            .collect();
        crate::host::helper::close_inherited(&keep);
        super::callee::run(ours.into());
    }
    Ok((pid as u32, theirs.into()))
}
