//! The in-machine agent: one persistent process per machine that serves the [`Machine`]
//! methods, so that checking a file forks nothing and a command is one `fork` + `exec`.
//!
//! The agent is the test binary itself, re-executed from `/proc/self/exe` with `NSPAWN_AGENT`
//! set. A hook in `.init_array` recognises it before `main` and enters the machine after
//! `exec`, so the machine's libc never matters (see [`server`]). It runs as root, so file
//! operations work while the test body runs as the sudo user.
//!
//! The runtime talks to it over Unix stream sockets ([`wire`]). A control socket, the
//! agent's stdin, carries new connections; each connection is served by its own thread in
//! the agent and is used by one test thread at a time, then pooled. Test threads sharing a
//! machine therefore never wait for each other. Files are opened by the agent and their
//! descriptors handed back; a command writes straight into the pipes it was given; a call's
//! process is handed over whole, pushed ahead of need ([`Spare`]), and the runtime talks to it
//! directly.
//!
//! The agent exits when its control socket closes (the test process is gone, however it
//! died) or when the machine's leader exits. Its commands die with it (`PR_SET_PDEATHSIG`).
//! If it dies anyway, the call in flight fails with [`Error::Agent`](crate::Error::Agent)
//! and the next call starts a new agent.
//!
//! [`Machine`]: crate::Machine

mod call;
pub(crate) mod callee;
mod confine;
mod init;
mod launch;
mod seccomp;
mod server;
mod spare;
mod spawn;
mod tmpfs;
pub(crate) mod user;
pub(crate) mod wire;
mod zygote;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::host::helper;
use crate::host::pidfd::PidFd;
use crate::host::privs;
pub(crate) use call::PUSHED_AHEAD;
pub(crate) use spare::{Spare, Streams};
use wire::{RecvError, Request, Response};

/// How long an agent may take to enter its machine.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `stat` or `open` may take: only a stopped or deadlocked agent takes that long
/// (or a FIFO nobody writes to).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Set by the pre-`main` hook: re-running this executable reaches [`run_if_requested`].
static HOOKED: AtomicBool = AtomicBool::new(false);

helper::pre_main_hook!(run_if_requested);

/// Called before `main`: in an agent process, serves the machine and exits; elsewhere notes
/// that agents can be started. `#[nspawn::test]`'s hook calls it first too, so that the agent
/// takes over before anything else runs, whatever the order of the hooks.
pub fn run_if_requested() {
    if !server::run_if_requested() {
        HOOKED.store(true, Ordering::SeqCst);
    }
}

/// The runtime's handle on one machine's agent.
#[derive(Debug)]
pub(crate) struct Agent {
    process: Mutex<Child>,
    pidfd: PidFd,
    control: Mutex<Option<OwnedFd>>,
    /// Connections no thread uses.
    idle: Mutex<Vec<OwnedFd>>,
    /// Call processes the agent pushes ahead (see [`Agent::spare`]).
    pushed: Mutex<Pushed>,
}

/// The connection the agent pushes call processes on, and how many it still owes.
#[derive(Debug, Default)]
struct Pushed {
    /// Once asked for ([`Request::Spares`]).
    sock: Option<OwnedFd>,
    /// How many are on their way or waiting there: the agent pushes
    /// [`PUSHED_AHEAD`](call::PUSHED_AHEAD) at first, and one more each time one pushed has
    /// exited, which the runtime counts when it is done with one ([`Lease`]).
    coming: u32,
    /// Which connection this is: a lease from an earlier one counts for nothing.
    generation: u64,
    /// The next one, already taken off the connection (see [`Agent::take_ahead`]), or the
    /// agent's last word there.
    ready: Option<Result<Spare, Response>>,
}

impl Pushed {
    /// Takes the next message off the connection, waiting until `deadline`. A failure other
    /// than the deadline passing, or an answer that is not a process, ends the connection:
    /// the next call asks for pushes anew.
    fn receive(&mut self, deadline: Instant) -> Result<Result<Spare, Response>, RecvError> {
        let sock = self.sock.as_ref().ok_or(RecvError::Closed)?;
        let (answer, fds) = match wire::recv::<Response>(sock.as_fd(), Some(deadline)) {
            Ok(received) => received,
            Err(e) => {
                if !matches!(e, RecvError::TimedOut) {
                    self.sock = None;
                }
                return Err(e);
            }
        };
        let spare = Spare::handed(answer, fds);
        self.coming = self.coming.saturating_sub(1);
        if spare.is_err() {
            self.sock = None;
        }
        Ok(spare)
    }
}

/// How long a call waits for a process the agent owes it before asking for one of its own:
/// a fork takes well under a second, unless the guest stopped the last one from exiting.
const PUSH_WAIT: Duration = Duration::from_secs(2);

impl Agent {
    /// Starts an agent in machine `machine`, whose leader is `leader`, and waits until it is
    /// in.
    pub(crate) fn start(machine: &str, leader: &PidFd) -> std::io::Result<Agent> {
        if !HOOKED.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "this executable lacks the runtime's start-up hook (its `.init_array` entry \
                 was not linked in); please report it with the linker and build settings used",
            ));
        }
        let (ours, theirs) = UnixStream::pair()?;
        let child = spawn(machine, leader, theirs.into())?;
        let agent = Agent {
            pidfd: PidFd::open(child.id())?,
            process: Mutex::new(child),
            control: Mutex::new(Some(ours.into())),
            idle: Mutex::new(Vec::new()),
            pushed: Mutex::default(),
        };
        match agent.handshake() {
            Ok(Response::Ready) => Ok(agent),
            Ok(Response::Failed { errno, .. }) => Err(std::io::Error::new(
                std::io::Error::from_raw_os_error(errno).kind(),
                format!(
                    "entering the machine: {}",
                    std::io::Error::from_raw_os_error(errno)
                ),
            )),
            Err(RecvError::TimedOut) => Err(std::io::Error::other(format!(
                "it did not enter the machine within {} s",
                START_TIMEOUT.as_secs()
            ))),
            _ => Err(std::io::Error::other(agent.exit_description())),
        }
    }

    /// The agent's first word: whether it got into the machine.
    fn handshake(&self) -> Result<Response, RecvError> {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let control = control.as_ref().ok_or(RecvError::Closed)?;
        let deadline = Instant::now() + START_TIMEOUT;
        wire::recv::<Response>(control.as_fd(), Some(deadline)).map(|(answer, _)| answer)
    }

    /// The agent's PID on the host.
    pub(crate) fn pid(&self) -> u32 {
        self.pidfd.pid()
    }

    /// Whether the agent process still runs.
    pub(crate) fn is_alive(&self) -> bool {
        self.pidfd.is_alive()
    }

    /// A connection of this thread's own, from the pool or new.
    pub(crate) fn connect(&self) -> Result<Conn<'_>, RecvError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(sock) = pooled {
            return Ok(Conn { agent: self, sock });
        }
        let (ours, theirs) = UnixStream::pair()?;
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let control = control.as_ref().ok_or(RecvError::Closed)?;
        wire::send(control.as_fd(), &(), &[theirs.as_raw_fd()]).map_err(lost)?;
        Ok(Conn {
            agent: self,
            sock: ours.into(),
        })
    }

    /// A call process, waiting for its request: the one the agent pushed ahead, or, when
    /// another thread is taking that or none is coming, one asked for. The inner error is the
    /// agent's answer when it has none to give. The lease must live until the process is done
    /// with.
    pub(crate) fn spare(&self) -> Result<(Result<Spare, Response>, Lease<'_>), RecvError> {
        if let Some(pushed) = self.pushed_spare() {
            return Ok(pushed);
        }
        let mut conn = self.connect()?;
        conn.send(&Request::Spare, &[])?;
        let (answer, fds) = conn.recv(Some(Instant::now() + CALL_TIMEOUT))?;
        conn.release();
        let lease = Lease {
            agent: self,
            generation: None,
        };
        Ok((Spare::handed(answer, fds), lease))
    }

    /// The next call process the agent pushes, if no other thread is taking one and one is
    /// coming; asks for pushes on first use.
    fn pushed_spare(&self) -> Option<(Result<Spare, Response>, Lease<'_>)> {
        let mut pushed = self.pushed.try_lock().ok()?;
        let spare = match pushed.ready.take() {
            Some(ready) => ready,
            None => self.receive_pushed(&mut pushed)?,
        };
        let lease = Lease {
            agent: self,
            generation: Some(pushed.generation),
        };
        Some((spare, lease))
    }

    /// Waits for the next call process pushed, asking for pushes first if none are coming.
    fn receive_pushed(&self, pushed: &mut Pushed) -> Option<Result<Spare, Response>> {
        if pushed.sock.is_none() {
            let mut conn = self.connect().ok()?;
            conn.send(&Request::Spares, &[]).ok()?;
            pushed.sock = Some(conn.sock);
            pushed.coming = call::PUSHED_AHEAD;
            pushed.generation += 1;
        }
        if pushed.coming == 0 {
            return None;
        }
        match pushed.receive(Instant::now() + PUSH_WAIT) {
            Ok(spare) => Some(spare),
            // Late, or gone: this call asks for one, and the next asks for pushes anew.
            Err(e) => {
                tracing::debug!(
                    agent = self.pid(),
                    error = ?e,
                    wait_ms = PUSH_WAIT.as_millis() as u64,
                    "no call process pushed in time; asking for one"
                );
                pushed.sock = None;
                None
            }
        }
    }

    /// Takes the next pushed call process off its connection if it has come, without waiting,
    /// so that the next call starts with it in hand. Called while a call's process runs, when
    /// the test's thread would otherwise only wait for it to wake. Returns whether the next
    /// one is in hand: the agent is then not forking one, as it does after each call.
    pub(crate) fn take_ahead(&self) -> bool {
        let Ok(mut pushed) = self.pushed.try_lock() else {
            return false;
        };
        if pushed.ready.is_none() && pushed.coming > 0 {
            pushed.ready = pushed.receive(Instant::now()).ok();
        }
        pushed.ready.is_some()
    }

    /// One request without descriptors, and its answer, within [`CALL_TIMEOUT`].
    pub(crate) fn call(&self, request: &Request) -> Result<(Response, Vec<OwnedFd>), RecvError> {
        let mut conn = self.connect()?;
        conn.send(request, &[])?;
        let answer = conn.recv(Some(Instant::now() + CALL_TIMEOUT))?;
        conn.release();
        Ok(answer)
    }

    /// How the agent ended, for messages; waits a moment for it to finish dying.
    pub(crate) fn exit_description(&self) -> String {
        self.pidfd.wait(Duration::from_millis(500));
        let status = self
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait();
        match status {
            Ok(Some(s)) => match s.signal() {
                Some(sig) => format!("the agent was killed by signal {sig}"),
                None => format!("the agent exited ({s})"),
            },
            _ => format!("the agent (pid {}) closed its connection", self.pid()),
        }
    }
}

/// Starts the agent process (see [`crate::host::helper`]) with the leader's pidfd as descriptor 3.
/// Its command line, `nspawn-agent --machine=NAME`, says what it is in `ps`.
fn spawn(machine: &str, leader: &PidFd, control: OwnedFd) -> std::io::Result<Child> {
    let leader_fd = leader.raw();
    let mut cmd = helper::command(server::ENV, leader.pid().to_string(), control);
    // Nothing of the test process's environment (its secrets, CI's variables) goes into the
    // machine: the agent's own block is readable there as `/proc/PID/environ` wherever the
    // guest can read the agent's files. Commands get the environment they ask for.
    cmd.env_clear().env(server::ENV, leader.pid().to_string());
    cmd.arg0("nspawn-agent").arg(format!("--machine={machine}"));
    // Every symbol bound at start: the call processes forked from it (see `zygote`) then
    // share the bindings instead of each resolving them again.
    cmd.env("LD_BIND_NOW", "1");
    // SAFETY: raw system calls only; this runs after the helper's own hook.
    unsafe {
        cmd.pre_exec(move || {
            let moved = if leader_fd == server::LEADER_FD {
                libc::fcntl(leader_fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(leader_fd, server::LEADER_FD)
            };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A broken pipe or reset connection means the agent is gone.
fn lost(e: std::io::Error) -> RecvError {
    match e.raw_os_error() {
        Some(libc::EPIPE | libc::ECONNRESET) => RecvError::Closed,
        _ => RecvError::Io(e),
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Closing every socket tells the agent to exit.
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        pushed.sock = None;
        pushed.ready = None;
        drop(pushed);
        if !self.pidfd.wait(Duration::from_secs(2)) {
            let _root = privs::ThreadRoot::acquire();
            let _ = self.pidfd.signal(libc::SIGKILL);
        }
        let _ = self
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wait();
    }
}

/// A call process in use: once the runtime is done with it, it exits, and the agent pushes
/// the next one if this one was pushed.
pub(crate) struct Lease<'a> {
    agent: &'a Agent,
    /// The pushing connection it came on, if it was pushed.
    generation: Option<u64>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(generation) = self.generation else {
            return;
        };
        let mut pushed = self.agent.pushed.lock().unwrap_or_else(|p| p.into_inner());
        if pushed.generation == generation && pushed.sock.is_some() {
            pushed.coming += 1;
        }
    }
}

/// A connection to the agent, used by one thread at a time.
pub(crate) struct Conn<'a> {
    agent: &'a Agent,
    sock: OwnedFd,
}

impl Conn<'_> {
    /// The socket, to poll it beside other descriptors.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Sends a request, with descriptors for the agent.
    pub(crate) fn send(&mut self, request: &Request, fds: &[i32]) -> Result<(), RecvError> {
        wire::send(self.fd(), request, fds).map_err(lost)
    }

    /// Receives the answer.
    pub(crate) fn recv(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(Response, Vec<OwnedFd>), RecvError> {
        wire::recv(self.fd(), deadline)
    }

    /// Puts the connection back in the pool: its exchange is complete. A connection dropped
    /// without this is closed, which also tells the agent to kill a command still running.
    pub(crate) fn release(self) {
        self.agent
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.sock);
    }
}
