#[nspawn::setup(chroot = "bookworm", scope = "test")]
fn prepare() {}

fn main() {}
