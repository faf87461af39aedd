//! The service crate is the request path with no HTTP in it: its dependency tree holds no HTTP
//! stack, so a batch job or an agent loop can link it without one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::process::Command;

fn tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--package",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn names(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn the_service_depends_on_no_http_stack() {
    let tree = tree("enclave-service");
    let names = names(&tree);
    assert!(names.contains(&"enclave-engine"), "{tree}");
    for http in [
        "axum",
        "http",
        "hyper",
        "reqwest",
        "tower-http",
        "enclave-gateway",
    ] {
        assert!(
            !names.contains(&http),
            "enclave-service must not depend on `{http}`:\n{tree}"
        );
    }
}

#[test]
fn the_crates_below_the_service_never_depend_on_it() {
    for below in [
        "enclave-store",
        "enclave-audit",
        "enclave-engine",
        "enclave-quota",
        "enclave-kb",
        "enclave-policy",
        "enclave-label",
        "enclave-train",
    ] {
        let tree = tree(below);
        for above in ["enclave-service", "enclave-gateway", "enclave-upstream"] {
            assert!(
                !names(&tree).contains(&above),
                "`{below}` depends on `{above}`"
            );
        }
    }
}

#[test]
fn the_gateway_reaches_the_engine_stores_and_upstreams_through_the_service_only() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/Cargo.toml"
    ))
    .unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    assert!(dependencies.contains("enclave-service"));
    assert!(
        !dependencies.contains("enclave-upstream"),
        "the binary wires the upstream clients in, not the gateway"
    );
    for below in [
        "enclave-store",
        "enclave-engine",
        "enclave-kb",
        "enclave-train",
    ] {
        assert!(
            !dependencies.contains(below),
            "the gateway reaches `{below}` through the service only"
        );
    }
}

/// Top-level modules of a crate's `src`, and which of them each one names (`crate::other`).
fn module_graph(src: &std::path::Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut modules: std::collections::BTreeMap<String, Vec<std::path::PathBuf>> =
        Default::default();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            files.push(path.clone());
        }
        modules.entry(name).or_default().extend(files);
    }
    let names: Vec<String> = modules.keys().cloned().collect();
    let mut graph = std::collections::BTreeMap::new();
    for (name, files) in &modules {
        let mut uses = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let group: Vec<&str> = if let Some(inner) = rest.strip_prefix('{') {
                    inner
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .collect()
                } else {
                    vec![rest]
                };
                for item in group {
                    let first: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if first != *name && names.contains(&first) {
                        uses.insert(first);
                    }
                }
            }
        }
        graph.insert(name.clone(), uses.into_iter().collect());
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &std::collections::BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_finds_a_circle() {
    let mut graph = std::collections::BTreeMap::new();
    graph.insert("a".to_string(), vec!["b".to_string()]);
    graph.insert("b".to_string(), vec!["c".to_string()]);
    graph.insert("c".to_string(), vec!["a".to_string()]);
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.insert("c".to_string(), vec![]);
    assert_eq!(cycle(&graph), None);
}

#[test]
fn no_module_imports_itself_in_a_circle() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut circles = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        checked += 1;
        if let Some(c) = cycle(&module_graph(&src)) {
            circles.push(format!("{}: {}", src.display(), c.join(" → ")));
        }
    }
    assert!(checked >= 10, "found {checked} crates");
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}
