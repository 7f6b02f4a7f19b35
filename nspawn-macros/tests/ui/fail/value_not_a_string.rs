#[nspawn::test(chroot = bookworm)]
fn t(_m: &nspawn::Machine) {}

#[nspawn::test(chroot = "bookworm", scope = 1)]
fn u() {}

fn main() {}
