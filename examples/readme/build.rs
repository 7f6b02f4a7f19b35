//! Turns every Rust block of the workspace's README and guide (`docs/guide/*.md`), and every
//! `no_run` block of the crate docs (`nspawn`, `nspawn-macros`, `nspawn-runtime`) that uses a
//! machine, into a module of `readme.rs` in `OUT_DIR`, which `tests/readme.rs` includes: the
//! blocks compile and run exactly as printed (rustdoc only compiles the crate docs' and the
//! guide's blocks: they are `no_run`, and a doctest never runs a `#[test]`). A block shaped as
//! rustdoc's `main` (ending in `Ok::<(), E>(())`) becomes a `#[test]`. Each module sees
//! the names the README's prose takes for granted (`Machine`, `Network`, `Duration`, `Path`)
//! through a glob import, which a block's own `use` shadows.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = String::new();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("docs/guide").display()
    );
    for (file, prefix) in markdown_files(&root) {
        let path = root.join(&file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("reading the README or the guide");
        for (line, block) in rust_blocks(&text) {
            let block = main_shaped(&block).unwrap_or(block);
            push_module(&mut out, &file, &prefix, line, &block);
        }
    }
    let runtime = root.join("nspawn-runtime/src");
    println!("cargo:rerun-if-changed={}", runtime.display());
    let mut files = vec![
        ("src/lib.rs".to_string(), "crate_docs".to_string()),
        (
            "nspawn-macros/src/lib.rs".to_string(),
            "macro_docs".to_string(),
        ),
    ];
    files.extend(rust_files(&root, "nspawn-runtime/src"));
    for (file, prefix) in files {
        let path = root.join(&file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("reading a crate's source");
        for (line, block) in doc_blocks(&text) {
            if let Some(block) = runnable(&file, line, block) {
                push_module(&mut out, &file, &prefix, line, &block);
            }
        }
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("readme.rs");
    std::fs::write(&dest, out).expect("writing readme.rs");
}

/// The README and the guide's chapters, each with its module prefix: `docs/guide/networks.md`
/// gives `guide_networks`.
fn markdown_files(root: &Path) -> Vec<(String, String)> {
    let mut files = vec![("README.md".to_string(), "readme".to_string())];
    let chapters = std::fs::read_dir(root.join("docs/guide")).expect("listing docs/guide");
    let mut chapters: Vec<_> = chapters
        .map(|entry| entry.expect("reading a directory entry").file_name())
        .filter_map(|name| name.to_str()?.strip_suffix(".md").map(str::to_string))
        .collect();
    chapters.sort();
    files.extend(chapters.into_iter().map(|chapter| {
        let prefix = format!("guide_{}", chapter.replace('-', "_"));
        (format!("docs/guide/{chapter}.md"), prefix)
    }));
    files
}

/// The `.rs` files under `dir` (relative to `root`), each with a module prefix made of its
/// path: `nspawn-runtime/src/machine/files.rs` gives `runtime_machine_files`.
fn rust_files(root: &Path, dir: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(root.join(dir)).expect("listing nspawn-runtime's sources");
    for entry in entries {
        let name = entry.expect("reading a directory entry").file_name();
        let name = name.to_str().expect("source file names are UTF-8");
        let path = format!("{dir}/{name}");
        if root.join(&path).is_dir() {
            files.extend(rust_files(root, &path));
        } else if let Some(stem) = path.strip_suffix(".rs") {
            let module = stem
                .replace("nspawn-runtime/src", "runtime")
                .replace(['/', '-'], "_");
            files.push((path, module));
        }
    }
    files.sort();
    files
}

/// What of a crate docs' block runs as a test, if it uses a machine: a block that declares a
/// test or a set-up as it is; one shaped as rustdoc's `main` (ending in `Ok::<(), E>(())`)
/// as the body of a `#[test]`. A block that uses a machine and is neither could drift
/// unseen, so it fails the build; a block without a machine (building chroots, running as
/// root on the host) is left to rustdoc, which compiles it.
pub(crate) fn runnable(file: &str, line: usize, block: String) -> Option<String> {
    if block.contains("#[nspawn::test") || block.contains("#[nspawn::setup") {
        return Some(block);
    }
    if !block.contains("Machine") {
        return None;
    }
    let Some(test) = main_shaped(&block) else {
        panic!(
            "{file}:{line}: this example uses a machine but no test would run it: declare \
             one in it (a hidden `# #[nspawn::test(...)]` line before its function), or \
             write it as a `main` body that ends in `Ok::<(), E>(())`"
        )
    };
    Some(test)
}

/// A block shaped as rustdoc's `main` (ending in `Ok::<(), E>(())`), as the body of a
/// `#[test]` returning `Result<(), E>`.
pub(crate) fn main_shaped(block: &str) -> Option<String> {
    let last = block
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let error = last
        .trim()
        .strip_prefix("Ok::<(), ")
        .and_then(|rest| rest.strip_suffix(">(())"))?;
    Some(format!(
        "#[test]\nfn example() -> Result<(), {error}> {{\n{block}}}\n"
    ))
}

/// Appends a block as a module named after its file and line.
fn push_module(out: &mut String, file: &str, prefix: &str, line: usize, block: &str) {
    let _ = writeln!(
        out,
        "/// {file}, the block at line {line}.\nmod {prefix}_line_{line} {{\n\
         #![allow(unused_imports, unused_variables, dead_code)]\nuse super::prelude::*;\n{block}}}\n"
    );
}

/// The `no_run` blocks of a file's docs (`//!` or `///`), with the line
/// of their opening fence; rustdoc's hidden lines (`# ...`) are kept, as rustdoc compiles them.
pub(crate) fn doc_blocks(text: &str) -> Vec<(usize, String)> {
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
            // `rust,no_run` in the guide, whose blocks are doctests too.
            None if trimmed == "```rust" || trimmed == "```rust,no_run" => {
                open = Some((i + 1, indent, String::new()))
            }
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
