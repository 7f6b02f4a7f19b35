#[nspawn::test(chroot = "bookworm")]
fn t(_m: nspawn::Machine) {}

#[nspawn::test(chroot = "bookworm")]
fn u(_m: &mut nspawn::Machine) {}

#[nspawn::test(chroot = "bookworm")]
fn v(_name: &str) {}

fn main() {}
