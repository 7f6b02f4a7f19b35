//! `cargo nspawn init`: what a project needs so that plain `cargo test` runs nspawn tests as
//! its user.
//!
//! - the cargo runner `sudo -E` in the workspace's `.cargo/config.toml`: cargo compiles as
//!   the user and runs only the test binaries through sudo, which drop back to the user
//!   before `main` (no root-owned file in `target/` or `~/.cargo`, and sudo's `secure_path`
//!   never has to find cargo);
//! - `opt-level = 2` for `nspawn-runtime` in dev builds, in that same file: the runtime's side
//!   of every file operation, command and call then runs optimized while your own code stays
//!   a debug build (measured here: `exists()` from 0.05-0.06 ms to 0.03-0.04 ms, a call from
//!   0.19 ms to 0.14-0.15 ms; `benches/README.md`), for a first build of the runtime that
//!   takes about 30 s more;
//! - `/test_chroots/` in the workspace's `.gitignore`, and in the package's `exclude` when the
//!   chroots live inside the package, so `git status`, `cargo package` and build-script
//!   scans leave the chroots (root-owned, with device nodes) alone;
//! - a first test, `tests/nspawn.rs`, unless it exists.
//!
//! Each step is skipped when already done, so running it again changes nothing.

use std::path::{Path, PathBuf};

use crate::error::CliError;
use toml_edit::{value, Array, DocumentMut, Item, Table};

/// What `init` was asked for.
#[derive(clap::Args, Debug, Default)]
pub struct Init {
    /// Do not write the first test.
    #[arg(long)]
    pub no_test: bool,
}

const RUNNER: &str = "sudo -E";
/// The runtime's package, and its optimization level in dev builds.
const RUNTIME: (&str, i64) = ("nspawn-runtime", 2);
const TARGET: &str = "cfg(target_os = \"linux\")";
const CHROOTS: &str = "test_chroots";

/// The first test, for the chroot named `CHROOT`.
const FIRST_TEST: &str = r#"//! A first nspawn test: `cargo test` boots a Debian machine for it.

#[nspawn::test(chroot = "CHROOT")]
fn dbus_is_up(machine: &nspawn::Machine) -> nspawn::Result<()> {
    machine.run(["systemctl", "is-active", "dbus.socket"])?;
    Ok(())
}
"#;

/// Sets the package around the current directory (or `dir`) up.
pub fn run(args: &Init, dir: Option<&Path>) -> Result<(), CliError> {
    if std::env::var_os("SUDO_UID").is_some() {
        return Err(CliError::Usage {
            command: "init",
            message: "it writes files in your project: run it as yourself, not with sudo".into(),
        });
    }
    let package = package_dir(dir)?;
    let ws = crate::workspace::find(Some(&package))?;
    eprintln!("package:   {}", package.display());
    eprintln!("workspace: {}", ws.root.display());
    runner(&ws.root.join(".cargo/config.toml"))?;
    optimized_runtime(&ws.root.join(".cargo/config.toml"))?;
    ignore(&ws.root.join(".gitignore"))?;
    if ws.chroots_dir().starts_with(&package) {
        exclude(&package.join("Cargo.toml"))?;
    }
    if !args.no_test {
        // A chroot the workspace declares (`bookworm` when it declares none), or the test
        // would not compile.
        let declared = ws.chroots()?;
        let chroot = declared
            .iter()
            .find(|d| d.name == "bookworm")
            .or(declared.first())
            .map_or("bookworm", |d| d.name.as_str());
        first_test(&package.join("tests/nspawn.rs"), chroot)?;
    }
    let path = package.join("Cargo.toml");
    let manifest = parse(&path, &read(&path)?)?;
    let depends = ["dependencies", "dev-dependencies"]
        .iter()
        .any(|table| manifest.get(table).and_then(|t| t.get("nspawn")).is_some());
    if !depends {
        eprintln!(
            "next: add nspawn to [dev-dependencies] in {}",
            package.join("Cargo.toml").display()
        );
    }
    eprintln!("then: cargo test (it asks for your sudo password to run the test binaries)");
    Ok(())
}

/// The directory of the package around `dir` (default: the current one).
fn package_dir(dir: Option<&Path>) -> Result<PathBuf, CliError> {
    let start = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            std::env::current_dir().map_err(|e| CliError::io("reading the current directory", e))?
        }
    };
    start
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .ok_or(CliError::NoPackage { start })
}

fn read(path: &Path) -> Result<String, CliError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other.map_err(|e| CliError::io(format!("reading {}", path.display()), e)),
    }
}

fn write(path: &Path, text: &str, what: &str) -> Result<(), CliError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, text)
        .map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
    eprintln!("wrote {what} to {}", path.display());
    Ok(())
}

fn parse(path: &Path, text: &str) -> Result<DocumentMut, CliError> {
    text.parse::<DocumentMut>().map_err(|e| CliError::Manifest {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `[target.'cfg(target_os = "linux")'] runner = "sudo -E"`, unless a runner is set there.
fn runner(path: &Path) -> Result<(), CliError> {
    let mut doc = parse(path, &read(path)?)?;
    let target = doc
        .entry("target")
        .or_insert_with(implicit_table)
        .as_table_mut()
        .and_then(|t| {
            t.entry(TARGET)
                .or_insert_with(|| Item::Table(Table::new()))
                .as_table_mut()
        });
    let Some(target) = target else {
        return Err(CliError::Manifest {
            path: path.to_path_buf(),
            message: format!("[target.'{TARGET}'] is not a table"),
        });
    };
    if let Some(existing) = target.get("runner") {
        eprintln!(
            "kept the runner already set in {}: {existing}",
            path.display()
        );
        return Ok(());
    }
    target.insert("runner", value(RUNNER));
    write(path, &doc.to_string(), "the test runner")
}

/// `[profile.dev.package.nspawn-runtime] opt-level = 2`, unless the runtime's dev settings
/// are set there already.
fn optimized_runtime(path: &Path) -> Result<(), CliError> {
    let mut doc = parse(path, &read(path)?)?;
    let (package, level) = RUNTIME;
    let packages =
        ["profile", "dev", "package"]
            .iter()
            .try_fold(doc.as_table_mut(), |table, key| {
                table
                    .entry(key)
                    .or_insert_with(implicit_table)
                    .as_table_mut()
            });
    let Some(packages) = packages else {
        return Err(CliError::Manifest {
            path: path.to_path_buf(),
            message: "[profile.dev.package] is not a table".into(),
        });
    };
    if let Some(existing) = packages.get(package) {
        eprintln!(
            "kept the settings of {package} already in {}: {}",
            path.display(),
            existing.to_string().trim()
        );
        return Ok(());
    }
    let mut settings = Table::new();
    settings.insert("opt-level", value(level));
    packages.insert(package, Item::Table(settings));
    write(
        path,
        &doc.to_string(),
        "an optimized runtime for dev builds",
    )
}

fn implicit_table() -> Item {
    let mut table = Table::new();
    table.set_implicit(true);
    Item::Table(table)
}

/// `/test_chroots/` in the workspace's `.gitignore`.
fn ignore(path: &Path) -> Result<(), CliError> {
    let text = read(path)?;
    let entry = format!("/{CHROOTS}/");
    if text
        .lines()
        .any(|l| l.trim() == entry || l.trim() == CHROOTS)
    {
        return Ok(());
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# Master chroots of nspawn tests (cargo nspawn make-chroots)\n{entry}\n"
    ));
    write(path, &text, "the ignore entry")
}

/// `exclude = ["test_chroots"]` in the package's manifest, unless it names it already or
/// uses `include` (which leaves the chroots out by itself).
fn exclude(path: &Path) -> Result<(), CliError> {
    let mut doc = parse(path, &read(path)?)?;
    let Some(package) = doc.get_mut("package").and_then(Item::as_table_mut) else {
        return Ok(());
    };
    if package.contains_key("include") {
        return Ok(());
    }
    let list = package
        .entry("exclude")
        .or_insert_with(|| value(Array::new()))
        .as_array_mut();
    let Some(list) = list else {
        return Ok(());
    };
    if list
        .iter()
        .any(|v| v.as_str().is_some_and(|s| s.trim_matches('/') == CHROOTS))
    {
        return Ok(());
    }
    list.push(CHROOTS);
    write(path, &doc.to_string(), "the package exclude")
}

fn first_test(path: &Path, chroot: &str) -> Result<(), CliError> {
    if path.exists() {
        return Ok(());
    }
    let text = FIRST_TEST.replace("CHROOT", chroot);
    write(path, &text, &format!("a first test (chroot {chroot})"))
}
