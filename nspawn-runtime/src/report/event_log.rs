//! The event log (`NSPAWN_EVENT_LOG`) as a `tracing` subscriber of the runtime's events: it
//! appends the message of each event of target [`EVENT_TARGET`] to the file, one line each.
//!
//! It is a dispatcher of the runtime's own, which `report::event` hands each event to besides
//! the test's subscriber (if any): the log must be written whether or not the test installs a
//! subscriber, and whatever that subscriber filters. It exists before the event's callsite is
//! first hit, so that callsite's interest always counts it.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The `tracing` target of the runtime's events: `RUST_LOG=nspawn_runtime=debug` (or
/// `nspawn_runtime::event=debug`) shows them to a subscriber of the test's own.
pub const EVENT_TARGET: &str = "nspawn_runtime::event";

/// Appends the runtime's events to a file.
pub(super) struct EventLog {
    path: PathBuf,
    next_span: AtomicU64,
}

impl EventLog {
    pub(super) fn new(path: PathBuf) -> EventLog {
        EventLog {
            path,
            next_span: AtomicU64::new(1),
        }
    }
}

impl Subscriber for EventLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == EVENT_TARGET
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    /// One `write` per line, so lines of concurrent writers (threads, processes) never mix.
    fn event(&self, event: &Event<'_>) {
        let mut line = Message(String::new());
        event.record(&mut line);
        line.0.push('\n');
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.path);
        if let Ok(mut f) = file {
            let _ = f.write_all(line.0.as_bytes());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's message.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_writes_the_runtime_s_events_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let log = tracing::Dispatch::new(EventLog::new(path.clone()));
        tracing::dispatcher::with_default(&log, || {
            tracing::debug!(target: "nspawn_runtime::event", "ready nspawn-1-a bookworm {}", 5);
            tracing::warn!("not an event");
            tracing::info_span!("test").in_scope(|| {
                tracing::debug!(target: "nspawn_runtime::event", "stopped nspawn-1-a");
            });
        });
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ready nspawn-1-a bookworm 5\nstopped nspawn-1-a\n"
        );
    }
}
