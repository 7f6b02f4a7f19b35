//! The actions. Each looks before it leaps: it changes the system only when it differs from
//! the desired state, and says whether it did. Running an action twice reports no change the
//! second time (idempotence).

use std::os::unix::fs::PermissionsExt;

use serde::{Deserialize, Serialize};

use crate::system::{check, run};
use crate::{Error, Result};

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whether the system was changed.
    pub changed: bool,
    /// What was done, or found.
    pub summary: String,
}

impl Report {
    fn changed(summary: impl Into<String>) -> Report {
        Report {
            changed: true,
            summary: summary.into(),
        }
    }

    fn unchanged(summary: impl Into<String>) -> Report {
        Report {
            changed: false,
            summary: summary.into(),
        }
    }
}

/// Something that brings the system it runs on to a desired state.
pub trait Action {
    /// Applies the action.
    fn apply(&self) -> Result<Report>;
}

/// Applies `action`: a function to hand to `Machine::call` with the action as its argument.
pub fn apply<A: Action>(action: A) -> Result<Report> {
    action.apply()
}

/// Applies each step in turn, stopping at the first failure.
pub fn apply_all(steps: Vec<Step>) -> Result<Vec<Report>> {
    steps.iter().map(Action::apply).collect()
}

/// Any action, for a plan of several.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Step {
    /// See [`UserExists`].
    User(UserExists),
    /// See [`DebInstalled`].
    Deb(DebInstalled),
    /// See [`FileContent`].
    File(FileContent),
    /// See [`UnitRunning`].
    Unit(UnitRunning),
}

impl Action for Step {
    fn apply(&self) -> Result<Report> {
        match self {
            Step::User(a) => a.apply(),
            Step::Deb(a) => a.apply(),
            Step::File(a) => a.apply(),
            Step::Unit(a) => a.apply(),
        }
    }
}

/// A file with the given content and mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileContent {
    path: String,
    content: Vec<u8>,
    mode: u32,
}

impl FileContent {
    /// `path` holding `content`, mode 0644 unless set.
    pub fn new(path: &str, content: impl Into<Vec<u8>>) -> FileContent {
        FileContent {
            path: path.into(),
            content: content.into(),
            mode: 0o644,
        }
    }

    /// The file's permission bits.
    pub fn mode(mut self, mode: u32) -> FileContent {
        self.mode = mode;
        self
    }
}

impl Action for FileContent {
    fn apply(&self) -> Result<Report> {
        let current = std::fs::read(&self.path).ok();
        let mode = std::fs::metadata(&self.path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        if current.as_deref() == Some(&self.content[..]) && mode == Some(self.mode) {
            return Ok(Report::unchanged(format!("{} is up to date", self.path)));
        }
        std::fs::write(&self.path, &self.content)
            .map_err(|e| Error(format!("writing {}: {e}", self.path)))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode))?;
        Ok(Report::changed(format!(
            "wrote {} (mode {:o})",
            self.path, self.mode
        )))
    }
}

/// A `.deb` file installed, at its version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DebInstalled {
    deb: String,
}

impl DebInstalled {
    /// The package in `deb`, a path on the system.
    pub fn from_file(deb: &str) -> DebInstalled {
        DebInstalled { deb: deb.into() }
    }
}

impl Action for DebInstalled {
    fn apply(&self) -> Result<Report> {
        let field = |name: &str| check(&["dpkg-deb", "--field", &self.deb, name]);
        let (package, version) = (
            field("Package")?.trim().to_string(),
            field("Version")?.trim().to_string(),
        );
        let installed = run(&[
            "dpkg-query",
            "--show",
            "--showformat=${Status} ${Version}",
            &package,
        ])?;
        if installed.status.success()
            && installed.stdout == format!("install ok installed {version}").as_bytes()
        {
            return Ok(Report::unchanged(format!(
                "{package} {version} is installed"
            )));
        }
        check(&["dpkg", "--install", &self.deb])?;
        Ok(Report::changed(format!("installed {package} {version}")))
    }
}

/// A systemd unit installed from given contents, enabled and started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRunning {
    name: String,
    contents: String,
    enabled: bool,
}

impl UnitRunning {
    /// Unit `name` (e.g. `hello.service`) with these contents, started and enabled.
    pub fn new(name: &str, contents: &str) -> UnitRunning {
        UnitRunning {
            name: name.into(),
            contents: contents.into(),
            enabled: true,
        }
    }

    /// Whether to enable it at boot too (default yes).
    pub fn enabled(mut self, enabled: bool) -> UnitRunning {
        self.enabled = enabled;
        self
    }
}

impl Action for UnitRunning {
    fn apply(&self) -> Result<Report> {
        let path = format!("/etc/systemd/system/{}", self.name);
        let mut done = Vec::new();
        if FileContent::new(&path, self.contents.as_bytes())
            .apply()?
            .changed
        {
            check(&["systemctl", "daemon-reload"])?;
            done.push("installed");
        }
        let is = |verb: &str| {
            run(&["systemctl", verb, "--quiet", &self.name]).map(|o| o.status.success())
        };
        if self.enabled && !is("is-enabled")? {
            check(&["systemctl", "enable", "--quiet", &self.name])?;
            done.push("enabled");
        }
        if !is("is-active")? {
            check(&["systemctl", "start", &self.name])?;
            done.push("started");
        }
        if done.is_empty() {
            Ok(Report::unchanged(format!("{} is running", self.name)))
        } else {
            Ok(Report::changed(format!(
                "{}: {}",
                self.name,
                done.join(", ")
            )))
        }
    }
}

/// A user account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserExists {
    name: String,
    system: bool,
}

impl UserExists {
    /// A regular user with a home directory.
    pub fn regular(name: &str) -> UserExists {
        UserExists {
            name: name.into(),
            system: false,
        }
    }

    /// A system user, without a home directory or login shell.
    pub fn system(name: &str) -> UserExists {
        UserExists {
            name: name.into(),
            system: true,
        }
    }
}

impl Action for UserExists {
    fn apply(&self) -> Result<Report> {
        if run(&["getent", "passwd", &self.name])?.status.success() {
            return Ok(Report::unchanged(format!("user {} exists", self.name)));
        }
        let args: &[&str] = if self.system {
            &[
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ]
        } else {
            &["useradd", "--create-home", "--shell", "/bin/bash"]
        };
        let mut argv = args.to_vec();
        argv.push(&self.name);
        check(&argv)?;
        Ok(Report::changed(format!("created user {}", self.name)))
    }
}
