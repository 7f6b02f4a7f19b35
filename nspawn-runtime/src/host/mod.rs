//! The host's facilities, as the layers above use them: privileges, processes, cgroups, tools,
//! probes of what the host can do, and console logs.

pub(crate) mod cgroup;
pub mod console;
pub(crate) mod device_bpf;
pub(crate) mod helper;
pub(crate) mod idmap;
pub(crate) mod limits;
pub(crate) mod mount_ns;
pub(crate) mod notify;
pub(crate) mod pidfd;
pub mod privs;
pub mod probe;
pub(crate) mod process;
pub mod run_dir;
pub mod tools;
pub(crate) mod uid_range;
