//! `async fn` tests: the tokio runtime the attribute asks for, built per test as
//! `#[tokio::test]` builds it, and the body driven to its end on it.

use std::future::Future;

/// Which tokio runtime an async test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread (the default, as `#[tokio::test]`'s).
    CurrentThread,
    /// A thread pool; `None`: tokio's default size.
    MultiThread(Option<usize>),
}

/// Runs `body` to its end on a runtime of `flavor`.
pub fn block_on<F: Future>(flavor: Flavor, body: F) -> F::Output {
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                builder.worker_threads(n);
            }
            builder
        }
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(body),
        // Only a host out of threads or descriptors gets here: a failure of the test's set-up.
        Err(e) => panic!("nspawn: building the tokio runtime for an async test: {e}"),
    }
}
