#[nspawn::test(chroot = "bookworm", chroot = "bookworm")]
fn t(_m: &nspawn::Machine) {}

fn main() {}
