//! Async tests: the options that only make sense for them, and what cannot be async.

#[nspawn::test(chroot = "bookworm", flavor = "multi_thread")]
fn flavor_on_a_sync_test() {}

#[nspawn::test(chroot = "bookworm", flavor = "threadpool")]
async fn unknown_flavor() {}

#[nspawn::test(chroot = "bookworm", flavor = "current_thread", worker_threads = 2)]
async fn threads_on_one_thread() {}

#[nspawn::test(chroot = "bookworm", flavor = "multi_thread", worker_threads = 0)]
async fn no_threads() {}

#[nspawn::test(chroot = "bookworm", inside)]
async fn inside_and_async() {}

fn main() {}
