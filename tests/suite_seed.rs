//! The seed's suite in `#[nspawn::test]` form, for the benchmark (`benches/machine.rs`): 4
//! modules, 18 tests, each doing what the blog post's tests do (paths, commands, files,
//! services). Not run by `cargo test` (`test = false`).

use nspawn::Machine;

mod paths {
    use super::*;

    #[nspawn::test(chroot = "bookworm")]
    fn etc_exists(m: &Machine) {
        assert!(m.exists("/etc/os-release"));
    }
    #[nspawn::test(chroot = "bookworm")]
    fn no_such_path(m: &Machine) {
        assert!(!m.exists("/nonexistent"));
    }
    #[nspawn::test(chroot = "bookworm")]
    fn systemd_is_there(m: &Machine) {
        assert!(m.exists("/lib/systemd/systemd"));
    }
    #[nspawn::test(chroot = "bookworm")]
    fn exists_through_a_call(m: &Machine) -> nspawn::Result<()> {
        let p = "/etc/os-release".to_string();
        assert!(m.call(|p: String| std::path::Path::new(&p).exists(), p)?);
        Ok(())
    }
    #[nspawn::test(chroot = "bookworm")]
    fn home_of_root(m: &Machine) {
        assert!(m.exists("/root"));
    }
}

mod commands {
    use super::*;

    #[nspawn::test(chroot = "bookworm")]
    fn true_succeeds(m: &Machine) -> nspawn::Result<()> {
        m.run(["true"]).map(drop)
    }
    #[nspawn::test(chroot = "bookworm")]
    fn false_fails(m: &Machine) {
        assert!(m.run(["false"]).is_err());
    }
    #[nspawn::test(chroot = "bookworm")]
    fn echo(m: &Machine) -> nspawn::Result<()> {
        assert_eq!(m.sh("echo hello")?, "hello\n");
        Ok(())
    }
    #[nspawn::test(chroot = "bookworm")]
    fn uname(m: &Machine) -> nspawn::Result<()> {
        assert_eq!(m.sh("uname -s")?, "Linux\n");
        Ok(())
    }
    #[nspawn::test(chroot = "bookworm")]
    fn id(m: &Machine) -> nspawn::Result<()> {
        assert_eq!(m.sh("id -u")?, "0\n");
        Ok(())
    }
}

mod files {
    use super::*;

    #[nspawn::test(chroot = "bookworm")]
    fn write_then_read(m: &Machine) -> nspawn::Result<()> {
        m.write("/tmp/a", "one")?;
        assert_eq!(m.read_to_string("/tmp/a")?, "one");
        Ok(())
    }
    #[nspawn::test(chroot = "bookworm")]
    fn overwrite(m: &Machine) -> nspawn::Result<()> {
        m.write("/tmp/b", "one")?;
        m.write("/tmp/b", "two")?;
        assert_eq!(m.read_to_string("/tmp/b")?, "two");
        Ok(())
    }
    #[nspawn::test(chroot = "bookworm")]
    fn etc_file(m: &Machine) -> nspawn::Result<()> {
        m.write("/etc/app.conf", "port = 80\n")?;
        assert_eq!(m.sh("cat /etc/app.conf")?, "port = 80\n");
        Ok(())
    }
    #[nspawn::test(chroot = "bookworm")]
    fn os_release(m: &Machine) -> nspawn::Result<()> {
        assert!(m.read_to_string("/etc/os-release")?.contains("bookworm"));
        Ok(())
    }
}

mod services {
    use super::*;

    fn unit(m: &Machine, name: &str) -> nspawn::Result<()> {
        m.write(
            format!("/etc/systemd/system/{name}.service"),
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
        )?;
        m.run(["systemctl", "daemon-reload"])?;
        m.run(["systemctl", "start", name])?;
        m.run(["systemctl", "is-active", name]).map(drop)
    }

    #[nspawn::test(chroot = "bookworm")]
    fn starts_a(m: &Machine) -> nspawn::Result<()> {
        unit(m, "a")
    }
    #[nspawn::test(chroot = "bookworm")]
    fn starts_b(m: &Machine) -> nspawn::Result<()> {
        unit(m, "b")
    }
    #[nspawn::test(chroot = "bookworm")]
    fn dbus_socket(m: &Machine) -> nspawn::Result<()> {
        m.run(["systemctl", "is-active", "dbus.socket"]).map(drop)
    }
    #[nspawn::test(chroot = "bookworm")]
    fn journald(m: &Machine) -> nspawn::Result<()> {
        m.run(["systemctl", "is-active", "systemd-journald"])
            .map(drop)
    }
}
