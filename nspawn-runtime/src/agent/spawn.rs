//! Commands, inside the agent: one `clone` + `exec` ([`super::launch`]), already in every
//! namespace of the machine, then waiting for the program or its timeout.
//!
//! `setns(CLONE_NEWPID)` only changes the PID namespace of the calling thread's future
//! children, and a thread whose children go to another PID namespace can no longer create
//! threads. So each connection thread enters the machine's PID namespace itself
//! ([`enter_pid_namespace`]) and forks its commands directly; the main thread, which creates
//! the connection threads, never does. The connection thread waits for its command, so it is
//! a sound parent for `PR_SET_PDEATHSIG`: the command dies if the thread or the agent does.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use super::launch::{Context, Launch};
use super::user::Identity;
use super::wire::{Exec, Response, Step};
use crate::deadline::poll_timeout;
use crate::host::pidfd::PidFd;

/// Makes the calling thread's children start in the PID namespace of `leader`.
pub fn enter_pid_namespace(leader: &PidFd) -> std::io::Result<()> {
    // SAFETY: setns on this thread with a valid pidfd.
    if unsafe { libc::setns(leader.raw(), libc::CLONE_NEWPID) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `exec` with the descriptors that came with it, and says how it ended. `None` when
/// the runtime hung up meanwhile (the program is then killed). The calling thread must have
/// entered the PID namespace.
pub fn run(exec: Exec, fds: Vec<OwnedFd>, conn: BorrowedFd) -> Option<Response> {
    let failed = |step, e| Some(Response::failed(step, &e));
    let Some(id) = Identity::of_request(exec.user.as_deref()) else {
        return failed(Step::User, errno(libc::ENOENT));
    };
    if let Some(Err(e)) = exec.cwd.as_deref().map(check_dir) {
        return failed(Step::Cwd, e);
    }
    let (launch, stdio) = match prepare(&exec, &id, fds) {
        Ok(prepared) => prepared,
        Err(e) => return failed(Step::Protocol, e),
    };
    let pid = match launch.spawn() {
        Ok(pid) => pid,
        Err(e) => return failed(Step::Spawn, e),
    };
    // The program has its own copies now; ours must go, or its readers never see EOF.
    drop(stdio);
    if super::wire::send(conn, &Response::Started, &[]).is_err() {
        kill_group(pid);
        return None;
    }
    let timeout = exec.timeout_ms.map(Duration::from_millis);
    wait(pid, conn, timeout)
}

fn errno(code: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(code)
}

fn check_dir(path: &[u8]) -> std::io::Result<()> {
    let meta = std::fs::metadata(OsStr::from_bytes(path))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(errno(libc::ENOTDIR))
    }
}

/// The program ready to start, and the descriptors it gets: `[stdin], stdout, stderr`
/// (`/dev/null` for stdin unless one came).
fn prepare(
    exec: &Exec,
    id: &Identity,
    fds: Vec<OwnedFd>,
) -> std::io::Result<(Launch, Vec<OwnedFd>)> {
    let mut fds = fds.into_iter();
    let stdin = if exec.stdin {
        fds.next()
    } else {
        Some(std::fs::File::open("/dev/null")?.into())
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, fds.next(), fds.next()) else {
        return Err(errno(libc::EBADF));
    };
    let bytes = |s: &std::ffi::OsString| s.as_bytes().to_vec();
    let env: Vec<(Vec<u8>, Vec<u8>)> = id
        .environment()
        .iter()
        .map(|(k, v)| (bytes(k), bytes(v)))
        .chain(exec.env.iter().cloned())
        .collect();
    let home = id.home.as_os_str().as_bytes();
    let context = Context {
        ids: (id.uid, id.gid, &id.groups),
        cwd: exec.cwd.as_deref().unwrap_or(home),
    };
    let stdio = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
    let launch = Launch::new(&exec.program, &exec.args, &env, stdio, context)?;
    Ok((launch, vec![stdin, stdout, stderr]))
}

/// What ended a wait of [`wait_on`].
pub enum Woken {
    /// The descriptor waited on became readable (or the wait itself failed).
    Ready,
    /// The deadline passed.
    TimedOut,
    /// The runtime closed the connection: it sends nothing while a program or a call runs.
    HungUp,
}

/// Waits until `fd` is readable, `deadline` passes or the runtime hangs up on `conn`.
pub fn wait_on(fd: BorrowedFd, conn: BorrowedFd, deadline: Option<Instant>) -> Woken {
    loop {
        let Some(timeout) = poll_timeout(deadline) else {
            return Woken::TimedOut;
        };
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(conn, PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(_) => return Woken::Ready,
            Ok(_) => {}
        }
        if fds[0].any().unwrap_or(false) {
            return Woken::Ready;
        }
        if fds[1].any().unwrap_or(false) {
            return Woken::HungUp;
        }
    }
}

/// Waits for the program, its timeout, or the runtime hanging up, whichever comes first.
pub fn wait(pid: u32, conn: BorrowedFd, timeout: Option<Duration>) -> Option<Response> {
    let deadline = timeout.map(crate::deadline::after);
    let Ok(handle) = PidFd::open(pid) else {
        return Some(reap(pid));
    };
    match wait_on(handle.as_fd(), conn, deadline) {
        Woken::Ready => Some(reap(pid)),
        Woken::TimedOut => {
            kill_group(pid);
            Some(Response::TimedOut)
        }
        Woken::HungUp => {
            kill_group(pid);
            None
        }
    }
}

fn reap(pid: u32) -> Response {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let ret = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if ret >= 0 {
            super::init::reaped(status);
            return Response::Exited { status };
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Response::failed(Step::Spawn, &e);
        }
    }
}

pub fn kill_group(pid: u32) {
    signal_group(pid);
    reap(pid);
}

/// Sends SIGKILL to child `pid` and its process group. The caller makes sure it is not reaped
/// yet, so neither its PID nor its group can have been reused; it may not have made its group
/// yet, so it is killed by PID too.
pub fn signal_group(pid: u32) {
    // SAFETY: plain kill.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_must_match_the_request() {
        let exec = Exec {
            program: b"true".to_vec(),
            args: vec![],
            env: vec![],
            cwd: None,
            user: None,
            timeout_ms: None,
            stdin: true,
        };
        let one = std::fs::File::open("/dev/null").unwrap();
        let err = prepare(&exec, &Identity::root(), vec![one.into()]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn a_file_is_not_a_working_directory() {
        assert_eq!(
            check_dir(b"/etc/passwd").unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert!(check_dir(b"/").is_ok());
    }
}
