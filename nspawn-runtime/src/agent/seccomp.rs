//! The system call filter of every process the agent starts: nspawn's policy for its payload
//! (`src/nspawn/nspawn-seccomp.c` in systemd), written as the list of what it refuses.
//!
//! nspawn allows a long list of system call groups and refuses everything else with `EPERM`.
//! What falls outside its list, and so what this filter refuses with `EPERM`, is:
//!
//! - always: the kernel keyring (not namespaced), `bpf` (bpffs is not namespaced),
//!   `perf_event_open`, `kexec_*`, `fanotify_*`, `open_by_handle_at` (a way around a bind
//!   mount or chroot), `quotactl`, `lookup_dcookie`, `nfsservctl`, swap, memory protection
//!   keys, CPU emulation (`modify_ldt`) and obsolete calls;
//! - unless the machine's capability bounding set keeps the capability that makes them useful:
//!   the clock (`CAP_SYS_TIME`), modules (`CAP_SYS_MODULE`), raw I/O (`CAP_SYS_RAWIO`),
//!   memory locking (`CAP_IPC_LOCK`), `acct` (`CAP_SYS_PACCT`), `ptrace` and
//!   `process_vm_*` (`CAP_SYS_PTRACE`), `reboot` (`CAP_SYS_BOOT`), `syslog` (`CAP_SYSLOG`) and
//!   `vhangup` (`CAP_SYS_TTY_CONFIG`);
//! - audit sockets (`socket(AF_NETLINK, _, NETLINK_AUDIT)`) fail with `EAFNOSUPPORT`, which
//!   audit tools take as "no audit in this kernel", as nspawn arranges.
//!
//! Where this differs from nspawn's allow list: system calls newer than that list are allowed
//! here (the capability bounding set still guards the privileged ones), and a system call of
//! another architecture (32-bit `int 0x80`) kills the process instead of being filtered. x32
//! numbers of the refused calls are refused too. Like nspawn, the filter is installed without
//! `no_new_privs`, so set-uid programs in the machine keep working.

use std::collections::BTreeMap;

use caps::Capability;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused whatever the capabilities.
const ALWAYS: &[libc::c_long] = &[
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_fanotify_init,
    libc::SYS_fanotify_mark,
    libc::SYS_open_by_handle_at,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_lookup_dcookie,
    libc::SYS_nfsservctl,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_modify_ldt,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_afs_syscall,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getpmsg,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_putpmsg,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_security,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_tuxcall,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vserver,
];

/// Refused unless the bounding set keeps the capability.
const UNLESS: &[(Capability, &[libc::c_long])] = &[
    (
        Capability::CAP_SYS_TIME,
        &[
            libc::SYS_adjtimex,
            libc::SYS_clock_adjtime,
            libc::SYS_clock_settime,
            libc::SYS_settimeofday,
        ],
    ),
    (
        Capability::CAP_SYS_MODULE,
        &[
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
        ],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        Capability::CAP_SYS_RAWIO,
        &[libc::SYS_iopl, libc::SYS_ioperm],
    ),
    (
        Capability::CAP_IPC_LOCK,
        &[
            libc::SYS_mlock,
            libc::SYS_mlock2,
            libc::SYS_mlockall,
            libc::SYS_munlock,
            libc::SYS_munlockall,
        ],
    ),
    (Capability::CAP_SYS_PACCT, &[libc::SYS_acct]),
    (
        Capability::CAP_SYS_PTRACE,
        &[
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ],
    ),
    (Capability::CAP_SYS_BOOT, &[libc::SYS_reboot]),
    (Capability::CAP_SYSLOG, &[libc::SYS_syslog]),
    (Capability::CAP_SYS_TTY_CONFIG, &[libc::SYS_vhangup]),
];

#[cfg(target_arch = "x86_64")]
const ARCH: Option<TargetArch> = Some(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<TargetArch> = Some(TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<TargetArch> = None;

/// x32 system calls are the x86-64 numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32: libc::c_long = 0x4000_0000;

/// The system calls refused for a machine whose capability bounding set is `bounding`.
pub fn refused(bounding: u64) -> Vec<libc::c_long> {
    let kept = |cap: &Capability| bounding & cap.bitmask() != 0;
    let mut calls: Vec<libc::c_long> = ALWAYS.to_vec();
    for (cap, group) in UNLESS {
        if !kept(cap) {
            calls.extend_from_slice(group);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let x32: Vec<libc::c_long> = calls.iter().map(|nr| nr | X32).collect();
        calls.extend(x32);
    }
    calls
}

/// The filters for a machine whose capability bounding set is `bounding`: one refusing with
/// `EPERM`, one for audit sockets (a filter has one action for all its rules, so two are
/// installed, as nspawn does).
pub fn programs(bounding: u64) -> std::io::Result<[BpfProgram; 2]> {
    let arch = ARCH.ok_or_else(|| {
        std::io::Error::other("no system call filter for this architecture: refusing to run")
    })?;
    let refused: BTreeMap<i64, Vec<SeccompRule>> = refused(bounding)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let audit = BTreeMap::from([(libc::SYS_socket, vec![audit_socket()?])]);
    Ok([
        build(refused, libc::EPERM as u32, arch)?,
        build(audit, libc::EAFNOSUPPORT as u32, arch)?,
    ])
}

/// Installs `programs` on the calling thread, and so on everything it starts from now on,
/// without `no_new_privs`: that needs `CAP_SYS_ADMIN`, which the caller still has.
pub fn install(programs: &[BpfProgram]) -> std::io::Result<()> {
    for program in programs {
        let fprog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(std::io::Error::other)?,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at a live program; seccomp copies it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn build(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: u32,
    arch: TargetArch,
) -> std::io::Result<BpfProgram> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .map_err(std::io::Error::other)?;
    filter.try_into().map_err(std::io::Error::other)
}

fn audit_socket() -> std::io::Result<SeccompRule> {
    let eq = |arg, value: i32| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value as u64)
    };
    SeccompRule::new(vec![
        eq(0, libc::AF_NETLINK).map_err(std::io::Error::other)?,
        eq(2, libc::NETLINK_AUDIT).map_err(std::io::Error::other)?,
    ])
    .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The container's default bounding set on this project's hosts.
    const NSPAWN_DEFAULT: u64 = 0xfcec_afff;

    #[test]
    fn what_the_bounding_set_keeps_is_not_refused() {
        let default = refused(NSPAWN_DEFAULT);
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_syslog,
            libc::SYS_init_module,
        ] {
            assert!(default.contains(&nr), "{nr} is refused");
        }
        // CAP_SYS_PTRACE and CAP_SYS_BOOT are in nspawn's default set.
        for nr in [libc::SYS_ptrace, libc::SYS_reboot, libc::SYS_getpid] {
            assert!(!default.contains(&nr), "{nr} is allowed");
        }
        assert!(refused(u64::MAX).len() < default.len());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_numbers_are_refused_too() {
        assert!(refused(NSPAWN_DEFAULT).contains(&(libc::SYS_keyctl | X32)));
    }

    #[test]
    fn both_filters_compile() {
        let [refusing, audit] = programs(NSPAWN_DEFAULT).unwrap();
        assert!(!refusing.is_empty() && !audit.is_empty());
    }
}
