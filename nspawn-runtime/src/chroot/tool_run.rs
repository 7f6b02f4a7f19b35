//! Running a build's tools: each inside the new tree or on it, its output appended to the
//! chroot's log with its latest line shown, and SIGINT, SIGTERM or SIGHUP passed on to its
//! whole process group, so that an interrupted build ends its tools and removes its tree.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use super::progress::Item;
use crate::host::cgroup::MachineCgroup;
use crate::host::tools;

/// Runs `script` inside `tree`, not booted, in a cgroup of its own sized for the host.
pub(super) fn run_in_tree(
    tree: &Path,
    script: &str,
    log: &Path,
    item: &Item,
) -> std::result::Result<(), String> {
    let name = format!("setup-{}", uuid::Uuid::new_v4().simple());
    let cgroup = MachineCgroup::with_limits(&name, crate::host::limits::Limits::for_host(1));
    let result = run_logged_in(&mut setup_command(tree, script), log, item, Some(&cgroup));
    cgroup.remove();
    result
}

/// Runs one setup script inside the new tree, not booted.
fn setup_command(tree: &Path, script: &str) -> Command {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args(["--quiet", "--register=no", "--keep-unit", "--console=pipe"])
        .arg(format!(
            "--machine=nspawn-setup-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .arg(format!("--directory={}", tree.display()))
        .args(["--", "/bin/sh", "-ec", script]);
    cmd
}

pub(super) fn run_logged(
    cmd: &mut Command,
    log: &Path,
    item: &Item,
) -> std::result::Result<(), String> {
    run_logged_in(cmd, log, item, None)
}

/// Runs a tool with its output appended to `log`, showing its latest line, and forwarding an
/// interrupt to its whole process group.
fn run_logged_in(
    cmd: &mut Command,
    log: &Path,
    item: &Item,
    cgroup: Option<&MachineCgroup>,
) -> std::result::Result<(), String> {
    use std::io::Write;
    let line = tools::command_line(cmd);
    let mut out = File::options()
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let _ = writeln!(out, "$ {line}");
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(cg) = cgroup {
        let enter = cg.child_hook();
        // SAFETY: the hook only makes raw system calls.
        unsafe {
            cmd.pre_exec(move || {
                enter();
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not run `{line}`: {e}"))?;
    let status = supervise(&mut child, log, item)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

fn supervise(
    child: &mut Child,
    log: &Path,
    item: &Item,
) -> std::result::Result<std::process::ExitStatus, String> {
    let mut last_detail = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if let Some(sig) = interrupted() {
            terminate_group(child);
            return Err(format!("interrupted by {sig}"));
        }
        if last_detail.elapsed() > Duration::from_millis(250) {
            item.detail(&last_line(log));
            last_detail = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate_group(child: &mut Child) {
    let group = Pid::from_raw(-(child.id() as i32));
    let _ = signal::kill(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = signal::kill(group, Signal::SIGKILL);
    let _ = child.wait();
}

fn last_line(log: &Path) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    crate::text::strip_ansi(line).chars().take(100).collect()
}

static INTERRUPT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPT.store(sig, Ordering::SeqCst);
}

fn interrupted() -> Option<Signal> {
    match INTERRUPT.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP while builds run, so they can end their tools and
/// remove their half-built trees; restores the actions it replaced after, whole (the machine
/// registry's, signal-hook's, when a test process builds a chroot on demand: its handler takes
/// `siginfo`, which a plain `signal(2)` round trip would lose).
pub(super) struct SignalGuard {
    previous: Vec<(Signal, SigAction)>,
}

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

impl SignalGuard {
    pub(super) fn install() -> SignalGuard {
        let previous = SIGNALS
            .into_iter()
            .filter_map(|sig| {
                let ours = SigAction::new(
                    SigHandler::Handler(on_signal),
                    SaFlags::SA_RESTART,
                    SigSet::empty(),
                );
                // SAFETY: the handler only stores to an atomic.
                let old = unsafe { signal::sigaction(sig, &ours) };
                old.ok().map(|old| (sig, old))
            })
            .collect();
        SignalGuard { previous }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restoring the action this guard replaced, as it was.
            let _ = unsafe { signal::sigaction(*sig, old) };
        }
        if let Some(sig) = interrupted() {
            // Die of the signal that interrupted us, now that everything is cleaned up: through
            // the handler it had (the registry's stops the machines first), or by default,
            // also when it was ignored before (the build was interrupted all the same).
            let ignored = self
                .previous
                .iter()
                .any(|(s, old)| *s == sig && old.handler() == SigHandler::SigIgn);
            if ignored {
                // SAFETY: the default disposition.
                let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
            }
            let _ = signal::raise(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_skips_blank_lines_and_colours() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), "one\n\u{1b}[1mtwo\u{1b}[0m\n\n").unwrap();
        assert_eq!(last_line(tmp.path()), "two");
    }
}
