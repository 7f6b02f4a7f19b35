use nspawn::Machine;

/// A set-up and the tests it prepares; each shape it accepts.
#[nspawn::setup(chroot = "bookworm")]
fn prepare(machine: &Machine) -> nspawn::Result<()> {
    machine.write("/root/prepared", "yes")?;
    Ok(())
}

mod plain {
    #[nspawn::setup(chroot = "trixie")]
    fn prepare(_machine: &nspawn::Machine) {}
}

#[nspawn::test(chroot = "bookworm")]
fn uses_it(machine: &Machine) {
    assert!(machine.exists("/root/prepared"));
}

fn main() {}
