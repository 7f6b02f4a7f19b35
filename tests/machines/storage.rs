//! The two storage modes of master chroots: a btrfs subvolume (machines are `--ephemeral`
//! snapshots) and a plain directory (machines are a read-only tree under a tmpfs overlay).

use crate::common;

use std::path::{Path, PathBuf};

use nspawn::{Machine, Storage};

#[test]
fn btrfs_subvolumes_boot_as_ephemeral_snapshots() {
    let _root = nspawn::privs::root().unwrap();
    let copy = common::BtrfsCopy::new();
    let m = Machine::start(copy.chroot().to_str().unwrap()).unwrap();
    assert_eq!(m.storage(), Storage::Subvolume);
    assert_eq!(
        common::snapshots_in(&copy.mnt()).len(),
        1,
        "one .#machine.* snapshot while it runs"
    );
    m.write("/etc/changed", "x").unwrap();
    assert!(
        !copy.chroot().join("etc/changed").exists(),
        "the master is untouched"
    );
    let name = m.name().to_string();
    m.stop().unwrap();
    assert_eq!(common::snapshots_in(&copy.mnt()), Vec::<PathBuf>::new());
    assert_eq!(common::leftovers_of(&name), Vec::<String>::new());
}

#[test]
fn plain_directories_boot_on_a_read_only_overlay() {
    let chroot = common::chroots_dir().join("bookworm");
    let m = Machine::start(chroot.to_str().unwrap()).unwrap();
    assert_eq!(m.storage(), Storage::Directory);
    m.write("/etc/changed", "x").unwrap();
    assert_eq!(m.sh("cat /etc/changed").unwrap(), "x");
    assert!(
        !Path::new(&chroot).join("etc/changed").exists(),
        "the master is untouched"
    );
    assert!(m
        .sh("findmnt -n -o FSTYPE /")
        .unwrap()
        .starts_with("overlay"));
    assert!(
        common::snapshots_in(&common::chroots_dir()).is_empty(),
        "no copy of the tree"
    );
}
