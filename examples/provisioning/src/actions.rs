//! The actions. Each looks before it leaps: it changes the system only when it differs from
//! the desired state, and says whether it did. Running an action twice reports no change the
//! second time (idempotence).

use crate::{Result, Target};

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Something that brings a target to a desired state.
pub trait Action {
    /// Applies the action.
    fn apply(&self, target: &dyn Target) -> Result<Report>;
}

/// A file with the given content and mode.
#[derive(Debug, Clone)]
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
    fn apply(&self, target: &dyn Target) -> Result<Report> {
        let current = target.read_file(&self.path)?;
        let mode = match current {
            Some(_) => Some(u32::from_str_radix(
                target.check(&["stat", "-c", "%a", &self.path])?.trim(),
                8,
            )?),
            None => None,
        };
        if current.as_deref() == Some(&self.content[..]) && mode == Some(self.mode) {
            return Ok(Report::unchanged(format!("{} is up to date", self.path)));
        }
        target.write_file(&self.path, &self.content, self.mode)?;
        Ok(Report::changed(format!(
            "wrote {} (mode {:o})",
            self.path, self.mode
        )))
    }
}

/// A `.deb` file on the target installed, at its version.
#[derive(Debug, Clone)]
pub struct DebInstalled {
    deb: String,
}

impl DebInstalled {
    /// The package in `deb`, a path on the target.
    pub fn from_file(deb: &str) -> DebInstalled {
        DebInstalled { deb: deb.into() }
    }
}

impl Action for DebInstalled {
    fn apply(&self, target: &dyn Target) -> Result<Report> {
        let field = |name: &str| target.check(&["dpkg-deb", "--field", &self.deb, name]);
        let (package, version) = (
            field("Package")?.trim().to_string(),
            field("Version")?.trim().to_string(),
        );
        let installed = target.command(&[
            "dpkg-query",
            "--show",
            "--showformat=${Status} ${Version}",
            &package,
        ])?;
        if installed.success() && installed.stdout == format!("install ok installed {version}") {
            return Ok(Report::unchanged(format!(
                "{package} {version} is installed"
            )));
        }
        target.check(&["dpkg", "--install", &self.deb])?;
        Ok(Report::changed(format!("installed {package} {version}")))
    }
}

/// A systemd unit installed from given contents, enabled and started.
#[derive(Debug, Clone)]
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
    fn apply(&self, target: &dyn Target) -> Result<Report> {
        let path = format!("/etc/systemd/system/{}", self.name);
        let mut done = Vec::new();
        if FileContent::new(&path, self.contents.as_bytes())
            .apply(target)?
            .changed
        {
            target.check(&["systemctl", "daemon-reload"])?;
            done.push("installed");
        }
        let is = |verb: &str| {
            target
                .command(&["systemctl", verb, "--quiet", &self.name])
                .map(|o| o.success())
        };
        if self.enabled && !is("is-enabled")? {
            target.check(&["systemctl", "enable", "--quiet", &self.name])?;
            done.push("enabled");
        }
        if !is("is-active")? {
            target.check(&["systemctl", "start", &self.name])?;
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
#[derive(Debug, Clone)]
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
    fn apply(&self, target: &dyn Target) -> Result<Report> {
        if target.command(&["getent", "passwd", &self.name])?.success() {
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
        target.check(&argv)?;
        Ok(Report::changed(format!("created user {}", self.name)))
    }
}
