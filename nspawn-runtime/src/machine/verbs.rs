//! The verbs of the NixOS test driver: a script that must succeed (giving its output) or
//! fail, retried until it does, and a wait for a file. Each has a default timeout: the
//! machine's (`MachineBuilder::wait_timeout`), else the run's (`NSPAWN_WAIT_TIMEOUT`), else
//! 60 s.
//!
//! Scripts run as `bash -c` under `set -eo pipefail`: a failing command or pipeline stage
//! fails the script, as a test expects. `Machine::sh` stays plain `/bin/sh -c`, as its name
//! says.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use super::lifecycle::Machine;
use crate::error::{Error, Result};

/// How often a retry looks again, at first; it backs off to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

impl Machine {
    /// The default timeout of the verbs below.
    pub fn wait_timeout(&self) -> Duration {
        self.0.wait_timeout
    }

    /// Runs `script` under `bash -c` with `set -eo pipefail`, at most [`wait_timeout`] long;
    /// its standard output, or an error with its status and standard error.
    ///
    /// [`wait_timeout`]: Machine::wait_timeout
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let release = machine.succeed("grep VERSION_CODENAME /etc/os-release | cut -d= -f2")?;
    /// assert_eq!(release, "bookworm\n");
    /// // A failing stage fails the whole pipeline, unlike `sh`:
    /// assert!(machine.succeed("false | cat").is_err());
    /// # Ok(()) }
    /// ```
    pub fn succeed(&self, script: &str) -> Result<String> {
        let out = self.script(script, self.0.wait_timeout)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(Error::Exec {
            machine: self.name().to_string(),
            command: script.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `script` as [`succeed`](Machine::succeed) does, and expects it to fail: its
    /// standard output and error, or an error if it exited 0.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let refused = machine.fail("su -s /bin/sh nobody -c 'cat /etc/shadow'")?;
    /// assert!(refused.contains("Permission denied"));
    /// # Ok(()) }
    /// ```
    pub fn fail(&self, script: &str) -> Result<String> {
        let out = self.script(script, self.0.wait_timeout)?;
        let printed = printed(&out);
        if out.status.success() {
            return Err(Error::Succeeded {
                machine: self.name().to_string(),
                command: script.to_string(),
                output: printed,
            });
        }
        Ok(printed)
    }

    /// Runs `script` until it succeeds, backing off from 50 ms to 1 s between tries, for at
    /// most [`wait_timeout`](Machine::wait_timeout); its standard output, or an error with the
    /// last try's output.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.run(["systemctl", "start", "--no-block", "systemd-hostnamed"])?;
    /// machine.wait_until_succeeds("busctl status org.freedesktop.hostname1 >/dev/null")?;
    /// # Ok(()) }
    /// ```
    pub fn wait_until_succeeds(&self, script: &str) -> Result<String> {
        self.retry(script, true)
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `script` until it fails, as [`wait_until_succeeds`] does; its standard output and
    /// error.
    ///
    /// [`wait_until_succeeds`]: Machine::wait_until_succeeds
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.run(["systemctl", "stop", "--no-block", "systemd-logind"])?;
    /// machine.wait_until_fails("systemctl is-active systemd-logind")?;
    /// # Ok(()) }
    /// ```
    pub fn wait_until_fails(&self, script: &str) -> Result<String> {
        self.retry(script, false).map(|out| printed(&out))
    }

    /// Waits until `path` exists in the machine, for at most
    /// [`wait_timeout`](Machine::wait_timeout).
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.run(["systemd-run", "--on-active=2", "touch", "/run/ready"])?;
    /// machine.wait_for_file("/run/ready")?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let deadline = Instant::now() + self.0.wait_timeout;
        let mut pause = RETRY_MIN;
        while !self.exists(path) {
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    machine: self.name().to_string(),
                    what: format!("file {}", path.display()),
                    problem: format!(
                        "did not appear within {:.0} s",
                        self.0.wait_timeout.as_secs_f64()
                    ),
                    detail: "".into(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_MAX);
        }
        Ok(())
    }

    /// `script` under `bash -c` with `set -eo pipefail`, run once, its output captured.
    fn script(&self, script: &str, timeout: Duration) -> Result<Output> {
        self.command("bash")
            .args(["-c", &format!("set -eo pipefail\n{script}")])
            .timeout(timeout)
            .output()
    }

    /// Runs `script` until its success is `success`, within the wait timeout; the try that
    /// got there, or an error with the last one's output.
    fn retry(&self, script: &str, success: bool) -> Result<Output> {
        let _wait = super::wait::wait_span(script, self.0.wait_timeout).entered();
        let deadline = Instant::now() + self.0.wait_timeout;
        let mut pause = RETRY_MIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self.script(script, left.max(Duration::from_secs(1)))?;
            if out.status.success() == success {
                return Ok(out);
            }
            if Instant::now() + pause >= deadline {
                return Err(Error::NotReady {
                    machine: self.name().to_string(),
                    what: format!("`{script}`"),
                    problem: format!(
                        "did not {} within {:.0} s (last try: {})",
                        if success { "succeed" } else { "fail" },
                        self.0.wait_timeout.as_secs_f64(),
                        out.status
                    ),
                    detail: printed(&out).into(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}

/// What a script printed: its standard output, then its standard error.
fn printed(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}
