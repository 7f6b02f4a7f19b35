//! Async forms of the machine's calls (feature `tokio`). Each runs the blocking call on
//! tokio's blocking pool with a handle of its own ([`Machine`] clones are handles), so the
//! runtime's other tasks go on, on either flavor; a future dropped before its end leaves the
//! call to finish on its own.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lifecycle::Machine;
use super::units::UnitState;
use crate::error::Result;

/// A machine's calls as `async fn`s: [`Machine::asynchronous`].
///
/// ```no_run
/// # #[nspawn::test(chroot = "bookworm")]
/// # async fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
/// let m = machine.asynchronous();
/// m.run(["apt-get", "install", "-y", "jq"]).await?;
/// assert!(m.exists("/usr/bin/jq").await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncMachine(Machine);

impl Machine {
    /// The async forms of this machine's calls, on a handle of their own (cheap to clone and
    /// to move into a task).
    ///
    /// ```no_run
    /// # #[nspawn::test(chroot = "bookworm")]
    /// # async fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {
    /// let m = machine.asynchronous();
    /// let task = tokio::spawn(async move { m.sh("systemctl is-active dbus.socket").await });
    /// assert_eq!(task.await.unwrap()?, "active\n");
    /// # Ok(()) }
    /// ```
    pub fn asynchronous(&self) -> AsyncMachine {
        AsyncMachine(self.clone())
    }
}

impl AsyncMachine {
    /// Runs `work` on the blocking pool; a panic there is resumed here.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Machine) -> T + Send + 'static,
    ) -> T {
        let machine = self.0.clone();
        match tokio::task::spawn_blocking(move || work(&machine)).await {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a blocking task.
            Err(e) => panic!("nspawn: the runtime dropped a machine call: {e}"),
        }
    }

    /// The synchronous handle.
    pub fn machine(&self) -> &Machine {
        &self.0
    }

    /// [`Machine::run`].
    pub async fn run(&self, argv: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Result<Output> {
        let argv: Vec<OsString> = argv.into_iter().map(|a| a.as_ref().into()).collect();
        self.blocking(move |m| m.run(argv)).await
    }

    /// `machine.command(argv[0]).args(&argv[1..]).output()`: the program's status and output,
    /// whatever its exit code.
    pub async fn output(
        &self,
        argv: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Result<Output> {
        let argv: Vec<OsString> = argv.into_iter().map(|a| a.as_ref().into()).collect();
        self.blocking(move |m| match argv.split_first() {
            Some((program, args)) => m.command(program).args(args).output(),
            None => m.run(argv.iter()),
        })
        .await
    }

    /// [`Machine::sh`].
    pub async fn sh(&self, script: &str) -> Result<String> {
        let script = script.to_string();
        self.blocking(move |m| m.sh(&script)).await
    }

    /// [`Machine::try_exists`].
    pub async fn exists(&self, path: impl AsRef<Path>) -> Result<bool> {
        let path: PathBuf = path.as_ref().into();
        self.blocking(move |m| m.try_exists(path)).await
    }

    /// [`Machine::read`].
    pub async fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path: PathBuf = path.as_ref().into();
        self.blocking(move |m| m.read(path)).await
    }

    /// [`Machine::read_to_string`].
    pub async fn read_to_string(&self, path: impl AsRef<Path>) -> Result<String> {
        let path: PathBuf = path.as_ref().into();
        self.blocking(move |m| m.read_to_string(path)).await
    }

    /// [`Machine::write`].
    pub async fn write(&self, path: impl AsRef<Path>, contents: impl Into<Vec<u8>>) -> Result<()> {
        let (path, contents): (PathBuf, Vec<u8>) = (path.as_ref().into(), contents.into());
        self.blocking(move |m| m.write(path, contents)).await
    }

    /// [`Machine::call`].
    pub async fn call<F, A, R>(&self, function: F, arg: A) -> Result<R>
    where
        F: Fn(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.blocking(move |m| m.call(function, arg)).await
    }

    /// [`Machine::wait_for_unit`].
    pub async fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<UnitState> {
        let unit = unit.to_string();
        self.blocking(move |m| m.wait_for_unit(&unit, timeout))
            .await
    }

    /// [`Machine::wait_for_port`].
    pub async fn wait_for_port(&self, port: u16, timeout: Duration) -> Result<()> {
        self.blocking(move |m| m.wait_for_port(port, timeout)).await
    }

    /// [`Machine::wait_until_running`].
    pub async fn wait_until_running(&self, timeout: Duration) -> Result<()> {
        self.blocking(move |m| m.wait_until_running(timeout)).await
    }

    /// [`Machine::succeed`].
    pub async fn succeed(&self, script: &str) -> Result<String> {
        let script = script.to_string();
        self.blocking(move |m| m.succeed(&script)).await
    }

    /// [`Machine::wait_until_succeeds`].
    pub async fn wait_until_succeeds(&self, script: &str) -> Result<String> {
        let script = script.to_string();
        self.blocking(move |m| m.wait_until_succeeds(&script)).await
    }

    /// [`Machine::reboot`].
    pub async fn reboot(&self) -> Result<()> {
        self.blocking(Machine::reboot).await
    }

    /// [`Machine::power_off`].
    pub async fn power_off(&self) -> Result<()> {
        self.blocking(Machine::power_off).await
    }

    /// [`Machine::crash`].
    pub async fn crash(&self) -> Result<()> {
        self.blocking(Machine::crash).await
    }

    /// [`Machine::power_on`].
    pub async fn power_on(&self) -> Result<()> {
        self.blocking(Machine::power_on).await
    }
}
