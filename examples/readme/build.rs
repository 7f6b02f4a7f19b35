//! Turns every Rust block of the workspace's README into a module of `readme.rs` in
//! `OUT_DIR`, which `tests/readme.rs` includes: the blocks compile and their tests run exactly
//! as printed. Each module sees the names the README's prose takes for granted (`Machine`,
//! `Network`, `Duration`, `Path`) through a glob import, which a block's own `use` shadows.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).expect("reading the workspace's README.md");
    let mut out = String::new();
    for (line, block) in rust_blocks(&text) {
        let _ = writeln!(
            out,
            "/// README.md, the block at line {line}.\nmod readme_line_{line} {{\n\
             #![allow(unused_imports, dead_code)]\nuse super::prelude::*;\n{block}}}\n"
        );
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("readme.rs");
    std::fs::write(&dest, out).expect("writing readme.rs");
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
