//! The import graph of the `shepherd` crate, checked over its `use` lines and paths:
//! each top-level module imports only from its own layer or lower ones, the graph of
//! modules has no cycle, and AWS SDK calls live only in `adapters/` (and `wiring`, which
//! builds the clients). Run it alone with `cargo test -p shepherd --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first; the table in `lib.rs` says what each layer is for.
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["pipeline"],
    &["protocol", "config", "view", "observability", "metrics"],
    &["ports"],
    &["adapters"],
    &[
        "write",
        "integrations",
        "tools",
        "audit",
        "cloudwatch",
        "webhooks",
    ],
    &["runtime", "recovery", "stack"],
    &["ops"],
    &["wiring", "prelude"],
];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS and lib.rs"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module of a source file (`src/domain/decide/mod.rs` -> `domain`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

/// Code lines only: doc and line comments are prose, not imports.
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules each module refers to through `crate::<module>`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(from) = module_of(&src, &f) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(&f).unwrap());
        let deps = graph.entry(from.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from {
                deps.insert(name);
            }
        }
    }
    graph
}

#[test]
fn nothing_imports_from_a_higher_layer() {
    let mut upward = Vec::new();
    for (from, deps) in graph() {
        for to in deps {
            if rank(&to) > rank(&from) {
                upward.push(format!(
                    "{from} (layer {}) -> {to} (layer {})",
                    rank(&from),
                    rank(&to)
                ));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    // Depth-first search with colours; a grey node reached again closes a cycle.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match colour.get(n) {
            Some(1) => {
                let start = path.iter().position(|p| *p == n).unwrap();
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        colour.insert(n, 1);
        path.push(n);
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, colour, path) {
                return Some(c);
            }
        }
        path.pop();
        colour.insert(n, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in graph.keys() {
        if let Some(cycle) = visit(n, &graph, &mut colour, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_domain_is_pure() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for f in files {
        let text = code(&std::fs::read_to_string(&f).unwrap());
        for forbidden in [
            "aws_sdk",
            "aws_config",
            "aws_lambda",
            "aws_smithy",
            "reqwest",
            "tokio",
            "lambda_",
            "std::time::SystemTime",
            "std::fs",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                f.display()
            );
        }
    }
}

#[test]
fn aws_calls_live_only_in_adapters_and_wiring() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for f in files {
        let module = module_of(&src, &f).unwrap_or_default();
        if module == "adapters" || module == "wiring" {
            continue;
        }
        let text = code(&std::fs::read_to_string(&f).unwrap());
        for sdk in [
            "aws_sdk_dynamodb",
            "aws_sdk_sqs",
            "aws_sdk_ssm",
            "aws_sdk_s3",
            "reqwest",
        ] {
            assert!(
                !text.contains(sdk),
                "{} uses {sdk} outside adapters/",
                f.display()
            );
        }
    }
}
