//! Waiting for the system instead of sleeping, and looking at its state as testinfra does:
//! units, the system's state, sockets, packages and users. Every wait has a timeout, and its
//! error carries what is needed to debug it (the unit's status and journal, the failed
//! units, the sockets that do listen).

use std::path::Path;
use std::time::{Duration, Instant};

use super::lifecycle::Machine;
use crate::error::{Error, Result};

/// How often a wait looks again, at first; it backs off to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);

/// Polls `check` until it says done (`Some`), backing off, until `timeout`; in a `wait` span
/// that says for `what`.
pub(super) fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let _wait = wait_span(what, timeout).entered();
    let deadline = Instant::now() + timeout;
    let mut pause = POLL_MIN;
    loop {
        if let Some(done) = check()? {
            return Ok(Some(done));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The span of a wait: what for, and for how long at most.
pub(super) fn wait_span(what: &str, timeout: Duration) -> tracing::Span {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    tracing::debug_span!("wait", what, timeout_ms)
}

impl Machine {
    /// Calls `connect(arg)` in the machine until it succeeds (`None`) or `timeout` passes
    /// (`Some` of its last error).
    fn until_connected<F, A>(&self, timeout: Duration, connect: F, arg: A) -> Result<Option<String>>
    where
        F: Fn(A) -> std::result::Result<(), String> + Copy,
        A: serde::Serialize + serde::de::DeserializeOwned + Clone,
    {
        let mut last = String::new();
        let what = std::any::type_name::<F>();
        let done = poll(what, timeout, || match self.call(connect, arg.clone())? {
            Ok(()) => Ok(Some(())),
            Err(e) => {
                last = e;
                Ok(None)
            }
        })?;
        Ok(done.is_none().then_some(last))
    }

    /// Waits until the system has finished starting up (`systemctl is-system-running --wait`):
    /// an error unless it is `running`, naming the failed units with their journals.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.wait_until_running(std::time::Duration::from_secs(30))?;
    /// # Ok(()) }
    /// ```
    pub fn wait_until_running(&self, timeout: Duration) -> Result<()> {
        let out = self
            .command("systemctl")
            .args(["is-system-running", "--wait"])
            .timeout(timeout.max(Duration::from_secs(1)))
            .output();
        let state = match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
            Err(Error::Timeout { .. }) => "still starting".to_string(),
            Err(e) => return Err(e),
        };
        if state == "running" {
            return Ok(());
        }
        let failed = self
            .sh("systemctl --failed --no-legend --plain | cut -d' ' -f1")
            .unwrap_or_default();
        let failed: Vec<&str> = failed.split_whitespace().collect();
        let detail = failed
            .iter()
            .map(|u| format!("{u}:\n{}", self.journal_tail(u)))
            .collect::<Vec<_>>()
            .join("\n");
        Err(Error::NotReady {
            machine: self.name().to_string(),
            what: "the system".into(),
            problem: format!(
                "is {state:?}, not \"running\"; failed units: {}",
                if failed.is_empty() {
                    "none".to_string()
                } else {
                    failed.join(", ")
                }
            ),
            detail: detail.into(),
        })
    }

    /// Waits until something accepts TCP connections on `port` of the machine, at any address
    /// it listens on (tried from inside the machine): `machine.port(port).timeout(timeout)
    /// .wait_open()`. The error lists what listens, with addresses. [`Machine::port`] waits
    /// from another machine or from the test process, and for a port to close.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.run(["apt-get", "install", "-y", "nginx"])?;
    /// machine.wait_for_port(80, std::time::Duration::from_secs(10))?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_port(&self, port: u16, timeout: Duration) -> Result<()> {
        self.port(port).timeout(timeout).wait_open()
    }

    /// Waits until something accepts connections on the Unix socket at `path` in the machine.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.wait_for_socket("/run/dbus/system_bus_socket", std::time::Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_socket(&self, path: impl AsRef<Path>, timeout: Duration) -> Result<()> {
        let path = path.as_ref().to_string_lossy().into_owned();
        let connect = |p: String| {
            std::os::unix::net::UnixStream::connect(&p)
                .map(drop)
                .map_err(|e| e.to_string())
        };
        let Some(last) = self.until_connected(timeout, connect, path.clone())? else {
            return Ok(());
        };
        let what_is_there = |p: String| match std::fs::symlink_metadata(&p) {
            Ok(meta) => format!("{p} is a {:?}", meta.file_type()),
            Err(e) => format!("{p}: {e}"),
        };
        let found = self.call(what_is_there, path.clone())?;
        Err(Error::NotReady {
            machine: self.name().to_string(),
            what: path,
            problem: format!(
                "accepts no connection after {:.1} s (last: {last})",
                timeout.as_secs_f64()
            ),
            detail: found.into(),
        })
    }

    /// The installed version of a Debian package, or `None` if it is not installed.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let systemd = machine.package_version("systemd")?;
    /// assert!(systemd.as_deref().is_some_and(|v| v.starts_with("252")), "{systemd:?}");
    /// # Ok(()) }
    /// ```
    pub fn package_version(&self, package: &str) -> Result<Option<String>> {
        let out = self
            .command("dpkg-query")
            .args([
                "--show",
                "--showformat=${Status}\t${Version}",
                "--",
                package,
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .strip_prefix("install ok installed\t")
            .map(|v| v.trim().to_string()))
    }

    /// Whether the machine has this user (through its NSS, as `getent passwd`).
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// assert!(machine.user_exists("root")?);
    /// # Ok(()) }
    /// ```
    pub fn user_exists(&self, user: &str) -> Result<bool> {
        // Its passwd line is not for the terminal.
        let out = self
            .command("getent")
            .args(["passwd", "--", user])
            .output()?;
        Ok(out.status.success())
    }
}
