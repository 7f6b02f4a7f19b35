#[nspawn::test(bookworm)]
fn t(_m: &nspawn::Machine) {}

fn main() {}
