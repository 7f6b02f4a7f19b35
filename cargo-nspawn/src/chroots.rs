//! Building and listing the declared chroots.

use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::chroot::{self, storage, Bootstrapper, BuildOptions, Outcome};
use nspawn_runtime::host::tools;
use nspawn_runtime::Error;

/// What `make-chroots` was asked for.
#[derive(clap::Args, Default)]
pub struct MakeChroots {
    /// Chroots to build (default: all declared).
    pub names: Vec<String>,
    /// Rebuild even when up to date.
    #[arg(long)]
    pub force: bool,
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
pub fn make(ws: &Workspace, args: &MakeChroots) -> Result<(), Error> {
    if args.list {
        return list(ws);
    }
    if let Some(size) = &args.btrfs_image {
        tools::ensure(&[tools::BTRFS, tools::MKFS_BTRFS], &|m| eprintln!("{m}"))?;
        storage::mount_btrfs_image(&ws.chroots_dir(), size, &|m| eprintln!("{m}"))?;
    }
    let opts = BuildOptions {
        force: args.force,
        jobs: args.jobs,
        bootstrapper: args.debootstrap.then_some(Bootstrapper::Debootstrap),
    };
    for (name, outcome) in chroot::build(ws, &args.names, &opts)? {
        if outcome == Outcome::UpToDate {
            eprintln!("{name}: up to date");
        }
    }
    Ok(())
}

/// Prints each declared chroot, where it is and its state.
pub fn list(ws: &Workspace) -> Result<(), Error> {
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
