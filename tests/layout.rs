//! The crate's shape, read from its sources: which module uses which, so
//! that no two use each other, directly or round a circle, at any level:
//! folders among folders (`lab` and `inventory`), files within a folder
//! (`lab::pool` and `lab::hold`). A module is a file (`src/lab/pool.rs` is
//! `lab::pool`, `src/lab/mod.rs` is `lab`); a path in it (`crate::a::b::C`,
//! `super::x`, `use` groups included) uses the longest module that path
//! names. A use counts between the two siblings that hold its ends (from
//! `backend::kvm::domain` to `lab::pool`: `backend` uses `lab`); a module
//! and its own parent or child do not count, as a folder's `mod.rs` names
//! its children and they use what it declares. Unit tests (a `tests.rs`,
//! what follows `#[cfg(test)]`) may use whatever they check against.
//!
//! And no file is too long to read: 600 lines before its unit tests.
//!
//! `cargo test --test layout -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The Rust files under `dir`, at any depth.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module of the library and its source file. The binary and the
/// guest agent are crates of their own.
fn modules() -> BTreeMap<String, PathBuf> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(src()).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if ["bin", "agent"].contains(&parts[0].as_str()) || parts.last()? == "tests" {
                return None;
            }
            if ["mod", "lib"].contains(&parts.last().unwrap().as_str()) {
                parts.pop();
            }
            Some((parts.join("::"), file))
        })
        .collect()
}

/// The source without comments and without its unit tests (a test may
/// use whatever it checks against).
fn code(file: &Path) -> String {
    untested(&std::fs::read_to_string(file).unwrap())
        .lines()
        .map(|l| match l.find("//") {
            // (A `//` inside a string is rare here and only hides a path.)
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` up to its unit tests: the first `#[cfg(test)]` that opens a
/// module in place (`mod tests {`).
fn untested(text: &str) -> &str {
    let tests = text.match_indices("#[cfg(test)]").find(|(at, attr)| {
        let item = text[at + attr.len()..].trim_start();
        item.lines()
            .next()
            .is_some_and(|l| l.contains("mod ") && l.ends_with('{'))
    });
    match tests {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The paths a use tree at the start of `rest` names, each after `prefix`:
/// `a::b::{c, d::e}` gives a::b::c and a::b::d::e.
fn use_tree(rest: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    let mut at = 0;
    let bytes = rest.as_bytes();
    let skip_space = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    loop {
        skip_space(&mut at);
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                skip_space(&mut at);
                if at >= bytes.len() || bytes[at] == b'}' {
                    return at + 1;
                }
                // (`*`, `as x`: nothing to read, one step on.)
                at += use_tree(&rest[at..], &path, out).max(1);
                skip_space(&mut at);
                if at < bytes.len() && bytes[at] == b',' {
                    at += 1;
                }
            }
        }
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        if at > start {
            path.push(rest[start..at].to_string());
        }
        if rest[at..].starts_with("::") {
            at += 2;
            continue;
        }
        out.push(path);
        return at;
    }
}

/// The modules `module` (in `file`) uses, among `all`.
fn uses(module: &str, file: &Path, all: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let code = code(file);
    let own: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        use_tree(&code[at + "crate::".len()..], &[], &mut paths);
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // `super::super::x` climbs twice.
        let mut base = own.clone();
        let mut rest = &code[at..];
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
        use_tree(rest, &base, &mut paths);
    }
    paths
        .into_iter()
        .filter_map(|path| {
            (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| all.contains_key(m))
        })
        .collect()
}

/// The siblings that hold the two ends of a use from `a` to `b`: the
/// children of their deepest common folder on each side. None when one
/// holds the other (a parent and its child).
fn siblings(a: &str, b: &str) -> Option<(String, String)> {
    let parts = |m: &str| -> Vec<String> {
        m.split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    (common < a.len() && common < b.len())
        .then(|| (a[..=common].join("::"), b[..=common].join("::")))
}

/// The graph: each module, folder or file, and the siblings it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let all = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &all {
        for used in uses(module, file, &all) {
            if let Some((from, to)) = siblings(module, &used) {
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    graph
}

/// Each circle once: a way from a module back to itself.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in graph.keys() {
        // Breadth first from what `start` uses: the shortest way back.
        let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue: std::collections::VecDeque<&String> = graph[start].iter().collect();
        for next in &graph[start] {
            came_from.insert(next, start);
        }
        while let Some(at) = queue.pop_front() {
            if at == start {
                let mut circle = vec![start.clone()];
                let mut back = came_from[start];
                while back != start {
                    circle.push(back.clone());
                    back = came_from[back];
                }
                circle.reverse();
                // The same circle from each of its modules: keep one.
                let first = circle.iter().enumerate().min_by_key(|(_, m)| *m).unwrap().0;
                circle.rotate_left(first);
                found.insert(circle);
                break;
            }
            for next in graph.get(at).into_iter().flatten() {
                if !came_from.contains_key(next) {
                    came_from.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_two_modules_use_each_other() {
    let graph = graph();
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} uses {}", uses.join(", "));
    }
    let circles: Vec<String> = circles(&graph)
        .into_iter()
        .map(|c| format!("{} -> {}", c.join(" -> "), c[0]))
        .collect();
    assert!(
        circles.is_empty(),
        "modules that use each other, round a circle:\n{}",
        circles.join("\n")
    );
}

/// A file's code, before its unit tests, fits in a reading: 600 lines.
/// Unit tests of their own (`tests.rs`) and test data are apart.
#[test]
fn no_file_is_over_600_lines_before_its_unit_tests() {
    const MOST: usize = 600;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .filter(|f| !f.starts_with(root.join("tests/fixtures")))
        .filter_map(|f| {
            let lines = untested(&std::fs::read_to_string(f).unwrap())
                .lines()
                .count();
            (lines > MOST).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MOST} lines before their unit tests:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_graph_reader_sees_use_groups_and_super() {
    let mut paths = Vec::new();
    use_tree("a::{b, c::{d, e}, f::G};", &[], &mut paths);
    let paths: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(paths, ["a::b", "a::c::d", "a::c::e", "a::f::G"]);
    // A circle is found whichever module it starts from, once.
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, u)| (m.to_string(), u.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circles(&graph), [["a", "b", "c"]]);
    assert_eq!(siblings("lab::pool", "lab"), None);
    assert_eq!(siblings("", "lab"), None);
    let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
    assert_eq!(
        siblings("lab::pool", "lab::hold"),
        pair("lab::pool", "lab::hold")
    );
    assert_eq!(
        siblings("backend::kvm::domain", "lab::pool"),
        pair("backend", "lab")
    );
}
