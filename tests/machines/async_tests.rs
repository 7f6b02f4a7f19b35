//! Async tests (the `tokio` feature): `async fn` bodies on the runtime the attribute builds,
//! sharing their module's machine; machine calls from async code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nspawn::Machine;

/// Every test of the module sees the same machine (each leaves its mark, all marks agree).
fn same_machine_as_siblings(m: &Machine, test: &str) {
    m.write(format!("/root/seen-{test}"), m.name()).unwrap();
    let seen = m.sh("cat /root/seen-*").unwrap();
    assert!(seen.split(m.name()).all(str::is_empty), "{seen}");
}

/// A task that counts up every millisecond, to see whether the runtime's tasks go on.
fn ticker() -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let counted = ticks.clone();
    let task = tokio::spawn(async move {
        loop {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    (ticks, task)
}

mod shared {
    use super::*;

    #[nspawn::test(chroot = "bookworm")]
    async fn on_one_thread(m: &Machine) -> nspawn::Result<()> {
        same_machine_as_siblings(m, "one-thread");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(m.sh("echo hi")?, "hi\n");
        Ok(())
    }

    /// Machine calls block; on a multi-thread runtime, `block_in_place` lets the runtime's
    /// other tasks go on meanwhile (the documented way).
    #[nspawn::test(chroot = "bookworm", flavor = "multi_thread", worker_threads = 2)]
    async fn other_tasks_go_on_during_a_call(m: &Machine) -> nspawn::Result<()> {
        same_machine_as_siblings(m, "multi-thread");
        let (ticks, ticker) = ticker();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = ticks.load(Ordering::SeqCst);
        tokio::task::block_in_place(|| m.run(["sleep", "0.3"]))?;
        let after = ticks.load(Ordering::SeqCst);
        ticker.abort();
        assert!(
            after > before,
            "the ticker ran during the call: {before} -> {after}"
        );
        Ok(())
    }

    /// Several calls at once from one async test: threads, inside `block_in_place`.
    #[nspawn::test(chroot = "bookworm", flavor = "multi_thread")]
    async fn several_calls_at_once(m: &Machine) {
        same_machine_as_siblings(m, "several");
        let hosts: Vec<String> = tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let calls: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            let hostname = |(): ()| {
                                std::fs::read_to_string("/proc/sys/kernel/hostname")
                                    .map_err(|e| e.to_string())
                            };
                            m.call(hostname, ()).unwrap().unwrap()
                        })
                    })
                    .collect();
                calls.into_iter().map(|c| c.join().unwrap()).collect()
            })
        });
        assert!(hosts.iter().all(|h| h.trim() == m.name()), "{hosts:?}");
    }

    /// The async forms: on the default one-thread runtime, other tasks go on during a call.
    #[nspawn::test(chroot = "bookworm")]
    async fn async_calls_keep_one_thread_going(m: &Machine) -> nspawn::Result<()> {
        same_machine_as_siblings(m, "async-forms");
        let (ticks, ticker) = ticker();
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::SeqCst);
        let m = m.asynchronous();
        m.run(["sleep", "0.3"]).await?;
        let after = ticks.load(Ordering::SeqCst);
        ticker.abort();
        assert!(
            after > before,
            "the ticker ran during the call: {before} -> {after}"
        );
        m.write("/root/async", "written").await?;
        assert_eq!(m.read_to_string("/root/async").await?, "written");
        assert!(m.exists("/root/async").await?);
        let failed = m.output(["sh", "-c", "echo out; exit 3"]).await?;
        assert_eq!(
            (failed.status.code(), &failed.stdout[..]),
            (Some(3), &b"out\n"[..])
        );
        Ok(())
    }

    /// Calls from several tasks at once, each with its own handle.
    #[nspawn::test(chroot = "bookworm")]
    async fn calls_from_several_tasks_at_once(m: &Machine) {
        same_machine_as_siblings(m, "tasks");
        let hostname = |(): ()| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| e.to_string())
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let m = m.asynchronous();
                tokio::spawn(async move { m.call(hostname, ()).await })
            })
            .collect();
        for task in tasks {
            let host = task.await.unwrap().unwrap().unwrap();
            assert_eq!(host.trim(), m.name());
        }
    }

    #[nspawn::test(chroot = "bookworm")]
    #[should_panic(expected = "an async panic")]
    async fn a_panic_fails_as_in_a_sync_test(m: &Machine) {
        let _ = m.name();
        tokio::task::yield_now().await;
        panic!("an async panic");
    }
}
