//! A running VM: QEMU under TCG (this workplace's KVM is PVM, which cannot boot Debian's
//! kernel), one host thread for both vCPUs (with a thread each, QEMU 7.2 let the guest kernel
//! die of "Oops: int3" when it patched its own code: seen at boot and after 26 minutes of
//! tests), its root disk opened with `snapshot=on` so that the cached image stays pristine,
//! the payload disk as `/dev/vdb`, and ssh forwarded to a local port. Dropping it stops QEMU.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cargo_nspawn::CliError;
use nspawn_runtime::host::tools;

use super::image::Image;
use super::{io, step};

/// How long a boot may take under TCG before we give up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Boots tried: TCG with several vCPUs sometimes panics early (a text-patching race).
const BOOT_TRIES: usize = 3;

pub struct Vm {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
    serial: PathBuf,
}

impl Vm {
    /// Boots `image` with `payload` attached, and waits until ssh answers.
    pub fn boot(image: &Image, payload: &Path, dir: &Path) -> Result<Vm, CliError> {
        let mut attempt = 1;
        loop {
            let vm = Vm::start(image, payload, dir)?;
            match vm.wait_for_ssh() {
                Ok(()) => return Ok(vm),
                Err(e) if attempt < BOOT_TRIES && vm.panicked() => {
                    step(&format!(
                        "the guest kernel panicked at boot ({e}); booting again"
                    ));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start(image: &Image, payload: &Path, dir: &Path) -> Result<Vm, CliError> {
        let port = free_port()?;
        let serial = dir.join("serial.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-name",
            "nspawn-vm",
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=single,tb-size=1024",
        ])
        .args([
            "-cpu", "max", "-smp", "2", "-m", "6G", "-display", "none", "-monitor", "none",
        ])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 quiet"])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            image.disk.display()
        ))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", payload.display()))
        .arg("-nic")
        .arg(format!(
            "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22"
        ))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // The VM never outlives this process, however it ends.
        // SAFETY: one raw system call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| io(Path::new("qemu-system-x86_64"), e))?;
        step(&format!(
            "booting the VM (QEMU {}, ssh on port {port})",
            child.id()
        ));
        Ok(Vm {
            child,
            port,
            key: image.key.clone(),
            serial,
        })
    }

    fn wait_for_ssh(&self) -> Result<(), CliError> {
        let started = Instant::now();
        while started.elapsed() < BOOT_TIMEOUT {
            if self.panicked() {
                return Err(self.failure("the guest kernel panicked"));
            }
            if self.ssh("true").is_ok_and(|out| out.status.success()) {
                step(&format!(
                    "the VM is up after {:.0} s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Err(self.failure("ssh did not answer"))
    }

    fn panicked(&self) -> bool {
        std::fs::read_to_string(&self.serial).is_ok_and(|s| s.contains("Kernel panic"))
    }

    fn failure(&self, what: &str) -> CliError {
        let serial = std::fs::read_to_string(&self.serial).unwrap_or_default();
        let tail: Vec<&str> = serial.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io(
            &self.serial,
            std::io::Error::other(format!("{what}; the console's end:\n{}", tail.join("\n"))),
        )
    }

    /// Runs `script` in the VM as root; its output.
    pub fn ssh(&self, script: &str) -> std::io::Result<Output> {
        self.ssh_command(script).output()
    }

    /// Runs `script` in the VM as root, its output going to ours; whether it succeeded.
    pub fn ssh_shown(&self, script: &str) -> Result<bool, CliError> {
        let status = self
            .ssh_command(script)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| io(Path::new("ssh"), e))?;
        Ok(status.success())
    }

    fn ssh_command(&self, script: &str) -> Command {
        let mut cmd = tools::command("ssh");
        cmd.arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "BatchMode=yes",
            ])
            .args(["-o", "ServerAliveInterval=30", "root@127.0.0.1", script])
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.ssh("systemctl poweroff");
        let pid = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                step("the VM is off");
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        step(&format!("the VM did not power off; killing QEMU {pid}"));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local TCP port nobody listens on now.
fn free_port() -> Result<u16, CliError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io(Path::new("127.0.0.1:0"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| io(Path::new("127.0.0.1:0"), e))
}
