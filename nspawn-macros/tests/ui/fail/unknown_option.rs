#[nspawn::test(chroot = "bookworm", image = "x")]
fn t(_m: &nspawn::Machine) {}

fn main() {}
