//! Turns every Rust block of the workspace's README, and every block of the `nspawn` crate's
//! docs that declares a test or a set-up, into a module of `readme.rs` in `OUT_DIR`, which
//! `tests/readme.rs` includes: the blocks compile and their tests run exactly as printed
//! (rustdoc only compiles the crate docs' blocks: they are `no_run`, and a doctest never runs
//! a `#[test]`). Each module sees the names the README's prose takes for granted (`Machine`,
//! `Network`, `Duration`, `Path`) through a glob import, which a block's own `use` shadows.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).expect("reading the workspace's README.md");
    let mut out = String::new();
    for (line, block) in rust_blocks(&text) {
        push_module(&mut out, "README.md", "readme", line, &block);
    }
    for (file, prefix) in [
        ("src/lib.rs", "crate_docs"),
        ("nspawn-macros/src/lib.rs", "macro_docs"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("reading a crate's src/lib.rs");
        for (line, block) in doc_blocks(&text) {
            push_module(&mut out, file, prefix, line, &block);
        }
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("readme.rs");
    std::fs::write(&dest, out).expect("writing readme.rs");
}

/// Appends a block as a module named after its file and line.
fn push_module(out: &mut String, file: &str, prefix: &str, line: usize, block: &str) {
    let _ = writeln!(
        out,
        "/// {file}, the block at line {line}.\nmod {prefix}_line_{line} {{\n\
         #![allow(unused_imports, unused_variables, dead_code)]\nuse super::prelude::*;\n{block}}}\n"
    );
}

/// The `no_run` blocks of a file's docs (`//!` or `///`) that declare a test or a set-up, with the line
/// of their opening fence; rustdoc's hidden lines (`# ...`) are kept, as rustdoc compiles them.
fn doc_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(doc) = trimmed
            .strip_prefix("//!")
            .or_else(|| trimmed.strip_prefix("///"))
        else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        match open.take() {
            None if doc == "```no_run" => open = Some((i + 1, String::new())),
            None => {}
            Some((start, block)) if doc == "```" => blocks.push((start, block)),
            Some((start, mut block)) => {
                let code = doc
                    .strip_prefix("# ")
                    .or((doc == "#").then_some(""))
                    .unwrap_or(doc);
                block.push_str(code);
                block.push('\n');
                open = Some((start, block));
            }
        }
    }
    blocks
        .retain(|(_, block)| block.contains("#[nspawn::test") || block.contains("#[nspawn::setup"));
    blocks
}

/// The Rust blocks of a Markdown text, with the line of their opening fence, unindented (a
/// block in a list item is indented as the item is).
fn rust_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None if trimmed == "```rust" => open = Some((i + 1, indent, String::new())),
            None => {}
            Some((start, _, block)) if trimmed == "```" => blocks.push((start, block)),
            Some((start, indent, mut block)) => {
                block.push_str(line.get(indent..).unwrap_or(trimmed));
                block.push('\n');
                open = Some((start, indent, block));
            }
        }
    }
    blocks
}
