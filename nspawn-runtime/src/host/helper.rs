//! Helper processes re-executed from the test binary itself: a machine's agent, the watchdog,
//! on-demand chroot builds and nextest's keepers. Hooks that run before `main` recognise each
//! by its environment marker, so the test harness never starts in them.
//!
//! A marker alone proves nothing: a user who exported `NSPAWN_WATCHDOG=1` would otherwise see
//! every test binary print nothing and exit 0. So the parent also hands its helper a proof no
//! environment can forge, an inherited memfd named `nspawn-role` that holds `MARKER=value`
//! ([`role`]); a marker without it is an error that says so.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::host::privs;

/// The marker of a machine's agent; its value is the leader's PID.
pub(crate) const AGENT: &str = "NSPAWN_AGENT";
/// The marker of the watchdog; its value is the test process's PID.
pub(crate) const WATCHDOG: &str = "NSPAWN_WATCHDOG";
/// The marker of an on-demand chroot build; its value is the chroot's name.
pub(crate) const BUILD: &str = "NSPAWN_BUILD";
/// The marker of the systemd backend's mount helper; its value is its plan's path.
pub(crate) const MOUNT_PLAN: &str = "NSPAWN_MOUNT_PLAN";
/// Every marker; a helper gets its own and none of the others.
const MARKERS: [&str; 4] = [AGENT, WATCHDOG, BUILD, MOUNT_PLAN];

/// Puts `$run` in `.init_array`, so that it runs before `main` in every binary that links
/// the module invoking this. Invoke it in the module whose code starts the helper: the static
/// then sits beside that code, and the linker cannot leave it out while the code is in.
macro_rules! pre_main_hook {
    ($run:path) => {
        #[used]
        #[link_section = ".init_array"]
        static HOOK: extern "C" fn() = {
            extern "C" fn hook() {
                $run()
            }
            hook
        };
    };
}
pub(crate) use pre_main_hook;

/// This executable (`/proc/self/exe`, which still works if cargo rebuilt the file) with
/// `marker=value`, `stdin` as its standard input and no output. It starts as root, and in a
/// session of its own, so that a Ctrl-C reaches the test process only.
pub(crate) fn command(marker: &str, value: String, stdin: OwnedFd) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    for other in MARKERS {
        cmd.env_remove(other);
    }
    // Root from start to end: with these, a helper would drop to the user as test binaries
    // do, and find root's host state (locks, records, cgroups) out of its reach.
    for var in ["SUDO_UID", "SUDO_GID", "SUDO_USER", "NSPAWN_USER"] {
        cmd.env_remove(var);
    }
    let proof = proof(marker, &value);
    cmd.env(marker, value)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let regain = privs::child_needs_root();
    // SAFETY: raw system calls only.
    unsafe {
        cmd.pre_exec(move || {
            privs::regain_in_child(regain)?;
            libc::setsid();
            // Without it the helper refuses its role, and says so.
            if let Some(proof) = &proof {
                libc::dup2(proof.as_raw_fd(), PROOF_FD);
            }
            Ok(())
        });
    }
    cmd
}

/// Where a helper finds its proof.
const PROOF_FD: RawFd = 987;
const PROOF_NAME: &str = "nspawn-role";

/// A memfd holding `marker=value`; none if the kernel has no memfd (the helper then refuses
/// its role with a message).
fn proof(marker: &str, value: &str) -> Option<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"nspawn-role",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .ok()?;
    let mut file = std::fs::File::from(fd);
    file.write_all(format!("{marker}={value}").as_bytes())
        .ok()?;
    Some(file.into())
}

/// This process's value of `marker`, if it is that helper; `None` if the marker is unset.
/// A marker set without the proof its parent hands a real helper ends the process with a
/// message and status 2: the test harness must not run, nor the process pass for a helper.
pub(crate) fn role(marker: &str) -> Option<String> {
    let value = std::env::var_os(marker)?;
    let value = value.to_string_lossy().into_owned();
    if proven(marker, &value) {
        // Kept, to be checked again, but never inherited by what the helper starts.
        // SAFETY: a flag change on a descriptor only this module uses.
        unsafe { libc::fcntl(PROOF_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        return Some(value);
    }
    eprintln!(
        "nspawn: {marker} is set in the environment, but this process was not started as \
         nspawn's {}; it is internal to nspawn. Unset it: env -u {marker} ...",
        role_name(marker)
    );
    // SAFETY: ending the process before the harness or any exit handler runs.
    unsafe { libc::_exit(2) }
}

fn role_name(marker: &str) -> &'static str {
    match marker {
        AGENT => "machine agent",
        WATCHDOG => "watchdog",
        BUILD => "chroot build helper",
        "NSPAWN_WARM_KEEPER" => "warm keeper",
        _ => "nextest keeper",
    }
}

/// Whether [`PROOF_FD`] is our memfd and holds `marker=value`.
fn proven(marker: &str, value: &str) -> bool {
    let named = std::fs::read_link(format!("/proc/self/fd/{PROOF_FD}")).is_ok_and(|l| {
        l.to_string_lossy()
            .starts_with(&format!("/memfd:{PROOF_NAME}"))
    });
    if !named {
        return false;
    }
    let mut text = vec![0u8; marker.len() + value.len() + 2];
    // SAFETY: reading into our buffer from the start of the descriptor.
    let got = unsafe { libc::pread(PROOF_FD, text.as_mut_ptr().cast(), text.len(), 0) };
    got >= 0 && text[..got as usize] == *format!("{marker}={value}").as_bytes()
}

/// Closes every descriptor from 3 up, except those in `keep`: a test runner, make's jobserver
/// or `flock dir cargo test` may have handed the test process descriptors that must never
/// reach the machine (a directory descriptor is a way out of any chroot).
pub(crate) fn close_inherited(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd > 2)
        .map(|fd| *fd as u32)
        .collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1);
    }
}

/// `close_range(2)`, or, on kernels before 5.9, each open descriptor in the range.
fn close_range(first: u32, last: u32) {
    // SAFETY: closing descriptors that nothing in this process owns yet (start-up).
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } == 0 {
        return;
    }
    let open: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open.into_iter().filter(|fd| (first..=last).contains(fd)) {
        // SAFETY: as above; the listing's own descriptor is closed already (EBADF).
        unsafe { libc::close(fd as RawFd) };
    }
}
