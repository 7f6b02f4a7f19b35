//! `inside` tests and set-ups: each shape they accept.

#[nspawn::setup(chroot = "bookworm", inside)]
fn prepare() -> std::io::Result<()> {
    std::fs::write("/root/prepared", "yes")
}

#[nspawn::test(chroot = "bookworm", inside)]
fn plain() {
    assert!(std::path::Path::new("/root/prepared").exists());
}

#[nspawn::test(inside, chroot = "bookworm", scope = "test")]
fn returns_a_result() -> Result<(), String> {
    Ok(())
}

#[nspawn::test(chroot = "bookworm", inside)]
#[should_panic(expected = "inside")]
fn expects_a_panic() {
    panic!("inside");
}

mod plain_setup {
    #[nspawn::setup(chroot = "trixie", inside)]
    fn prepare() {}
}

fn main() {}
