//! Running the test binary's own functions inside a machine: [`Machine::call`].
//!
//! The agent's zygote forks a process for each call (see `agent::zygote`), before the call,
//! and the agent hands it over: the call is sent to it directly, and it runs the function in
//! the machine and sends back what came of it. Arguments and results cross as CBOR, so any
//! serde type does, self-describing ones (`serde_json::Value`, untagged enums) included. What
//! the function prints is shown with the test's output.

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::command::TIMEOUT_GRACE;
use super::lifecycle::Machine;
use super::spin;
use super::stdio::{pump, Gathering, Ours};
use crate::agent::callee::{self, Entry};
use crate::agent::wire::{Invocation, Outcome, RecvError, Request, Response, ROUND_TRIP};
use crate::agent::{Agent, Lease};
use crate::error::{Error, Result};

/// How a call's process ended: the outcome it wrote, if whole, and its wait status (0 while
/// it is still exiting).
struct Ended {
    status: i32,
    outcome: Option<Vec<u8>>,
}

/// A function to run inside a machine, with options: [`Machine::function`]. Plain
/// [`Machine::call`] is this without options.
///
/// ```no_run
/// # #[nspawn::test(chroot = "bookworm")]
/// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
/// use std::time::Duration;
///
/// let home = machine
///     .function(|(): ()| std::env::var("HOME").unwrap_or_default())
///     .user("nobody")
///     .timeout(Duration::from_secs(5))
///     .call(())?;
/// assert_eq!(home, "/nonexistent");
/// # Ok(()) }
/// ```
#[must_use]
pub struct Call<'m, F> {
    machine: &'m Machine,
    /// The function's type is all there is of it (it is zero-sized; see `callee::entry`).
    function: std::marker::PhantomData<fn() -> F>,
    user: Option<String>,
    timeout: Option<Duration>,
    /// No timeout at all: a test body run inside, which is the test's own business.
    unbounded: bool,
    output_limit: usize,
}

impl<F> std::fmt::Debug for Call<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("machine", &self.machine.name())
            .field("function", &std::any::type_name::<F>())
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .field("unbounded", &self.unbounded)
            .finish()
    }
}

/// A call process that took its request, and what it sent back until its outcome, its end or
/// the call's deadline.
struct Started<'a> {
    pid: u32,
    run: Gathering,
    gathered: std::result::Result<Option<Response>, RecvError>,
    /// Held until the process is done with.
    lease: Lease<'a>,
}

/// How long a killed call process may take to be gone.
fn killed() -> Instant {
    crate::deadline::after(Duration::from_secs(5))
}

/// How long a call may take when it sets no timeout: a process the guest stopped half-way
/// through its result must not hold the test forever.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(600);

impl<F> Call<'_, F> {
    /// Keeps at most `bytes` of what the function prints on each of stdout and stderr, and
    /// of its result (default 64 MiB); more is [`Error::TooLarge`](crate::Error::TooLarge).
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let log = machine
    ///     .function(|(): ()| std::fs::read("/var/log/dpkg.log").unwrap_or_default())
    ///     .output_limit(256 << 20)
    ///     .call(())?;
    /// # Ok(()) }
    /// ```
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// No timeout at all, not even [`DEFAULT_CALL_TIMEOUT`]: for a test body run inside,
    /// which takes as long as the test does.
    pub(crate) fn unbounded(mut self) -> Self {
        self.unbounded = true;
        self
    }

    /// How long the call may take.
    fn limit(&self) -> Option<Duration> {
        (!self.unbounded).then(|| self.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT))
    }

    /// Runs as this user of the machine (default root): the process takes its uid, gid,
    /// groups, home directory and login environment.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let uid = machine.function(|(): ()| nix::unistd::getuid().as_raw()).user("nobody").call(())?;
    /// assert_eq!(uid, 65534);
    /// # Ok(()) }
    /// ```
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Kills the call's process, with every process it started, and fails if it runs longer
    /// than this.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// use std::time::Duration;
    /// let slow = machine
    ///     .function(|secs: u64| std::thread::sleep(Duration::from_secs(secs)))
    ///     .timeout(Duration::from_secs(1))
    ///     .call(60);
    /// assert!(slow.is_err());
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the function on `arg` inside the machine and returns what it returned.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let len = machine.function(|s: String| s.len()).call("four".to_string())?;
    /// assert_eq!(len, 4);
    /// # Ok(()) }
    /// ```
    pub fn call<A, R>(&self, arg: A) -> Result<R>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "Machine::call takes a function, or a closure that captures nothing; \
                 pass what it needs as the argument"
            )
        };
        let entry: Entry = callee::entry::<F, A, R>;
        let mut arg_bytes = Vec::new();
        ciborium::into_writer(&arg, &mut arg_bytes)
            .map_err(|e| self.failed(format!("encoding the argument: {e}; {ROUND_TRIP}"), None))?;
        let _call = tracing::debug_span!(
            "call",
            machine = self.machine.name(),
            function = std::any::type_name::<F>()
        )
        .entered();
        let started = Instant::now();
        let ended = self.run(callee::offset(entry), arg_bytes)?;
        tracing::debug!(
            machine = self.machine.name(),
            function = self.name(),
            elapsed_us = started.elapsed().as_secs_f64() * 1e6,
            "call"
        );
        let decoded = ended
            .outcome
            .as_deref()
            .map(postcard::from_bytes::<Outcome>);
        match decoded {
            Some(Ok(Outcome::Returned(bytes))) => ciborium::from_reader(bytes.as_slice())
                .map_err(|e| self.failed(format!("decoding the result: {e}; {ROUND_TRIP}"), None)),
            Some(Ok(Outcome::Panicked { message, location })) => Err(Error::Panicked {
                machine: self.machine.name().into(),
                function: self.name(),
                message,
                location,
            }),
            Some(Ok(Outcome::Failed(why))) => Err(self.failed(why, None)),
            Some(Ok(Outcome::NoSuchUser)) => Err(Error::NoSuchUser {
                machine: self.machine.name().into(),
                user: self.user.clone().unwrap_or_default(),
            }),
            Some(Ok(Outcome::BadEntry)) => Err(self.failed(
                "its entry point is not in the test executable; call functions of the test \
                 binary itself, not of a shared library it loads"
                    .into(),
                None,
            )),
            Some(Err(_)) | None => Err(self.ended(ExitStatus::from_raw(ended.status))),
        }
    }

    /// The function's name, as Rust gives its type.
    fn name(&self) -> String {
        std::any::type_name::<F>().to_string()
    }

    /// Has a call process of the machine run the entry point; returns the outcome, or how
    /// its process ended.
    fn run(&self, entry: i64, arg: Vec<u8>) -> Result<Ended> {
        let machine = self.machine;
        let agent = machine.agent()?;
        let during = format!("calling `{}`", self.name());
        let lost = |e| machine.agent_lost(&agent, &during, e);
        let invocation = Invocation {
            entry,
            arg,
            user: self.user.clone(),
        };
        let deadline = self.limit().map(crate::deadline::after);
        let Started {
            pid,
            mut run,
            gathered,
            lease: _lease,
        } = self.start(&agent, &invocation, deadline, (&during, &lost))?;
        let reply = match gathered {
            Ok(None) if run.has_outcome() => None,
            // Its socket closed without an outcome: it died, or exec'd. Its status says which.
            Ok(_) => Some(
                self.finish(&agent, pid, false, deadline, &mut run)
                    .map_err(lost)?,
            ),
            Err(RecvError::TimedOut) => {
                self.finish(&agent, pid, true, Some(killed()), &mut run)
                    .map_err(lost)?;
                return Err(self.timed_out());
            }
            Err(e) => return Err(lost(e)),
        };
        // Past the limit, output was read and thrown away, and a result's socket closed: the
        // process is not held up, and ends by itself.
        if let Some(stream) = run.over() {
            return Err(Error::TooLarge {
                what: format!("`{}`", self.name()),
                machine: machine.name().into(),
                stream: stream.into(),
                limit: self.output_limit,
            });
        }
        let pumped = run.into_pumped(None);
        // Where the test's own output goes: libtest captures it, and shows it on failure.
        if !pumped.stdout.is_empty() {
            print!("{}", String::from_utf8_lossy(&pumped.stdout));
        }
        if !pumped.stderr.is_empty() {
            eprint!("{}", String::from_utf8_lossy(&pumped.stderr));
        }
        let outcome = pumped.outcome;
        match reply {
            None => Ok(Ended { status: 0, outcome }),
            Some(Response::Exited { status }) => Ok(Ended { status, outcome }),
            Some(Response::TimedOut) => Err(self.timed_out()),
            Some(other) => Err(self.refused(other, &during)),
        }
    }

    /// Hands the invocation to a call process, and gathers what it sends back until its
    /// outcome, its end or `deadline`; returns its PID with that. The guest can kill those
    /// waiting: one that is gone, or dies with the request unread (its socket then resets),
    /// never ran the function, and is passed over until the agent's replacements come (it
    /// forks one for each).
    fn start<'a>(
        &self,
        agent: &'a Agent,
        invocation: &Invocation,
        deadline: Option<Instant>,
        (during, lost): (&str, &dyn Fn(RecvError) -> Error),
    ) -> Result<Started<'a>> {
        let mut tries = 0;
        loop {
            tries += 1;
            let passed_over = |e: &std::io::Error| {
                e.raw_os_error() == Some(libc::ECONNRESET) && tries <= crate::agent::PUSHED_AHEAD
            };
            let (spare, lease) = agent.spare().map_err(lost)?;
            let spare = spare.map_err(|answer| self.refused(answer, during))?;
            let sent = Instant::now();
            if let Err(e) = spare.start(invocation) {
                if tries <= crate::agent::PUSHED_AHEAD {
                    continue;
                }
                return Err(self.failed(
                    format!(
                        "{tries} call processes in a row took no request ({e}): something in \
                         the machine kills them; the agent forks new ones for the next call"
                    ),
                    None,
                ));
            }
            let pid = spare.pid;
            // While the process wakes: this thread would only wait.
            let ahead = agent.take_ahead();
            let streams = spare.into_streams();
            // Not while the agent forks the next process (calls back to back): the spinning
            // thread would take the CPU that forks it.
            if ahead {
                spin::briefly(streams.outcome.as_fd(), deadline);
            }
            let mut run = Gathering::new(Ours::of_call(streams), self.output_limit);
            let gathered = pump(None, &mut run, None, deadline, None);
            spin::took(sent.elapsed());
            match gathered {
                Err(RecvError::Io(e)) if passed_over(&e) => continue,
                gathered => {
                    return Ok(Started {
                        pid,
                        run,
                        gathered,
                        lease,
                    })
                }
            }
        }
    }

    /// Has the agent wait for call process `pid` (killing it first if `kill`) until
    /// `deadline`, while what it still writes is gathered; returns how it ended.
    fn finish(
        &self,
        agent: &Agent,
        pid: u32,
        kill: bool,
        deadline: Option<Instant>,
        run: &mut Gathering,
    ) -> std::result::Result<Response, RecvError> {
        run.let_go();
        let mut conn = agent.connect()?;
        let timeout_ms = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        conn.send(
            &Request::Finish {
                pid,
                kill,
                timeout_ms,
            },
            &[],
        )?;
        let grace = deadline.and_then(|d| d.checked_add(TIMEOUT_GRACE));
        let reply = pump(Some(&mut conn), run, None, grace, None)?;
        let reply = reply.ok_or(RecvError::Closed)?;
        conn.release();
        Ok(reply)
    }

    /// The error for a call process the agent could not give, or that ended in a way the
    /// agent reported.
    fn refused(&self, answer: Response, during: &str) -> Error {
        match answer {
            Response::Failed { step, errno } => self.failed(
                format!(
                    "the agent could not start its process ({step:?}): {}",
                    std::io::Error::from_raw_os_error(errno)
                ),
                None,
            ),
            other => self.machine.agent_confused(during, &other),
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            what: format!("`{}` in machine {}", self.name(), self.machine.name()),
            after: self.limit().unwrap_or_default(),
            hint: "its process was killed, with every process it started; \
                   `.timeout(..)` on `Machine::function` sets another limit"
                .into(),
        }
    }

    /// The error for a process that ended without an outcome.
    fn ended(&self, status: ExitStatus) -> Error {
        match status.signal() {
            Some(signal) => {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| "unknown".into());
                self.failed(
                    format!("its process was killed by signal {signal} ({name})"),
                    Some(signal),
                )
            }
            None => self.failed(
                format!(
                    "its process exited ({status}) without returning: the function called \
                     std::process::exit, or the guest killed it"
                ),
                None,
            ),
        }
    }

    fn failed(&self, reason: String, signal: Option<i32>) -> Error {
        Error::Call {
            machine: self.machine.name().into(),
            function: self.name(),
            reason,
            signal,
        }
    }
}

impl Machine {
    /// Runs `function(arg)` inside the machine and returns its result: Rust code of the test
    /// binary, acting on the machine as a program started there would.
    ///
    /// `function` is a function or a closure that captures nothing (it is a compile error
    /// otherwise); the argument and the result are any serde types. The call runs in a
    /// process of its own, forked for it inside every namespace of the machine, in its root
    /// and cgroup, confined as the container's own processes are, as root there (see
    /// [`Machine::function`] for another user, or a timeout). Its environment is a login one,
    /// as [`Command`](crate::Command)'s, and its working directory the user's home.
    ///
    /// Each call starts from the same state, a copy of the agent as it entered the machine:
    /// nothing but the machine's own files and processes carries from one call to the next
    /// (not a global, a thread, or a panic). The function runs with the test binary's code
    /// and libc in the guest's file system: what it reads is the guest's (`/etc/passwd` for
    /// NSS lookups, through the host libc's own `files` module), and it must not rely on
    /// shared libraries that only the host has. Test code outside the call, under sudo,
    /// still runs as the invoking user.
    ///
    /// A panic is [`Error::Panicked`](crate::Error::Panicked), with its message and location;
    /// a crash, an exit, or a value that cannot cross is [`Error::Call`](crate::Error::Call).
    /// What the function prints is shown with the test's output.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// use std::path::Path;
    ///
    /// assert!(machine.call(|p: String| Path::new(&p).exists(), "/etc/os-release".into())?);
    /// let hostname = machine.call(|(): ()| std::fs::read_to_string("/proc/sys/kernel/hostname").ok(), ())?;
    /// assert_eq!(hostname.as_deref().map(str::trim), Some(machine.name()));
    /// # Ok(()) }
    /// ```
    ///
    /// A closure that captures something does not compile: what the function needs goes in
    /// the argument.
    ///
    /// ```compile_fail
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let path = String::from("/etc/os-release");
    /// machine.call(move |(): ()| std::path::Path::new(&path).exists(), ())?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn call<F, A, R>(&self, function: F, arg: A) -> Result<R>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.function(function).call(arg)
    }

    /// A function to run inside the machine with options (a user, a timeout); see
    /// [`Machine::call`].
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// use std::time::Duration;
    /// let users = machine
    ///     .function(|(): ()| std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string()))
    ///     .timeout(Duration::from_secs(10))
    ///     .call(())?;
    /// assert!(users.is_ok_and(|p| p.contains("root:")));
    /// # Ok(()) }
    /// ```
    pub fn function<F>(&self, _function: F) -> Call<'_, F> {
        Call {
            machine: self,
            function: std::marker::PhantomData,
            user: None,
            timeout: None,
            unbounded: false,
            output_limit: super::stdio::DEFAULT_OUTPUT_LIMIT,
        }
    }
}
