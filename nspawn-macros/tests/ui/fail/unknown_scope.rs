#[nspawn::test(chroot = "bookworm", scope = "class")]
fn t(_m: &nspawn::Machine) {}

fn main() {}
