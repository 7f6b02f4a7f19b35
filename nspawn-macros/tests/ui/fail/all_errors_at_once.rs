#[nspawn::test(chroot = "bookworm", colour = "blue", scope = "forever")]
async fn t<T>(_m: &nspawn::Machine, _x: T) {}

fn main() {}
