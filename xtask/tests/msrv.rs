//! The workspace's `rust-version` is true for its lockfile: no dependency the lockfile holds
//! asks for a newer Rust. (Clippy's `incompatible_msrv`, in CI's `-D warnings`, checks our own
//! use of std against it.) Needs neither root nor chroots.

use std::path::Path;
use std::process::Command;

/// A version as numbers, `1.89` and `1.89.0` alike.
fn numbers(version: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // Only this platform's packages: others (Windows-only ones) are never downloaded here,
    // and `--offline` needs every package it reads.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &platform])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let packages = meta["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "nspawn")
        .and_then(|p| p["rust_version"].as_str())
        .expect("the nspawn package declares a rust-version");
    let newer: Vec<String> = packages
        .iter()
        .filter(|p| !members.contains(&p["id"].as_str().unwrap()))
        .filter_map(|p| {
            let wanted = p["rust_version"].as_str()?;
            (numbers(wanted) > numbers(ours))
                .then(|| format!("{} {} needs {wanted}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "rust-version = {ours:?} in [workspace.package], but: {newer:?}"
    );
}
