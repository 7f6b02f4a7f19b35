use nspawn::Machine;

#[nspawn::test(chroot = "bookworm", inside)]
fn takes_the_machine(machine: &Machine) {}

#[nspawn::test(chroot = "bookworm", inside = "yes")]
fn inside_with_a_value() {}

#[nspawn::test(chroot = "bookworm", inside, inside)]
fn inside_twice() {}

#[nspawn::test(chroot, inside)]
fn chroot_without_a_value() {}

#[nspawn::setup(chroot = "bookworm", inside)]
fn setup_takes_the_machine(machine: &Machine) {}

fn main() {}
