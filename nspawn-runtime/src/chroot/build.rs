//! Building master chroots: atomically (under a temporary name, renamed on success),
//! idempotently (a stamp records the declaration), concurrently (`jobs`), with progress.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use nix::sys::signal;
use nix::unistd::Pid;

use super::deb_cache::DebCache;
use super::extend;
use super::progress::{Item, Progress};
use super::status::{status, write_cachedir_tag, Status, STAMP};
use super::tool_run::{run_in_tree, run_logged, SignalGuard};
use crate::chroot::config::{ChrootDef, Workspace};
use crate::chroot::storage;
use crate::error::{ChrootError, HostError, IoContext, Result};
use crate::host::tools::{self, Tool};

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Rebuild chroots that are already built.
    pub force: bool,
    /// How many chroots to build at once.
    pub jobs: usize,
    /// Force a bootstrapper; by default mmdebstrap when installed, else debootstrap.
    pub bootstrapper: Option<Bootstrapper>,
    /// Bootstrap from nothing even where the declaration only adds packages to the tree's
    /// (which are otherwise installed into a copy of it: see `extend`).
    pub fresh: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            force: false,
            jobs: 2,
            bootstrapper: None,
            fresh: false,
        }
    }
}

/// What building one chroot did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Already built from the same declaration.
    UpToDate,
    /// A tree made by hand is there, and was kept (only `force` replaces it).
    HandMade,
    /// Built, in this many seconds, with this tool.
    Built {
        /// Wall time.
        secs: f64,
        /// The bootstrapper used.
        tool: Bootstrapper,
    },
    /// Rebuilt from the tree it had, in this many seconds: the declaration only added these
    /// packages (none when it only reordered them).
    Extended {
        /// Wall time.
        secs: f64,
        /// The packages installed into the copy of the tree.
        added: Vec<String>,
    },
}

/// The program that creates the base tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapper {
    /// mmdebstrap: faster (46 s against 72 s for the same tree on our machines).
    Mmdebstrap,
    /// debootstrap.
    Debootstrap,
}

impl Bootstrapper {
    /// mmdebstrap when installed, else debootstrap when installed, else mmdebstrap (to install).
    pub(crate) fn detect() -> Bootstrapper {
        if !tools::has(tools::MMDEBSTRAP) && tools::has(tools::DEBOOTSTRAP) {
            Bootstrapper::Debootstrap
        } else {
            Bootstrapper::Mmdebstrap
        }
    }

    /// The tool to have installed.
    pub(crate) fn tool(self) -> Tool {
        match self {
            Bootstrapper::Mmdebstrap => tools::MMDEBSTRAP,
            Bootstrapper::Debootstrap => tools::DEBOOTSTRAP,
        }
    }

    /// The command line that bootstraps `def` into `target`.
    pub(crate) fn command(
        self,
        def: &ChrootDef,
        target: &Path,
        eatmydata: bool,
        cache: Option<&DebCache>,
    ) -> Command {
        let mut cmd = if eatmydata {
            let mut c = Command::new("eatmydata");
            c.arg(self.tool().program);
            c
        } else {
            Command::new(self.tool().program)
        };
        let include = format!("--include={}", def.include.join(","));
        match self {
            Bootstrapper::Mmdebstrap => {
                cmd.args(["--mode=root", &format!("--variant={}", def.variant)]);
                // The package lists it fetched stay, so that `apt-get install` works in a
                // machine as on any Debian system (debootstrap leaves none: see `assemble`).
                cmd.arg("--skip=cleanup/apt/lists");
                if !def.include.is_empty() {
                    cmd.arg(include);
                }
                let hook = Path::new("/usr/share/mmdebstrap/hooks/eatmydata");
                if eatmydata && hook.is_dir() {
                    cmd.arg(format!("--hook-dir={}", hook.display()));
                }
                if let Some(cache) = cache {
                    cmd.args(from_cache(cache));
                }
            }
            Bootstrapper::Debootstrap => {
                if let Some(cache) = cache {
                    // debootstrap keeps what it downloads there and takes what it finds.
                    cmd.arg(format!("--cache-dir={}", cache.kept.display()));
                }
                if def.variant != "standard" {
                    cmd.arg(format!("--variant={}", def.variant));
                }
                if !def.include.is_empty() {
                    cmd.arg(include);
                }
            }
        }
        cmd.arg(&def.suite).arg(target).arg(&def.mirror);
        cmd
    }
}

/// mmdebstrap's options that put a chroot's cached packages where apt looks first, and its
/// archives into the staging directory before its clean-up removes them; the essential
/// packages it installs stay there too (`essential/unlink`) to be kept.
fn from_cache(cache: &DebCache) -> [String; 4] {
    const ARCHIVES: &str = "/var/cache/apt/archives";
    [
        "--skip=essential/unlink".to_string(),
        format!("--setup-hook=mkdir -p \"$1\"{ARCHIVES}"),
        format!("--setup-hook=sync-in {} {ARCHIVES}/", cache.kept.display()),
        format!(
            "--customize-hook=sync-out {ARCHIVES} {}",
            cache.staging.display()
        ),
    ]
}

impl std::fmt::Display for Bootstrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tool().program)
    }
}

/// Builds the named chroots of a workspace (all declared ones when `names` is empty), with
/// progress on the terminal. Installs missing host packages when run as root.
pub fn build(
    ws: &Workspace,
    names: &[String],
    opts: &BuildOptions,
) -> Result<Vec<(String, Outcome)>, ChrootError> {
    // A mistyped NSPAWN_CHROOTS_DIR must not become a place where root builds.
    crate::settings::get()?;
    let defs = ws.selected(names)?;
    let dir = ws.chroots_dir();
    let (todo, ready): (Vec<&ChrootDef>, Vec<&ChrootDef>) = defs
        .iter()
        .partition(|d| opts.force || !status(&dir, d).bootable());
    let mut done: Vec<(String, Outcome)> = ready
        .iter()
        .map(|d| match status(&dir, d) {
            Status::HandMade(_) => (d.name.clone(), Outcome::HandMade),
            _ => (d.name.clone(), Outcome::UpToDate),
        })
        .collect();
    if todo.is_empty() {
        return Ok(done);
    }
    require_root(names)?;
    let progress = Progress::default();
    let tool = opts.bootstrapper.unwrap_or_else(Bootstrapper::detect);
    prepare_host(&dir, tool, &progress)?;
    let _signals = SignalGuard::install();
    let results = run_jobs(&todo, opts.jobs, |def| {
        let mut opts = opts.clone();
        opts.bootstrapper = Some(tool);
        build_one(&dir, def, &opts, progress.item(&def.name))
    });
    let mut first_error = None;
    for (def, result) in todo.iter().zip(results) {
        match result {
            Ok(outcome) => done.push((def.name.clone(), outcome)),
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(e) => progress.println(&format!("error: {e}")),
        }
    }
    first_error.map_or(Ok(done), Err)
}

fn require_root(names: &[String]) -> Result<(), ChrootError> {
    if tools::is_root() {
        return Ok(());
    }
    // `cargo nspawn` runs the privileged part through sudo itself.
    let mut command = String::from("cargo nspawn make-chroots");
    for n in names {
        command.push(' ');
        command.push_str(n);
    }
    Err(HostError::not_root("building chroots", command).into())
}

fn prepare_host(dir: &Path, tool: Bootstrapper, progress: &Progress) -> Result<(), ChrootError> {
    // `ip` and `nft` are for the machines' networks (see `network`), set up here with the rest.
    let mut tools = vec![
        tool.tool(),
        tools::EATMYDATA,
        tools::NSPAWN,
        tools::IP,
        tools::NFT,
    ];
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    if storage::is_btrfs(dir) {
        tools.push(tools::BTRFS);
    }
    tools::ensure(&tools, &|m| progress.println(m))?;
    write_cachedir_tag(dir)?;
    remove_unused_old_trees(dir)?;
    remove_stale_temporaries(dir, progress)
}

pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Removes half-built trees left by builds that died (their pid, in the name, is gone).
fn remove_stale_temporaries(dir: &Path, progress: &Progress) -> Result<(), ChrootError> {
    let entries = std::fs::read_dir(dir).context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TMP_PREFIX)
            .and_then(|r| r.rsplit('-').next())
        else {
            continue;
        };
        let alive = pid
            .parse()
            .is_ok_and(|p| signal::kill(Pid::from_raw(p), None).is_ok());
        if !alive {
            progress.println(&format!(
                "removing the leftover of an interrupted build: {name}"
            ));
            storage::remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Runs `work` over `items` on up to `jobs` threads, keeping the order of results.
fn run_jobs<T: Sync, R: Send>(items: &[T], jobs: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let queue = Mutex::new(items.iter().enumerate().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, item)) = next else { break };
                let r = work(item);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Builds one chroot into `dir`, reporting on `item`. Root is required.
pub fn build_one(
    dir: &Path,
    def: &ChrootDef,
    opts: &BuildOptions,
    mut item: Item,
) -> Result<Outcome, ChrootError> {
    let final_path = dir.join(&def.name);
    let current = status(dir, def);
    match current {
        Status::Ready(_) if !opts.force => {
            item.finish("up to date");
            return Ok(Outcome::UpToDate);
        }
        Status::HandMade(_) if !opts.force => {
            item.finish("made by hand, kept");
            return Ok(Outcome::HandMade);
        }
        Status::Outdated(_) if !opts.force => {
            item.finish("outdated");
            return Err(ChrootError::Outdated {
                name: def.name.clone(),
                path: final_path,
            });
        }
        _ => {}
    }
    let tool = opts.bootstrapper.unwrap_or_else(Bootstrapper::detect);
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{}", def.name, std::process::id()));
    let log = log_path(dir, &def.name)?;
    let extension = match current {
        Status::Outdated(_) if !opts.fresh => extend::missing_packages(&final_path, def),
        _ => None,
    };
    let mut extended = None;
    let mut not_extended = String::new();
    if let Some(added) = extension {
        match extend::assemble(&final_path, def, &added, &tmp, &log, &mut item) {
            Ok(()) => extended = Some(added),
            // The bootstrap below still makes the declared tree; this log is kept beside its.
            Err(why) => {
                let kept = log.with_extension("extend-failed.log");
                let _ = std::fs::rename(&log, &kept);
                not_extended = format!(
                    "; adding {} to its tree failed ({why}; see {})",
                    added.join(", "),
                    kept.display()
                );
            }
        }
    }
    let cache = match (&extended, opts.fresh) {
        (None, false) => DebCache::open(dir, &def.name)?,
        _ => None,
    };
    let assembled = match extended {
        Some(_) => Ok(()),
        None => assemble(def, tool, &tmp, &log, cache.as_ref(), &mut item),
    };
    let result = assembled.and_then(|()| {
        item.phase("installing");
        install(dir, &tmp, &final_path, &def.name)
    });
    let failed_marker = failed_path(dir, &def.name);
    if let Err(e) = result {
        if let Some(cache) = &cache {
            cache.discard();
        }
        item.finish("failed");
        storage::remove_tree(&tmp)?;
        // Builds on demand do not try this declaration again (see `failed_before`).
        let _ = std::fs::write(&failed_marker, def.stamp());
        return Err(e);
    }
    let _ = std::fs::remove_file(&failed_marker);
    let cached = cache.as_ref().map(|cache| match cache.keep(&final_path) {
        Ok(count) => format!("; {count} packages kept for the next build"),
        Err(e) => {
            cache.discard();
            format!("; its packages were not kept ({e})")
        }
    });
    let secs = item.elapsed().as_secs_f64();
    let storage = storage::storage_of(&final_path);
    if let Some(added) = extended {
        let what = if added.is_empty() {
            "restamped".to_string()
        } else {
            format!("added {} to its tree", added.join(", "))
        };
        item.finish(&format!("{what} in {secs:.1} s ({storage})"));
        return Ok(Outcome::Extended { secs, added });
    }
    item.finish(&format!(
        "built with {tool} in {secs:.1} s ({storage}){not_extended}{}",
        cached.unwrap_or_default()
    ));
    Ok(Outcome::Built { secs, tool })
}

const OLD_PREFIX: &str = ".old-";

/// Renames the new tree into place. An old tree is renamed aside first, not removed:
/// machines may still run from it (an overlay's lower directory must not change under it).
/// It goes once no nspawn runs from this directory ([`remove_unused_old_trees`]).
pub(crate) fn install(
    dir: &Path,
    tmp: &Path,
    final_path: &Path,
    name: &str,
) -> Result<(), ChrootError> {
    if final_path.exists() {
        let old = dir.join(format!("{OLD_PREFIX}{name}-{}", std::process::id()));
        std::fs::rename(final_path, &old)
            .context(|| format!("renaming {} to {}", final_path.display(), old.display()))?;
    }
    std::fs::rename(tmp, final_path)
        .context(|| format!("renaming {} to {}", tmp.display(), final_path.display()))?;
    remove_unused_old_trees(dir)
}

/// Removes the old trees of rebuilt chroots in `dir`, unless some nspawn runs from a tree in
/// `dir` (it may be one of them).
fn remove_unused_old_trees(dir: &Path) -> Result<(), ChrootError> {
    if super::in_use::by_any_nspawn(dir) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(OLD_PREFIX) {
            storage::remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Where a failed build leaves the declaration it failed for.
fn failed_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(".logs").join(format!("{name}.failed"))
}

/// Whether the last build of chroot `def` in `dir` failed for this very declaration: a build
/// on demand would fail the same way, so it is not tried again until the declaration changes
/// or `make-chroots` is run.
pub(crate) fn failed_before(dir: &Path, def: &ChrootDef) -> bool {
    std::fs::read_to_string(failed_path(dir, &def.name)).is_ok_and(|stamp| stamp == def.stamp())
}

fn log_path(dir: &Path, name: &str) -> Result<PathBuf, ChrootError> {
    let logs = dir.join(".logs");
    std::fs::create_dir_all(&logs).context(|| format!("creating {}", logs.display()))?;
    Ok(logs.join(format!("{name}.log")))
}

/// Bootstraps, runs the setup commands and writes the stamp, all under `tmp`.
fn assemble(
    def: &ChrootDef,
    tool: Bootstrapper,
    tmp: &Path,
    log: &Path,
    cache: Option<&DebCache>,
    item: &mut Item,
) -> Result<(), ChrootError> {
    File::create(log).context(|| format!("creating {}", log.display()))?;
    let fail = |phase: &str, reason: String| ChrootError::Build {
        name: def.name.clone(),
        phase: phase.into(),
        reason,
        log: log.into(),
        tail: crate::text::tail(&std::fs::read_to_string(log).unwrap_or_default(), 20).into(),
    };
    item.phase("preparing");
    storage::remove_tree(tmp)?;
    storage::create_tree(tmp)?;
    item.phase(&format!("bootstrapping {} with {tool}", def.suite));
    let mut cmd = tool.command(def, tmp, tools::has(tools::EATMYDATA), cache);
    run_logged(&mut cmd, log, item).map_err(|r| fail("bootstrap", r))?;
    let lists = (tool == Bootstrapper::Debootstrap).then_some("apt-get update -q");
    for (i, script) in lists
        .iter()
        .copied()
        .chain(def.setup.iter().map(String::as_str))
        .enumerate()
    {
        item.phase(&format!(
            "setup {}/{}",
            i + 1,
            def.setup.len() + lists.iter().count()
        ));
        run_in_tree(tmp, script, log, item).map_err(|r| fail("setup", r))?;
    }
    item.phase("finishing");
    super::profile::apply(tmp, &def.profile).map_err(|e| {
        fail(
            "profile",
            format!("applying profile {:?}: {e}", def.profile),
        )
    })?;
    // The bootstrapper copies the host's name; without it a machine is named as nspawn calls it.
    let _ = std::fs::remove_file(tmp.join("etc/hostname"));
    let stamp = tmp.join(STAMP);
    std::fs::write(&stamp, def.stamp()).context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cmd: &Command) -> String {
        tools::command_line(cmd)
    }

    #[test]
    fn mmdebstrap_command_line() {
        let def = ChrootDef::with_defaults("bookworm");
        let cmd = Bootstrapper::Mmdebstrap.command(&def, Path::new("/c/.tmp"), false, None);
        assert_eq!(
            line(&cmd),
            "mmdebstrap --mode=root --variant=minbase --skip=cleanup/apt/lists --include=dbus,systemd bookworm /c/.tmp http://deb.debian.org/debian"
        );
    }

    #[test]
    fn debootstrap_command_line_under_eatmydata() {
        let mut def = ChrootDef::with_defaults("trixie");
        def.variant = "standard".into();
        let cmd = Bootstrapper::Debootstrap.command(&def, Path::new("/c/.tmp"), true, None);
        assert_eq!(
            line(&cmd),
            "eatmydata debootstrap --include=dbus,systemd trixie /c/.tmp http://deb.debian.org/debian"
        );
    }

    #[test]
    fn jobs_keep_the_order_of_results() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(
            run_jobs(&items, 3, |i| i * 2),
            (0..10).map(|i| i * 2).collect::<Vec<_>>()
        );
    }
}
