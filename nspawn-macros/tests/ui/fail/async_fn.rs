#[nspawn::test(chroot = "bookworm")]
async fn t(_m: &nspawn::Machine) {}

fn main() {}
