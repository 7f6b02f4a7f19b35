use nspawn::{Group, Machine};

fn set_up(_m: &Machine) -> nspawn::Result<()> {
    Ok(())
}

const WEB: Group = Group::new(&[("server-lazy", "bookworm"), ("client", "trixie")])
    .network("zone:web")
    .setups(&[("server-lazy", set_up)])
    .serial();

#[nspawn::test(group = WEB)]
fn uses_both(client: &Machine, server_lazy: &Machine) {
    let _ = (client, server_lazy);
}

#[nspawn::test(group = WEB)]
fn uses_one(_server_lazy: &Machine) -> nspawn::Result<()> {
    Ok(())
}

fn main() {}
