//! Async tests (the `tokio` feature): each shape and runtime option.

use nspawn::Machine;

#[nspawn::test(chroot = "bookworm")]
async fn takes_the_machine(machine: &Machine) -> nspawn::Result<()> {
    machine.run(["true"])?;
    Ok(())
}

#[nspawn::test(chroot = "bookworm")]
async fn takes_nothing() {}

#[nspawn::test(chroot = "bookworm", flavor = "multi_thread", worker_threads = 2)]
async fn on_a_thread_pool(machine: &Machine) {
    tokio::task::block_in_place(|| machine.exists("/etc"));
}

#[nspawn::test(chroot = "bookworm", flavor = "multi_thread")]
#[should_panic(expected = "async panic")]
async fn panics() {
    panic!("async panic");
}

#[nspawn::test(chroot = ["bookworm", "trixie"], scope = "test")]
async fn a_matrix_of_async_tests(machine: &Machine) {
    let _ = machine.name();
}

fn main() {}
