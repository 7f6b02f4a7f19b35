#[nspawn::test(chroot = "book worm")]
fn t(_m: &nspawn::Machine) {}

fn main() {}
