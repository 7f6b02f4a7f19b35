//! The agent process: the test binary re-executed, which enters the machine before `main` and
//! serves the runtime until the machine or the test process goes away.
//!
//! Start-up runs while the process is still single-threaded, as `setns(CLONE_NEWNS)` needs:
//! it joins the leader's mount, UTS, IPC, network and cgroup namespaces and `chroot`s into
//! its root. Only then does it start threads, one per connection, so a slow command never
//! holds up anything else; each enters the PID namespace for its commands (see
//! [`super::spawn`]). The main thread
//! watches two things, and exits as soon as either ends: the control socket (the test
//! process) and the leader's pidfd (the machine).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::confine::Walls;
use super::wire::{self, Meta, RecvError, Request, Response, Step};
use super::zygote::Zygote;
use super::{call, seccomp, spawn};
use crate::host::pidfd::PidFd;

/// Set in the agent's environment to the leader's PID.
pub(crate) use crate::host::helper::AGENT as ENV;
/// The control socket, as the agent receives it.
pub const CONTROL_FD: RawFd = 0;
/// The leader's pidfd, as the agent receives it.
pub const LEADER_FD: RawFd = 3;

/// The namespaces joined at start-up; the PID namespace is the spawner's alone.
const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP;

/// Called before `main`: in an agent process, serves and exits; elsewhere returns false.
pub fn run_if_requested() -> bool {
    let Some(leader) = crate::host::helper::role(ENV) else {
        return false;
    };
    let Ok(leader) = leader.parse::<u32>() else {
        eprintln!("nspawn: the agent was given no leader PID ({ENV}={leader:?})");
        // SAFETY: ending the process before the harness runs.
        unsafe { libc::_exit(2) }
    };
    let code = serve(leader);
    // SAFETY: ending the process without running the test harness or exit handlers.
    unsafe { libc::_exit(code) }
}

fn serve(leader_pid: u32) -> i32 {
    // SAFETY: naming the process, and taking over the descriptors it was started with.
    let (control, leader) = unsafe {
        libc::prctl(libc::PR_SET_NAME, c"nspawn-agent".as_ptr());
        match (adopt(CONTROL_FD), adopt(LEADER_FD)) {
            (Ok(c), Ok(l)) => (c, PidFd::from_owned(l, leader_pid)),
            _ => return 2,
        }
    };
    crate::host::helper::close_inherited(&[control.as_raw_fd(), leader.raw()]);
    if let Err(e) = enter(&leader) {
        let _ = wire::send(control.as_fd(), &Response::failed(Step::Enter, &e), &[]);
        return 1;
    }
    // Before any thread exists: see `zygote`. Without it, calls fail and all else works.
    let zygote = Zygote::start(&leader);
    if wire::send(control.as_fd(), &Response::Ready, &[]).is_err() {
        return 1;
    }
    accept(control.as_fd(), leader, zygote);
    0
}

/// Moves an inherited descriptor out of the way (close-on-exec, so commands never see it),
/// and puts `/dev/null` where it was.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns.
unsafe fn adopt(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: plain descriptor calls; `new` is a fresh descriptor that only we own, as the
    // caller promises for `fd`.
    unsafe {
        let new = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
        if new < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, fd);
            libc::close(null);
        }
        Ok(OwnedFd::from_raw_fd(new))
    }
}

/// Joins the machine: its cgroups, every namespace but the PID one, and its root; then takes
/// on its walls (see [`confine`]). Nothing is served before all of it has succeeded.
///
/// In a user-namespaced machine it joins the user namespace too, as the machine's root: from
/// then on it is an unprivileged host uid like every process of the machine. Having been
/// started on the host, it stays out of the guest's reach all the same: its memory belongs to
/// the host's user namespace and the uid change made it non-dumpable, so the guest's root can
/// neither trace it, nor read or write its memory, nor open what it maps.
fn enter(leader: &PidFd) -> std::io::Result<()> {
    let walls = Walls::of(leader)?;
    let filters = seccomp::programs(walls.bounding)?;
    let root = std::fs::File::open(format!("/proc/{}/root", leader.pid()))?;
    let own_userns = other_user_namespace(leader)?;
    // The leader still being alive proves `root` is its root, not a reused PID's.
    leader.signal(0)?;
    walls.join_cgroups()?;
    // SAFETY: plain system calls with descriptors we own; the process has one thread.
    unsafe {
        check(libc::setns(leader.raw(), NAMESPACES))?;
        check(libc::fchdir(root.as_raw_fd()))?;
        check(libc::chroot(c".".as_ptr()))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    drop(root);
    // Still as the host's root: in a user-namespaced machine the tmpfs mounts nspawn made
    // belong to the host's user namespace, and only that root may resize them.
    if let Some(memory) = walls.memory {
        super::tmpfs::bound(memory);
    }
    if own_userns {
        // SAFETY: as above.
        unsafe {
            check(libc::setns(leader.raw(), libc::CLONE_NEWUSER))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(0, 0, 0))?;
            check(libc::setresuid(0, 0, 0))?;
        }
    }
    walls.drop_capabilities()?;
    seccomp::install(&filters)
}

/// Whether the leader runs in a user namespace other than ours.
fn other_user_namespace(leader: &PidFd) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{}/ns/user", leader.pid()))?;
    let ours = std::fs::metadata("/proc/self/ns/user")?;
    Ok((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()))
}

fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes new connections until the test process or the machine is gone.
fn accept(control: BorrowedFd, leader: PidFd, zygote: std::io::Result<Zygote>) {
    let leader = std::sync::Arc::new(leader);
    super::init::keep(leader.clone());
    let zygote = std::sync::Arc::new(zygote);
    serve_until_gone(control, &leader, &zygote);
    call::end_all();
    if let Ok(zygote) = zygote.as_ref() {
        zygote.shutdown();
    }
    reap_exiting(std::time::Duration::from_millis(500));
}

/// Reaps the children that have exited or are exiting (calls that signalled their end), for
/// up to `grace`. Children of ours in the machine's PID namespace that outlive the agent are
/// zombies only the host's init reaps, and the machine's init cannot finish exiting before
/// they are gone. Commands still running are left to their parent-death signal.
fn reap_exiting(grace: std::time::Duration) {
    let deadline = std::time::Instant::now() + grace;
    loop {
        // SAFETY: reaping our own children, without blocking.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        match pid {
            p if p > 0 => continue,
            0 if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            _ => return,
        }
    }
}

/// Hands each new connection to a thread of its own, until the test process or the machine
/// is gone.
fn serve_until_gone(
    control: BorrowedFd,
    leader: &std::sync::Arc<PidFd>,
    zygote: &std::sync::Arc<std::io::Result<Zygote>>,
) {
    // Blocked here, before any connection thread exists, so that every thread has it
    // blocked and the descriptor gets each one.
    let children = child_exits();
    loop {
        let mut fds = vec![
            PollFd::new(control, PollFlags::POLLIN),
            PollFd::new(leader.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(sfd) = &children {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        if fds.get(2).is_some_and(|f| f.any().unwrap_or(false)) {
            if let Some(sfd) = &children {
                while let Ok(Some(_)) = sfd.read_signal() {}
            }
            call::reap_handed();
            continue;
        }
        let conns = match wire::recv::<()>(control, None) {
            Ok(((), conns)) => conns,
            Err(_) => return,
        };
        for conn in conns {
            let (leader, zygote) = (leader.clone(), zygote.clone());
            let serving = std::thread::Builder::new()
                .name("connection".into())
                .spawn(move || serve_connection(conn, &leader, &zygote));
            if serving.is_err() {
                return;
            }
        }
    }
}

/// A descriptor that reads when a child of the agent exits (`SIGCHLD`, blocked for it).
fn child_exits() -> Option<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().ok()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok()
}

/// Answers one connection's requests, one at a time, until the runtime closes it.
fn serve_connection(conn: OwnedFd, leader: &PidFd, zygote: &std::io::Result<Zygote>) {
    let in_pid_namespace = spawn::enter_pid_namespace(leader);
    loop {
        let (request, fds) = match wire::recv::<Request>(conn.as_fd(), None) {
            Ok(got) => got,
            Err(RecvError::Io(_)) => {
                let garbled = std::io::Error::from_raw_os_error(libc::EPROTO);
                let _ = wire::send(
                    conn.as_fd(),
                    &Response::failed(Step::Protocol, &garbled),
                    &[],
                );
                return;
            }
            Err(_) => return,
        };
        let served = answer(request, fds, conn.as_fd(), &in_pid_namespace, zygote);
        let Some((reply, handed)) = served else {
            return;
        };
        let passed: Vec<RawFd> = handed.iter().map(|f| f.as_raw_fd()).collect();
        if wire::send(conn.as_fd(), &reply, &passed).is_err() {
            return;
        }
    }
}

/// The answer to one request, with the descriptors it hands back; `None` when the runtime
/// hung up during a command or a wait, or once call processes were pushed on `conn` until it
/// did.
fn answer(
    request: Request,
    fds: Vec<OwnedFd>,
    conn: BorrowedFd,
    in_pid_namespace: &std::io::Result<()>,
    zygote: &std::io::Result<Zygote>,
) -> Option<(Response, Vec<OwnedFd>)> {
    let alone = |response| Some((response, vec![]));
    match (request, in_pid_namespace) {
        (Request::Stat { path }, _) => alone(stat(&path)),
        (Request::Open { path, flags, mode }, _) => match open(&path, flags, mode) {
            Ok(file) => Some((Response::Opened, vec![file])),
            Err(e) => alone(Response::failed(Step::Path, &e)),
        },
        (Request::Exec(_), Err(e)) => alone(Response::failed(Step::Enter, e)),
        (Request::Exec(exec), Ok(())) => alone(spawn::run(exec, fds, conn)?),
        (Request::Spare, _) => Some(call::hand_out(zygote)),
        (Request::Spares, _) => {
            call::push(conn, zygote);
            None
        }
        (
            Request::Finish {
                pid,
                kill,
                timeout_ms,
            },
            _,
        ) => {
            let timeout = timeout_ms.map(std::time::Duration::from_millis);
            alone(call::finish(pid, kill, timeout, conn)?)
        }
    }
}

fn stat(path: &[u8]) -> Response {
    match std::fs::metadata(std::ffi::OsStr::from_bytes(path)) {
        Ok(meta) => Response::Stat(Meta {
            mode: std::os::unix::fs::MetadataExt::mode(&meta),
        }),
        Err(e) => Response::failed(Step::Path, &e),
    }
}

/// Opens a file of the machine. Absolute symlinks resolve inside it: this is its root.
fn open(path: &[u8], flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let path = std::ffi::CString::new(path)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // Never blocking (a FIFO without a writer), never taking a terminal; the runtime refuses
    // anything but a regular file, for which O_NONBLOCK changes nothing.
    let flags = flags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    // SAFETY: a valid C string; the descriptor is owned below.
    let fd = unsafe { libc::open(path.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if flags & libc::O_CREAT != 0 {
        // The exact mode, whatever the umask, and for files that existed already.
        // SAFETY: fchmod on a descriptor we own.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    }
    Ok(fd)
}
