//! Building and listing the declared chroots.

use crate::error::CliError;
use nspawn_runtime::chroot::archive::{self, Imported};
use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::chroot::{
    self, remove::Undeclared, storage, Bootstrapper, BuildOptions, Outcome,
};
use nspawn_runtime::host::privs;
use nspawn_runtime::host::tools;

/// What `make-chroots` was asked for.
#[derive(clap::Args, Debug, Default)]
pub struct MakeChroots {
    /// Chroots to build (default: all declared).
    pub names: Vec<String>,
    /// Rebuild even when up to date. An outdated chroot whose declaration only adds packages
    /// gets them installed into a copy of its tree, in seconds.
    #[arg(long)]
    pub force: bool,
    /// Rebuild from nothing (implies --force), downloading every package: also where the
    /// declaration only adds packages, and without the packages the last build kept.
    #[arg(long)]
    pub fresh: bool,
    /// List the declared chroots and their state, build nothing (as `cargo nspawn list`).
    #[arg(long)]
    pub list: bool,
    /// How many chroots to build at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Use debootstrap even when mmdebstrap is installed.
    #[arg(long)]
    pub debootstrap: bool,
    /// Create a btrfs image file of SIZE (e.g. 4G) and loop-mount it on the chroots directory
    /// first, so machines are cheap snapshots on hosts without btrfs.
    #[arg(long, value_name = "SIZE")]
    pub btrfs_image: Option<String>,
}

/// Builds the chroots `args` names (all declared by default). Needs root.
pub fn make(ws: &Workspace, args: &MakeChroots) -> Result<(), CliError> {
    if args.list {
        return list(ws);
    }
    if let Some(size) = &args.btrfs_image {
        tools::ensure(&[tools::BTRFS, tools::MKFS_BTRFS], &|m| eprintln!("{m}"))?;
        storage::mount_btrfs_image(&ws.chroots_dir(), size, &|m| eprintln!("{m}"))?;
    }
    let opts = BuildOptions {
        force: args.force || args.fresh,
        jobs: args.jobs,
        bootstrapper: args.debootstrap.then_some(Bootstrapper::Debootstrap),
        fresh: args.fresh,
    };
    for (name, outcome) in chroot::build(ws, &args.names, &opts)? {
        match outcome {
            Outcome::UpToDate => eprintln!("{name}: up to date"),
            Outcome::HandMade => eprintln!(
                "{name}: made by hand (no nspawn stamp), kept as it is; `cargo nspawn \
                 make-chroots --force {name}` replaces it with the declaration's"
            ),
            Outcome::Built { .. } | Outcome::Extended { .. } => {}
        }
    }
    Ok(())
}

/// Prints each declared chroot, where it is and its state.
pub fn list(ws: &Workspace) -> Result<(), CliError> {
    let dir = ws.chroots_dir();
    for def in ws.chroots()? {
        let state = chroot::status(&dir, &def).describe(&def.name);
        println!(
            "{:<12} suite={} variant={} include={} -> {} [{state}]",
            def.name,
            def.suite,
            def.variant,
            def.include.join(","),
            dir.join(&def.name).display()
        );
    }
    Ok(())
}

/// What `remove-chroots` was asked for.
#[derive(clap::Args, Debug, Default)]
pub struct RemoveChroots {
    /// Chroot trees to remove, declared or not.
    pub names: Vec<String>,
    /// Also remove the trees nspawn built that no declaration names any more.
    #[arg(long)]
    pub undeclared: bool,
}

/// Removes the chroots `args` names, saying what and how long each took. Needs root.
pub fn remove(ws: &Workspace, args: &RemoveChroots) -> Result<(), CliError> {
    let dir = ws.chroots_dir();
    let mut names = args.names.clone();
    if args.undeclared {
        for Undeclared { name, ours } in chroot::remove::undeclared(ws)? {
            if ours {
                names.push(name);
            } else {
                eprintln!("{name}: kept, nspawn did not build it (no stamp); name it to remove it");
            }
        }
    } else if names.is_empty() {
        return Err(CliError::Usage {
            command: "remove-chroots",
            message: format!(
                "name the chroots to remove, or give --undeclared; {} has: {}",
                dir.display(),
                chroot::remove::trees(&dir).join(", ")
            ),
        });
    }
    // Under sudo this process runs as the user; the trees are root's.
    let _root = privs::root()?;
    for name in names {
        eprintln!("{name}: removing {}", dir.join(&name).display());
        let took = chroot::remove::remove(&dir, &name)?;
        eprintln!("{name}: removed in {:.1} s", took.as_secs_f64());
    }
    Ok(())
}

/// The trees no declaration names, as a line for `gc`, if there are any.
pub fn undeclared_line(ws: &Workspace) -> Option<String> {
    let names: Vec<String> = chroot::remove::undeclared(ws)
        .ok()?
        .into_iter()
        .map(|u| u.name)
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "chroot trees no declaration names: {} (`cargo nspawn remove-chroots --undeclared` \
             removes those nspawn built; name one to remove it: `cargo nspawn remove-chroots \
             NAME`)",
            names.join(", ")
        )
    })
}

/// What `export-chroots` was asked for.
#[derive(clap::Args, Debug, Default)]
pub struct ExportChroots {
    /// Chroots to export (default: all declared).
    pub names: Vec<String>,
    /// The directory the files go to.
    #[arg(long, value_name = "DIR")]
    pub to: std::path::PathBuf,
}

/// Writes each chroot `args` names as `<name>-<key>.tar.zst` in `args.to`. Needs root.
pub fn export(ws: &Workspace, args: &ExportChroots) -> Result<(), CliError> {
    let dir = ws.chroots_dir();
    for def in ws.selected(&args.names)? {
        let started = std::time::Instant::now();
        let file = archive::export(&dir, &def, &args.to)?;
        hand_to_user(&file);
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "{}: {} ({:.0} MB) in {:.1} s",
            def.name,
            file.display(),
            size as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// A file root wrote for the user who ran us through sudo becomes theirs.
fn hand_to_user(file: &std::path::Path) {
    if let Ok(Some((uid, gid))) = privs::target_user() {
        let _ = std::os::unix::fs::chown(file, Some(uid), Some(gid));
    }
}

/// What `import-chroots` was asked for.
#[derive(clap::Args, Debug, Default)]
pub struct ImportChroots {
    /// Files `export-chroots` wrote (`<name>-<key>.tar.zst`).
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Replace the tree in place even when it is current or made by hand.
    #[arg(long)]
    pub force: bool,
}

/// Puts each file's chroot in place when its key is the declaration's. Needs root. A file
/// that fails (a truncated download) does not stop the others; the first failure is returned.
pub fn import(ws: &Workspace, args: &ImportChroots) -> Result<(), CliError> {
    let dir = ws.chroots_dir();
    let declared = ws.chroots()?;
    let mut failed = None;
    for file in &args.files {
        let shown = file.display();
        let name = archive::name_and_key(file).map(|(name, _)| name);
        let Some(def) = name.and_then(|n| declared.iter().find(|d| d.name == n)) else {
            eprintln!("{shown}: no declared chroot by that name (files are <name>-<key>.tar.zst); skipped");
            continue;
        };
        let started = std::time::Instant::now();
        let imported = match archive::import(&dir, def, file, args.force) {
            Ok(imported) => imported,
            Err(e) => {
                eprintln!("{}: importing {shown} failed: {e}", def.name);
                failed.get_or_insert(e);
                continue;
            }
        };
        let line = match imported {
            Imported::Installed => format!("imported in {:.1} s", started.elapsed().as_secs_f64()),
            Imported::UpToDate => "up to date; file not unpacked".into(),
            Imported::OtherDeclaration => format!(
                "{shown} holds a tree of another declaration (the current one's key is {}); \
                 skipped: `cargo nspawn make-chroots {}` builds it",
                archive::key(def),
                def.name
            ),
            Imported::HandMadeKept => {
                format!("made by hand (no nspawn stamp), kept; --force replaces it with {shown}")
            }
        };
        eprintln!("{}: {line}", def.name);
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}
