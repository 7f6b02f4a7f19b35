//! A call, inside the agent: the connection thread hands the call to a process forked ahead
//! by the [`super::zygote`], waits for the byte that says it is done (or its timeout, or the
//! runtime hanging up), and says how it ended. The call's process writes its outcome
//! straight to the runtime, through a pipe that came with the request, so the runtime has the
//! result without waiting for the agent. A process that dies or execs instead is waited for
//! as a command is, and its status says how it ended.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use super::callee::Spawn;
use super::spawn::{kill_group, wait};
use super::user::Identity;
use super::wire::{poll_timeout, Call, Response, Step};
use super::zygote::Zygote;

/// Runs `call` with its stdout, stderr and outcome descriptors; `None` when the runtime hung up
/// meanwhile (the call is then killed). A call that signalled its end is left to
/// [`reap_ended`].
pub fn run(
    call: Call,
    fds: Vec<OwnedFd>,
    conn: BorrowedFd,
    zygote: &std::io::Result<Zygote>,
) -> Option<Response> {
    let failed = |step, e| Some(Response::failed(step, &e));
    let zygote = match zygote {
        Ok(z) => z,
        Err(e) => return failed(Step::Enter, std::io::Error::from(e.kind())),
    };
    let id = match &call.user {
        None => Identity::root(),
        Some(name) => match Identity::lookup(name) {
            Some(id) => id,
            None => return failed(Step::User, std::io::Error::from_raw_os_error(libc::ENOENT)),
        },
    };
    let Ok([stdout, stderr, outcome]) = <[OwnedFd; 3]>::try_from(fds) else {
        return failed(
            Step::Protocol,
            std::io::Error::from_raw_os_error(libc::EBADF),
        );
    };
    let (end, end_theirs) = match pipe() {
        Ok(made) => made,
        Err(e) => return failed(Step::Spawn, e),
    };
    let spawn = spawn_request(call.entry, call.arg, &id);
    let theirs = [
        stdout.as_fd(),
        stderr.as_fd(),
        outcome.as_fd(),
        end_theirs.as_fd(),
    ];
    let pid = match hand_over(zygote, &spawn, theirs) {
        Ok(pid) => pid,
        Err(e) => return failed(Step::Spawn, e),
    };
    // The call has its own copies now; ours must go, or the runtime never sees end-of-file.
    drop((stdout, stderr, outcome, end_theirs));
    if super::wire::send(conn, &Response::Started, &[]).is_err() {
        kill_group(pid);
        return None;
    }
    let deadline = call
        .timeout_ms
        .map(|ms| crate::deadline::after(Duration::from_millis(ms)));
    let end = wait_for_end(end.as_fd(), conn, deadline);
    zygote.order();
    let status = match end {
        End::Signalled => {
            ended(pid);
            0
        }
        End::Closed => {
            // It died, or exec'd: its status says which, within the time left.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match wait(pid, conn, left)? {
                Response::Exited { status } => status,
                other => return Some(other),
            }
        }
        End::TimedOut => {
            kill_group(pid);
            return Some(Response::TimedOut);
        }
        End::HungUp => {
            kill_group(pid);
            return None;
        }
    };

    Some(Response::Ended { status })
}

/// Gives the request to a spare; one that died waiting (the guest can kill it) is reaped and
/// replaced once.
fn hand_over(zygote: &Zygote, spawn: &Spawn, fds: [BorrowedFd; 4]) -> std::io::Result<u32> {
    let spare = zygote.take()?;
    if spare.send(spawn, fds).is_ok() {
        return Ok(spare.pid);
    }
    ended(spare.pid);
    let spare = zygote.take()?;
    spare.send(spawn, fds)?;
    Ok(spare.pid)
}

/// How waiting for a call's end byte ended.
enum End {
    /// The byte came: the outcome is written, the process is about to exit.
    Signalled,
    /// The pipe closed without it: the process died or exec'd.
    Closed,
    /// The call's timeout passed.
    TimedOut,
    /// The runtime closed the connection.
    HungUp,
}

fn wait_for_end(end: BorrowedFd, conn: BorrowedFd, deadline: Option<Instant>) -> End {
    loop {
        let Some(timeout) = poll_timeout(deadline) else {
            return End::TimedOut;
        };
        let mut fds = [
            PollFd::new(end, PollFlags::POLLIN),
            PollFd::new(conn, PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(_) => return End::Closed,
            Ok(_) => {}
        }
        if fds[0].any().unwrap_or(false) {
            let mut byte = [0u8; 1];
            return match nix::unistd::read(end.as_raw_fd(), &mut byte) {
                Ok(1) => End::Signalled,
                _ => End::Closed,
            };
        }
        if fds[1].any().unwrap_or(false) {
            // The runtime sends nothing during a call: this is its end of the socket closing.
            return End::HungUp;
        }
    }
}

/// Call processes that ended but may not have exited yet: reaped by [`reap_ended`], before
/// each request and whenever a child of the agent exits. They must not wait for long: a zombie
/// of ours in the machine's PID namespace holds its init in exit.
static ENDED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn ended(pid: u32) {
    ENDED.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// Reaps the ended calls that have exited.
pub fn reap_ended() {
    ENDED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|pid| {
            // SAFETY: reaping our own child without blocking.
            let done =
                unsafe { libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
            done == 0
        });
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

fn spawn_request(entry: i64, arg: Vec<u8>, id: &Identity) -> Spawn {
    let bytes = |s: &std::ffi::OsStr| s.as_bytes().to_vec();
    Spawn {
        entry,
        arg,
        ids: (id.uid, id.gid, id.groups.clone()),
        cwd: bytes(id.home.as_os_str()),
        env: id
            .environment()
            .iter()
            .map(|(k, v)| (bytes(k), bytes(v)))
            .collect(),
    }
}
