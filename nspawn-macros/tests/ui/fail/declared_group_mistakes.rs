use nspawn::{Group, Machine};

const WEB: Group = Group::new(&[("server-lazy", "bookworm"), ("client", "trixie")]);

#[nspawn::test(group = WEB, chroot = "bookworm", network = "zone:web")]
fn with_a_chroot_and_a_network(_client: &Machine) {}

#[nspawn::test(group = WEB)]
fn not_a_machine(client: u32) {}

#[nspawn::test(group = "WEB")]
fn a_string(_client: &Machine) {}

fn main() {}
