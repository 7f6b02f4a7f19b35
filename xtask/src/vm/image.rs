//! The second host kind's disk: Debian trixie with systemd as PID 1 (cgroup v2), its kernel
//! and initrd, built once with mmdebstrap and kept under `target/vm/` until its recipe
//! changes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cargo_nspawn::CliError;
use nspawn_runtime::host::tools;

use super::{io, step, Firewall};

/// The suite the VM runs: systemd >= 256, cgroup v2 only.
const SUITE: &str = "trixie";
/// What the VM needs: systemd as PID 1 with machined, a kernel, ssh for us, and what the
/// framework uses on a host (nspawn, ip, nft, iptables).
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "udev",
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-container",
    "systemd-resolved",
    "iproute2",
    "nftables",
    "iptables",
    "openssh-server",
    "procps",
    "kmod",
    "util-linux",
    "e2fsprogs",
    "ca-certificates",
    "netbase",
];
/// Changed whenever the way the image is made changes, so that a cached one is remade.
const REVISION: u32 = 1;

/// A built image: the root disk, the kernel, the initrd and the ssh key that logs in.
#[derive(Debug)]
pub struct Image {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub key: PathBuf,
}

/// The image under `dir`, built first if it is missing or from another recipe. With a
/// `firewall`, that firewall is installed and active too.
pub fn ensure(dir: &Path, firewall: Option<Firewall>) -> Result<Image, CliError> {
    let name = match firewall {
        None => SUITE.to_string(),
        Some(f) => format!("{SUITE}-{}", extra(f).0),
    };
    let dir = dir.join(name);
    let image = Image {
        disk: dir.join("disk.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        key: dir.join("id_ed25519"),
    };
    let recipe = recipe(firewall);
    let stamp = dir.join("recipe");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == recipe) && image.disk.exists() {
        step(&format!("image {} (cached)", image.disk.display()));
        return Ok(image);
    }
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let tree = dir.join("tree");
    bootstrap(&tree, firewall)?;
    customize(&tree, &image.key, firewall)?;
    boot_files(&tree, &image)?;
    make_disk(&tree, &image.disk, "8G")?;
    std::fs::remove_dir_all(&tree).map_err(|e| io(&tree, e))?;
    std::fs::write(&stamp, recipe).map_err(|e| io(&stamp, e))?;
    step(&format!(
        "image built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(image)
}

/// A firewall's package, and the command (run in the tree) that turns it on at boot.
fn extra(firewall: Firewall) -> (&'static str, &'static str) {
    match firewall {
        // Docker and firewalld are enabled by their packages' presets.
        Firewall::Docker => ("docker.io", "true"),
        Firewall::Firewalld => ("firewalld", "systemctl enable firewalld.service"),
        // Enabled at boot with its default forward policy, DROP; its input policy is ACCEPT
        // here so that ssh reaches the VM (`ufw allow` needs a running kernel firewall).
        Firewall::Ufw => (
            "ufw",
            "sed -i 's/^ENABLED=no/ENABLED=yes/' /etc/ufw/ufw.conf && sed -i \
             's/^DEFAULT_INPUT_POLICY=.*/DEFAULT_INPUT_POLICY=\"ACCEPT\"/' /etc/default/ufw",
        ),
    }
}

fn recipe(firewall: Option<Firewall>) -> String {
    format!(
        "revision {REVISION}\nsuite {SUITE}\npackages {}\nfirewall {}\n",
        PACKAGES.join(","),
        firewall.map_or("none", |f| extra(f).0)
    )
}

fn bootstrap(tree: &Path, firewall: Option<Firewall>) -> Result<(), CliError> {
    step(&format!(
        "bootstrapping {SUITE} with mmdebstrap (a few minutes)"
    ));
    let mut packages = PACKAGES.join(",");
    if let Some(firewall) = firewall {
        packages.push(',');
        packages.push_str(extra(firewall).0);
    }
    let mut cmd = tools::command("mmdebstrap");
    cmd.args(["--variant=minbase", "--quiet"])
        .arg(format!("--include={packages}"))
        .args([SUITE])
        .arg(tree);
    tools::run(&mut cmd)?;
    Ok(())
}

/// Host name, network (DHCP on QEMU's user network), ssh for root with our key, no tmpfs on
/// `/tmp`, a serial console, and the firewall on.
fn customize(tree: &Path, key: &Path, firewall: Option<Firewall>) -> Result<(), CliError> {
    let mut keygen = tools::command("ssh-keygen");
    keygen
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(key);
    tools::run(&mut keygen)?;
    let public = std::fs::read_to_string(key.with_extension("pub")).map_err(|e| io(key, e))?;
    let files = [
        ("etc/hostname", "nspawn-vm\n".to_string()),
        (
            "etc/hosts",
            "127.0.0.1 localhost\n127.0.1.1 nspawn-vm\n".into(),
        ),
        ("etc/fstab", "/dev/vda / ext4 defaults 0 1\n".into()),
        (
            "etc/systemd/network/20-wired.network",
            "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n".into(),
        ),
        ("root/.ssh/authorized_keys", public),
    ];
    for (path, text) in files {
        let path = tree.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    let script = "systemctl enable systemd-networkd.service systemd-resolved.service ssh.service \
                  && systemctl mask tmp.mount \
                  && ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf \
                  && chmod 700 /root/.ssh";
    let script = format!("{script} && {}", firewall.map_or("true", |f| extra(f).1));
    let mut chroot = tools::command("chroot");
    chroot.arg(tree).args(["sh", "-c", &script]);
    tools::run(&mut chroot)?;
    Ok(())
}

fn boot_files(tree: &Path, image: &Image) -> Result<(), CliError> {
    for (prefix, to) in [("vmlinuz-", &image.kernel), ("initrd.img-", &image.initrd)] {
        let boot = tree.join("boot");
        let found = std::fs::read_dir(&boot)
            .map_err(|e| io(&boot, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .max()
            .ok_or_else(|| io(&boot, std::io::Error::other(format!("no {prefix}* in it"))))?;
        std::fs::copy(&found, to).map_err(|e| io(&found, e))?;
    }
    Ok(())
}

/// An ext4 image of `size` holding `tree` (sparse; made without mounting anything).
pub fn make_disk(tree: &Path, disk: &Path, size: &str) -> Result<(), CliError> {
    let mut cmd = tools::command("mkfs.ext4");
    cmd.args(["-q", "-F", "-d"]).arg(tree).arg(disk).arg(size);
    tools::run(&mut cmd)?;
    Ok(())
}
