//! The provisioning actions against real machines. Tests of one module share a machine, so
//! each test uses names of its own (package, unit, user), as the blog post's suite does.

use nspawn::Machine;
use provisioning_example::{Action, DebInstalled, FileContent, Target, UnitRunning, UserExists};

/// A name no other test of the shared machine uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Builds a tiny package `name` inside the machine (no network needed) and returns its path.
fn build_deb(m: &Machine, name: &str) -> String {
    let root = format!("/tmp/{name}");
    m.run([
        "mkdir",
        "-p",
        &format!("{root}/DEBIAN"),
        &format!("{root}/usr/bin"),
    ])
    .unwrap();
    let control = format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: nspawn tests <t@example.org>\n\
         Description: a test package\n"
    );
    m.write(format!("{root}/DEBIAN/control"), control).unwrap();
    m.write(
        format!("{root}/usr/bin/{name}"),
        "#!/bin/sh\necho hello from the package\n",
    )
    .unwrap();
    m.run(["chmod", "755", &format!("{root}/usr/bin/{name}")])
        .unwrap();
    m.run([
        "dpkg-deb",
        "--build",
        "--root-owner-group",
        &root,
        &format!("{root}.deb"),
    ])
    .unwrap();
    format!("{root}.deb")
}

mod packages {
    use super::*;

    #[nspawn::test(chroot = "bookworm")]
    fn a_local_deb_gets_installed_once(m: &Machine) -> provisioning_example::Result<()> {
        let name = unique("hello");
        let deb = build_deb(m, &name);
        let first = DebInstalled::from_file(&deb).apply(m)?;
        assert!(first.changed, "{first:?}");
        assert!(m.exists(format!("/usr/bin/{name}")));
        assert_eq!(m.sh(&name)?, "hello from the package\n");
        let second = DebInstalled::from_file(&deb).apply(m)?;
        assert!(
            !second.changed,
            "installing again changes nothing: {second:?}"
        );
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm")]
    fn files_get_their_content_and_mode(m: &Machine) -> provisioning_example::Result<()> {
        let path = format!("/etc/{}.conf", unique("app"));
        let action = FileContent::new(&path, "port = 8080\n").mode(0o640);
        assert!(action.apply(m)?.changed);
        assert_eq!(m.read_to_string(&path)?, "port = 8080\n");
        assert_eq!(m.sh(&format!("stat -c %a {path}"))?, "640\n");
        assert!(!action.apply(m)?.changed);
        // A drifted mode is put back.
        m.run(["chmod", "777", &path])?;
        assert!(action.apply(m)?.changed);
        assert_eq!(m.sh(&format!("stat -c %a {path}"))?, "640\n");
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

    #[nspawn::test(chroot = "bookworm")]
    fn a_unit_is_installed_started_and_logs_to_the_journal(
        m: &Machine,
    ) -> provisioning_example::Result<()> {
        let unit = format!("{}.service", unique("greeter"));
        let message = unique("greetings");
        let report = UnitRunning::new(&unit, &oneshot(&message))
            .enabled(false)
            .apply(m)?;
        assert!(report.changed, "{report:?}");
        assert_eq!(m.sh(&format!("systemctl is-active {unit}"))?, "active\n");
        let journal = m.sh(&format!("journalctl --no-pager --output=cat -u {unit}"))?;
        assert!(journal.contains(&message), "{journal}");
        assert!(
            !UnitRunning::new(&unit, &oneshot(&message))
                .enabled(false)
                .apply(m)?
                .changed
        );
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm")]
    fn an_enabled_unit_gets_its_wants_symlink(m: &Machine) -> provisioning_example::Result<()> {
        let unit = format!("{}.service", unique("enabled"));
        UnitRunning::new(&unit, &oneshot("enabled")).apply(m)?;
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

    #[nspawn::test(chroot = "bookworm")]
    fn a_user_is_created_once(m: &Machine) -> provisioning_example::Result<()> {
        let name = unique("u");
        assert!(UserExists::regular(&name).apply(m)?.changed);
        let entry = m.check(&["getent", "passwd", &name])?;
        assert!(
            entry.starts_with(&format!("{name}:")) && entry.contains(&format!("/home/{name}")),
            "{entry}"
        );
        assert!(m.exists(format!("/home/{name}")));
        assert!(!UserExists::regular(&name).apply(m)?.changed);
        Ok(())
    }

    #[nspawn::test(chroot = "bookworm")]
    fn a_system_user_has_no_login(m: &Machine) -> provisioning_example::Result<()> {
        let name = unique("svc");
        UserExists::system(&name).apply(m)?;
        let entry = m.check(&["getent", "passwd", &name])?;
        assert!(entry.trim_end().ends_with("/usr/sbin/nologin"), "{entry}");
        Ok(())
    }
}

/// Tests that must see an untouched system get a machine of their own.
mod pristine {
    use super::*;

    #[nspawn::test(chroot = "bookworm", scope = "test")]
    fn a_full_provisioning_run_on_a_fresh_machine(m: &Machine) -> provisioning_example::Result<()> {
        assert!(
            !m.exists("/etc/systemd/system/app.service"),
            "nothing of other tests is here"
        );
        let deb = build_deb(m, "app");
        let plan: Vec<Box<dyn Action>> = vec![
            Box::new(UserExists::system("app")),
            Box::new(DebInstalled::from_file(&deb)),
            Box::new(FileContent::new("/etc/app.conf", "greeting = hi\n").mode(0o640)),
            Box::new(UnitRunning::new(
                "app.service",
                "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=app\nExecStart=/usr/bin/app\n\n[Install]\nWantedBy=multi-user.target\n",
            )),
        ];
        let first: Vec<bool> = plan
            .iter()
            .map(|a| a.apply(m).map(|r| r.changed))
            .collect::<Result<_, _>>()?;
        assert_eq!(first, [true; 4]);
        let second: Vec<bool> = plan
            .iter()
            .map(|a| a.apply(m).map(|r| r.changed))
            .collect::<Result<_, _>>()?;
        assert_eq!(second, [false; 4], "a second run changes nothing");
        assert!(m
            .sh("journalctl --no-pager --output=cat -u app.service")?
            .contains("hello from the package"));
        Ok(())
    }
}

/// The same actions on the next Debian release.
mod trixie {
    use super::*;

    #[nspawn::test(chroot = "trixie")]
    fn actions_work_on_trixie_too(m: &Machine) -> provisioning_example::Result<()> {
        assert!(m.read_to_string("/etc/os-release")?.contains("trixie"));
        let name = unique("hello");
        let deb = build_deb(m, &name);
        assert!(DebInstalled::from_file(&deb).apply(m)?.changed);
        assert!(UserExists::regular(&unique("t")).apply(m)?.changed);
        Ok(())
    }
}
