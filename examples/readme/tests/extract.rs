//! The rules by which `build.rs` picks the crate docs' blocks that run: one that uses a machine
//! runs or fails the build, so an example cannot drift unseen.

#[allow(dead_code)]
#[path = "../build.rs"]
mod build;

#[test]
fn a_main_shaped_block_runs_as_the_body_of_a_test() {
    let block = "let machine = nspawn::Machine::start(\"bookworm\")?;\n\
                 # Ok::<(), nspawn::Error>(())\n"
        .replace("# ", "");
    let test = build::runnable("x.rs", 1, block.clone()).expect("a block that boots runs");
    assert!(test.starts_with("#[test]\nfn example() -> Result<(), nspawn::Error> {\n"));
    assert!(test.contains(&block));
}

#[test]
fn a_block_that_declares_a_test_runs_as_it_is() {
    let block = "#[nspawn::test(chroot = \"bookworm\")]\nfn f(machine: &Machine) {}\n";
    assert_eq!(
        build::runnable("x.rs", 1, block.into()).as_deref(),
        Some(block)
    );
}

#[test]
fn a_block_without_a_machine_is_left_to_rustdoc() {
    let block = "let _root = nspawn_runtime::host::privs::root()?;\nOk::<(), E>(())\n";
    assert_eq!(build::runnable("x.rs", 1, block.into()), None);
}

#[test]
#[should_panic(expected = "x.rs:7: this example uses a machine but no test would run it")]
fn a_machine_in_a_block_no_test_runs_fails_the_build() {
    let block = "fn f(machine: &nspawn::Machine) -> nspawn::Result<()> {\n    Ok(())\n}\n";
    build::runnable("x.rs", 7, block.into());
}

#[test]
fn hidden_lines_are_kept_as_rustdoc_compiles_them() {
    let text = "/// ```no_run\n/// # #[nspawn::test]\n/// # fn f() {}\n/// ```\n";
    assert_eq!(
        build::doc_blocks(text),
        vec![(1, "#[nspawn::test]\nfn f() {}\n".to_string())]
    );
}
