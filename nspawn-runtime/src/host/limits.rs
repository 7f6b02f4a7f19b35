//! Resource limits of one machine: memory (which also bounds what its tmpfs mounts can take,
//! as tmpfs pages are charged to the writer's cgroup) and tasks.
//!
//! The defaults split the host between the machines that may run at once (the slot cap), so
//! that a memory hog, a fork bomb or a tmpfs fill in one machine stops at its own walls and
//! the host and the other machines carry on.

/// The limits of one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes of memory, tmpfs contents included.
    pub memory: u64,
    /// Processes and threads.
    pub tasks: u64,
}

const MIB: u64 = 1024 * 1024;

impl Limits {
    /// Each of `machines` running at once gets an equal share of the host's memory (at least
    /// 512 MiB) and of half its PIDs (256 to 4096).
    pub(crate) fn for_host(machines: usize) -> Limits {
        let machines = machines.max(1) as u64;
        let total = meminfo("MemTotal:").unwrap_or(4096 * MIB);
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(32768);
        Limits {
            memory: (total / machines).max(512 * MIB),
            tasks: (pid_max / 2 / machines).clamp(256, 4096),
        }
    }

    /// These limits with `MemoryMax=` and `TasksMax=` unit properties applied. Any other
    /// property is an error: without systemd there is no unit to give it to.
    pub(crate) fn with_properties(mut self, properties: &[String]) -> Result<Limits, String> {
        for property in properties {
            let (key, value) = property.split_once('=').unwrap_or((property, ""));
            match key {
                "MemoryMax" => self.memory = bytes(value).ok_or_else(|| bad(property))?,
                "TasksMax" => self.tasks = value.parse().map_err(|_| bad(property))?,
                _ => {
                    return Err(format!(
                        "the unit property {property:?} needs the systemd backend; \
                         the direct backend supports MemoryMax= and TasksMax="
                    ))
                }
            }
        }
        Ok(self)
    }
}

fn bad(property: &str) -> String {
    format!("{property:?}: expected MemoryMax=<bytes>[K|M|G|T] or TasksMax=<number>")
}

/// `512M`, `2G`, `1048576`: systemd's byte sizes (base 1024).
fn bytes(value: &str) -> Option<u64> {
    let (digits, unit) = match value.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_uppercase()),
        _ => (value, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A `/proc/meminfo` figure (`"MemTotal:"`, `"MemAvailable:"`), in bytes.
pub(crate) fn meminfo(key: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_shared_between_the_machines_at_once() {
        let one = Limits::for_host(1);
        let ten = Limits::for_host(10);
        assert!(ten.memory <= one.memory && ten.memory >= 512 * MIB);
        assert!((256..=4096).contains(&ten.tasks));
    }

    #[test]
    fn properties_set_limits_or_are_refused() {
        let base = Limits {
            memory: 1,
            tasks: 1,
        };
        let props = ["MemoryMax=256M".to_string(), "TasksMax=64".to_string()];
        assert_eq!(
            base.with_properties(&props).unwrap(),
            Limits {
                memory: 256 * MIB,
                tasks: 64
            }
        );
        assert!(base.with_properties(&["CPUWeight=50".into()]).is_err());
        assert!(base.with_properties(&["MemoryMax=lots".into()]).is_err());
        assert_eq!(bytes("2G"), Some(2048 * MIB));
        assert_eq!(bytes("4096"), Some(4096));
    }
}
