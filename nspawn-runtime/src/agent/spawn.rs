//! Commands, inside the agent: one `fork` + `exec`, already in every namespace of the machine.
//!
//! `setns(CLONE_NEWPID)` only changes the PID namespace of the calling thread's future
//! children, and a thread whose children go to another PID namespace can no longer create
//! threads. So each connection thread enters the machine's PID namespace itself
//! ([`enter_pid_namespace`]) and forks its commands directly; the main thread, which creates
//! the connection threads, never does. The connection thread waits for its command, so it is
//! a sound parent for `PR_SET_PDEATHSIG`: the command dies if the thread or the agent does.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::user::Identity;
use super::wire::{Exec, Response, Step};
use crate::pidfd::PidFd;

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
    let failed = |step, e: std::io::Error| {
        Some(Response::Failed {
            step,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })
    };
    let id = match &exec.user {
        None => Identity::root(),
        Some(name) => match Identity::lookup(name) {
            Some(id) => id,
            None => return failed(Step::User, libc::ENOENT.into_io()),
        },
    };
    if let Some(cwd) = &exec.cwd {
        if let Err(e) = check_dir(cwd) {
            return failed(Step::Cwd, e);
        }
    }
    let mut cmd = match command(&exec, &id, fds) {
        Ok(cmd) => cmd,
        Err(e) => return failed(Step::Protocol, e),
    };
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return failed(Step::Spawn, e),
    };
    drop(cmd);
    let timeout = exec.timeout_ms.map(Duration::from_millis);
    wait(child, conn, timeout)
}

trait IntoIo {
    fn into_io(self) -> std::io::Error;
}

impl IntoIo for i32 {
    fn into_io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self)
    }
}

fn check_dir(path: &[u8]) -> std::io::Result<()> {
    let meta = std::fs::metadata(OsStr::from_bytes(path))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(libc::ENOTDIR.into_io())
    }
}

/// The command, with its descriptors: `[stdin], stdout, stderr`.
fn command(
    exec: &Exec,
    id: &Identity,
    fds: Vec<OwnedFd>,
) -> std::io::Result<std::process::Command> {
    let mut fds = fds.into_iter();
    let stdin = if exec.stdin {
        fds.next().map(Stdio::from)
    } else {
        Some(Stdio::null())
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, fds.next(), fds.next()) else {
        return Err(libc::EBADF.into_io());
    };
    let os = |b: &Vec<u8>| OsString::from(OsStr::from_bytes(b));
    let mut cmd = std::process::Command::new(os(&exec.program));
    cmd.args(exec.args.iter().map(os))
        .env_clear()
        .envs(id.environment())
        .envs(exec.env.iter().map(|(k, v)| (os(k), os(v))))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    let home = id.home.as_os_str().as_bytes();
    let setup = ChildSetup::new(id, exec.cwd.as_deref().unwrap_or(home))?;
    // SAFETY: the hook makes only raw, async-signal-safe system calls.
    unsafe { cmd.pre_exec(move || setup.apply()) };
    Ok(cmd)
}

/// What the forked child does before exec, prepared before the fork.
struct ChildSetup {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    cwd: CString,
}

impl ChildSetup {
    fn new(id: &Identity, cwd: &[u8]) -> std::io::Result<ChildSetup> {
        Ok(ChildSetup {
            uid: id.uid,
            gid: id.gid,
            groups: id.groups.clone(),
            cwd: CString::new(cwd).map_err(|_| libc::EINVAL.into_io())?,
        })
    }

    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: raw system calls in the forked child, before exec.
        unsafe {
            // Its own process group, so that a timeout kills what it started too.
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            // The agent, outside the machine's PID namespace, is parent 0 here. Anything else
            // means it died before the line above, too early for the signal to be sent.
            if libc::getppid() != 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if self.uid != 0 || self.gid != 0 {
                ok(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
                ok(libc::setresgid(self.gid, self.gid, self.gid))?;
                ok(libc::setresuid(self.uid, self.uid, self.uid))?;
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                // A home that does not exist: start in / as `machinectl shell` would.
                ok(libc::chdir(c"/".as_ptr()))?;
            }
        }
        Ok(())
    }
}

fn ok(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits for the program, its timeout, or the runtime hanging up, whichever comes first.
fn wait(mut child: Child, conn: BorrowedFd, timeout: Option<Duration>) -> Option<Response> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let Ok(handle) = PidFd::open(child.id()) else {
        return Some(reap(&mut child));
    };
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            kill_group(&mut child);
            return Some(Response::TimedOut);
        }
        let ms = left.map_or(PollTimeout::NONE, |l| {
            PollTimeout::try_from(l.as_millis().max(1)).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = [
            PollFd::new(handle.as_fd(), PollFlags::POLLIN),
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, ms) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(_) => return Some(reap(&mut child)),
            Ok(_) => {}
        }
        if fds[0].any().unwrap_or(false) {
            return Some(reap(&mut child));
        }
        if fds[1].any().unwrap_or(false) {
            // The runtime sends nothing during a command: this is its end of the socket closing.
            kill_group(&mut child);
            return None;
        }
    }
}

fn reap(child: &mut Child) -> Response {
    match child.wait() {
        Ok(status) => Response::Exited {
            status: status.into_raw(),
        },
        Err(e) => Response::Failed {
            step: Step::Spawn,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        },
    }
}

fn kill_group(child: &mut Child) {
    // The program is not reaped yet, so its PID (and group) cannot have been reused.
    // SAFETY: plain kill.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
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
        let err = command(&exec, &Identity::root(), vec![one.into()]).unwrap_err();
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
