use nspawn::{Group, Machine};

const WEB: Group = Group::new(&[("server-lazy", "bookworm"), ("client", "trixie")]);

#[nspawn::test(group = WEB)]
fn names_no_role(server: &Machine) {
    let _ = server;
}

fn main() {}
