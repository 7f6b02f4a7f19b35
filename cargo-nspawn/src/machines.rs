//! Machines left behind: removing them, and getting into one.

use std::os::unix::process::CommandExt;

use crate::error::CliError;
use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::cleanup::records::Record;
use nspawn_runtime::cleanup::sweep;
use nspawn_runtime::host::privs;

/// Removes what crashed runs left (and kept machines, with `kept`; the invoking user's warm
/// machines, with `warm`), saying what. Needs root.
pub fn gc(ws: &Workspace, kept: bool, warm: bool) -> Result<(), CliError> {
    let options = sweep::Options {
        chroot_dirs: vec![ws.chroots_dir()],
        kept,
    };
    let mut removed = match warm {
        true => nspawn_runtime::harness::end_warm_keepers()?,
        false => Vec::new(),
    };
    // After the keepers: what they leave is the sweep's.
    removed.extend(sweep::sweep(&options)?);
    if removed.is_empty() {
        println!("nothing to remove");
    }
    for line in removed {
        println!("removed {line}");
    }
    if let Some(line) = crate::chroots::undeclared_line(ws) {
        println!("{line}");
    }
    Ok(())
}

/// Replaces this process with `command` (default: a login shell) in machine `name`, in all
/// its namespaces. Needs root.
pub fn shell(name: &str, command: &[String]) -> Result<(), CliError> {
    let records = Record::all();
    let Some(record) = records
        .iter()
        .find(|r| r.name == name && r.leader.is_alive())
    else {
        let running: Vec<&str> = records
            .iter()
            .filter(|r| r.leader.is_alive())
            .map(|r| r.name.as_str())
            .collect();
        return Err(CliError::NotRunning {
            machine: name.into(),
            running: running.into_iter().map(String::from).collect(),
        });
    };
    let login = ["/bin/bash".to_string(), "-l".to_string()];
    let command = if command.is_empty() {
        &login[..]
    } else {
        command
    };
    let mut nsenter = std::process::Command::new("nsenter");
    nsenter
        .args(["-t", &record.leader.pid.to_string(), "-a", "--"])
        .args(command);
    // Under sudo this process has dropped to the user, who may not even look at the
    // machine's namespaces: entering them, as the guest's root, takes root.
    privs::start_as_root(&mut nsenter);
    let err = nsenter.exec();
    Err(CliError::io("starting nsenter", err))
}
