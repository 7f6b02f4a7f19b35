//! `cargo nspawn` as a user runs it, in a project of their own.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

fn cargo_nspawn(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-nspawn"));
    cmd.current_dir(dir).env_remove("NSPAWN_WORKSPACE");
    cmd
}

/// `cargo nspawn init` as the user runs it: never under sudo (it refuses to), even when this
/// test binary runs through the `sudo -E` runner.
fn init(dir: &Path) -> Output {
    cargo_nspawn(dir)
        .arg("init")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A temporary project, removed as root when dropped: under the `sudo -E` runner this process
/// drops to the user after it made the directory, and root makes trees in it.
struct Project(Option<tempfile::TempDir>);

impl Project {
    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        let mut rm = Command::new("rm");
        rm.arg("-rf").arg("--").arg(dir.path());
        nspawn_runtime::host::privs::start_as_root(&mut rm);
        let _ = rm.status();
        let _ = dir.close();
    }
}

/// A package of the user's own, outside this repository, declaring one chroot.
fn project() -> Project {
    let dir = tempfile::Builder::new()
        .prefix("nspawn-project-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"mine\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [workspace]\n\n[workspace.metadata.nspawn.chroots.trixie]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    Project(Some(dir))
}

#[test]
fn it_acts_on_the_workspace_around_the_current_directory() {
    let project = project();
    let src = project.path().join("src");
    // As cargo runs it (`cargo nspawn list` is `cargo-nspawn nspawn list`), from a subdirectory.
    let out = cargo_nspawn(&src)
        .args(["nspawn", "list"])
        .output()
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let root = project.path().canonicalize().unwrap();
    assert!(
        report.contains(&format!("workspace: {}", root.display())),
        "{report}"
    );
    assert!(
        report.contains("trixie") && report.contains("missing: cargo nspawn make-chroots trixie"),
        "{report}"
    );
    assert!(
        !report.contains("bookworm"),
        "not this repository's chroots: {report}"
    );
}

#[test]
fn init_sets_the_project_up_once() {
    let project = project();
    let out = init(project.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("next: add nspawn to [dev-dependencies]"),
        "{}",
        text(&out)
    );
    let read = |p: &str| std::fs::read_to_string(project.path().join(p)).unwrap();
    let config = read(".cargo/config.toml");
    assert!(
        config.contains("[target.'cfg(target_os = \"linux\")']")
            && config.contains("runner = \"sudo -E\""),
        "{config}"
    );
    assert!(
        config.contains("[profile.dev.package.nspawn-runtime]\nopt-level = 2\n"),
        "{config}"
    );
    assert!(read(".gitignore").lines().any(|l| l == "/test_chroots/"));
    assert!(read("Cargo.toml").contains("exclude = [\"test_chroots\"]"));
    // The project declares `trixie` only: a test for `bookworm` would not compile.
    assert!(read("tests/nspawn.rs").contains("#[nspawn::test(chroot = \"trixie\")]"));
    let files = [
        "Cargo.toml",
        ".gitignore",
        ".cargo/config.toml",
        "tests/nspawn.rs",
    ];
    let before: Vec<String> = files.iter().map(|f| read(f)).collect();
    let again = init(project.path());
    assert!(again.status.success(), "{}", text(&again));
    let after: Vec<String> = files.iter().map(|f| read(f)).collect();
    assert_eq!(before, after, "a second init changes nothing");
}

#[test]
fn init_writes_a_first_test_for_bookworm_where_no_chroot_is_declared() {
    let project = project();
    let manifest = project.path().join("Cargo.toml");
    let text_of = std::fs::read_to_string(&manifest).unwrap();
    let bare = text_of.replace("\n[workspace.metadata.nspawn.chroots.trixie]\n", "");
    std::fs::write(&manifest, bare).unwrap();
    let out = init(project.path());
    assert!(out.status.success(), "{}", text(&out));
    let test = std::fs::read_to_string(project.path().join("tests/nspawn.rs")).unwrap();
    assert!(
        test.contains("#[nspawn::test(chroot = \"bookworm\")]"),
        "{test}"
    );
}

#[test]
fn init_keeps_a_runner_and_runtime_settings_already_set() {
    let project = project();
    std::fs::create_dir(project.path().join(".cargo")).unwrap();
    let mine = "[target.'cfg(target_os = \"linux\")']\nrunner = \"my-runner\"\n\n\
                [profile.dev.package.nspawn-runtime]\nopt-level = 1\n";
    std::fs::write(project.path().join(".cargo/config.toml"), mine).unwrap();
    let out = init(project.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kept the runner already set"));
    assert!(text(&out).contains("kept the settings of nspawn-runtime"));
    let config = std::fs::read_to_string(project.path().join(".cargo/config.toml")).unwrap();
    assert_eq!(config, mine);
}

/// Run as a user on a host without sudo, a command that needs root names the exact command
/// that works, with this program's absolute path (sudo's secure_path would not find it).
#[test]
fn without_root_or_sudo_the_error_names_the_command() {
    let has_sudo = ["/usr/bin/sudo", "/bin/sudo", "/usr/sbin/sudo"]
        .iter()
        .any(|p| Path::new(p).exists());
    if has_sudo || !nix_is_root() {
        eprintln!("skipped: needs root to become another user, and a host without sudo");
        return;
    }
    let project = project();
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cargo_nspawn(project.path())
        .args(["gc", "--workspace"])
        .arg(project.path())
        .env("HOME", project.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("needs root privileges"), "{report}");
    assert!(
        report.contains(env!("CARGO_BIN_EXE_cargo-nspawn"))
            && report.matches("--workspace").count() == 1,
        "the re-run names the workspace once: {report}"
    );
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Whether this process is root, or dropped to the user under the `sudo -E` runner with root
/// to regain: either way machines boot. (Once one test has booted a machine, the process runs
/// as the user: `nix_is_root` would then skip the other tests.)
fn root_available() -> bool {
    use nspawn_runtime::host::privs::{self, Mode};
    !matches!(privs::init(), Mode::Unprivileged)
}

/// `shell` gets into a running machine by name, and runs a command there when given one.
#[test]
fn shell_runs_in_a_running_machine() {
    if !root_available() {
        eprintln!("skipped: booting a machine needs root");
        return;
    }
    let machine = nspawn_runtime::Machine::start("bookworm").unwrap();
    machine.write("/root/mark", "inside\n").unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // As root (under the sudo runner this process has dropped to the user; the command would
    // re-run itself through sudo, which this host may not have).
    let shell = |args: &[&str]| {
        let mut cmd = cargo_nspawn(here);
        cmd.arg("shell").args(args);
        nspawn_runtime::host::privs::start_as_root(&mut cmd);
        cmd.output().unwrap()
    };
    let out = shell(&[machine.name(), "--", "cat", "/root/mark"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inside\n");
    let unknown = shell(&["nspawn-0-none", "--", "true"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains(machine.name()),
        "lists the running ones: {}",
        text(&unknown)
    );
    machine.stop().unwrap();
}

/// Under sudo (the way the kept-machine message's `cargo nspawn shell` runs as a user), the
/// command still gets into the machine as its root.
#[test]
fn shell_runs_in_a_running_machine_under_sudo() {
    if !root_available() {
        eprintln!("skipped: booting a machine needs root");
        return;
    }
    let machine = nspawn_runtime::Machine::start("bookworm").unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shell = cargo_nspawn(here);
    shell
        .args(["shell", machine.name(), "--", "id", "-u"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534");
    nspawn_runtime::host::privs::start_as_root(&mut shell);
    let out = shell.output().unwrap();
    machine.stop().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
}

/// Runs `cargo nspawn ARGS` in `dir` as nobody under sudo would, and returns what it printed;
/// it must succeed.
fn as_nobody_under_sudo(dir: &Path, args: &[&str]) -> String {
    let mut cmd = cargo_nspawn(dir);
    cmd.args(args)
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env_remove("NSPAWN_CHROOTS_DIR");
    nspawn_runtime::host::privs::start_as_root(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// Runs `script` in a shell started as root (this process may have dropped to the user).
fn as_root(script: &str) {
    let mut sh = Command::new("sh");
    sh.args(["-ec", script]);
    nspawn_runtime::host::privs::start_as_root(&mut sh);
    let out = sh.output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out));
}

/// `remove-chroots`, as a user under sudo: a named tree goes unless a machine runs from it,
/// `--undeclared` takes the trees nspawn built that no declaration names and keeps a
/// hand-made one, and no name at all is an error that lists the trees.
#[test]
fn remove_chroots_removes_what_it_is_told_and_nothing_in_use() {
    if !root_available() {
        eprintln!("skipped: the trees are root's");
        return;
    }
    let project = project();
    let chroots = project.path().join("test_chroots");
    let bookworm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test_chroots/bookworm");
    let (c, b) = (chroots.display(), bookworm.display());
    as_root(&format!(
        "mkdir -p {c}/trixie/etc {c}/gone/etc {c}/by-hand/etc && touch {c}/gone/etc/nspawn-chroot.toml \
         && cp -a {b} {c}/in-use && rm {c}/in-use/etc/nspawn-chroot.toml"
    ));
    let remove = |args: &[&str]| {
        let mut cmd = cargo_nspawn(project.path());
        cmd.arg("remove-chroots")
            .args(args)
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .env("NSPAWN_CHROOTS_DIR", &chroots);
        nspawn_runtime::host::privs::start_as_root(&mut cmd);
        cmd.output().unwrap()
    };
    let nothing = remove(&[]);
    assert!(!nothing.status.success());
    assert!(
        text(&nothing).contains("has: by-hand, gone, in-use, trixie"),
        "{}",
        text(&nothing)
    );
    let undeclared = remove(&["--undeclared"]);
    assert!(undeclared.status.success(), "{}", text(&undeclared));
    assert!(!chroots.join("gone").exists());
    assert!(chroots.join("by-hand").exists() && chroots.join("in-use").exists());
    assert!(chroots.join("trixie").exists());
    let machine = nspawn_runtime::Machine::start(chroots.join("in-use").to_str().unwrap()).unwrap();
    let busy = remove(&["in-use"]);
    let kept = chroots.join("in-use/etc").exists();
    machine.stop().unwrap();
    assert!(!busy.status.success() && kept, "{}", text(&busy));
    assert!(
        text(&busy).contains("a running machine uses"),
        "{}",
        text(&busy)
    );
    let named = remove(&["in-use", "by-hand"]);
    assert!(named.status.success(), "{}", text(&named));
    assert!(!chroots.join("in-use").exists() && !chroots.join("by-hand").exists());
}

/// `export-chroots` writes a chroot as one file keyed by its declaration, handed to the user
/// who ran it through sudo; `import-chroots` puts it in place in another workspace with the
/// same declaration, where a machine boots from it, and leaves alone a file whose tree is of
/// another declaration, whatever its name says.
#[test]
fn an_exported_chroot_is_imported_where_its_declaration_is_the_same() {
    if !root_available() {
        eprintln!("skipped: the trees are root's");
        return;
    }
    let files = project();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = as_nobody_under_sudo;
    let to = files.path().join("cache");
    std::fs::create_dir(&to).unwrap();
    run(
        &here,
        &["export-chroots", "bookworm", "--to", to.to_str().unwrap()],
    );
    let file = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .expect("an exported file");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("bookworm-"), "{name}");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&file).unwrap());
    assert_eq!(owner, 65534, "the file is the sudo user's");

    let ws = project();
    std::fs::write(
        ws.path().join("Cargo.toml"),
        "[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\n\
         [workspace.metadata.nspawn.chroots.other]\nsuite = \"bookworm\"\ninclude = [\"curl\"]\n",
    )
    .unwrap();
    let key = name.trim_start_matches("bookworm-");
    let liar = to.join(format!("other-{key}"));
    std::fs::copy(&file, &liar).unwrap();
    let imported = run(ws.path(), &["import-chroots", file.to_str().unwrap()]);
    assert!(imported.contains("bookworm: imported"), "{imported}");
    let again = run(
        ws.path(),
        &[
            "import-chroots",
            file.to_str().unwrap(),
            liar.to_str().unwrap(),
        ],
    );
    assert!(again.contains("bookworm: up to date"), "{again}");
    assert!(
        again.contains("other: ") && again.contains("skipped"),
        "{again}"
    );
    let chroots = ws.path().join("test_chroots");
    let trees: Vec<String> = std::fs::read_dir(&chroots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "CACHEDIR.TAG" && n != ".logs")
        .collect();
    assert_eq!(trees, ["bookworm"], "nothing of the other file is left");
    let listed = run(ws.path(), &["list"]);
    assert!(listed.contains("[ready"), "{listed}");

    let machine = nspawn_runtime::Machine::builder("bookworm")
        .workspace(ws.path())
        .start()
        .unwrap();
    assert!(machine.exists("/etc/nspawn-chroot.toml"));
    machine.stop().unwrap();
}

/// A declaration that only adds a package is built from the tree the chroot has, with the
/// package installed into a copy of it (what was in the tree stays); `--fresh` bootstraps.
#[test]
fn a_declaration_that_adds_a_package_extends_the_tree_it_has() {
    if !root_available() {
        eprintln!("skipped: the trees are root's");
        return;
    }
    let ws = project();
    std::fs::write(
        ws.path().join("Cargo.toml"),
        "[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\ninclude = [\"jq\"]\n",
    )
    .unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chroots = ws.path().join("test_chroots");
    let tree = chroots.join("bookworm");
    // The repository's bookworm, built from the default declaration, and a mark in it.
    as_root(&format!(
        "mkdir {chroots} && cp -a {here}/test_chroots/bookworm {tree} && touch {tree}/etc/marked",
        chroots = chroots.display(),
        here = here.display(),
        tree = tree.display(),
    ));
    let run = |args: &[&str]| as_nobody_under_sudo(ws.path(), args);
    let extended = run(&["make-chroots", "--force", "bookworm"]);
    let failed = std::fs::read_to_string(chroots.join(".logs/bookworm.extend-failed.log"));
    assert!(
        extended.contains("bookworm: added jq to its tree"),
        "{extended}\n{}",
        failed.unwrap_or_default()
    );
    assert!(tree.join("etc/marked").exists(), "the tree it had was kept");
    assert!(run(&["list"]).contains("[ready"));
    let machine = nspawn_runtime::Machine::builder("bookworm")
        .workspace(ws.path())
        .start()
        .unwrap();
    assert!(machine.sh("jq --version").unwrap().starts_with("jq-"));
    machine.stop().unwrap();

    let fresh = run(&["make-chroots", "--fresh", "bookworm"]);
    assert!(fresh.contains("bookworm: built with"), "{fresh}");
    assert!(!tree.join("etc/marked").exists(), "a tree from nothing");
    assert!(tree.join("usr/bin/jq").exists());
}

/// A chroot's build keeps the packages its tree installed beside the chroots; a rebuild after
/// its declaration changed starts from them (mmdebstrap copies them where apt looks first),
/// `--fresh` does not, and `remove-chroots` removes them with the tree.
#[test]
fn a_rebuild_takes_the_packages_the_last_build_kept() {
    if !root_available() {
        eprintln!("skipped: the trees are root's");
        return;
    }
    let ws = project();
    let declare = |extra: &str| {
        std::fs::write(
            ws.path().join("Cargo.toml"),
            format!("[workspace]\n[workspace.metadata.nspawn.chroots.bookworm]\n{extra}"),
        )
        .unwrap()
    };
    let chroots = ws.path().join("test_chroots");
    let cache = chroots.join(".debs/bookworm");
    let log = chroots.join(".logs/bookworm.log");
    let run = |args: &[&str]| as_nobody_under_sudo(ws.path(), args);
    let kept = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let took_the_cache = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(&format!("sync-in {} ", cache.display()))
    };

    declare("");
    let first = run(&["make-chroots", "bookworm"]);
    assert!(
        first.contains("packages kept for the next build"),
        "{first}"
    );
    let packages = kept();
    assert!(
        packages.iter().any(|p| p.starts_with("systemd_")),
        "{packages:?}"
    );
    assert!(packages.iter().all(|p| p.ends_with(".deb")), "{packages:?}");

    // Not an addition of packages: bootstrapped again, from what the first build kept.
    declare("setup = [\"touch /etc/changed\"]\n");
    let second = run(&["make-chroots", "--force", "bookworm"]);
    assert!(second.contains("bookworm: built with"), "{second}");
    assert!(
        took_the_cache(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(chroots.join("bookworm/etc/changed").exists());
    assert_eq!(kept(), packages, "the same packages, kept again");

    let fresh = run(&["make-chroots", "--fresh", "bookworm"]);
    assert!(fresh.contains("bookworm: built with"), "{fresh}");
    assert!(!took_the_cache(), "--fresh downloads everything");

    let removed = run(&["remove-chroots", "bookworm"]);
    assert!(!cache.exists(), "{removed}");
}
