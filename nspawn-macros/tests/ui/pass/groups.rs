//! Networks and groups of machines: `network`, and `machines(role = "chroot", ...)` with one
//! parameter per role, in any order.

use nspawn::Machine;

#[nspawn::test(chroot = "bookworm", network = "private")]
fn private(machine: &Machine) {
    assert!(machine.address().is_none());
}

#[nspawn::test(chroot = "bookworm", network = "zone:web+outside", scope = "test")]
fn on_a_zone(machine: &Machine) -> nspawn::Result<()> {
    machine.run(["true"])?;
    Ok(())
}

#[nspawn::test(machines(server = "bookworm", client = "trixie"), network = "zone:web")]
fn client_and_server(client: &Machine, server: &Machine) -> nspawn::Result<()> {
    client.run(["getent", "hosts", "server"])?;
    assert_ne!(client.name(), server.name());
    Ok(())
}

#[nspawn::test(machines(db = "bookworm", app = "bookworm"))]
#[ignore = "only compiled here"]
fn unused_role(app: &Machine, _db: &Machine) {
    let _ = app;
}

fn main() {}
