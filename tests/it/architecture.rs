//! The module layering (issue 14; `ARCHITECTURE.md`): no import cycles
//! between the crate's top-level modules, nor between the sibling submodules
//! of one module, and no source file over 600 lines of code (comments and
//! blank lines not counted, so docs never need cutting; tests not counted)
//! without a reason written in its module docs. Read from `src/` at test time, so a
//! change that adds a cycle or grows a file past the mark fails here, with the
//! cycle or the file named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/` with its module path (`series::plan`).
fn modules() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, prefix: &[String], out: &mut Vec<(String, PathBuf)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                let mut pre = prefix.to_vec();
                pre.push(stem);
                walk(&p, &pre, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let mut path = prefix.to_vec();
                if stem != "mod" {
                    path.push(stem);
                }
                out.push((path.join("::"), p));
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &[], &mut out);
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let cut = text.find("\n#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b::...` and `super::x` paths in `code`, resolved against the
/// known modules to the longest module path they name.
fn references(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = module.split("::").collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            parts.extend(
                path.split("::")
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
            // The longest prefix that is a module.
            while !parts.is_empty() && !known.contains(&parts.join("::")) {
                parts.pop();
            }
            if !parts.is_empty() {
                out.insert(parts.join("::"));
            }
        }
    }
    out
}

/// A cycle in `graph`, if any (as the list of its nodes).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// Each module's references to other modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.iter().map(|(m, _)| m.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, p) in &mods {
        let text = std::fs::read_to_string(p).unwrap();
        g.entry(m.clone()).or_default();
        for r in references(m, &code(&text), &known) {
            if &r != m {
                g.entry(m.clone()).or_default().insert(r);
            }
        }
    }
    g
}

fn top(m: &str) -> String {
    m.split("::").next().unwrap().to_string()
}

#[test]
fn no_import_cycles() {
    let g = graph();
    // Top level: a submodule's references count for its top-level module.
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, refs) in &g {
        let e = tops.entry(top(m)).or_default();
        for r in refs {
            if top(r) != top(m) {
                e.insert(top(r));
            }
        }
    }
    tops.remove("main");
    tops.remove("lib");
    for v in tops.values_mut() {
        v.remove("main");
        v.remove("lib");
    }
    let shown: Vec<String> = tops
        .iter()
        .map(|(m, r)| {
            format!(
                "  {m} -> {}",
                r.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    println!("module graph:\n{}", shown.join("\n"));
    if let Some(c) = find_cycle(&tops) {
        panic!(
            "import cycle between modules: {}\n{}",
            c.join(" -> "),
            shown.join("\n")
        );
    }
    // Siblings: submodules of one module (a child may use its parent).
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, refs) in &g {
        let Some((parent, _)) = m.rsplit_once("::") else {
            continue;
        };
        let e = siblings.entry(m.clone()).or_default();
        for r in refs {
            if r.rsplit_once("::").is_some_and(|(p, _)| p == parent) {
                e.insert(r.clone());
            }
        }
    }
    if let Some(c) = find_cycle(&siblings) {
        panic!("import cycle between submodules: {}", c.join(" -> "));
    }
}

#[test]
fn no_file_over_600_lines_of_code_without_a_reason() {
    let mut long = Vec::new();
    for (m, p) in modules() {
        let text = std::fs::read_to_string(&p).unwrap();
        let cut = text.find("\n#[cfg(test)]\nmod tests").unwrap_or(text.len());
        let lines = text[..cut]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        let reason = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.starts_with("#!"))
            .any(|l| l.contains("Why one file of this size:"));
        if lines > 600 && !reason {
            long.push(format!("  {m} ({}): {lines} lines", p.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over 600 lines of code with no \"Why one file of this size:\" paragraph in their //! docs:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let known: BTreeSet<String> = [
        "series",
        "series::plan",
        "remote_write",
        "remote_write::proto",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let refs = references(
        "series::plan",
        "use crate::remote_write::proto::{encode};\nlet x = super::Labels::new(); // crate::config\n",
        &known,
    );
    assert_eq!(
        refs,
        ["remote_write::proto", "series"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
