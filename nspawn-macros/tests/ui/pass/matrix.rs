//! A matrix: one test per chroot, in a module named after the function.

use nspawn::Machine;

#[nspawn::setup(chroot = ["bookworm", "trixie"])]
fn prepare(machine: &Machine) -> nspawn::Result<()> {
    machine.write("/root/prepared", "yes")?;
    Ok(())
}

#[nspawn::test(chroot = ["bookworm", "trixie"])]
fn os_release(machine: &Machine) -> nspawn::Result<()> {
    assert!(machine.read_to_string("/etc/os-release")?.contains(machine.chroot()));
    Ok(())
}

#[nspawn::test(chroot = ["bookworm", "trixie"], inside, scope = "test")]
#[ignore = "only compiled here"]
fn inside_each() {}

#[nspawn::test(chroot = ["bookworm"])]
#[should_panic(expected = "boom")]
fn one_element_matrix() {
    panic!("boom");
}

// The instances (`os_release::bookworm`, ...) are `#[test]` functions, compiled only under
// `--test`; tests/machines/sharing.rs runs them by name.
fn main() {}
