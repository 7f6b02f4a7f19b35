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
//! `clone3(CLONE_PARENT)`: they are the agent's children, not its own, so the agent reaps
//! them and kills them on request exactly as it does its commands (see [`super::call`]).
//!
//! A call process is forked before it is asked for: the agent pushes two to the runtime at
//! its first call, and forks the next one as each exits (see [`super::call`]); the runtime
//! sends a call straight to one. After a machine's first call it therefore has two idle
//! processes of ours in it; before it, none.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use super::wire;
use crate::host::pidfd::PidFd;

/// A call process just forked, waiting for its request.
#[derive(Debug)]
pub struct Forked {
    /// Its PID (in the agent's PID namespace).
    pub pid: u32,
    /// Where its request goes and its outcome comes from, the read ends of its stdout and
    /// stderr, and copies of their write ends (see [`super::spare`]).
    pub fds: [OwnedFd; 5],
}

/// The agent's handle on its zygote.
#[derive(Debug)]
pub struct Zygote {
    sock: Mutex<OwnedFd>,
    pid: libc::pid_t,
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
            sock: Mutex::new(ours.into()),
            pid,
        })
    }

    /// Ends the zygote and reaps it, before the agent exits.
    pub fn shutdown(&self) {
        kill_and_reap(self.pid);
    }

    /// A new call process.
    pub fn fork(&self) -> std::io::Result<Forked> {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        wire::send(sock.as_fd(), &(), &[])?;
        let (answer, fds) =
            wire::recv::<Result<u32, i32>>(sock.as_fd(), None).map_err(|e| match e {
                wire::RecvError::Io(e) => e,
                _ => std::io::Error::other("the zygote is gone"),
            })?;
        let pid = answer.map_err(std::io::Error::from_raw_os_error)?;
        let fds = <[OwnedFd; 5]>::try_from(fds)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
        Ok(Forked { pid, fds })
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
        let sent = match fork_call_process() {
            Ok((pid, fds)) => wire::send(
                sock.as_fd(),
                &Ok::<u32, i32>(pid),
                &fds.each_ref().map(|fd| fd.as_raw_fd()),
            ),
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

/// Forks a call process as a sibling of the zygote (a child of the agent), its stdout and
/// stderr already pipes; returns its PID, the socket its request goes to, and the pipes' read
/// and write ends.
fn fork_call_process() -> std::io::Result<(u32, [OwnedFd; 5])> {
    let (ours, theirs) = UnixStream::pair()?;
    let (stdout, stdout_theirs) = pipe()?;
    let (stderr, stderr_theirs) = pipe()?;
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
        // SAFETY: making our own pipes our standard output and error.
        let moved = unsafe {
            libc::dup2(stdout_theirs.as_raw_fd(), 1) >= 0
                && libc::dup2(stderr_theirs.as_raw_fd(), 2) >= 0
        };
        if !moved {
            // SAFETY: ending the child without exit handlers.
            unsafe { libc::_exit(1) }
        }
        // Only its own socket: with the zygote's, a guest that took control of the call could
        // order processes of it.
        let keep: Vec<_> = std::iter::once(ours.as_raw_fd())
            .chain(super::callee::inherited())
            .collect();
        crate::host::helper::close_inherited(&keep);
        super::callee::run(ours.into());
    }
    let fds = [theirs.into(), stdout, stderr, stdout_theirs, stderr_theirs];
    Ok((pid as u32, fds))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}
