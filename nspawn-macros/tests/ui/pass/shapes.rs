//! Every accepted shape expands to code that compiles.
#![allow(dead_code)]

use nspawn::Machine;

#[nspawn::test(chroot = "bookworm")]
fn no_parameter() {}

#[nspawn::test(chroot = "bookworm")]
fn machine_parameter(m: &Machine) {
    let _ = m.name();
}

#[nspawn::test(chroot = "bookworm", scope = "test")]
fn result_return(m: &nspawn::Machine) -> nspawn::Result<()> {
    m.run(["true"])?;
    Ok(())
}

#[nspawn::test(chroot = "trixie", scope = "module")]
fn other_error_type(_m: &Machine) -> Result<(), String> {
    Err("with any Debug error".into())
}

/// Doc comments, should_panic, ignore and cfg stay.
#[nspawn::test(chroot = "bookworm")]
#[should_panic(expected = "boom")]
#[ignore]
#[cfg(target_os = "linux")]
fn attributes_are_kept(_m: &Machine) {
    panic!("boom");
}

mod nested {
    #[nspawn::test(chroot = "/path/to/any/tree")]
    fn in_a_module(_m: &nspawn::Machine) {}
}

fn main() {}
