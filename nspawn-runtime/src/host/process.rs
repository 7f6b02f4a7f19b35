//! A process known by PID *and* start time: PIDs are reused, so an ownership record that
//! names its owner so can prove the owner dead.

use serde::{Deserialize, Serialize};

/// A process, identified beyond its PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// The PID.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start: u64,
}

impl ProcessId {
    /// The identity of a running process.
    pub fn of(pid: u32) -> Option<ProcessId> {
        start_time(pid).map(|start| ProcessId { pid, start })
    }

    /// This process.
    pub(crate) fn current() -> Option<ProcessId> {
        ProcessId::of(std::process::id())
    }

    /// Whether this very process still runs: a reused PID does not count, nor does a zombie
    /// (dead, not yet reaped by its parent).
    pub fn is_alive(&self) -> bool {
        stat(self.pid)
            .is_some_and(|(state, start)| start == self.start && state != 'Z' && state != 'X')
    }
}

/// `pid start`, as files and environment variables of ours carry a process (a lock file
/// naming its run, a set-up layer's owner, a keeper's nextest process).
impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pid, self.start)
    }
}

impl std::str::FromStr for ProcessId {
    type Err = String;

    fn from_str(text: &str) -> Result<ProcessId, String> {
        let mut fields = text.split_whitespace();
        let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
        match (next(), next()) {
            (Some(pid), Some(start)) => Ok(ProcessId {
                pid: u32::try_from(pid).map_err(|e| e.to_string())?,
                start,
            }),
            _ => Err(format!("not a process (`pid start`): {text:?}")),
        }
    }
}

/// The parent of process `pid`.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    fields(pid)?.nth(1)?.parse().ok()
}

fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// The state letter and start time of a process, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let mut fields = fields(pid)?;
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// The fields of `/proc/<pid>/stat` from the state on (field 3).
fn fields(pid: u32) -> Option<std::vec::IntoIter<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(
        rest.split(' ')
            .map(String::from)
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_read_back_from_their_text_and_have_parents() {
        let me = ProcessId::current().unwrap();
        assert_eq!(me.to_string().parse::<ProcessId>(), Ok(me));
        assert!("12".parse::<ProcessId>().is_err());
        assert!("a b".parse::<ProcessId>().is_err());
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn processes_are_known_by_pid_and_start_time() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        let reused = ProcessId {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(
            !reused.is_alive(),
            "the same PID with another start time is another process"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(child.id()).unwrap();
        // Dead but not reaped yet: a zombie is not alive.
        while std::fs::read_to_string(format!("/proc/{}/stat", id.pid))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!id.is_alive());
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
