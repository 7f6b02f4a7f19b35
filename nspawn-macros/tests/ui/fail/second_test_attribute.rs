#[nspawn::test(chroot = "bookworm")]
#[test]
fn t(_m: &nspawn::Machine) {}

fn main() {}
