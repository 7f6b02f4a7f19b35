#[nspawn::test(chroot = "bookworm")]
struct NotATest;

fn main() {}
