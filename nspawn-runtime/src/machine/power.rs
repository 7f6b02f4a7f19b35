//! A machine's power: reboot, power off, crash and power on, on the same disk.
//!
//! A user-namespaced machine (the default) boots from an overlay of ours in a mount
//! namespace that the test process holds open (see `backend::namespace`): its writable layer,
//! its hosts file and its uid range outlive nspawn. A next boot starts a new nspawn in that
//! namespace with the same name, address, zone and aliases; the agent starts again at the
//! next call. A reboot the guest asks for itself (`systemctl reboot`) is followed the same
//! way, at the next thing asked of the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lifecycle::Machine;
use crate::backend::{self, Ended, Running};
use crate::cleanup::records::Record;
use crate::error::{Error, Result};
use crate::host::pidfd::PidFd;
use crate::host::privs::ThreadRoot;
use crate::report::{self, Event};

/// systemd's signals for a clean reboot and power-off (systemd(1), "Signals"): every unit
/// is stopped as by `systemctl reboot` / `poweroff`.
fn sigrtmin(n: libc::c_int) -> libc::c_int {
    libc::SIGRTMIN() + n
}

impl Machine {
    /// Reboots the machine cleanly and waits until it is up again (`wait_until_running`),
    /// on the same disk: what it wrote is still there, it keeps its name, address, zone and
    /// aliases. `systemctl reboot` inside does the same (followed at the next call).
    ///
    /// Machines booted with `private_users(false)` run on nspawn's own overlay or snapshot,
    /// gone when nspawn exits: they cannot reboot on the direct backend. On the systemd
    /// backend a reboot is a clean power-off and power-on: every unit stops as for a reboot,
    /// and the machine boots again on the same disk.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.write("/var/lib/state", "kept")?;
    /// machine.reboot()?;
    /// assert_eq!(machine.read_to_string("/var/lib/state")?, "kept");
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn reboot(&self) -> Result<()> {
        // nspawn reboots a unit's container in place, which a machine of ours cannot follow
        // there: a clean power cycle instead, the same to the disk and the units.
        if crate::backend::selected()?.0 == crate::backend::Kind::Systemd {
            self.power_off()?;
            return self.power_on();
        }
        let old = self.leader()?;
        self.signal_init(&old, sigrtmin(5), "rebooting")?;
        self.wait_gone(&old, "rebooting")?;
        // Followed as the guest's own reboot would be, and waited for.
        self.leader().map(drop)
    }

    /// Powers the machine off cleanly (every unit stopped, as by `poweroff`) and keeps its
    /// disk: [`Machine::power_on`] boots it again. Until then, everything asked of it fails
    /// with [`Error::NotRunning`].
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.power_off()?;
    /// assert!(!machine.is_running());
    /// machine.power_on()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn power_off(&self) -> Result<()> {
        let old = self.leader()?;
        self.signal_init(&old, sigrtmin(4), "powering off")?;
        self.wait_gone(&old, "powering off")?;
        self.wait_down()
    }

    /// Kills every process of the machine at once, without a shutdown, as a power cut would,
    /// and keeps its disk: [`Machine::power_on`] boots it again on what was written, for
    /// crash-recovery tests. Every write that reached the kernel is kept (the writable layer
    /// is memory: there is no page cache to lose).
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.crash()?;
    /// machine.power_on()?;
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn crash(&self) -> Result<()> {
        let old = self.leader()?;
        self.signal_init(&old, libc::SIGKILL, "crashing")?;
        self.wait_gone(&old, "crashing")?;
        self.wait_down()
    }

    /// Boots a machine that was powered off or crashed again, on the same disk, and waits
    /// until it is up (`wait_until_running`). Does nothing if it is up.
    ///
    /// ```no_run
    /// let machine = nspawn::Machine::start("bookworm")?;
    /// machine.power_off()?;
    /// machine.power_on()?;
    /// assert!(machine.is_running());
    /// # Ok::<(), nspawn::Error>(())
    /// ```
    pub fn power_on(&self) -> Result<()> {
        if self.current_leader().is_alive() {
            return Ok(());
        }
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = running.take() else {
            return Err(self.stopped());
        };
        if self.current_leader().is_alive() {
            *running = Some(current);
            return Ok(());
        }
        let next = self.cycle(current, "powering it on")?;
        *running = Some(next);
        drop(running);
        self.wait_until_running(self.boot_timeout())
    }

    /// After the leader ended by itself: boots the machine again if its guest rebooted.
    pub(super) fn follow_reboot(&self) -> Result<Arc<PidFd>> {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        let leader = self.current_leader();
        if leader.is_alive() {
            // Another thread followed it meanwhile.
            return Ok(leader);
        }
        let Some(current) = running.as_mut() else {
            return Err(self.stopped());
        };
        match current.after_leader(self.boot_timeout()) {
            Ended::Down => Err(self.down()),
            Ended::RebootAsked => {
                let Some(current) = running.take() else {
                    return Err(self.stopped());
                };
                *running = Some(self.cycle(current, "following the reboot its guest asked for")?);
                drop(running);
                self.wait_until_running(self.boot_timeout())?;
                Ok(self.current_leader())
            }
        }
    }

    /// Waits for the nspawn of `current` to be gone (the systemd backend's is being stopped),
    /// and boots again on its disk. A failure is kept for what is asked of the machine later
    /// (it is no longer running), with what was being done.
    fn cycle(&self, mut current: Running, doing: &str) -> Result<Running> {
        current
            .stop(self.0.stop_timeout)
            .and_then(|()| self.boot_again(current))
            .inspect_err(|e| {
                let why = match e {
                    Error::NotRunning { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let _ = self.0.lost.set(format!("{doing} failed: {why}"));
            })
    }

    fn boot_timeout(&self) -> Duration {
        self.0
            .again
            .as_ref()
            .map_or(Duration::from_secs(60), |a| a.spec.boot_timeout)
    }

    /// A new nspawn on the disk of `old`, whose nspawn has exited.
    fn boot_again(&self, old: Running) -> Result<Running> {
        let Some(again) = &self.0.again else {
            return Err(self.stopped());
        };
        let prepared = old.into_prepared().again().map_err(|why| {
            self.forget();
            Error::NotRunning {
                machine: self.0.name.clone(),
                reason: format!("it cannot boot again on the same disk: {why}"),
            }
        })?;
        let started = Instant::now();
        let log_file = again
            .log_file
            .try_clone()
            .map_err(|e| Error::io("duplicating the console log's descriptor", e))?;
        let next = backend::boot(
            &again.spec,
            &self.0.name,
            &self.0.log,
            log_file,
            Some(prepared),
        )
        .inspect_err(|_| self.forget())?;
        if let Err(e) = next.record(&self.0.name, &again.spec.dir).save() {
            crate::report::warning(
                Some(&self.0.name),
                format_args!("no ownership record after a reboot: {e}"),
            );
        }
        self.adopt_leader(&next)?;
        self.0.span.in_scope(|| {
            tracing::info!(
                boot_ms = (started.elapsed().as_secs_f64() * 1e3).round(),
                "booted again on the same disk"
            )
        });
        report::event(Event::Ready {
            machine: self.0.name.clone(),
            chroot: self.0.chroot.clone(),
            boot_ms: started.elapsed().as_millis() as u64,
        });
        Ok(next)
    }

    /// Takes the leader of a new boot: the old agent is gone with the old container, and the
    /// new container's network needs its address again.
    fn adopt_leader(&self, running: &Running) -> Result<Arc<PidFd>> {
        let leader = Arc::new(
            running
                .leader()
                .try_clone()
                .map_err(|e| Error::io("duplicating the leader pidfd", e))?,
        );
        *self.0.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader.clone();
        self.0
            .agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.configure_address(&leader)?;
        Ok(leader)
    }

    /// A machine that cannot boot again is no longer the registry's.
    fn forget(&self) {
        super::registry::unregister(&self.0.name);
        Record::remove(&self.0.name);
    }

    fn signal_init(&self, leader: &PidFd, signal: libc::c_int, doing: &str) -> Result<()> {
        let _root = ThreadRoot::acquire()?;
        leader
            .signal(signal)
            .map_err(|e| Error::io(format!("{doing} machine {}", self.0.name), e))
    }

    /// Waits until the init that was asked to end has ended.
    fn wait_gone(&self, leader: &PidFd, doing: &str) -> Result<()> {
        if leader.wait(self.0.stop_timeout) {
            return Ok(());
        }
        Err(Error::Timeout {
            what: format!("{doing} machine {}", self.0.name),
            after: self.0.stop_timeout,
            hint: format!(
                "its units did not stop in time: raise .stop_timeout(..), or see its console log {}",
                self.0.log.display()
            ),
        })
    }

    /// Waits until nspawn has exited after a power-off or a crash (a reboot of the guest's own
    /// that raced with it leaves the machine down just the same).
    fn wait_down(&self) -> Result<()> {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = running.as_mut() else {
            return Err(self.stopped());
        };
        current.after_leader(self.0.stop_timeout);
        Ok(())
    }

    fn stopped(&self) -> Error {
        let reason = match (self.0.lost.get(), &self.0.again) {
            (Some(lost), _) => lost.clone(),
            (None, Some(_)) => "it was stopped".into(),
            (None, None) => {
                "it is another process's machine (nextest): only that process boots it".into()
            }
        };
        Error::NotRunning {
            machine: self.0.name.clone(),
            reason,
        }
    }

    fn down(&self) -> Error {
        let systemd =
            crate::backend::selected().is_ok_and(|(kind, _)| kind == crate::backend::Kind::Systemd);
        let reboot = if systemd {
            " (on the systemd backend a reboot from inside ends the machine too: \
             use Machine::reboot())"
        } else {
            ""
        };
        Error::NotRunning {
            machine: self.0.name.clone(),
            reason: format!(
                "its container ended (powered off, crashed or killed{reboot}; console log: {}). \
                 power_on() boots it again on the same disk",
                self.0.log.display()
            ),
        }
    }
}
