//! Booting the machine a test asks for.

use super::test_info::TestInfo;
use crate::cleanup::slots::Slot;
use crate::machine::Machine;

/// Boots the machine a test asks for, saying so on stderr with the boot time. With `spare`,
/// a slot taken for a boot ahead of any test.
pub(crate) fn boot(info: &TestInfo, purpose: &str, spare: Option<Slot>) -> crate::Result<Machine> {
    let started = std::time::Instant::now();
    let ahead = spare.is_some();
    let builder = Machine::builder(info.chroot).workspace(info.manifest_dir);
    let machine = match spare {
        Some(slot) => builder.start_on(slot)?,
        None => builder.start()?,
    };
    crate::report::announce(&format!(
        "booted {} ({}) for {purpose}{} in {:.2} s",
        machine.name(),
        info.chroot,
        if ahead { ", ahead of its tests," } else { "" },
        started.elapsed().as_secs_f64()
    ));
    Ok(machine)
}
