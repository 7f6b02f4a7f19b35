//! The runtime's spans, as a subscriber of the test's own sees them: one per test, per machine
//! (its boot and life), per call and per wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nspawn::__private::{run, TestInfo};
use nspawn::Machine;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Records the name of every span opened.
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
}

static INFO: TestInfo = TestInfo::module_test(
    "machines::spans::through_the_harness",
    "traced",
    "bookworm",
    env!("CARGO_MANIFEST_DIR"),
);

#[test]
fn tests_machines_calls_and_waits_have_spans() {
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
    for span in ["test", "machine", "call", "wait"] {
        assert!(
            names.iter().any(|n| n == span),
            "no `{span}` span in {names:?}"
        );
    }
}
