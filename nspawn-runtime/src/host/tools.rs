//! Host programs: finding them, installing the packages that provide them, and running them
//! with errors that show what failed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{HostError, Result};

/// A program the runtime needs, and the Debian package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Program name.
    pub program: &'static str,
    /// Debian package.
    pub package: &'static str,
}

/// GNU tar, which writes and unpacks device nodes, owners and xattrs (chroot archives).
pub(crate) const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};

/// zstd, which tar runs for `--zstd`.
pub(crate) const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
};

/// `systemd-nspawn`, needed to boot machines and to run setup commands.
pub const NSPAWN: Tool = Tool {
    program: "systemd-nspawn",
    package: "systemd-container",
};
/// The faster bootstrapper (46 s against 72 s for the same tree on our machines).
pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
/// The fallback bootstrapper.
pub(crate) const DEBOOTSTRAP: Tool = Tool {
    program: "debootstrap",
    package: "debootstrap",
};
/// Disables fsync during bootstrap.
pub(crate) const EATMYDATA: Tool = Tool {
    program: "eatmydata",
    package: "eatmydata",
};
/// Subvolumes and btrfs images.
pub const BTRFS: Tool = Tool {
    program: "btrfs",
    package: "btrfs-progs",
};
/// Formats btrfs images.
pub const MKFS_BTRFS: Tool = Tool {
    program: "mkfs.btrfs",
    package: "btrfs-progs",
};

/// `ip`, for zones' bridges and machines' addresses.
pub const IP: Tool = Tool {
    program: "ip",
    package: "iproute2",
};
/// `tc`, for delay and loss on a machine's link.
pub(crate) const TC: Tool = Tool {
    program: "tc",
    package: "iproute2",
};
/// `nft`, for zones' forwarding filter and NAT.
pub const NFT: Tool = Tool {
    program: "nft",
    package: "nftables",
};

/// `iptables`, for the host's own FORWARD chains (Docker's, ufw's); the tests make one.
pub const IPTABLES: Tool = Tool {
    program: "iptables",
    package: "iptables",
};

/// Finds a program in `PATH`, and in the sbin directories that a user's `PATH` may lack.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A command for a host program found by [`which`], so that `/usr/sbin` tools work even when
/// the caller's `PATH` lacks it (as under `sudo env PATH=...` from a user's shell); the bare
/// name when it is nowhere, for the error to name.
pub fn command(program: &str) -> Command {
    Command::new(which(program).unwrap_or_else(|| PathBuf::from(program)))
}

/// Whether the process runs with root's effective uid.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether a tool is installed.
pub fn has(tool: Tool) -> bool {
    which(tool.program).is_some()
}

/// Makes sure the given tools are installed. As root, missing packages are installed with
/// `apt-get` (after `apt-get update`); otherwise the error names the `apt-get install` line.
pub fn ensure(tools: &[Tool], report: &dyn Fn(&str)) -> Result<(), HostError> {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !has(**t))
        .map(|t| t.package.to_string())
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(HostError::MissingPackages { packages: missing });
    }
    report(&format!("installing host packages: {}", missing.join(" ")));
    run(apt().arg("update"))?;
    run(apt()
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))?;
    Ok(())
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-o", "Dpkg::Use-Pty=0"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Runs a host command to completion, capturing its output. A non-zero exit is an error that
/// shows the command line and the end of its error output.
pub fn run(cmd: &mut Command) -> Result<Output, HostError> {
    let line = command_line(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HostError::io(format!("running `{line}`"), e))?;
    checked(line, out)
}

/// A finished command's output, or the error naming `line`, its status and its stderr.
fn checked(line: String, out: Output) -> Result<Output, HostError> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(HostError::Command {
            command: line,
            status: out.status,
            stderr: crate::text::tail(&String::from_utf8_lossy(&out.stderr), 20),
        })
    }
}

/// [`run`], with `input` on the command's standard input (a script for `ip -batch -` or
/// `nft -f -`).
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) -> Result<Output, HostError> {
    use std::io::Write;
    let line = command_line(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HostError::io(format!("running `{line}`"), e))?;
    // A program that exits before reading it all fails below, with its own message.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| HostError::io(format!("running `{line}`"), e))?;
    let script = input.trim_end().replace('\n', "; ");
    checked(format!("{line} <<<'{script}'"), out)
}

/// A command line as a shell would read it, for messages.
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes one word for display as part of a shell command line.
pub fn shell_word(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-here").is_none());
    }

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'hi' there", "plain/path"]);
        assert_eq!(
            command_line(&cmd),
            r#"sh -c 'echo '\''hi'\'' there' plain/path"#
        );
    }

    #[test]
    fn failed_commands_show_their_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo boom >&2; exit 3'` failed"),
            "{msg}"
        );
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }
}
