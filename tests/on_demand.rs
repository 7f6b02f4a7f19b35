//! Chroots on demand: a declared chroot that is missing is built before its machine boots,
//! once however many tests ask at the same time; one whose declaration changed is rebuilt,
//! and the machines still running from the old tree carry on.

mod common;

use std::path::Path;

use nspawn::Machine;

/// A workspace of its own that declares chroot `ondemand` with `include`, so that the
/// workspace's real chroots are never touched.
fn declare(ws: &Path, include: &[&str]) {
    // As root each time: under sudo the test process drops to the user after the first.
    let _root = nspawn::privs::root().unwrap();
    let include: Vec<String> = include.iter().map(|p| format!("{p:?}")).collect();
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            "[workspace]\n\n[workspace.metadata.nspawn.chroots.ondemand]\nsuite = \"bookworm\"\n\
             include = [{}]\n",
            include.join(", ")
        ),
    )
    .unwrap();
}

fn old_trees(ws: &Path) -> Vec<String> {
    std::fs::read_dir(ws.join("test_chroots"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".old-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn missing_chroots_are_built_once_and_changed_ones_rebuilt_beside_their_machines() {
    if std::env::var_os("NSPAWN_CHROOTS_DIR").is_some() {
        eprintln!("skipped: NSPAWN_CHROOTS_DIR would put the scratch chroot among real ones");
        return;
    }
    let ws = common::scratch_dir();
    declare(ws.path(), &["dbus", "systemd", "jq"]);
    let boot = || Machine::builder("ondemand").workspace(ws.path()).start();
    // Two at once: one builds, the other waits for it and finds it ready.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(boot);
        let b = s.spawn(boot);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_eq!(a.sh("jq -n 1").unwrap(), "1\n");
    assert_eq!(b.sh("jq -n 2").unwrap(), "2\n");
    assert_eq!(old_trees(ws.path()), Vec::<String>::new(), "built once");

    declare(ws.path(), &["dbus", "systemd", "tree"]);
    let c = boot().unwrap();
    assert!(c.sh("tree --version").unwrap().starts_with("tree"));
    assert!(
        c.run(["jq", "-n", "1"]).is_err(),
        "booted from the new declaration"
    );
    // The old tree stays while its machines run.
    assert_eq!(a.sh("jq -n 3").unwrap(), "3\n");
    assert_eq!(old_trees(ws.path()).len(), 1, "{:?}", old_trees(ws.path()));

    for m in [a, b, c] {
        m.stop().unwrap();
    }
    // Root's trees: the scratch directory removes them as root, under sudo too.
    drop(ws);
}
