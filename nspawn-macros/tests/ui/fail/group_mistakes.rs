use nspawn::Machine;

#[nspawn::test(machines(server = "bookworm"), chroot = "bookworm")]
fn with_a_chroot(_server: &Machine) {}

#[nspawn::test(machines(server = "jessie", client = 7, server = "trixie"))]
fn undeclared_not_a_string_twice(_server: &Machine) {}

#[nspawn::test(machines(server = "bookworm", client = "trixie"))]
fn parameter_not_a_role(_server: &Machine, _other: &Machine) {}

#[nspawn::test(machines(server = "bookworm"))]
fn role_not_a_machine(_server: u32) {}

#[nspawn::test(machines(server = "bookworm"), inside)]
fn inside_a_group() {}

#[nspawn::test(machines())]
fn empty() {}

#[nspawn::test(machines = "bookworm")]
fn not_a_list() {}

#[nspawn::setup(machines(server = "bookworm"))]
fn setup_of_a_group(_m: &Machine) {}

fn main() {}
