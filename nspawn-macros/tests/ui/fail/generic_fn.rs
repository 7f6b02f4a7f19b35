#[nspawn::test(chroot = "bookworm")]
fn t<T: Default>(_m: &nspawn::Machine) {}

fn main() {}
