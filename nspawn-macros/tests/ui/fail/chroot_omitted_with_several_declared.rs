#[nspawn::test]
fn t(_m: &nspawn::Machine) {}

fn main() {}
