//! Calls, inside the agent: call processes are forked by the [`super::zygote`] and handed to
//! the runtime whole, which sends each its request and reads its outcome directly; no thread
//! of the agent stands between them while a call runs. They are pushed ahead ([`push`]): the
//! next one is forked as soon as the last one pushed has exited, which tells the agent
//! without a word from the runtime. One can also be asked for ([`hand_out`]), when calls
//! run side by side. The agent stays their parent: it reaps them as they exit, and kills or
//! waits for one when the runtime asks ([`finish`]): on a timeout, or when one ended without
//! an outcome and its status says why.
//!
//! Only processes handed out here can be named: a PID is acted on only while it is ours and
//! unreaped, so it can never be another process's.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::spawn::{signal_group, wait_on, Woken};
use super::wire::{self, Response, Step};
use super::zygote::Zygote;
use crate::host::pidfd::PidFd;

/// How many ended calls' statuses are kept for a [`finish`] still to come: only a call that
/// ended without an outcome is asked about, at once, so a few are plenty.
const KEPT_STATUSES: usize = 64;

/// The call processes handed out, until reaped, and the statuses of the last ones reaped.
struct Handed {
    running: Vec<Running>,
    ended: VecDeque<(u32, i32)>,
}

/// A call process handed out and not reaped yet.
struct Running {
    pid: u32,
    /// Counted when it is reaped: the pushing thread's cue for the next one.
    gone: Option<Arc<EventFd>>,
}

static HANDED: Mutex<Handed> = Mutex::new(Handed {
    running: Vec::new(),
    ended: VecDeque::new(),
});

fn handed() -> std::sync::MutexGuard<'static, Handed> {
    HANDED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers [`Request::Spare`](super::wire::Request::Spare): forks a call process and hands it
/// out, [`Response::Spare`] with its socket and output pipes.
pub fn hand_out(zygote: &std::io::Result<Zygote>) -> (Response, Vec<OwnedFd>) {
    fork_and_list(zygote, None)
}

/// How many call processes are pushed ahead: with two, a call right after another finds one
/// forked, while the one that replaces the first is still being forked.
pub const PUSHED_AHEAD: u32 = 2;

/// Answers [`Request::Spares`](super::wire::Request::Spares): pushes [`PUSHED_AHEAD`] call
/// processes on `conn` now, and another each time one pushed has been reaped, until the
/// runtime hangs up or one cannot be forked (that failure is the last answer).
pub fn push(conn: BorrowedFd, zygote: &std::io::Result<Zygote>) {
    let gone = match counter() {
        Ok(gone) => Arc::new(gone),
        Err(e) => {
            let _ = wire::send(conn, &Response::failed(Step::Spawn, &e), &[]);
            return;
        }
    };
    let mut owed = u64::from(PUSHED_AHEAD);
    loop {
        for _ in 0..owed {
            let (answer, fds) = fork_and_list(zygote, Some(gone.clone()));
            let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            let pushed = matches!(answer, Response::Spare { .. });
            if wire::send(conn, &answer, &raw).is_err() || !pushed {
                return;
            }
        }
        // The runtime sends nothing on this connection: readable means it hung up.
        if !matches!(wait_on(gone.as_fd(), conn, None), Woken::Ready) {
            return;
        }
        owed = gone.read().unwrap_or(0);
    }
}

/// An eventfd that counts the processes gone: each reaping adds one, a read takes them all.
fn counter() -> std::io::Result<EventFd> {
    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(Into::into)
}

/// Forks a call process and lists it, with where to say it is gone.
fn fork_and_list(
    zygote: &std::io::Result<Zygote>,
    gone: Option<Arc<EventFd>>,
) -> (Response, Vec<OwnedFd>) {
    let zygote = match zygote {
        Ok(z) => z,
        Err(e) => {
            let e = std::io::Error::from(e.kind());
            return (Response::failed(Step::Enter, &e), vec![]);
        }
    };
    match zygote.fork() {
        Ok(forked) => {
            handed().running.push(Running {
                pid: forked.pid,
                gone,
            });
            // It may have died before it was listed, its exit signal already taken.
            reap_handed();
            (Response::Spare { pid: forked.pid }, forked.fds.into())
        }
        Err(e) => (Response::failed(Step::Spawn, &e), vec![]),
    }
}

/// Reaps the handed-out processes that have exited, keeping their statuses. Called whenever a
/// child of the agent exits: a zombie of ours in the machine's PID namespace holds its init
/// in exit.
pub fn reap_handed() {
    let mut handed = handed();
    let Handed { running, ended } = &mut *handed;
    running.retain(|process| {
        let Some(status) = try_reap(process.pid) else {
            return true;
        };
        if ended.len() == KEPT_STATUSES {
            ended.pop_front();
        }
        ended.push_back((process.pid, status));
        if let Some(gone) = &process.gone {
            let _ = gone.write(1);
        }
        false
    });
}

/// The wait status of our child `pid` if it has exited (and is now reaped).
fn try_reap(pid: u32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: reaping our own child without blocking.
    let ret = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    if ret > 0 {
        super::init::reaped(status);
    }
    (ret != 0).then_some(status)
}

/// Answers [`super::wire::Request::Finish`]: kills the call's process group if asked, waits
/// for it until `timeout` or the runtime hanging up on `conn` (`None`), and says how it
/// ended. Past the timeout, or once the runtime hung up, it is killed, as a command is.
pub fn finish(
    pid: u32,
    kill: bool,
    timeout: Option<Duration>,
    conn: BorrowedFd,
) -> Option<Response> {
    let deadline = timeout.map(crate::deadline::after);
    let handle = {
        let mut handed = handed();
        if let Some(status) = take_status(&mut handed, pid) {
            return Some(Response::Exited { status });
        }
        if !handed.is_running(pid) {
            let unknown = std::io::Error::from_raw_os_error(libc::ESRCH);
            return Some(Response::failed(Step::Protocol, &unknown));
        }
        if kill {
            signal_group(pid);
        }
        // Still ours and unreaped, under the lock: the PID is that process's.
        PidFd::open(pid)
    };
    let handle = match handle {
        Ok(handle) => handle,
        Err(e) => return Some(Response::failed(Step::Spawn, &e)),
    };
    let woken = wait_on(handle.as_fd(), conn, deadline);
    if !matches!(woken, Woken::Ready) {
        kill_if_running(pid);
    }
    match woken {
        Woken::Ready => {}
        Woken::TimedOut => return Some(Response::TimedOut),
        Woken::HungUp => return None,
    }
    reap_handed();
    let status = take_status(&mut handed(), pid);
    let reaped_elsewhere = || std::io::Error::from_raw_os_error(libc::ECHILD);
    Some(status.map_or_else(
        || Response::failed(Step::Spawn, &reaped_elsewhere()),
        |status| Response::Exited { status },
    ))
}

fn take_status(handed: &mut Handed, pid: u32) -> Option<i32> {
    let at = handed.ended.iter().position(|(p, _)| *p == pid)?;
    handed.ended.remove(at).map(|(_, status)| status)
}

impl Handed {
    fn is_running(&self, pid: u32) -> bool {
        self.running.iter().any(|process| process.pid == pid)
    }
}

/// Kills a call process past its time, or whose runtime hung up, unless it was reaped
/// meanwhile.
fn kill_if_running(pid: u32) {
    if handed().is_running(pid) {
        signal_group(pid);
    }
}

/// Kills and reaps every call process still running, before the agent exits: left to die as
/// orphans in the machine's PID namespace, they would be zombies that only the host's init
/// reaps, and until then the machine's init could not finish exiting.
pub fn end_all() {
    let mut handed = handed();
    for process in handed.running.drain(..) {
        signal_group(process.pid);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(process.pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
}
