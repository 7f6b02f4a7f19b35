//! The machine's files, from the test process.
//!
//! The machine's agent opens and `stat`s them inside the machine, as its root, and hands
//! back descriptors (see [`crate::agent`]). Paths resolve as they would inside: absolute
//! symlinks (`/etc/resolv.conf`, ...) stay inside the machine. The bytes are read and
//! written here, straight through the descriptor, whatever their size.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::lifecycle::Machine;
use crate::agent::wire::{Request, Response};
use crate::error::{Error, Result};

impl Machine {
    /// Whether `path` exists in the machine (following symlinks inside it).
    ///
    /// # Panics
    /// When it cannot tell (the machine is gone, the agent failed, a relative path): a wrong
    /// `false` would make `assert!(!machine.exists(..))` pass. Use [`Machine::try_exists`] to
    /// handle that case.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// assert!(machine.exists("/etc/os-release"));
    /// assert!(!machine.exists("/etc/no-such-file"));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn exists(&self, path: impl AsRef<Path>) -> bool {
        self.try_exists(path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether `path` exists in the machine, like [`Path::try_exists`]: `Ok(false)` only when
    /// it does not, an error when that cannot be told.
    ///
    /// ```no_run
    /// # let machine = nspawn::Machine::start("bookworm")?;
    /// assert!(!machine.try_exists("/etc/my-app.conf")?);
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn try_exists(&self, path: impl AsRef<Path>) -> Result<bool> {
        let path = path.as_ref();
        let request = Request::Stat {
            path: self.guest_path(path, "checking")?,
        };
        match self.ask(&request, "checking a path")? {
            (Response::Stat(_), _) => Ok(true),
            (
                Response::Failed {
                    errno: libc::ENOENT | libc::ENOTDIR,
                    ..
                },
                _,
            ) => Ok(false),
            (Response::Failed { errno, .. }, _) => {
                Err(self.guest_error("checking", path, std::io::Error::from_raw_os_error(errno)))
            }
            (other, _) => Err(self.agent_confused("checking a path", &other)),
        }
    }

    /// A guest path as bytes for the agent. Relative paths are refused: there is no working
    /// directory to resolve them against, and nobody could tell where a file went.
    fn guest_path(&self, path: &Path, op: &'static str) -> Result<Vec<u8>> {
        if !path.is_absolute() {
            let why = "paths in the machine must be absolute (start with /)";
            return Err(self.guest_error(op, path, std::io::Error::other(why)));
        }
        Ok(path.as_os_str().as_bytes().to_vec())
    }

    /// Reads a file of the machine: at most 64 MiB, since the guest controls the size; a
    /// larger file is [`Error::TooLarge`] (use [`Machine::copy_out`], which streams to a host
    /// file).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let bytes = machine.read("/etc/os-release")?;
    /// assert!(!bytes.is_empty());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let file = self.open(path, libc::O_RDONLY, 0, "reading")?;
        let limit = super::stdio::DEFAULT_OUTPUT_LIMIT;
        let too_large = || Error::TooLarge {
            what: format!("reading {}", path.display()),
            machine: self.name().into(),
            stream: "file".into(),
            limit,
        };
        // The size first (a sparse file costs nothing to make), then what really comes.
        if file.metadata().is_ok_and(|m| m.len() > limit as u64) {
            return Err(too_large());
        }
        let mut buf = Vec::new();
        file.take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| self.guest_error("reading", path, e))?;
        if buf.len() > limit {
            return Err(too_large());
        }
        Ok(buf)
    }

    /// Reads a UTF-8 file of the machine.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// assert!(machine.read_to_string("/etc/os-release")?.contains("bookworm"));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> Result<String> {
        let path = path.as_ref();
        let bytes = self.read(path)?;
        String::from_utf8(bytes)
            .map_err(|e| self.guest_error("decoding", path, std::io::Error::other(e)))
    }

    /// Writes a file of the machine (mode 0644, owned by root), replacing it.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.write("/etc/motd", "hello\n")?;
    /// assert_eq!(machine.read_to_string("/etc/motd")?, "hello\n");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        self.write_mode(path.as_ref(), contents.as_ref(), 0o644)
    }

    fn write_mode(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let mut file = self.open(path, flags, mode, "writing")?;
        file.write_all(contents)
            .map_err(|e| self.guest_error("writing", path, e))
    }

    /// Copies a host file or directory into the machine, creating the parents of `guest`,
    /// keeping permission bits. A directory is copied whole: its symlinks as symlinks, never
    /// followed; a device, FIFO or socket in it is refused by name.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.copy_in("tests/fixtures/app.conf", "/etc/app.conf")?;
    /// machine.copy_in("tests/fixtures", "/srv/fixtures")?;
    /// assert!(machine.exists("/srv/fixtures/app.conf"));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn copy_in(&self, host: impl AsRef<Path>, guest: impl AsRef<Path>) -> Result<()> {
        let (host, guest) = (host.as_ref(), guest.as_ref());
        self.guest_path(guest, "copying into")?;
        let is_dir = std::fs::metadata(host).is_ok_and(|m| m.is_dir());
        if is_dir {
            return self.copy_tree_in(host, guest);
        }
        if let Some(parent) = guest.parent() {
            self.create_dir_all(parent)?;
        }
        self.copy_file_in(host, guest)
    }

    /// Creates a directory of the machine and its missing parents (mode 0755, root's).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.create_dir_all("/etc/my-app/conf.d")?;
    /// machine.write("/etc/my-app/conf.d/10-test.conf", "debug = true\n")?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.guest_path(path, "creating")?;
        let make = |p: PathBuf| std::fs::create_dir_all(&p).map_err(|e| e.to_string());
        self.call(make, path.to_path_buf())?
            .map_err(|e| self.guest_error("creating", path, std::io::Error::other(e)))
    }

    pub(super) fn copy_file_in(&self, host: &Path, guest: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let context = || {
            format!(
                "reading {} to copy it into machine {}",
                host.display(),
                self.name()
            )
        };
        let bytes = std::fs::read(host).map_err(|e| Error::io(context(), e))?;
        let mode = std::fs::metadata(host)
            .map_err(|e| Error::io(context(), e))?
            .permissions()
            .mode();
        self.write_mode(guest, &bytes, mode & 0o7777)
    }

    /// Copies a file or directory of the machine to the host, as the test's user, keeping
    /// permission bits. A directory is copied whole to `host`, which must not exist yet: its
    /// symlinks as symlinks, never followed on the host; a device, FIFO or socket in it is
    /// refused by name.
    ///
    /// A symlink at `host` is not followed (the copy fails instead): in a shared directory such
    /// as `/tmp`, another user could otherwise point it at a file of yours.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let dir = std::env::temp_dir().join(machine.name());
    /// std::fs::create_dir(&dir)?;
    /// machine.copy_out("/etc/os-release", dir.join("os-release"))?;
    /// machine.copy_out("/etc/apt", dir.join("apt"))?;
    /// assert!(dir.join("apt/sources.list").exists());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn copy_out(&self, guest: impl AsRef<Path>, host: impl AsRef<Path>) -> Result<()> {
        let (guest, host) = (guest.as_ref(), host.as_ref());
        if self.is_guest_dir(guest)? {
            return self.copy_tree_out(guest, host);
        }
        self.copy_file_out(guest, host)
    }

    /// Whether `path` is a directory of the machine (following symlinks inside it).
    fn is_guest_dir(&self, path: &Path) -> Result<bool> {
        let request = Request::Stat {
            path: self.guest_path(path, "reading")?,
        };
        match self.ask(&request, "checking a path")? {
            (Response::Stat(meta), _) => Ok(meta.mode & libc::S_IFMT == libc::S_IFDIR),
            // The open that follows says why.
            (Response::Failed { .. }, _) => Ok(false),
            (other, _) => Err(self.agent_confused("checking a path", &other)),
        }
    }

    pub(super) fn copy_file_out(&self, guest: &Path, host: &Path) -> Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut file = self.open(guest, libc::O_RDONLY, 0, "reading")?;
        let mode = file
            .metadata()
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        let context = || {
            format!(
                "writing {} copied out of machine {} (a symlink there is refused)",
                host.display(),
                self.name()
            )
        };
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(host)
            .map_err(|e| Error::io(context(), e))?;
        // Streamed: the guest controls the size, and nothing of it stays in memory. A failed
        // read is the machine's file's, a failed write the host's.
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.guest_error("reading", guest, e)),
            };
            out.write_all(&chunk[..n])
                .map_err(|e| Error::io(context(), e))?;
        }
        // Through the descriptor: the path could be swapped meanwhile.
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(context(), e))
    }

    /// The host path of a path in the machine (`/proc/<leader>/root/...`). Only root can follow
    /// it; prefer [`Machine::read`] and friends, which work from unprivileged test code.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// let host = machine.host_path("/etc/hostname");
    /// assert!(host.starts_with("/proc/"));
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn host_path(&self, guest: impl AsRef<Path>) -> PathBuf {
        let relative: PathBuf = guest
            .as_ref()
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        PathBuf::from(format!("/proc/{}/root", self.leader_pid())).join(relative)
    }

    /// Opens a regular file of the machine. The agent opens it without blocking, so a FIFO or a
    /// device cannot hang it; anything but a regular file is refused here (reading
    /// `/dev/zero` would never end).
    fn open(&self, path: &Path, flags: libc::c_int, mode: u32, op: &'static str) -> Result<File> {
        let request = Request::Open {
            path: self.guest_path(path, op)?,
            flags,
            mode,
        };
        let file = match self.ask(&request, op)? {
            (Response::Opened, mut fds) if fds.len() == 1 => File::from(fds.remove(0)),
            (Response::Failed { errno, .. }, _) => {
                return Err(self.guest_error(op, path, std::io::Error::from_raw_os_error(errno)))
            }
            (other, _) => return Err(self.agent_confused(op, &other)),
        };
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        if !regular {
            let why = "not a regular file (read devices, FIFOs and sockets with a command)";
            return Err(self.guest_error(op, path, std::io::Error::other(why)));
        }
        Ok(file)
    }
}
