//! What the runtime tells the outside world as it goes: one-line announcements on stderr, and
//! the event log tests count boots and stops from.
//!
//! A leaf module: everything may report through it, and it depends on nothing of ours but
//! the settings.

use std::io::Write;

/// A one-line summary on stderr (not captured by the test harness), unless `NSPAWN_QUIET` is
/// set.
pub(crate) fn announce(line: &str) {
    if !crate::settings::lenient().quiet {
        let _ = writeln!(std::io::stderr(), "nspawn: {line}");
    }
}

/// Appends a line to `$NSPAWN_EVENT_LOG`, if set: the runtime's boots and stops, for tests
/// that count them. One `write` per line, so lines of concurrent writers do not interleave.
pub(crate) fn event(line: &str) {
    let Some(path) = &crate::settings::lenient().event_log else {
        return;
    };
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}
