//! The provisioning actions, run inside real machines: the library's code, unchanged, acting
//! on a booted Debian as it would on a real host.
//!
//! Two ways in: `#[nspawn::test(inside)]` runs a whole test body in the machine, and
//! `Machine::call` runs one function there from a test that also looks from outside. Tests of
//! a module share a machine (each uses names of its own), and a module's set-up prepares what
//! its tests need, once per machine.

use std::process::Command;

use nspawn::Machine;
use provisioning_example::{apply, apply_all, Action, DebInstalled, FileContent, Report, Step};
use provisioning_example::{UnitRunning, UserExists};

/// A name no other test of the shared machine uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Builds a tiny package `name` on the system it runs on (no network needed), printing a
/// greeting from `/usr/bin/<name>`; returns the `.deb`'s path.
fn build_deb(name: &str) -> provisioning_example::Result<String> {
    let root = format!("/srv/debs/{name}");
    std::fs::create_dir_all(format!("{root}/DEBIAN"))?;
    std::fs::create_dir_all(format!("{root}/usr/bin"))?;
    std::fs::write(
        format!("{root}/DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\n\
             Maintainer: nspawn tests <t@example.org>\nDescription: a test package\n"
        ),
    )?;
    FileContent::new(
        &format!("{root}/usr/bin/{name}"),
        "#!/bin/sh\necho hello from the package\n",
    )
    .mode(0o755)
    .apply()?;
    let deb = format!("{root}.deb");
    let built = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", &root, &deb])
        .output()?;
    if !built.status.success() {
        return Err(String::from_utf8_lossy(&built.stderr).into_owned().into());
    }
    Ok(deb)
}

mod packages {
    use super::*;

    /// The package the module's tests install, built once per machine.
    const HELLO: &str = "/srv/debs/hello.deb";

    #[nspawn::setup(chroot = "bookworm", inside)]
    fn build_the_package() -> provisioning_example::Result<()> {
        build_deb("hello").map(drop)
    }

    #[nspawn::test(chroot = "bookworm", inside)]
    fn a_local_deb_gets_installed_once() -> provisioning_example::Result<()> {
        let first = DebInstalled::from_file(HELLO).apply()?;
        assert!(first.changed, "{first:?}");
        let out = Command::new("hello").output()?;
        assert_eq!(out.stdout, b"hello from the package\n");
        let second = DebInstalled::from_file(HELLO).apply()?;
        assert!(
            !second.changed,
            "installing again changes nothing: {second:?}"
        );
        Ok(())
    }

    /// The action in the machine, the checks from outside.
    #[nspawn::test(chroot = "bookworm")]
    fn files_get_their_content_and_mode(m: &Machine) -> provisioning_example::Result<()> {
        let path = format!("/etc/{}.conf", unique("app"));
        let action = FileContent::new(&path, "port = 8080\n").mode(0o640);
        let changed = |m: &Machine| -> provisioning_example::Result<bool> {
            let report = m
                .call(apply::<FileContent>, action.clone())
                .map_err(|e| e.to_string())??;
            Ok(report.changed)
        };
        assert!(changed(m)?);
        assert_eq!(
            m.read_to_string(&path).map_err(|e| e.to_string())?,
            "port = 8080\n"
        );
        let mode = || {
            m.sh(&format!("stat -c %a {path}"))
                .map_err(|e| e.to_string())
        };
        assert_eq!(mode()?, "640\n");
        assert!(!changed(m)?, "a second apply changes nothing");
        // A drifted mode is put back.
        m.run(["chmod", "777", &path]).map_err(|e| e.to_string())?;
        assert!(changed(m)?);
        assert_eq!(mode()?, "640\n");
        Ok(())
    }
}

mod services {
    use super::*;

    fn oneshot(message: &str) -> String {
        format!(
            "[Unit]\nDescription=nspawn example\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart=/bin/echo {message}\n\n[Install]\nWantedBy=multi-user.target\n"
        )
    }

    #[nspawn::test(chroot = "bookworm", inside)]
    fn a_unit_is_installed_started_and_logs_to_the_journal() -> provisioning_example::Result<()> {
        let unit = format!("{}.service", unique("greeter"));
        let message = unique("greetings");
        let action = UnitRunning::new(&unit, &oneshot(&message)).enabled(false);
        let report = action.apply()?;
        assert!(report.changed, "{report:?}");
        let journal = Command::new("journalctl")
            .args(["--no-pager", "--output=cat", "-u", &unit])
            .output()?;
        assert!(String::from_utf8_lossy(&journal.stdout).contains(&message));
        assert!(!action.apply()?.changed, "a second apply changes nothing");
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm")]
    fn an_enabled_unit_gets_its_wants_symlink(m: &Machine) -> nspawn::Result<()> {
        let unit = format!("{}.service", unique("enabled"));
        let report = m.call(
            apply::<UnitRunning>,
            UnitRunning::new(&unit, &oneshot("enabled")),
        )?;
        assert!(report.is_ok_and(|r| r.changed));
        let link = format!("/etc/systemd/system/multi-user.target.wants/{unit}");
        assert_eq!(
            m.sh(&format!("readlink {link}"))?.trim(),
            format!("/etc/systemd/system/{unit}")
        );
        assert_eq!(m.sh(&format!("systemctl is-enabled {unit}"))?, "enabled\n");
        Ok(())
    }
}

mod users {
    use super::*;

    #[nspawn::test(chroot = "bookworm", inside)]
    fn a_user_is_created_once() -> provisioning_example::Result<()> {
        let name = unique("u");
        assert!(UserExists::regular(&name).apply()?.changed);
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        let entry = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_default();
        assert!(entry.contains(&format!("/home/{name}")), "{entry}");
        assert!(std::path::Path::new(&format!("/home/{name}")).is_dir());
        assert!(!UserExists::regular(&name).apply()?.changed);
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm", inside)]
    fn a_system_user_has_no_login() -> provisioning_example::Result<()> {
        let name = unique("svc");
        UserExists::system(&name).apply()?;
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        let entry = passwd.lines().find(|l| l.starts_with(&format!("{name}:")));
        assert!(
            entry.is_some_and(|e| e.ends_with(":/usr/sbin/nologin")),
            "{entry:?}"
        );
        Ok(())
    }
}

/// The whole plan of an application, on machines of their own.
mod pristine {
    use super::*;

    /// The package the plan installs.
    #[nspawn::setup(chroot = "bookworm", inside)]
    fn build_the_app() -> provisioning_example::Result<()> {
        build_deb("app").map(drop)
    }

    fn plan() -> Vec<Step> {
        vec![
            Step::User(UserExists::system("app")),
            Step::Deb(DebInstalled::from_file("/srv/debs/app.deb")),
            Step::File(FileContent::new("/etc/app.conf", "greeting = hi\n").mode(0o640)),
            Step::Unit(UnitRunning::new(
                "app.service",
                "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=app\nExecStart=/usr/bin/app\n\n\
                 [Install]\nWantedBy=multi-user.target\n",
            )),
        ]
    }

    fn changed(reports: &[Report]) -> Vec<bool> {
        reports.iter().map(|r| r.changed).collect()
    }

    #[nspawn::test(chroot = "bookworm", scope = "test")]
    fn a_full_run_on_a_fresh_machine_then_nothing_to_do(m: &Machine) -> nspawn::Result<()> {
        assert!(
            !m.exists("/etc/systemd/system/app.service"),
            "nothing of other tests is here"
        );
        let first = m.call(apply_all, plan())?.map_err(|e| e.to_string());
        assert_eq!(changed(&first.unwrap()), [true; 4]);
        let second = m.call(apply_all, plan())?.map_err(|e| e.to_string());
        assert_eq!(
            changed(&second.unwrap()),
            [false; 4],
            "a second run changes nothing"
        );
        assert!(m
            .sh("journalctl --no-pager --output=cat -u app.service")?
            .contains("hello from the package"));
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm", scope = "test", inside)]
    fn a_drifted_file_is_the_only_change_on_a_rerun() -> provisioning_example::Result<()> {
        apply_all(plan())?;
        std::fs::write("/etc/app.conf", "greeting = drifted\n")?;
        let again = apply_all(plan())?;
        assert_eq!(changed(&again), [false, false, true, false]);
        assert_eq!(std::fs::read_to_string("/etc/app.conf")?, "greeting = hi\n");
        Ok(())
    }
}

/// The same actions on each Debian release: one test per chroot, `releases::
/// actions_work_on_every_release::bookworm` and `::trixie`.
mod releases {
    use super::*;

    #[nspawn::test(chroot = ["bookworm", "trixie"], inside)]
    fn actions_work_on_every_release() -> provisioning_example::Result<()> {
        assert!(std::fs::read_to_string("/etc/os-release")?.contains("debian"));
        let deb = build_deb(&unique("hello"))?;
        assert!(DebInstalled::from_file(&deb).apply()?.changed);
        assert!(UserExists::regular(&unique("t")).apply()?.changed);
        Ok(())
    }

    /// What the machine reports from outside, with testinfra-style helpers.
    #[nspawn::test(chroot = ["bookworm", "trixie"])]
    fn the_system_is_up_with_its_packages(m: &Machine) -> nspawn::Result<()> {
        m.wait_until_running(std::time::Duration::from_secs(30))?;
        let systemd = m.package_version("systemd")?;
        assert!(systemd.is_some(), "systemd is installed on {}", m.chroot());
        assert!(m.user_exists("root")?);
        Ok(())
    }
}
