#[nspawn::test(chroot = "bookworm")]
fn t(_m: &nspawn::Machine, _other: u32) {}

fn main() {}
