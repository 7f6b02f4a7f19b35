//! Running programs inside a machine: a `std::process::Command`-like builder.
//!
//! The forked child regains root, enters all the leader's namespaces with one
//! `setns(pidfd, ...)`, chroots into its root and forks once more, so that the program is
//! inside the container's PID namespace. The middle process closes every descriptor, waits and
//! exits with the program's status. That is one exec fewer than `nsenter` (see the benchmark).

use std::ffi::{CString, OsStr, OsString};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::shell_word;
use crate::machine::Machine;
use crate::pidfd::{self, PidFd};
use crate::privs;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWCGROUP;

/// A program to run inside a machine, built like [`std::process::Command`].
///
/// The environment starts clean, as `machinectl shell` gives it: `PATH`, `HOME`, `USER`,
/// `LOGNAME`, `SHELL` and `container`, plus what [`Command::env`] adds.
///
/// ```no_run
/// # fn f(machine: &nspawn_runtime::Machine) -> nspawn_runtime::Result<()> {
/// let out = machine
///     .command("sh")
///     .args(["-c", "cat > /tmp/x; wc -c < /tmp/x"])
///     .stdin("hello")
///     .output()?;
/// assert_eq!(out.stdout, b"5\n");
/// # Ok(()) }
/// ```
#[must_use]
pub struct Command<'m> {
    machine: &'m Machine,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl<'m> Command<'m> {
    pub(crate) fn new(machine: &'m Machine, program: &OsStr) -> Self {
        Command {
            machine,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            user: None,
            stdin: None,
            timeout: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// Adds arguments.
    pub fn args(&mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().into(), value.as_ref().into()));
        self
    }

    /// The working directory inside the machine (default: the user's home, `/root` for root).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().into());
        self
    }

    /// Runs as this user of the machine (default root).
    pub fn user(&mut self, user: &str) -> &mut Self {
        self.user = Some(user.into());
        self
    }

    /// Bytes fed to the program's standard input (default: none, `/dev/null`).
    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kills the program and fails if it runs longer than this.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the program, capturing its output.
    pub fn output(&mut self) -> Result<Output> {
        self.execute(true)
    }

    /// Runs the program with the test's stdout and stderr, returning how it ended.
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.execute(false).map(|o| o.status)
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn execute(&self, capture: bool) -> Result<Output> {
        let started = Instant::now();
        let leader = self.machine.leader()?;
        let identity = match &self.user {
            Some(name) => lookup_user(self.machine, name)?,
            None => Identity::root(),
        };
        let cwd = self.cwd.clone().unwrap_or_else(|| identity.home.clone());
        if self.cwd.is_some() && !self.machine.is_dir(&cwd) {
            return Err(self.machine.guest_error(
                "changing directory to",
                &cwd,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        let mut cmd = self.std_command(&identity, capture);
        let plan = EnterPlan::new(leader, &cwd, &identity)?;
        // SAFETY: the hook makes only raw, async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || plan.enter()) };
        let child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let output = self.collect(child)?;
        tracing::debug!(
            machine = self.machine.name(),
            command = self.command_line(),
            status = %output.status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "exec"
        );
        Ok(output)
    }

    fn std_command(&self, id: &Identity, capture: bool) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &id.home)
            .env("USER", &id.name)
            .env("LOGNAME", &id.name)
            .env("SHELL", &id.shell)
            .env("container", "systemd-nspawn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        if capture {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        cmd
    }

    fn spawn_error(&self, e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ENOENT) => Error::ProgramNotFound {
                machine: self.machine.name().into(),
                program: self.program.to_string_lossy().into(),
                path: PATH.into(),
            },
            Some(libc::ESRCH) => Error::NotRunning {
                machine: self.machine.name().into(),
                reason: "its container has exited".into(),
            },
            _ => Error::io(
                format!(
                    "running `{}` in machine {}",
                    self.command_line(),
                    self.machine.name()
                ),
                e,
            ),
        }
    }

    /// Feeds stdin, gathers output, and enforces the timeout.
    fn collect(&self, mut child: std::process::Child) -> Result<Output> {
        let feeder = child
            .stdin
            .take()
            .zip(self.stdin.clone())
            .map(|(mut pipe, bytes)| {
                std::thread::spawn(move || {
                    let _ = pipe.write_all(&bytes);
                })
            });
        let timer = self.timeout.map(|t| KillTimer::arm(&child, t));
        let output = child.wait_with_output();
        let timed_out = timer.is_some_and(KillTimer::disarm);
        if let Some(f) = feeder {
            let _ = f.join();
        }
        if timed_out {
            return Err(Error::Timeout {
                what: format!(
                    "`{}` in machine {}",
                    self.command_line(),
                    self.machine.name()
                ),
                secs: self.timeout.unwrap_or_default().as_secs_f64(),
                hint: "the command was killed".into(),
            });
        }
        output.map_err(|e| Error::io(format!("waiting for `{}`", self.command_line()), e))
    }
}

/// Kills a child that outlives its timeout.
struct KillTimer {
    cancel: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl KillTimer {
    fn arm(child: &std::process::Child, timeout: Duration) -> KillTimer {
        let pidfd = PidFd::open(child.id()).ok();
        let (cancel, cancelled) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if cancelled.recv_timeout(timeout) != Err(mpsc::RecvTimeoutError::Timeout) {
                return false;
            }
            // The middle process runs as root; its death takes the program with it.
            let _root = privs::ThreadRoot::acquire();
            pidfd.is_some_and(|p| p.signal(libc::SIGKILL).is_ok())
        });
        KillTimer { cancel, thread }
    }

    /// Stops the timer; true if it had fired.
    fn disarm(self) -> bool {
        let _ = self.cancel.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// Who a command runs as inside the machine.
#[derive(Debug, Clone)]
struct Identity {
    name: String,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: PathBuf,
    shell: String,
}

impl Identity {
    fn root() -> Identity {
        Identity {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }
}

fn lookup_user(machine: &Machine, name: &str) -> Result<Identity> {
    let passwd = machine.read_to_string("/etc/passwd")?;
    let group = machine.read_to_string("/etc/group").unwrap_or_default();
    parse_user(&passwd, &group, name).ok_or_else(|| Error::NoSuchUser {
        machine: machine.name().into(),
        user: name.into(),
    })
}

fn parse_user(passwd: &str, group: &str, name: &str) -> Option<Identity> {
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == name)?;
    let gid: u32 = fields[3].parse().ok()?;
    let groups = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .chain(std::iter::once(gid))
        .collect();
    Some(Identity {
        name: name.into(),
        uid: fields[2].parse().ok()?,
        gid,
        groups,
        home: fields[5].into(),
        shell: fields[6].into(),
    })
}

/// What the forked child needs, prepared before the fork (no allocation after it).
struct EnterPlan {
    regain: bool,
    pidfd: libc::c_int,
    root: CString,
    cwd: CString,
    cwd_fallback: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl EnterPlan {
    fn new(leader: &PidFd, cwd: &Path, id: &Identity) -> Result<EnterPlan> {
        let c = |s: &[u8]| {
            CString::new(s).map_err(|_| {
                Error::io(
                    "a path with a NUL byte",
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })
        };
        Ok(EnterPlan {
            regain: privs::child_needs_root(),
            pidfd: leader.raw(),
            root: c(format!("/proc/{}/root", leader.pid()).as_bytes())?,
            cwd: c(cwd.as_os_str().as_encoded_bytes())?,
            cwd_fallback: c(b"/")?,
            uid: id.uid,
            gid: id.gid,
            groups: id.groups.clone(),
        })
    }

    /// Runs in the forked child. Returns only in the process that will exec the program.
    fn enter(&self) -> std::io::Result<()> {
        privs::regain_in_child(self.regain)?;
        // SAFETY: raw system calls with valid pointers; this is the only thread of the child.
        unsafe {
            let root = libc::open(
                self.root.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if root < 0 {
                return Err(std::io::Error::last_os_error());
            }
            pidfd::send_signal(self.pidfd, 0)?;
            ok(libc::setns(self.pidfd, NAMESPACES))?;
            ok(libc::fchdir(root))?;
            ok(libc::chroot(c".".as_ptr()))?;
            libc::close(root);
            fork_into_pid_namespace()?;
            if self.uid != 0 || self.gid != 0 {
                ok(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
                ok(libc::setresgid(self.gid, self.gid, self.gid))?;
                ok(libc::setresuid(self.uid, self.uid, self.uid))?;
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                // A home that does not exist: start in / as machinectl shell would.
                ok(libc::chdir(self.cwd_fallback.as_ptr()))?;
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

/// `setns(CLONE_NEWPID)` applies to children only: fork once more. The middle process
/// closes everything (so the parent sees EOF and exec errors from the grandchild), waits, and
/// exits as the grandchild did. The grandchild dies with the middle process.
///
/// # Safety
/// Only in a forked child, before exec.
unsafe fn fork_into_pid_namespace() -> std::io::Result<()> {
    let pid = libc::fork();
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        return Ok(());
    }
    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    let mut status = 0;
    while libc::waitpid(pid, &mut status, 0) < 0 {
        if *libc::__errno_location() != libc::EINTR {
            libc::_exit(127);
        }
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(libc::WEXITSTATUS(status));
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\nadm:x:4:bob,alice\n";

    #[test]
    fn users_are_read_from_the_guest_files() {
        let id = parse_user(PASSWD, GROUP, "alice").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![27, 4, 1000]);
        assert_eq!(id.home, Path::new("/home/alice"));
        assert_eq!(id.shell, "/bin/sh");
        assert!(parse_user(PASSWD, GROUP, "bob").is_none());
    }
}
