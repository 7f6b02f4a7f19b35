#[nspawn::test(chroot = [])]
fn empty() {}

#[nspawn::test(chroot = ["bookworm", "jessie", 7])]
fn undeclared_and_not_a_string() {}

#[nspawn::test(chroot = ["trixie", "trixie"])]
fn twice() {}

#[nspawn::test(chroot = ["bookworm"], chroot = "trixie")]
fn two_chroot_options() {}

fn main() {}
