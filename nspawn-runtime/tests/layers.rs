//! The runtime's layers, checked: its module graph, drawn from the `use` lines and `crate::`
//! and `super::` paths of its sources, has no cycle, and no arrow climbs from a layer to one
//! above it.
//!
//! The layers, top to bottom, are the folders of `src/` (and, at the bottom, the few files
//! at its root). A new top-level module must be put in one here, or this test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom; an arrow may point within a folder, or down.
const LAYERS: &[&[&str]] = &[
    &["harness"],
    &["machine"],
    &["backend"],
    &["agent"],
    &["cleanup"],
    &["network"],
    &["chroot"],
    &["host"],
    &["lib", "error", "settings", "report", "deadline", "text"],
];

type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comment lines and without its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// Every path a use-tree starting at `s` names, each prefixed with `prefix`.
fn use_tree(prefix: &Module, s: &str, out: &mut Vec<Module>) {
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    use_tree(prefix, group[start..i].trim(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_tree(prefix, group[start..i].trim(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let mut path = prefix.clone();
    let mut rest = s;
    loop {
        let n = ident_len(rest);
        if n == 0 {
            break;
        }
        path.push(rest[..n].to_string());
        rest = &rest[n..];
        match rest.strip_prefix("::") {
            Some(next) if next.starts_with('{') => return use_tree(&path, next, out),
            Some(next) => rest = next,
            None => break,
        }
    }
    out.push(path);
}

/// The module paths a file's code names, absolute.
fn references(module: &Module, code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    // `super` of `a::b` (a/b.rs) is `a`; of `a` (a/mod.rs) it is the crate root.
    let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
    for (keyword, base) in [
        ("crate::", Vec::new()),
        ("super::", parent),
        ("self::", module.clone()),
    ] {
        let mut from = 0;
        while let Some(i) = code[from..].find(keyword) {
            let at = from + i;
            from = at + keyword.len();
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            use_tree(&base, &code[from..], &mut out);
        }
    }
    out
}

fn layer(module: &Module) -> (usize, String) {
    let top = module.first().cloned().unwrap_or_else(|| "lib".into());
    let rank = LAYERS
        .iter()
        .position(|l| l.contains(&top.as_str()))
        .unwrap_or_else(|| panic!("module `{top}` is in no layer: add it to LAYERS"));
    (rank, top)
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let code = code(&text);
        let mut targets = BTreeSet::new();
        // A folder's `mod.rs` names its own children without `self::`.
        for child in modules
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(&module))
        {
            let needle = format!("{}::", child[module.len()]);
            let named = code.match_indices(&needle).any(|(at, _)| {
                !code[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            });
            if named {
                targets.insert(child.clone());
            }
        }
        for path in references(&module, &code) {
            // The deepest module the path names.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(target) = target.filter(|t| *t != module && !t.is_empty()) {
                targets.insert(target);
            }
        }
        edges.insert(module, targets);
    }
    edges
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_arrow_climbs_a_layer() {
    let mut climbing = Vec::new();
    // The crate root declares and re-exports every layer: it is above them all.
    for (from, targets) in graph().into_iter().filter(|(m, _)| !m.is_empty()) {
        let (rank, top) = layer(&from);
        for to in targets {
            let (to_rank, to_top) = layer(&to);
            if to_rank < rank || (to_rank == rank && to_top != top && rank != LAYERS.len() - 1) {
                climbing.push(format!("{} -> {}", name(&from), name(&to)));
            }
        }
    }
    assert!(
        climbing.is_empty(),
        "arrows up or across layers:\n{}",
        climbing.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    let mut cycles = Vec::new();
    // Colours: absent = new, false = on the current path, true = done.
    let mut state: BTreeMap<Module, bool> = BTreeMap::new();
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, bool>,
        path: &mut Vec<Module>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m.clone(), false);
        path.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            match state.get(next) {
                None => visit(next, graph, state, path, cycles),
                Some(false) => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let names: Vec<String> = path[start..].iter().map(name).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), name(next)));
                }
                Some(true) => {}
            }
        }
        path.pop();
        state.insert(m.clone(), true);
    }
    for m in graph.keys() {
        if !state.contains_key(m) {
            visit(m, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "cycles:\n{}", cycles.join("\n"));
}

#[test]
fn use_trees_are_read_whole() {
    let mut out = Vec::new();
    use_tree(&vec![], "{a::{b, c::D}, e}; x", &mut out);
    assert_eq!(out, vec![vec!["a", "b"], vec!["a", "c", "D"], vec!["e"]]);
}
