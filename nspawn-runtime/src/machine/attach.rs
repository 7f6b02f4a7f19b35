//! Handles on machines that another process of the same run owns (under cargo-nextest, a
//! module's machine is booted and stopped by a keeper process; see `harness::nextest`).
//!
//! An attached handle runs commands, files and calls through an agent of this process, like
//! any handle; it never stops the machine (its `stop` and drop leave it to its owner), and it
//! is not among this process's machines, so this process's exit leaves it running.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lifecycle::{Machine, State};
use crate::chroot::storage::Storage;
use crate::error::{Error, Result};
use crate::host::pidfd::PidFd;
use crate::host::process::ProcessId;
use crate::network::Network;

/// What another process needs to attach to a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The machine's name.
    pub name: String,
    /// The chroot it was booted from, as asked for.
    pub chroot: String,
    /// How its master chroot is stored.
    pub storage: Storage,
    /// Its PID 1, by PID and start time.
    pub leader: ProcessId,
    /// Its console log.
    pub log: PathBuf,
    /// Its network, in the attribute's form.
    pub network: String,
    /// Its address on its zone.
    pub address: Option<IpAddr>,
}

impl Machine {
    /// What another process needs to attach to this machine.
    pub(crate) fn publish(&self) -> Result<Published> {
        let leader = ProcessId::of(self.leader_pid()).ok_or_else(|| Error::NotRunning {
            machine: self.0.name.clone(),
            reason: "its PID 1 is gone".into(),
        })?;
        Ok(Published {
            name: self.0.name.clone(),
            chroot: self.0.chroot.clone(),
            storage: self.0.storage,
            leader,
            log: self.0.log.clone(),
            network: self.0.network.to_string(),
            address: self.address(),
        })
    }

    /// A handle on a machine another process owns, checked to be the same machine still
    /// (the leader's PID with its start time).
    pub(crate) fn attach(published: &Published) -> Result<Machine> {
        let gone = |reason: String| Error::NotRunning {
            machine: published.name.clone(),
            reason,
        };
        let leader = PidFd::open(published.leader.pid)
            .map_err(|e| gone(format!("its PID 1 cannot be opened: {e}")))?;
        // Opened first, checked after: a PID reused in between would not match its start time.
        if !published.leader.is_alive() {
            return Err(gone("it was stopped by its owner".into()));
        }
        let network = Network::parse(&published.network).unwrap_or_default();
        Ok(Machine::new(State {
            name: published.name.clone(),
            chroot: published.chroot.clone(),
            storage: published.storage,
            log: published.log.clone(),
            leader: Mutex::new(Arc::new(leader)),
            again: None,
            running: Arc::new(Mutex::new(None)),
            agent: Mutex::new(None),
            slot: Mutex::new(None),
            stop_timeout: Duration::from_secs(10),
            wait_timeout: crate::settings::lenient().wait_timeout,
            span: tracing::info_span!("machine", name = %published.name, chroot = %published.chroot),
            network,
            memberships: Mutex::new(Vec::new()),
            address: published.address,
            // Booted by another process: its boot time is that one's to tell.
            boot_time: std::sync::OnceLock::new(),
            lost: std::sync::OnceLock::new(),
        }))
    }
}
