//! The runtime's spans, as a subscriber of the test's own sees them: one per test, per machine
//! (its boot and life), per call and per wait; and the runtime's events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nspawn::__private::{run, TestInfo};
use nspawn::Machine;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Records the name of every span opened, and `event` for each of the runtime's events.
struct Names(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Names {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(attrs.metadata().name().to_string());
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == nspawn_runtime::report::EVENT_TARGET {
            self.0.lock().unwrap().push("event".to_string());
        }
    }
}

static INFO: TestInfo = TestInfo::module_test(
    "machines::spans::through_the_harness",
    "traced",
    "bookworm",
    env!("CARGO_MANIFEST_DIR"),
);

/// Runs [`traced`] alone in a process of its own: a subscriber set for one thread
/// (`with_default`) misses spans whose callsites other threads' tests hit at the same time
/// (tracing caches each callsite's interest), which a subscriber set for the process does not.
#[test]
fn tests_machines_calls_and_waits_have_spans() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", "spans::traced", "--ignored", "--test-threads=1"]);
    // Under sudo, this process has dropped root: its child regains it, and drops again.
    nspawn::privs::start_as_root(&mut child);
    let out = child.output().unwrap();
    let report = crate::common::report(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("1 passed"), "{report}");
}

#[test]
#[ignore = "run alone by tests_machines_calls_and_waits_have_spans"]
fn traced() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Names(names.clone()));
    tracing::subscriber::with_default(subscriber, || {
        run(&INFO, |_machine| ());
        let machine = Machine::start("bookworm").unwrap();
        assert!(machine.call(|(): ()| true, ()).unwrap());
        machine
            .wait_for_socket("/run/dbus/system_bus_socket", Duration::from_secs(30))
            .unwrap();
        machine.stop().unwrap();
    });
    let names = names.lock().unwrap();
    for span in ["test", "machine", "call", "wait", "event"] {
        assert!(
            names.iter().any(|n| n == span),
            "no `{span}` span in {names:?}"
        );
    }
}
