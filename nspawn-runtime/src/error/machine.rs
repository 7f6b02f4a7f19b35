//! What a test sees: machines, commands, calls, waits and networks, and the errors of the layers
//! below, wrapped.

use std::path::PathBuf;
use std::process::ExitStatus;

use super::chroot::ChrootError;
use super::host::HostError;
use super::settings::SettingsError;
use super::show::tail_block;

/// Everything that can go wrong while a test drives machines.
///
/// Chroot builds, settings and the host have error types of their own; `?` wraps them here,
/// and their messages are shown unchanged.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A machine did not boot.
    #[error("machine {machine} (chroot {chroot}) did not boot: {reason}\nlast console lines of {log}:{}", tail_block(tail))]
    #[non_exhaustive]
    Boot {
        /// Machine name.
        machine: String,
        /// The chroot it was booted from.
        chroot: String,
        /// What went wrong, and what to do.
        reason: String,
        /// The console log.
        log: PathBuf,
        /// The last console lines.
        tail: Box<str>,
    },

    /// The host ran out of inotify instances while a machine booted.
    #[error(
        "machine {machine} stalled at boot: the host ran out of inotify instances \
         (\"Too many open files\"; fs.inotify.max_user_instances is {limit}). Run fewer machines \
         at once (NSPAWN_MAX_MACHINES) or raise it: sysctl -w fs.inotify.max_user_instances=8192\n\
         console log: {log}"
    )]
    #[non_exhaustive]
    InotifyExhausted {
        /// Machine name.
        machine: String,
        /// The current value of `fs.inotify.max_user_instances`.
        limit: String,
        /// The console log.
        log: PathBuf,
    },

    /// A command inside a machine exited unsuccessfully.
    #[error(
        "`{command}` in machine {machine} failed ({status}){}",
        tail_block(stderr)
    )]
    #[non_exhaustive]
    Exec {
        /// Machine name.
        machine: String,
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard error.
        stderr: String,
    },

    /// A script that had to fail exited 0 (see [`crate::Machine::fail`]).
    #[error(
        "`{command}` in machine {machine} succeeded, but had to fail; it printed:{}",
        tail_block(output)
    )]
    #[non_exhaustive]
    Succeeded {
        /// Machine name.
        machine: String,
        /// The script.
        command: String,
        /// Its standard output and error.
        output: String,
    },

    /// A program to run inside the machine does not exist there.
    #[error(
        "`{program}` was not found in machine {machine} (PATH={path}); add its package to the \
         chroot's `include`, or install it in the test first"
    )]
    #[non_exhaustive]
    ProgramNotFound {
        /// Machine name.
        machine: String,
        /// The program.
        program: String,
        /// The PATH it was looked up in.
        path: String,
    },

    /// A user asked for with [`crate::Command::user`] does not exist in the machine.
    #[error("user {user:?} does not exist in machine {machine} (not in its /etc/passwd)")]
    #[non_exhaustive]
    NoSuchUser {
        /// Machine name.
        machine: String,
        /// The user name.
        user: String,
    },

    /// Something took longer than its timeout.
    #[error("{what} timed out after {:.1} s{}", after.as_secs_f64(), hint_block(hint))]
    #[non_exhaustive]
    Timeout {
        /// What was waited for.
        what: String,
        /// The timeout.
        after: std::time::Duration,
        /// What to do about it.
        hint: String,
    },

    /// A command exited, but something it started in the background still held its output
    /// open, so its output could not be read to the end.
    #[error(
        "`{command}` in machine {machine} exited ({status}), but a process it left running still \
         holds its stdout or stderr open; last output lines: {:?}. Redirect the background \
         job's output (`cmd >/dev/null 2>&1 &`) or start it as a unit (`systemd-run`)",
        crate::text::tail(stdout, 5)
    )]
    #[non_exhaustive]
    OutputHeldOpen {
        /// The command line.
        command: String,
        /// The machine's name.
        machine: String,
        /// How the command itself ended.
        status: std::process::ExitStatus,
        /// Its standard output up to then, lossily decoded.
        stdout: String,
        /// Its standard error up to then, lossily decoded.
        stderr: String,
    },

    /// A program or call of a machine sent more than the test process keeps.
    #[error(
        "{what} in machine {machine}: its {stream} is larger than {limit} bytes, the most the \
         test process keeps. {}",
        too_large_hint(.stream)
    )]
    #[non_exhaustive]
    TooLarge {
        /// The command line or function.
        what: String,
        /// The machine's name.
        machine: String,
        /// `stdout`, `stderr`, `result` or `file`.
        stream: String,
        /// The limit in bytes.
        limit: usize,
    },

    /// A machine's guest file system could not be accessed.
    #[error("{op} {path} in machine {machine}: {source}")]
    #[non_exhaustive]
    Guest {
        /// What was tried.
        op: &'static str,
        /// The path inside the machine.
        path: PathBuf,
        /// Machine name.
        machine: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The machine's agent (the process that serves its files and commands) failed.
    #[error(
        "the agent of machine {machine} failed {during}: {reason}. The next call on the \
         machine starts a new agent"
    )]
    #[non_exhaustive]
    Agent {
        /// Machine name.
        machine: String,
        /// The call that failed, e.g. "running `sleep 60`".
        during: String,
        /// What happened to it.
        reason: String,
    },

    /// A function run with [`crate::Machine::call`] panicked.
    #[error(
        "`{function}` panicked in machine {machine}{}: {}",
        location.as_ref().map(|l| format!(" at {}", crate::text::shown(l))).unwrap_or_default(),
        crate::text::shown(message)
    )]
    #[non_exhaustive]
    Panicked {
        /// Machine name.
        machine: String,
        /// The function, as Rust names its type.
        function: String,
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, if it had one.
        location: Option<String>,
    },

    /// A function run with [`crate::Machine::call`] did not return: its process was killed
    /// by a signal, exited, or its argument or result could not be carried across.
    #[error("calling `{function}` in machine {machine} failed: {reason}")]
    #[non_exhaustive]
    Call {
        /// Machine name.
        machine: String,
        /// The function, as Rust names its type.
        function: String,
        /// What happened, e.g. "its process was killed by signal 11 (SIGSEGV)".
        reason: String,
        /// The signal that killed the call's process, if one did.
        signal: Option<i32>,
    },

    /// A unit, a socket or the system did not reach the state waited for (see
    /// [`crate::Machine::wait_for_unit`] and its siblings).
    #[error("{what} in machine {machine} {problem}{}", tail_block(detail))]
    #[non_exhaustive]
    NotReady {
        /// Machine name.
        machine: String,
        /// What was waited for: "unit nginx.service", "127.0.0.1:80", "the system".
        what: String,
        /// What is wrong, with the state found.
        problem: String,
        /// What helps to debug it: the unit's status and journal, the failed units, the
        /// sockets that do listen.
        detail: Box<str>,
    },

    /// A bind asked for by test code that runs as the invoking user, of a host path that
    /// user cannot reach.
    #[error("refusing to bind {host} into the machine: {reason}")]
    #[non_exhaustive]
    BindRefused {
        /// The host path.
        host: PathBuf,
        /// Why.
        reason: String,
    },

    /// The backend asked for with `NSPAWN_BACKEND` cannot run here.
    #[error("the {backend} backend cannot be used: {reason}")]
    #[non_exhaustive]
    BackendUnavailable {
        /// The backend asked for.
        backend: String,
        /// Why it is unavailable.
        reason: String,
    },

    /// User-namespaced machines were asked for (`NSPAWN_PRIVATE_USERS=yes`) and this host
    /// cannot run them.
    #[error(
        "user-namespaced machines cannot run here: {reason}. Unset NSPAWN_PRIVATE_USERS (or set \
         it to auto) to fall back to privileged machines, whose root is the host's root; \
         `cargo nspawn doctor` says more"
    )]
    #[non_exhaustive]
    PrivateUsersUnavailable {
        /// What the host lacks.
        reason: String,
    },

    /// A machine's network could not be set up (or was asked for wrongly).
    #[error(
        "network {network} of machine {machine}: {reason}\n(`cargo nspawn doctor` shows what \
         the host has for networks; network = \"host\" or NSPAWN_NETWORK=host boots without \
         one of its own)"
    )]
    #[non_exhaustive]
    Network {
        /// The network asked for (`zone:web`, `isolated`, ...).
        network: String,
        /// Machine name.
        machine: String,
        /// What failed, and what to do about it.
        reason: String,
    },

    /// The machine was already stopped, or its boot failed earlier.
    #[error("machine {machine} is not running: {reason}")]
    #[non_exhaustive]
    NotRunning {
        /// Machine name.
        machine: String,
        /// Why.
        reason: String,
    },

    /// The chroot asked for could not be found or built.
    #[error(transparent)]
    Chroot(#[from] ChrootError),

    /// `NSPAWN_*` variables do not parse.
    #[error(transparent)]
    Settings(#[from] SettingsError),

    /// The host failed: a program, privileges, I/O or host state.
    #[error(transparent)]
    Host(#[from] HostError),
}

fn hint_block(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(": {hint}")
    }
}

impl Error {
    /// Wraps a host I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HostError::io(context, source).into()
    }
}

/// `?` on a host I/O error in a test that returns [`crate::Result`]. The runtime itself always
/// says what it was doing ([`Error::io`]); this has only the error to go by.
///
/// ```no_run
/// #[nspawn::test(chroot = "bookworm")]
/// fn config_is_installed(machine: &nspawn::Machine) -> nspawn::Result<()> {
///     let config = std::fs::read_to_string("tests/fixtures/app.conf")?;
///     machine.write("/etc/app.conf", config)?;
///     Ok(())
/// }
/// ```
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Error {
        Error::io("host I/O in the test", source)
    }
}

/// What to do about [`Error::TooLarge`]: a file is copied out; output has a limit to raise.
fn too_large_hint(stream: &str) -> &'static str {
    if stream == "file" {
        "Use `copy_out`, which streams it to a host file"
    } else {
        "Raise the limit with `.output_limit(bytes)` on the command or call, or write it to a \
         file in the machine and `copy_out` that to the host"
    }
}
