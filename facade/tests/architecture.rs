//! The repository's docs speak of the code as it is: docs/ARCHITECTURE.md's
//! crate graph is every crate's `[dependencies]`, and no doc or comment
//! points at a tracker instead of the code.
//!
//! Not built for the lane's guest (`--cfg vfio_hal_guest`): it reads the
//! source tree, which the guest does not have.
#![cfg(not(vfio_hal_guest))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the facade lives in the workspace root")
        .to_path_buf()
}

/// The published crates' folders.
const CRATES: [&str; 8] = [
    "hal",
    "linux",
    "backend-legacy",
    "backend-iommufd",
    "backend-mock",
    "conformance",
    "facade",
    "cli",
];

/// `name -> [dep, dep?]` from a manifest: the package name and its normal
/// dependencies on the workspace's own crates (`?` when optional).
fn manifest_edges(manifest: &str) -> (String, Vec<String>) {
    let mut name = None;
    let mut section = "";
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[package]" && line.starts_with("name") {
            name = line.split('"').nth(1).map(str::to_owned);
        }
        if section == "[dependencies]" && line.starts_with("vfio-hal") {
            let dep = line
                .split(|c: char| c == '=' || c == '.' || c.is_whitespace())
                .next()
                .unwrap_or_default();
            let optional = line.contains("optional = true");
            deps.push(format!("{dep}{}", if optional { "?" } else { "" }));
        }
    }
    (name.expect("a [package] name"), deps)
}

/// The graph as docs/ARCHITECTURE.md's `text` block lists it.
fn documented_edges(doc: &str) -> BTreeMap<String, Vec<String>> {
    let block = doc
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("ARCHITECTURE.md has a ```text block with the crate graph");
    block
        .lines()
        .filter_map(|l| l.split_once("->"))
        .map(|(name, deps)| {
            let mut deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
            deps.sort();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_manifests() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("read doc");
    let documented = documented_edges(&doc);
    let mut actual = BTreeMap::new();
    for dir in CRATES {
        let manifest =
            std::fs::read_to_string(root.join(dir).join("Cargo.toml")).expect("read manifest");
        let (name, mut deps) = manifest_edges(&manifest);
        deps.sort();
        actual.insert(name, deps);
    }
    assert_eq!(
        documented, actual,
        "docs/ARCHITECTURE.md's crate graph differs from the manifests"
    );
}

#[test]
fn no_backend_depends_on_another_backend() {
    let root = root();
    let backends = ["vfio-hal-legacy", "vfio-hal-iommufd", "vfio-hal-mock"];
    for dir in ["backend-legacy", "backend-iommufd", "backend-mock"] {
        let manifest =
            std::fs::read_to_string(root.join(dir).join("Cargo.toml")).expect("read manifest");
        let (name, deps) = manifest_edges(&manifest);
        for dep in deps {
            let dep = dep.trim_end_matches('?');
            assert!(!backends.contains(&dep), "{name} depends on {dep}");
        }
    }
}

/// Every `.rs` and `.md` file of the repository, build output left out.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "corpus") {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// A tracker reference (the word, then a number; or a parenthesised hash
/// and number): a pointer to a tracker, not to code.
fn tracker_reference(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let after_word = |word: &str| {
        lower.match_indices(word).any(|(i, _)| {
            let rest = lower[i + word.len()..].trim_start_matches(['s', ' ', '#']);
            rest.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    let hash_number = lower
        .match_indices("(#")
        .any(|(i, _)| lower[i + 2..].starts_with(|c: char| c.is_ascii_digit()));
    after_word("issue") || hash_number
}

#[test]
fn docs_and_comments_name_no_tracker_issues() {
    assert!(tracker_reference("the groups of issue 4 (A-G)"));
    assert!(tracker_reference("see issues 6 and 7"));
    assert!(!tracker_reference("a known issue with old kernels"));
    let mut files = Vec::new();
    sources(&root(), &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if tracker_reference(line) && !line.contains("tracker_reference") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
