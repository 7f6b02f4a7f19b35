#[nspawn::test(chroot = "bookworm")]
fn t(m: &nspawn::Machine) {
    let name = ;
    let _ = (m, name);
}

fn main() {}
