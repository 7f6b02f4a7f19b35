//! The device policy on a host with cgroup v2 only, where there is no `devices` hierarchy:
//! a `BPF_PROG_TYPE_CGROUP_DEVICE` program on the machine's cgroup, as systemd attaches for a
//! unit with `DevicePolicy=closed`. It allows the devices of the v1 policy and nothing else,
//! for the machine and every cgroup below it (attached with `BPF_F_ALLOW_MULTI`, so a program
//! the guest attaches below can narrow it, never widen it). It goes with the cgroup.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// `src << 4 | dst`.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Instruction codes (class | op | source) and the context's constants, from linux/bpf.h.
const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;
const DEV_CHAR: i32 = 2;
const DEV_BLOCK: i32 = 1;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const ATTACH_CGROUP_DEVICE: u32 = 6;
const F_ALLOW_MULTI: u32 = 2;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_PROG_ATTACH: libc::c_long = 8;

/// A device the policy allows: `c 1:3 rwm` or `c 136:* rw`, as cgroup v1 writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    kind: i32,
    major: i32,
    minor: Option<i32>,
    access: i32,
}

impl Rule {
    fn parse(text: &str) -> Option<Rule> {
        let mut words = text.split_whitespace();
        let kind = match words.next()? {
            "c" => DEV_CHAR,
            "b" => DEV_BLOCK,
            _ => return None,
        };
        let (major, minor) = words.next()?.split_once(':')?;
        let access = words.next()?.chars().try_fold(0, |acc, c| match c {
            'r' => Some(acc | ACC_READ),
            'w' => Some(acc | ACC_WRITE),
            'm' => Some(acc | ACC_MKNOD),
            _ => None,
        })?;
        Some(Rule {
            kind,
            major: major.parse().ok()?,
            minor: if minor == "*" {
                None
            } else {
                Some(minor.parse().ok()?)
            },
            access,
        })
    }

    /// Allow (return 1) if the access matches; else fall through to the next rule. Expects
    /// r2 = device type, r3 = access, r4 = major, r5 = minor.
    fn block(&self) -> Vec<Insn> {
        let mut checks = vec![
            insn(JMP_JNE_K, 2, 0, 0, self.kind),
            insn(JMP_JNE_K, 4, 0, 0, self.major),
        ];
        if let Some(minor) = self.minor {
            checks.push(insn(JMP_JNE_K, 5, 0, 0, minor));
        }
        checks.extend([
            insn(ALU64_MOV_X, 1, 3, 0, 0),
            insn(ALU64_AND_K, 1, 0, 0, !self.access),
            insn(JMP_JNE_K, 1, 0, 0, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 1),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ]);
        // Every jump goes to the end of the block: the next rule.
        let len = checks.len();
        for (i, ins) in checks.iter_mut().enumerate() {
            if ins.code == JMP_JNE_K {
                ins.off = (len - i - 1) as i16;
            }
        }
        checks
    }
}

/// The program: unpack the context, try each rule, deny what none allowed.
fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut code = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xFFFF),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        code.extend(rule.block());
    }
    code.extend([insn(ALU64_MOV_K, 0, 0, 0, 0), insn(JMP_EXIT, 0, 0, 0, 0)]);
    code
}

/// `BPF_PROG_LOAD`'s part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `BPF_PROG_ATTACH`'s part of `union bpf_attr`.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Attaches the policy of `allowed` (cgroup v1 rules) to the cgroup v2 directory `dir`.
pub(crate) fn attach(dir: &Path, allowed: &[&str]) -> std::io::Result<()> {
    let rules: Vec<Rule> = allowed.iter().filter_map(|r| Rule::parse(r)).collect();
    let prog = load(&program(&rules))?;
    let cgroup = std::fs::File::open(dir)?;
    let attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: ATTACH_CGROUP_DEVICE,
        attach_flags: F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: the attribute is valid for the call; the descriptors are open.
    unsafe { bpf(CMD_PROG_ATTACH, &attr) }.map(drop)
}

/// `bpf(cmd, attr, sizeof attr)`; the kernel's answer, or the error.
///
/// # Safety
/// Every pointer in `attr` must be valid for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: as the caller promises.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn load(code: &[Insn]) -> std::io::Result<OwnedFd> {
    let mut log = vec![0u8; 16 << 10];
    let attr = ProgLoad {
        prog_type: PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoad::default()
    };
    // SAFETY: the attribute points at live buffers for the call's duration.
    let fd = unsafe { bpf(CMD_PROG_LOAD, &attr) };
    let fd = match fd {
        Ok(fd) => fd,
        Err(err) => {
            let verifier = String::from_utf8_lossy(&log);
            let verifier = verifier.trim_end_matches('\0').trim();
            return Err(std::io::Error::new(
                err.kind(),
                format!("loading the device program: {err}; verifier: {verifier}"),
            ));
        }
    };
    // SAFETY: a descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_cgroup_v1_writes_them() {
        let null = Rule::parse("c 1:3 rwm").unwrap();
        assert_eq!(
            null,
            Rule {
                kind: DEV_CHAR,
                major: 1,
                minor: Some(3),
                access: ACC_READ | ACC_WRITE | ACC_MKNOD
            }
        );
        let pts = Rule::parse("c 136:* rw").unwrap();
        assert_eq!(pts.minor, None);
        assert_eq!(pts.access, ACC_READ | ACC_WRITE);
        assert_eq!(Rule::parse("x 1:3 r"), None);
    }

    #[test]
    fn every_jump_of_a_rule_lands_on_the_next_rule() {
        let code = Rule::parse("c 1:3 rwm").unwrap().block();
        for (i, ins) in code.iter().enumerate() {
            if ins.code == JMP_JNE_K {
                assert_eq!(i + 1 + ins.off as usize, code.len());
            }
        }
        assert_eq!(code.last().map(|i| i.code), Some(JMP_EXIT));
    }

    /// Needs root and a cgroup v2 hierarchy: a process of the cgroup may use `/dev/null`
    /// but not make a block device (root could without the program).
    #[test]
    fn a_process_of_the_cgroup_uses_null_but_makes_no_block_device() {
        use std::os::unix::process::CommandExt;
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let name = format!("bpftest-{}", std::process::id());
        let cgroup = crate::host::cgroup::MachineCgroup::create(&name);
        let Some(unified) = cgroup.unified() else {
            return;
        };
        attach(unified, &["c 1:3 rwm"]).unwrap();
        let node = format!("/tmp/nspawn-bpf-test-{}", std::process::id());
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            &format!("echo x > /dev/null && echo null-ok; mknod {node} b 7 0 && echo made"),
        ]);
        let hook = cgroup.child_hook();
        // SAFETY: the hook makes raw system calls only.
        unsafe {
            cmd.pre_exec(move || {
                hook();
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let _ = std::fs::remove_file(&node);
        cgroup.remove();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("null-ok"), "{text}");
        assert!(!text.contains("made"), "{text}");
    }

    /// Needs root and a kernel with cgroup BPF: the verifier accepts the program.
    #[test]
    fn the_kernel_loads_the_program() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let rules: Vec<Rule> = ["c 1:3 rwm", "c 136:* rw"]
            .iter()
            .filter_map(|r| Rule::parse(r))
            .collect();
        load(&program(&rules)).unwrap();
    }
}
