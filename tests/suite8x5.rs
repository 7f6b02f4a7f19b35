//! 8 modules of 5 tests, each running one command: the benchmark's model of a real suite
//! (`benches/machine.rs`). Not run by `cargo test` (`test = false`).

macro_rules! module {
    ($name:ident) => {
        mod $name {
            #[nspawn::test(chroot = "bookworm")]
            fn t1(m: &nspawn::Machine) -> nspawn::Result<()> {
                m.run(["true"]).map(drop)
            }
            #[nspawn::test(chroot = "bookworm")]
            fn t2(m: &nspawn::Machine) -> nspawn::Result<()> {
                m.run(["true"]).map(drop)
            }
            #[nspawn::test(chroot = "bookworm")]
            fn t3(m: &nspawn::Machine) -> nspawn::Result<()> {
                m.run(["true"]).map(drop)
            }
            #[nspawn::test(chroot = "bookworm")]
            fn t4(m: &nspawn::Machine) -> nspawn::Result<()> {
                m.run(["true"]).map(drop)
            }
            #[nspawn::test(chroot = "bookworm")]
            fn t5(m: &nspawn::Machine) -> nspawn::Result<()> {
                m.run(["true"]).map(drop)
            }
        }
    };
}

module!(m1);
module!(m2);
module!(m3);
module!(m4);
module!(m5);
module!(m6);
module!(m7);
module!(m8);
