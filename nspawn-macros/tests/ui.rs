//! Compile-time behaviour of `#[nspawn::test]`: every error, with its message and span, and the
//! accepted shapes. (The accepted shapes are also compiled as real tests and run against
//! containers in the workspace's `tests/`.)

#[test]
fn ui() {
    // trybuild builds the cases in a workspace of its own, without our chroot declarations:
    // point the macro at ours (it declares bookworm and trixie).
    std::env::set_var("NSPAWN_WORKSPACE", env!("CARGO_MANIFEST_DIR"));
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
