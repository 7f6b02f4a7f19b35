//! Every `NSPAWN_*` setting, read from the environment once per process, in one place.
//!
//! A value that does not parse is an error that names the variable and what it accepts: the
//! first machine of a run refuses to start (`get`), rather than the run going on with a
//! setting the user did not ask for. (`NSPAWN_USER` is read earlier still, before `main`: see
//! [`crate::host::privs`].)
//!
//! A leaf module: everything may read its settings here, and it depends on nothing of ours
//! but the error type.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::SettingsError;

/// Which machines to keep running after their tests, for debugging (`NSPAWN_KEEP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Stop every machine (the default).
    #[default]
    Never,
    /// Keep the machines of failed tests (`failed`).
    Failed,
    /// Keep every machine (`all`).
    All,
}

/// The backend asked for (`NSPAWN_BACKEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The systemd backend where it works, else the direct one (the default).
    #[default]
    Auto,
    /// `direct`.
    Direct,
    /// `systemd`.
    Systemd,
}

/// Whether machines get a user namespace (`NSPAWN_PRIVATE_USERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivateUsers {
    /// Where the host can (the default); privileged elsewhere, said once per run.
    #[default]
    Auto,
    /// Always; a host that cannot is an error (`yes`).
    Yes,
    /// Never: privileged machines, whose root is the host's root (`no`).
    No,
}

/// Every variable a user may set, as the guide's table (`docs/guide/environment.md`) lists them (a test keeps the two
/// equal). `NSPAWN_USER` is read before `main`, by [`crate::host::privs`].
#[cfg(test)]
pub(crate) const VARIABLES: &[&str] = &[
    "NSPAWN_CHROOTS_DIR",
    "NSPAWN_WORKSPACE",
    "NSPAWN_BACKEND",
    "NSPAWN_MAX_MACHINES",
    "NSPAWN_KEEP",
    "NSPAWN_LOG_DIR",
    "NSPAWN_QUIET",
    "NSPAWN_USER",
    "NSPAWN_EVENT_LOG",
    "NSPAWN_RUN_DIR",
    "NSPAWN_AUTO_BUILD",
    "NSPAWN_BOOT_AHEAD",
    "NSPAWN_NETWORK",
    "NSPAWN_NEXTEST_SHARE",
    "NSPAWN_NEXTEST_IDLE",
    "NSPAWN_WARM",
    "NSPAWN_PRIVATE_USERS",
    "NSPAWN_BOOT_TIMEOUT",
    "NSPAWN_STOP_TIMEOUT",
    "NSPAWN_WAIT_TIMEOUT",
];

/// The settings of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `NSPAWN_BACKEND`: `direct` or `systemd`.
    pub backend: BackendChoice,
    /// `NSPAWN_CHROOTS_DIR`: where chroots live instead of `test_chroots/`.
    pub chroots_dir: Option<PathBuf>,
    /// `NSPAWN_WORKSPACE`: the workspace whose chroots are declared.
    pub workspace: Option<PathBuf>,
    /// `NSPAWN_KEEP`: `failed` or `all`.
    pub keep: Keep,
    /// `NSPAWN_MAX_MACHINES`: machines at once, host-wide (1 or more).
    pub max_machines: Option<usize>,
    /// `NSPAWN_RUN_DIR`: host-wide state (an absolute path; default `/run/nspawn-rs`).
    pub run_dir: PathBuf,
    /// `NSPAWN_LOG_DIR`: where console logs go.
    pub log_dir: Option<PathBuf>,
    /// `NSPAWN_EVENT_LOG`: a file the runtime appends its boots and stops to.
    pub event_log: Option<PathBuf>,
    /// `NSPAWN_QUIET`: set (to anything but an empty value) silences the one-line reports.
    pub quiet: bool,
    /// `NSPAWN_AUTO_BUILD`: `0` stops missing or outdated chroots from being built on demand.
    pub auto_build: bool,
    /// `NSPAWN_BOOT_AHEAD`: how many machines of upcoming modules may wait booted ahead of
    /// need (`0`: no boots ahead; default: two per CPU).
    pub boot_ahead: Option<usize>,
    /// `NSPAWN_NETWORK`: the network of machines that do not choose one (default `isolated`).
    pub network: nspawn_config::NetworkSpec,
    /// `NSPAWN_NEXTEST_IDLE`: seconds a machine shared across nextest's processes stays up
    /// with no test using it (default 30).
    pub nextest_idle: std::time::Duration,
    /// `NSPAWN_NEXTEST_SHARE`: `0` gives every nextest test process machines of its own.
    pub nextest_share: bool,
    /// `NSPAWN_WARM`: seconds a run's module machines are kept warm for the next run: a
    /// pristine machine of each kind, booted after the run, handed to the next run's first
    /// test that needs one (0, the default: none).
    pub warm: std::time::Duration,
    /// `NSPAWN_PRIVATE_USERS`: `auto` (default), `yes` or `no`.
    pub private_users: PrivateUsers,
    /// `NSPAWN_BOOT_TIMEOUT`: seconds a boot may take, where a machine sets none (default 60).
    pub boot_timeout: std::time::Duration,
    /// `NSPAWN_STOP_TIMEOUT`: seconds a stop may take, where a machine sets none (default 10).
    pub stop_timeout: std::time::Duration,
    /// `NSPAWN_WAIT_TIMEOUT`: seconds a verb's script may run, or its retries last, where a
    /// machine sets none (default 60; see `Machine::succeed`).
    pub wait_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            backend: BackendChoice::Auto,
            chroots_dir: None,
            workspace: None,
            keep: Keep::Never,
            max_machines: None,
            run_dir: PathBuf::from("/run/nspawn-rs"),
            log_dir: None,
            event_log: None,
            quiet: false,
            auto_build: true,
            boot_ahead: None,
            network: nspawn_config::NetworkSpec::Isolated,
            nextest_idle: std::time::Duration::from_secs(30),
            warm: std::time::Duration::ZERO,
            nextest_share: true,
            private_users: PrivateUsers::Auto,
            boot_timeout: std::time::Duration::from_secs(60),
            stop_timeout: std::time::Duration::from_secs(10),
            wait_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// Reads the settings through `var` (the environment, or a table in tests). Returns them,
    /// with defaults where a value is invalid, and one line per invalid value.
    pub(crate) fn parse(var: impl Fn(&str) -> Option<OsString>) -> (Settings, Vec<String>) {
        let mut problems = Vec::new();
        let mut s = Settings::default();
        // Unset and empty are the same: `VAR= cargo test` is how one unsets a variable.
        let text = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string_lossy().into_owned())
        };
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut check = |name: &str, accepted: &str, ok: bool, value: &str| {
            if !ok {
                problems.push(format!("{name}={value:?}: {accepted}"));
            }
        };
        if let Some(v) = text("NSPAWN_BACKEND") {
            let choice = match v.as_str() {
                "direct" => Some(BackendChoice::Direct),
                "systemd" => Some(BackendChoice::Systemd),
                _ => None,
            };
            check(
                "NSPAWN_BACKEND",
                "accepted: direct, systemd",
                choice.is_some(),
                &v,
            );
            s.backend = choice.unwrap_or_default();
        }
        if let Some(v) = text("NSPAWN_KEEP") {
            let keep = match v.as_str() {
                "failed" => Some(Keep::Failed),
                "all" => Some(Keep::All),
                _ => None,
            };
            check("NSPAWN_KEEP", "accepted: failed, all", keep.is_some(), &v);
            s.keep = keep.unwrap_or_default();
        }
        if let Some(v) = text("NSPAWN_MAX_MACHINES") {
            let n = v.trim().parse::<usize>().ok().filter(|n| *n >= 1);
            let accepted = "accepted: a whole number of machines, 1 or more";
            check("NSPAWN_MAX_MACHINES", accepted, n.is_some(), &v);
            s.max_machines = n;
        }
        if let Some(dir) = path("NSPAWN_RUN_DIR") {
            let absolute = dir.is_absolute();
            let shown = dir.display().to_string();
            let plain = !shown.chars().any(char::is_control);
            check(
                "NSPAWN_RUN_DIR",
                "accepted: an absolute path without control characters",
                absolute && plain,
                &shown,
            );
            if absolute && plain {
                s.run_dir = dir;
            }
        }
        s.chroots_dir = path("NSPAWN_CHROOTS_DIR");
        s.workspace = path("NSPAWN_WORKSPACE");
        s.log_dir = path("NSPAWN_LOG_DIR");
        s.event_log = path("NSPAWN_EVENT_LOG");
        if let Some(v) = text("NSPAWN_QUIET") {
            let on = switch(&v);
            check("NSPAWN_QUIET", "accepted: 0, 1", on.is_some(), &v);
            s.quiet = on.unwrap_or(false);
        }
        if let Some(v) = text("NSPAWN_AUTO_BUILD") {
            let on = switch(&v);
            check("NSPAWN_AUTO_BUILD", "accepted: 0, 1", on.is_some(), &v);
            s.auto_build = on.unwrap_or(true);
        }
        if let Some(v) = text("NSPAWN_BOOT_AHEAD") {
            let n = v.trim().parse::<usize>().ok();
            let accepted = "accepted: a whole number of machines, 0 to boot none ahead";
            check("NSPAWN_BOOT_AHEAD", accepted, n.is_some(), &v);
            s.boot_ahead = n;
        }
        if let Some(v) = text("NSPAWN_NETWORK") {
            let network = nspawn_config::NetworkSpec::parse(&v);
            let accepted = format!("accepted: {}", nspawn_config::NETWORK_FORMS);
            check("NSPAWN_NETWORK", &accepted, network.is_ok(), &v);
            s.network = network.unwrap_or_default();
        }
        if let Some(v) = text("NSPAWN_NEXTEST_IDLE") {
            let secs = v.trim().parse::<u64>().ok();
            let accepted = "accepted: a whole number of seconds";
            check("NSPAWN_NEXTEST_IDLE", accepted, secs.is_some(), &v);
            s.nextest_idle = std::time::Duration::from_secs(secs.unwrap_or(30));
        }
        if let Some(v) = text("NSPAWN_WARM") {
            let secs = v.trim().parse::<u64>().ok();
            let accepted = "accepted: a whole number of seconds (0: off)";
            check("NSPAWN_WARM", accepted, secs.is_some(), &v);
            s.warm = std::time::Duration::from_secs(secs.unwrap_or(0));
        }
        for (name, field) in [
            ("NSPAWN_BOOT_TIMEOUT", &mut s.boot_timeout),
            ("NSPAWN_STOP_TIMEOUT", &mut s.stop_timeout),
            ("NSPAWN_WAIT_TIMEOUT", &mut s.wait_timeout),
        ] {
            if let Some(v) = text(name) {
                let secs = v.trim().parse::<u64>().ok().filter(|n| *n > 0);
                check(
                    name,
                    "accepted: a whole number of seconds, 1 or more",
                    secs.is_some(),
                    &v,
                );
                *field = secs.map_or(*field, std::time::Duration::from_secs);
            }
        }
        if let Some(v) = text("NSPAWN_NEXTEST_SHARE") {
            let on = switch(&v);
            check("NSPAWN_NEXTEST_SHARE", "accepted: 0, 1", on.is_some(), &v);
            s.nextest_share = on.unwrap_or(true);
        }
        if let Some(v) = text("NSPAWN_PRIVATE_USERS") {
            let mode = match v.as_str() {
                "auto" => Some(PrivateUsers::Auto),
                "yes" | "1" => Some(PrivateUsers::Yes),
                "no" | "0" => Some(PrivateUsers::No),
                _ => None,
            };
            let accepted = "accepted: auto, yes, no";
            check("NSPAWN_PRIVATE_USERS", accepted, mode.is_some(), &v);
            s.private_users = mode.unwrap_or_default();
        }
        (s, problems)
    }
}

/// What the file system says of the paths set: a chroots directory or workspace that does
/// not exist (a typo would otherwise have root build chroots there), an event log whose
/// directory does not exist. One line per problem.
fn check_paths(s: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need_dir = |name: &str, dir: &Option<PathBuf>, what: &str| {
        if let Some(dir) = dir {
            if !dir.is_dir() {
                problems.push(format!(
                    "{name}={:?}: not an existing directory ({what})",
                    dir.display().to_string()
                ));
            }
        }
    };
    need_dir(
        "NSPAWN_CHROOTS_DIR",
        &s.chroots_dir,
        "create it first, or unset it to use test_chroots/ in the workspace",
    );
    need_dir(
        "NSPAWN_WORKSPACE",
        &s.workspace,
        "a directory of the workspace",
    );
    // A bare file name's directory is the working directory.
    let log_dir = s.event_log.as_ref().map(|log| match log.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    });
    need_dir(
        "NSPAWN_EVENT_LOG",
        &log_dir,
        "the log's directory must exist",
    );
    if s.event_log.as_ref().is_some_and(|log| log.is_dir()) {
        problems.push("NSPAWN_EVENT_LOG names a directory: accepted: a file to append to".into());
    }
    problems
}

/// An on/off setting's value: `1` or `0`.
fn switch(value: &str) -> Option<bool> {
    match value {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn loaded() -> &'static (Settings, Vec<String>) {
    static SETTINGS: OnceLock<(Settings, Vec<String>)> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let (settings, mut problems) = Settings::parse(|name| std::env::var_os(name));
        problems.extend(check_paths(&settings));
        (settings, problems)
    })
}

/// The settings, or an error listing every invalid value.
pub(crate) fn get() -> Result<&'static Settings, SettingsError> {
    let (settings, problems) = loaded();
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(SettingsError::new(problems.clone()))
    }
}

/// The settings, with defaults for invalid values: for what must go on regardless (reports,
/// cleanup). Nothing starts a machine without `get` having passed.
pub fn lenient() -> &'static Settings {
    &loaded().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> (Settings, Vec<String>) {
        Settings::parse(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn unset_and_empty_mean_the_defaults() {
        assert_eq!(parse(&[]), (Settings::default(), vec![]));
        assert_eq!(
            parse(&[("NSPAWN_KEEP", ""), ("NSPAWN_MAX_MACHINES", "")]),
            (Settings::default(), vec![])
        );
    }

    #[test]
    fn valid_values_are_taken() {
        let (s, problems) = parse(&[
            ("NSPAWN_BACKEND", "direct"),
            ("NSPAWN_KEEP", "failed"),
            ("NSPAWN_MAX_MACHINES", "3"),
            ("NSPAWN_RUN_DIR", "/run/x"),
            ("NSPAWN_QUIET", "1"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.backend, BackendChoice::Direct);
        assert_eq!(s.keep, Keep::Failed);
        assert_eq!(s.max_machines, Some(3));
        assert_eq!(s.run_dir, PathBuf::from("/run/x"));
        assert!(s.quiet);
    }

    #[test]
    fn every_invalid_value_is_reported_with_what_is_accepted() {
        for bad in ["abc", "-1", "0", "1.5"] {
            let (s, problems) = parse(&[("NSPAWN_MAX_MACHINES", bad)]);
            assert_eq!(s.max_machines, None);
            assert_eq!(problems.len(), 1, "{bad}");
            assert!(problems[0].contains("1 or more"), "{problems:?}");
        }
        let (_, problems) = parse(&[
            ("NSPAWN_KEEP", "bogus"),
            ("NSPAWN_BACKEND", "docker"),
            ("NSPAWN_RUN_DIR", "relative"),
        ]);
        assert_eq!(problems.len(), 3, "all at once: {problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("NSPAWN_KEEP=\"bogus\"") && p.contains("failed, all")));
    }

    #[test]
    fn timeouts_are_whole_seconds() {
        let (s, problems) = parse(&[("NSPAWN_BOOT_TIMEOUT", "300"), ("NSPAWN_STOP_TIMEOUT", "0")]);
        assert_eq!(s.boot_timeout, std::time::Duration::from_secs(300));
        assert_eq!(s.stop_timeout, Settings::default().stop_timeout);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("NSPAWN_STOP_TIMEOUT"),
            "{problems:?}"
        );
    }

    #[test]
    fn paths_that_do_not_exist_are_problems() {
        let s = Settings {
            chroots_dir: Some("/nonexistent/chroots".into()),
            workspace: Some("/".into()),
            event_log: Some("/nonexistent/events.log".into()),
            ..Settings::default()
        };
        let problems = check_paths(&s);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("NSPAWN_CHROOTS_DIR"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("NSPAWN_EVENT_LOG"), "{problems:?}");
        let fine = Settings {
            event_log: Some("relative.log".into()),
            ..Settings::default()
        };
        assert_eq!(check_paths(&fine), Vec::<String>::new());
    }

    #[test]
    fn quiet_is_a_switch_and_the_run_dir_a_plain_path() {
        let (_, problems) = parse(&[("NSPAWN_QUIET", "maybe"), ("NSPAWN_RUN_DIR", "/run/x\n1")]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(parse(&[("NSPAWN_QUIET", "1")]).0.quiet);
        assert!(!parse(&[("NSPAWN_QUIET", "0")]).0.quiet);
    }

    #[test]
    fn the_user_namespace_mode_is_auto_yes_or_no() {
        assert_eq!(parse(&[]).0.private_users, PrivateUsers::Auto);
        for (value, mode) in [
            ("auto", PrivateUsers::Auto),
            ("yes", PrivateUsers::Yes),
            ("no", PrivateUsers::No),
        ] {
            let (s, problems) = parse(&[("NSPAWN_PRIVATE_USERS", value)]);
            assert_eq!((s.private_users, problems), (mode, vec![]), "{value}");
        }
        let (s, problems) = parse(&[("NSPAWN_PRIVATE_USERS", "maybe")]);
        assert_eq!(s.private_users, PrivateUsers::Auto);
        assert!(problems[0].contains("auto, yes, no"), "{problems:?}");
    }

    #[test]
    fn the_guide_lists_every_variable() {
        let table = include_str!("../../docs/guide/environment.md");
        let listed: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert_eq!(listed, VARIABLES);
    }

    #[test]
    fn every_variable_read_is_listed() {
        let read = std::cell::RefCell::new(Vec::new());
        Settings::parse(|name| {
            read.borrow_mut().push(name.to_string());
            None
        });
        let mut read = read.into_inner();
        read.sort();
        let mut listed: Vec<String> = VARIABLES
            .iter()
            .filter(|v| **v != "NSPAWN_USER")
            .map(|v| v.to_string())
            .collect();
        listed.sort();
        assert_eq!(read, listed);
    }
}
