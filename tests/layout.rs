//! The shape of the source tree: no file over 600 lines, and no import circle.
//!
//! A circle is counted folder by folder: within each folder (the crate root included),
//! the references between its children's subtrees must form no cycle. A module may use
//! its ancestors and its descendants freely (a `mod.rs` wires its children, which use the
//! types it defines); siblings may not lean on each other both ways. References are read
//! from `use` trees and from `crate::`, `super::` and `self::` paths in code (comments
//! are skipped).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

type ModPath = Vec<String>;

struct SourceFile {
    path: PathBuf,
    module: ModPath,
    text: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).expect("under src");
                let mut module: ModPath = relative
                    .with_extension("")
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                // main.rs is the binary, another crate; lib.rs is the root, ancestor of all.
                if relative == Path::new("main.rs") {
                    continue;
                }
                if relative == Path::new("lib.rs") {
                    module.clear();
                }
                let text = std::fs::read_to_string(&path).expect("a source file is readable");
                files.push(SourceFile { path, module, text });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The code of a file without its comment lines.
fn code_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every full path a `use` tree names (`a::{b, c::d}` gives `a::b` and `a::c::d`).
fn expand_use_tree(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut base = prefix.to_vec();
        base.extend(head);
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&base, &inner[start..], out);
        return;
    }
    let tree = tree.split(" as ").next().unwrap_or(tree).trim();
    if tree.is_empty() {
        return;
    }
    let mut path = prefix.to_vec();
    path.extend(
        tree.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    );
    // `a::{self, b}` names `a` itself; only a leading `self` means the current module.
    let mut segments = path.into_iter().enumerate();
    out.push(
        std::iter::from_fn(|| segments.next())
            .filter(|(i, s)| *i == 0 || s != "self")
            .map(|(_, s)| s)
            .collect(),
    );
}

/// Where a `use` item's tree starts on a line, if the line begins one.
fn use_item(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = after.trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')')? + 1..].trim_start();
        }
    }
    rest.strip_prefix("use ")
}

/// The paths a file refers to that start at `crate`, `super` or `self`.
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `use` trees first (they may hold braces and span lines), then the other lines.
    let mut without_uses = String::new();
    let mut tree: Option<String> = None;
    for line in code.lines() {
        let part = match (&mut tree, use_item(line)) {
            (Some(open), _) => {
                open.push_str(line);
                None
            }
            (None, Some(start)) => {
                tree = Some(start.to_owned());
                None
            }
            (None, None) => Some(line),
        };
        if let Some(line) = part {
            without_uses.push_str(line);
            without_uses.push('\n');
        } else if let Some(done) = tree.take_if(|t| t.contains(';')) {
            let end = done.find(';').unwrap_or(done.len());
            expand_use_tree(&[], &done[..end], &mut paths);
        }
    }
    let text = without_uses.as_str();
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(anchor) {
            let at = from + found;
            from = at + anchor.len();
            if at > 0 && is_ident_char(text[..at].chars().last().unwrap_or(' ')) {
                continue;
            }
            let tail: String = text[at..]
                .chars()
                .take_while(|c| is_ident_char(*c) || *c == ':')
                .collect();
            paths.push(
                tail.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    paths
        .into_iter()
        .filter(|p| {
            matches!(
                p.first().map(String::as_str),
                Some("crate" | "super" | "self")
            )
        })
        .collect()
}

/// The module a path leads to, from the file whose module is `from`.
fn resolve(from: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> ModPath {
    let mut at: ModPath = Vec::new();
    let mut segments = path.iter().peekable();
    match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
        }
        Some("self") => {
            segments.next();
            at = from.clone();
        }
        _ => {
            at = from.clone();
            while segments.peek().is_some_and(|s| *s == "super") {
                segments.next();
                at.pop();
            }
        }
    }
    for segment in segments {
        let mut deeper = at.clone();
        deeper.push(segment.clone());
        if !modules.contains(&deeper) {
            break;
        }
        at = deeper;
    }
    at
}

/// Edges between the children of each folder: folder -> (from child -> to child -> why).
type FolderEdges = BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, String>>>;

fn folder_edges(files: &[SourceFile]) -> FolderEdges {
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let mut edges = FolderEdges::new();
    for file in files {
        for path in referenced_paths(&code_lines(&file.text)) {
            let target = resolve(&file.module, &path, &modules);
            let (a, b) = (&file.module, &target);
            let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            if common == a.len() || common == b.len() {
                continue;
            }
            edges
                .entry(a[..common].to_vec())
                .or_default()
                .entry(a[common].clone())
                .or_default()
                .entry(b[common].clone())
                .or_insert_with(|| format!("{} uses {}", file.path.display(), path.join("::")));
        }
    }
    edges
}

type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The strongly connected components of `graph` with more than one member: each is a
/// set of children that all reach each other, that is, one or more circles.
fn circles(graph: &Graph) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.to_owned()];
        while let Some(node) = pending.pop() {
            for next in graph.get(&node).into_iter().flat_map(|n| n.keys()) {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (node, reaches) in &reached {
        if !reaches.contains(*node) || found.iter().any(|c| c.contains(*node)) {
            continue;
        }
        found.push(
            reaches
                .iter()
                .filter(|other| reached.get(other).is_some_and(|r| r.contains(*node)))
                .cloned()
                .collect(),
        );
    }
    found
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let long: Vec<String> = source_files()
        .iter()
        .map(|f| (f.path.display().to_string(), f.text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(path, lines)| format!("{path}: {lines} lines"))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn no_folder_has_an_import_circle_between_its_children() {
    let files = source_files();
    assert!(files.len() > 50, "the source tree was found");
    let edges = folder_edges(&files);
    // The check sees real references: the crate root's rooms do depend on each other.
    assert!(
        edges[&Vec::new()]["api"].contains_key("store"),
        "api's use of the store is seen"
    );
    let mut found = Vec::new();
    for (folder, graph) in &edges {
        for members in circles(graph) {
            let why: Vec<&String> = members
                .iter()
                .flat_map(|m| graph[m].iter())
                .filter(|(to, _)| members.contains(*to))
                .map(|(_, why)| why)
                .collect();
            found.push(format!(
                "in src/{}: {members:?}, because {why:#?}",
                folder.join("/")
            ));
        }
    }
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn a_circle_between_siblings_is_found() {
    let modules: Vec<SourceFile> = [
        (vec!["a"], "use crate::b::Thing;"),
        (vec!["b"], "fn f() { crate::a::g(); }"),
        (vec!["c", "x"], "use super::y::{self, Z};"),
        (vec!["c", "y"], "use super::super::c::x::W;"),
        (vec!["c"], "use x::W; use self::y::Z;"),
    ]
    .into_iter()
    .map(|(module, text)| SourceFile {
        path: PathBuf::from(module.join("/")),
        module: module.into_iter().map(str::to_owned).collect(),
        text: text.to_owned(),
    })
    .collect();
    let edges = folder_edges(&modules);
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(circles(&edges[&Vec::new()]), vec![set(&["a", "b"])]);
    assert_eq!(
        circles(&edges[&vec!["c".to_owned()]]),
        vec![set(&["x", "y"])]
    );
}
