//! Booting the machine a test asks for.

use super::test_info::TestInfo;
use crate::machine::Machine;

/// Boots the machine a test asks for, saying so on stderr with the boot time.
pub(crate) fn boot(info: &TestInfo, purpose: &str) -> crate::Result<Machine> {
    let started = std::time::Instant::now();
    let machine = Machine::builder(info.chroot)
        .workspace(info.manifest_dir)
        .start()?;
    crate::report::announce(&format!(
        "booted {} ({}) for {purpose} in {:.2} s",
        machine.name(),
        info.chroot,
        started.elapsed().as_secs_f64()
    ));
    Ok(machine)
}
