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

use super::callee::Spawn;
use super::spawn::{kill_group, wait, wait_on, Woken};
use super::user::Identity;
use super::wire::{Call, Response, Step};
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
    let Some(id) = Identity::of_request(call.user.as_deref()) else {
        return failed(Step::User, std::io::Error::from_raw_os_error(libc::ENOENT));
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
    let woken = wait_on(end.as_fd(), conn, deadline);
    zygote.order();
    let status = match woken {
        Woken::Ready if signalled(end.as_fd()) => {
            ended(pid);
            0
        }
        Woken::Ready => {
            // It died, or exec'd: its status says which, within the time left.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match wait(pid, conn, left)? {
                Response::Exited { status } => status,
                other => return Some(other),
            }
        }
        Woken::TimedOut => {
            kill_group(pid);
            return Some(Response::TimedOut);
        }
        Woken::HungUp => {
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

/// Whether the call's process wrote its end byte (its outcome is written and it is about to
/// exit), or the pipe closed without it (it died, or exec'd).
fn signalled(end: BorrowedFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(nix::unistd::read(end.as_raw_fd(), &mut byte), Ok(1))
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
