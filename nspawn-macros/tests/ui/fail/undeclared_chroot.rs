#[nspawn::test(chroot = "jessie")]
fn t(_m: &nspawn::Machine) {}

fn main() {}
