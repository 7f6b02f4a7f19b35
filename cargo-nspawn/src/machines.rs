//! Machines left behind: removing them, and getting into one.

use std::os::unix::process::CommandExt;

use nspawn_runtime::chroot::config::Workspace;
use nspawn_runtime::cleanup::records::Record;
use nspawn_runtime::cleanup::sweep;
use nspawn_runtime::host::privs;
use nspawn_runtime::Error;

/// Removes what crashed runs left (and kept machines, with `kept`), saying what. Needs root.
pub fn gc(ws: &Workspace, kept: bool) -> Result<(), Error> {
    let options = sweep::Options {
        chroot_dirs: vec![ws.chroots_dir()],
        kept,
    };
    let removed = sweep::sweep(&options)?;
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
pub fn shell(name: &str, command: &[String]) -> Result<(), Error> {
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
        return Err(Error::NotRunning {
            machine: name.into(),
            reason: format!(
                "no running machine has that name; running: {}",
                if running.is_empty() {
                    "none".to_string()
                } else {
                    running.join(", ")
                }
            ),
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
    Err(Error::io("starting nsenter", err))
}
