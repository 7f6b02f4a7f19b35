//! systemd units, of the system's manager or of a user's: their state, any property, and
//! waiting for them to be active, with their status and journal when they are not.

use std::time::Duration;

use super::lifecycle::Machine;
use super::wait::poll;
use crate::error::{Error, Result};

/// Journal lines an error carries.
const JOURNAL_LINES: usize = 20;

/// The state of a systemd unit, as `systemctl show` gives it.
///
/// `Display` shows all of it, for assertion messages:
///
/// ```no_run
/// # #[nspawn::test(chroot = "bookworm")]
/// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
/// let dbus = machine.unit("dbus.socket")?;
/// assert!(dbus.is_active(), "{dbus}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// The unit's name.
    pub name: String,
    /// `LoadState`: `loaded`, `not-found`, `masked`...
    pub load: String,
    /// `ActiveState`: `active`, `inactive`, `activating`, `failed`...
    pub active: String,
    /// `SubState`: `running`, `exited`, `listening`, `dead`...
    pub sub: String,
    /// `UnitFileState`: `enabled`, `disabled`, `static`, `masked`... (empty for transient units)
    pub enabled: String,
    /// `Result` of the last run: `success`, `exit-code`, `signal`, `timeout`...
    pub result: String,
}

impl UnitState {
    /// Whether the unit is active.
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }

    /// Whether the unit is enabled (started at boot).
    pub fn is_enabled(&self) -> bool {
        self.enabled == "enabled"
    }

    /// Whether the unit failed.
    pub fn is_failed(&self) -> bool {
        self.active == "failed"
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}, {} ({}), {}, result {}",
            self.name,
            self.load,
            self.active,
            self.sub,
            if self.enabled.is_empty() {
                "no unit file state"
            } else {
                &self.enabled
            },
            self.result
        )
    }
}

/// Whose service manager a unit belongs to.
#[derive(Debug, Clone)]
enum Manager {
    System,
    /// A user's (`systemctl --user`), with their uid.
    User {
        name: String,
        uid: u32,
    },
}

impl Machine {
    /// The state of a unit.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let journald = machine.unit("systemd-journald.service")?;
    /// assert!(journald.is_active(), "{journald}");
    /// # Ok(()) }
    /// ```
    pub fn unit(&self, name: &str) -> Result<UnitState> {
        self.unit_of(&Manager::System, name)
    }

    /// The state of a unit of `user`'s service manager (`systemctl --user`), which is started
    /// if it does not run (as lingering would). Where the chroot has no libpam-systemd, a
    /// drop-in in `/run` gives user managers the `XDG_RUNTIME_DIR` it would set.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.succeed("useradd -m alice")?;
    /// let target = machine.user_unit("alice", "default.target")?;
    /// assert!(target.is_active(), "{target}");
    /// # Ok(()) }
    /// ```
    pub fn user_unit(&self, user: &str, name: &str) -> Result<UnitState> {
        self.unit_of(&self.user_manager(user)?, name)
    }

    /// Any property of a unit, as `systemctl show --property` gives it (empty if the unit has
    /// no such property).
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let pid = machine.unit_property("systemd-journald.service", "MainPID")?;
    /// assert_ne!(pid, "0");
    /// let restarts = machine.unit_property("systemd-journald.service", "NRestarts")?;
    /// assert_eq!(restarts, "0");
    /// # Ok(()) }
    /// ```
    pub fn unit_property(&self, unit: &str, property: &str) -> Result<String> {
        self.property_of(&Manager::System, unit, property)
    }

    /// Any property of a unit of `user`'s service manager (see [`Machine::user_unit`]).
    pub fn user_unit_property(&self, user: &str, unit: &str, property: &str) -> Result<String> {
        self.property_of(&self.user_manager(user)?, unit, property)
    }

    /// Waits until `unit` is active. Fails at once if it fails, and after `timeout` if it is
    /// still not active; the error carries its status and the tail of its journal.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.run(["systemctl", "start", "--no-block", "systemd-hostnamed"])?;
    /// machine.wait_for_unit("systemd-hostnamed.service", std::time::Duration::from_secs(10))?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<UnitState> {
        self.wait_for_unit_of(&Manager::System, unit, timeout)
    }

    /// Waits until `unit` of `user`'s service manager is active, as
    /// [`Machine::wait_for_unit`] does, with the machine's
    /// [`wait_timeout`](Machine::wait_timeout).
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// machine.succeed("useradd -m alice")?;
    /// machine.wait_for_user_unit("alice", "default.target")?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_user_unit(&self, user: &str, unit: &str) -> Result<UnitState> {
        let manager = self.user_manager(user)?;
        self.wait_for_unit_of(&manager, unit, self.wait_timeout())
    }

    /// `systemctl` for `manager`: a user's runs as that user, on their manager's own socket
    /// (no session bus needed).
    fn systemctl(&self, manager: &Manager) -> super::command::Command<'_> {
        let mut cmd = self.command("systemctl");
        if let Manager::User { name, uid } = manager {
            cmd.user(name)
                .env("XDG_RUNTIME_DIR", format!("/run/user/{uid}"))
                .arg("--user");
        }
        cmd
    }

    /// `user`'s service manager, started if it does not run.
    fn user_manager(&self, user: &str) -> Result<Manager> {
        let out = self.command("id").args(["-u", "--", user]).output()?;
        let uid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|_| out.status.success())
            .ok_or_else(|| Error::NoSuchUser {
                machine: self.name().into(),
                user: user.into(),
            })?;
        self.give_user_managers_their_runtime_dir()?;
        self.run(["systemctl", "start", &format!("user@{uid}.service")])?;
        Ok(Manager::User {
            name: user.into(),
            uid,
        })
    }

    /// Without libpam-systemd (a minimal chroot has none), nothing sets a user manager's
    /// `XDG_RUNTIME_DIR` and it exits at once. A drop-in in `/run` (gone at the next boot)
    /// sets what pam_systemd would.
    fn give_user_managers_their_runtime_dir(&self) -> Result<()> {
        const DROP_IN: &str = "/run/systemd/system/user@.service.d/50-nspawn-runtime-dir.conf";
        if self.try_exists(DROP_IN)? {
            return Ok(());
        }
        self.create_dir_all("/run/systemd/system/user@.service.d")?;
        self.write(
            DROP_IN,
            "[Service]\nEnvironment=XDG_RUNTIME_DIR=/run/user/%i\n",
        )?;
        self.run(["systemctl", "daemon-reload"]).map(drop)
    }

    fn unit_of(&self, manager: &Manager, name: &str) -> Result<UnitState> {
        let props = "LoadState,ActiveState,SubState,UnitFileState,Result";
        let out = self
            .systemctl(manager)
            .args(["show", "--property", props, "--", name])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_default()
                .to_string()
        };
        if !out.status.success() || get("LoadState").is_empty() {
            return Err(self.unit_error(manager, name, "cannot be shown"));
        }
        Ok(UnitState {
            name: name.to_string(),
            load: get("LoadState"),
            active: get("ActiveState"),
            sub: get("SubState"),
            enabled: get("UnitFileState"),
            result: get("Result"),
        })
    }

    fn property_of(&self, manager: &Manager, unit: &str, property: &str) -> Result<String> {
        let out = self
            .systemctl(manager)
            .args(["show", "--value", "--property", property, "--", unit])
            .output()?;
        if !out.status.success() {
            return Err(self.unit_error(manager, unit, &format!("has no property {property}")));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string())
    }

    fn wait_for_unit_of(
        &self,
        manager: &Manager,
        unit: &str,
        timeout: Duration,
    ) -> Result<UnitState> {
        let mut last = None;
        let done = poll(unit, timeout, || {
            let state = self.unit_of(manager, unit)?;
            let settled = state.is_active() || state.is_failed() || state.load != "loaded";
            last = Some(state.clone());
            Ok(settled.then_some(state))
        })?;
        match done {
            Some(state) if state.is_active() => Ok(state),
            Some(state) => Err(self.unit_error(manager, unit, &format!("is not active: {state}"))),
            None => {
                let state = last.map(|s| s.to_string()).unwrap_or_default();
                let problem = format!(
                    "is still not active after {:.1} s: {state}",
                    timeout.as_secs_f64()
                );
                Err(self.unit_error(manager, unit, &problem))
            }
        }
    }

    /// The error for a unit, with its status and journal.
    fn unit_error(&self, manager: &Manager, unit: &str, problem: &str) -> Error {
        let status = self
            .systemctl(manager)
            .args(["status", "--no-pager", "--lines=0", "--", unit])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default();
        let what = match manager {
            Manager::System => format!("unit {unit}"),
            Manager::User { name, .. } => format!("unit {unit} of user {name}"),
        };
        Error::NotReady {
            machine: self.name().to_string(),
            what,
            problem: problem.to_string(),
            detail: format!(
                "{}\njournal:\n{}",
                status.trim_end(),
                self.journal_of(manager, unit)
            )
            .into(),
        }
    }

    /// The tail of the system journal for a system unit.
    pub(super) fn journal_tail(&self, unit: &str) -> String {
        self.journal_of(&Manager::System, unit)
    }

    fn journal_of(&self, manager: &Manager, unit: &str) -> String {
        let lines = JOURNAL_LINES.to_string();
        let which = match manager {
            Manager::System => "--unit",
            Manager::User { .. } => "--user-unit",
        };
        let mut cmd = self.command("journalctl");
        cmd.args([
            "--no-pager",
            "--output=short",
            "--lines",
            &lines,
            which,
            unit,
        ]);
        if let Manager::User { uid, .. } = manager {
            cmd.arg(format!("_UID={uid}"));
        }
        cmd.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}
