//! `#[tokio::test]` with `#[nspawn::test]`, in either order: a clear error saying to drop it.

#[nspawn::test(chroot = "bookworm")]
#[tokio::test]
async fn tokio_below(_machine: &nspawn::Machine) {}

#[tokio::test]
#[nspawn::test(chroot = "bookworm")]
async fn tokio_above() {}

fn main() {}
