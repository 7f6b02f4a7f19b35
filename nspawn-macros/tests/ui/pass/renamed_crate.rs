//! `crate = "..."` for a renamed dependency.
extern crate nspawn as containers;

#[containers::test(chroot = "bookworm", crate = "containers")]
fn t(m: &containers::Machine) {
    let _ = m.name();
}

fn main() {}
