//! Waiting for a line on the machine's console: what systemd and the units that write to
//! the console (`StandardOutput=journal+console`) print while it boots and runs.

use std::time::Duration;

use super::lifecycle::Machine;
use super::wait::poll;
use crate::error::{Error, Result};

/// The longest console line looked at: the guest writes the console, and a line without an
/// end must not grow without bound.
const MAX_LINE: usize = 1 << 20;

impl Machine {
    /// Waits until a line of the machine's console log matches `pattern` (a regular
    /// expression, `regex` syntax) and returns the first such line; with the machine's
    /// [`wait_timeout`](Machine::wait_timeout). The whole log counts, from the first boot
    /// on: after a reboot, look for what only the new boot prints.
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let line = machine.wait_for_console(r"Reached target .*Multi-User")?;
    /// assert!(line.contains("Multi-User"));
    /// # Ok(()) }
    /// ```
    pub fn wait_for_console(&self, pattern: &str) -> Result<String> {
        self.wait_for_console_within(pattern, self.wait_timeout())
    }

    /// [`Machine::wait_for_console`] with a timeout of its own.
    pub fn wait_for_console_within(&self, pattern: &str, timeout: Duration) -> Result<String> {
        let regex = regex::Regex::new(pattern).map_err(|e| Error::NotReady {
            machine: self.name().into(),
            what: format!("the console line /{pattern}/"),
            problem: "is not a valid regular expression".into(),
            detail: e.to_string().into(),
        })?;
        let mut file = std::fs::File::open(self.log_path())
            .map_err(|e| Error::io(format!("reading {}", self.log_path().display()), e))?;
        // Read on from where the last look stopped; only an unfinished line is kept.
        let mut partial: Vec<u8> = Vec::new();
        let found = poll("a console line", timeout, || {
            let mut fresh = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut fresh)
                .map_err(|e| Error::io(format!("reading {}", self.log_path().display()), e))?;
            partial.extend_from_slice(&fresh);
            let complete = partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let lines: Vec<u8> = partial.drain(..complete).collect();
            if partial.len() > MAX_LINE {
                partial.clear();
            }
            Ok(String::from_utf8_lossy(&lines)
                .lines()
                .find(|l| regex.is_match(l))
                .map(str::to_string))
        })?;
        found.ok_or_else(|| Error::NotReady {
            machine: self.name().into(),
            what: format!("the console line /{pattern}/"),
            problem: format!("did not show after {:.1} s", timeout.as_secs_f64()),
            detail: format!(
                "console log {}, last lines:\n{}",
                self.log_path().display(),
                crate::host::console::tail(self.log_path(), 20)
            )
            .into(),
        })
    }
}
