#[nspawn::test(chroot = "bookworm", network = "bridge")]
fn unknown_network() {}

#[nspawn::test(chroot = "bookworm", network = "zone:Web Server")]
fn bad_zone_name() {}

#[nspawn::test(chroot = "bookworm", network = 80)]
fn not_a_string() {}

#[nspawn::setup(chroot = "bookworm", network = "private")]
fn setup_with_a_network(_m: &nspawn::Machine) {}

#[nspawn::test(chroot = "bookworm", network = "zone:front,zone:back+outside")]
fn a_second_way_out() {}

fn main() {}
