//! Running programs inside a machine: a `std::process::Command`-like builder.
//!
//! The machine's agent forks and execs the program, already inside every namespace and the
//! root of the machine (see [`crate::agent`]). The program's stdin, stdout and stderr are
//! pipes of this process (or its own stdout and stderr), passed to the agent with the
//! request, so output flows straight here, however large it is.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use super::lifecycle::Machine;
use super::stdio::{pump, Gathering, Pipes, DEFAULT_OUTPUT_LIMIT};
use crate::agent::user::PATH;
use crate::agent::wire::{Exec, Request, Response, Step};
use crate::error::{Error, Result};
use crate::host::tools::shell_word;

/// How much longer than a command's timeout the agent may take to report it.
pub(super) const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// A program to run inside a machine, built like [`std::process::Command`].
///
/// The environment starts clean, as `machinectl shell` gives it: `PATH`, `HOME`, `USER`,
/// `LOGNAME`, `SHELL` and `container`, plus what [`Command::env`] adds.
///
/// ```no_run
/// # #[nspawn::test(chroot = "bookworm")]
/// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
/// let out = machine
///     .command("sh")
///     .args(["-c", "cat > /tmp/x; wc -c < /tmp/x"])
///     .stdin("hello")
///     .output()?;
/// assert_eq!(out.stdout, b"5\n");
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Debug)]
pub struct Command<'m> {
    machine: &'m Machine,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    output_limit: usize,
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
            output_limit: DEFAULT_OUTPUT_LIMIT,
        }
    }

    /// Adds an argument.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("echo").arg("hello").output()?;
    /// assert_eq!(out.stdout, b"hello\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// Adds arguments.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.command("apt-get").args(["install", "-y", "jq"]).status()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn args(&mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// Sets an environment variable.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("printenv").arg("GREETING").env("GREETING", "hi").output()?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().into(), value.as_ref().into()));
        self
    }

    /// The working directory inside the machine (default: the user's home, `/root` for root).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("pwd").current_dir("/etc").output()?;
    /// assert_eq!(out.stdout, b"/etc\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().into());
        self
    }

    /// Runs as this user of the machine (default root).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("id").arg("-un").user("nobody").output()?;
    /// assert_eq!(out.stdout, b"nobody\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn user(&mut self, user: &str) -> &mut Self {
        self.user = Some(user.into());
        self
    }

    /// Bytes fed to the program's standard input (default: none, `/dev/null`).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("wc").arg("-c").stdin("four").output()?;
    /// assert_eq!(out.stdout, b"4\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kills the program and fails if it runs longer than this.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let slow = machine
    ///     .command("sleep")
    ///     .arg("60")
    ///     .timeout(std::time::Duration::from_secs(1))
    ///     .output();
    /// assert!(slow.is_err());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// Keeps at most `bytes` of each of stdout and stderr (default 64 MiB,
    /// [`DEFAULT_OUTPUT_LIMIT`]); more is [`Error::TooLarge`](crate::Error::TooLarge). The
    /// program is never held up: what goes past the limit is read and thrown away.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let big = machine.command("cat").arg("/var/log/big.log").output_limit(512 << 20).output()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn output_limit(&mut self, bytes: usize) -> &mut Self {
        self.output_limit = bytes;
        self
    }

    /// Runs the program, capturing its output.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("false").output()?;
    /// assert!(!out.status.success());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn output(&mut self) -> Result<Output> {
        self.execute(true)
    }

    /// Runs the program with the test's stdout and stderr, returning how it ended.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let status = machine.command("test").args(["-d", "/etc"]).status()?;
    /// assert!(status.success());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.execute(false).map(|o| o.status)
    }

    /// The command line, for messages.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let mut cmd = machine.command("echo");
    /// cmd.arg("two words");
    /// assert_eq!(cmd.command_line(), "echo 'two words'");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// On a network with no way out, a program that tried to reach the outside (apt's
    /// "Temporary failure resolving", curl's "Could not resolve host") may still exit 0, as
    /// `apt-get update` does: say why, with the test's own output (libtest shows it when the
    /// test fails). A look at what the program printed anyway: nothing more is spent.
    fn say_if_it_looked_for_the_outside(&self, stdout: &[u8], stderr: &[u8]) {
        const SIGNS: [&str; 4] = [
            "Temporary failure resolving",
            "Could not resolve host",
            "Network is unreachable",
            "Temporary failure in name resolution",
        ];
        let network = self.machine.network();
        if network.reaches_outside() {
            return;
        }
        let printed = [stdout, stderr].map(String::from_utf8_lossy);
        if SIGNS
            .iter()
            .any(|sign| printed.iter().any(|p| p.contains(sign)))
        {
            eprintln!(
                "nspawn: `{}` in machine {} could not reach the outside: its network, {network}, \
                 has no way out (`isolated`, the default, and `zone:NAME+outside` have one)",
                self.command_line(),
                self.machine.name()
            );
        }
    }

    fn execute(&self, capture: bool) -> Result<Output> {
        let started = Instant::now();
        let agent = self.machine.agent()?;
        let during = format!("running `{}`", self.command_line());
        let lost = |e| self.machine.agent_lost(&agent, &during, e);
        let mut conn = agent.connect().map_err(lost)?;
        let pipes = Pipes::new(self.stdin.is_some(), capture)
            .map_err(|e| Error::io(format!("making pipes for {during}"), e))?;
        conn.send(&Request::Exec(self.request()), &pipes.theirs())
            .map_err(lost)?;
        let mut run = Gathering::new(pipes.into_ours(), self.output_limit);
        let deadline = self
            .timeout
            .map(|t| crate::deadline::after(t.saturating_add(TIMEOUT_GRACE)));
        let start_deadline = Instant::now() + crate::agent::CALL_TIMEOUT;
        let reply = pump(
            Some(&mut conn),
            &mut run,
            self.stdin.as_deref(),
            deadline,
            Some(start_deadline),
        )
        .map_err(lost)?;
        let pumped = run.into_pumped(reply);
        let status = match pumped.reply {
            Some(Response::Exited { status }) => ExitStatus::from_raw(status),
            Some(other) => return Err(self.failure(other)),
            // Only a call's outcome ends the pump before the agent's answer.
            None => {
                return Err(Error::Agent {
                    machine: self.machine.name().to_string(),
                    during: format!("running `{}`", self.command_line()),
                    reason: "it gave no answer for the program".into(),
                })
            }
        };
        conn.release();
        if let Some(stream) = pumped.over {
            return Err(Error::TooLarge {
                what: format!("`{}`", self.command_line()),
                machine: self.machine.name().to_string(),
                stream: stream.into(),
                limit: self.output_limit,
            });
        }
        let (stdout, stderr) = (pumped.stdout, pumped.stderr);
        if pumped.held_open {
            return Err(Error::OutputHeldOpen {
                command: self.command_line(),
                machine: self.machine.name().to_string(),
                status,
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            });
        }
        tracing::debug!(
            machine = self.machine.name(),
            command = self.command_line(),
            status = %status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "exec"
        );
        self.say_if_it_looked_for_the_outside(&stdout, &stderr);
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn request(&self) -> Exec {
        let bytes = |s: &OsStr| s.as_bytes().to_vec();
        Exec {
            program: bytes(&self.program),
            args: self.args.iter().map(|a| bytes(a)).collect(),
            env: self.env.iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
            cwd: self.cwd.as_ref().map(|c| bytes(c.as_os_str())),
            user: self.user.clone(),
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            stdin: self.stdin.is_some(),
        }
    }

    /// The error for an answer other than "exited".
    fn failure(&self, reply: Response) -> Error {
        let machine = self.machine.name().to_string();
        match reply {
            Response::TimedOut => Error::Timeout {
                what: format!("`{}` in machine {machine}", self.command_line()),
                after: self.timeout.unwrap_or_default(),
                hint: "the command was killed, with its process group".into(),
            },
            Response::Failed { step, errno } => self.step_error(step, errno),
            other => self.machine.agent_confused("running a command", &other),
        }
    }

    fn step_error(&self, step: Step, errno: i32) -> Error {
        let machine = self.machine.name().to_string();
        let source = std::io::Error::from_raw_os_error(errno);
        match step {
            Step::User => Error::NoSuchUser {
                machine,
                user: self.user.clone().unwrap_or_default(),
            },
            Step::Cwd => self.machine.guest_error(
                "changing directory to",
                self.cwd.as_deref().unwrap_or(Path::new("/")),
                source,
            ),
            Step::Spawn if errno == libc::ENOENT => Error::ProgramNotFound {
                machine,
                program: self.program.to_string_lossy().into(),
                path: PATH.into(),
            },
            _ => Error::io(
                format!("running `{}` in machine {machine}", self.command_line()),
                source,
            ),
        }
    }
}

impl Machine {
    /// A program to run inside the machine.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let out = machine.command("systemctl").args(["is-active", "dbus"]).output()?;
    /// println!("{}", String::from_utf8_lossy(&out.stdout));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command<'_> {
        Command::new(self, program.as_ref())
    }

    /// Runs `argv` inside the machine; an error unless it exits with 0.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.run(["systemctl", "is-active", "dbus"])?;
    /// # Ok(()) }
    /// ```
    pub fn run(&self, argv: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Result<Output> {
        let mut argv = argv.into_iter();
        let program = argv.next().ok_or_else(|| {
            Error::io(
                "run() needs a program",
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
        let mut cmd = self.command(program);
        cmd.args(argv);
        let output = cmd.output()?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(Error::Exec {
                machine: self.0.name.clone(),
                command: cmd.command_line(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Runs `/bin/sh -c script` and returns its standard output; an error unless it exits 0.
    /// Plain `sh`: no `pipefail`, so only a pipeline's last stage decides. [`Machine::succeed`]
    /// runs bash under `set -eo pipefail`, with a timeout.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// assert_eq!(machine.sh("echo $((6 * 7))")?, "42\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.run(["/bin/sh", "-c", script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
