//! The docs say what the code does: the README stays short and its annotated spec is the real
//! `pipelines/iris.toml`; every spec in docs/spec.md validates; the migration guide's key is the
//! original flow's; and every relative link in the docs leads to a file. (The README's
//! commands run in `guide.rs`, after `cargo xtask install`.)

mod common;

use std::path::{Path, PathBuf};

use common::{plugins, root, run, stderr};

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced blocks of a Markdown file: `(info string, text)`.
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```").filter(|i| !i.is_empty()) {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            found.push((info.to_string(), body.join("\n") + "\n"));
        }
    }
    found
}

const DOCS: [&str; 7] = [
    "README.md",
    "CONTRIBUTING.md",
    "docs/spec.md",
    "docs/performance.md",
    "docs/architecture.md",
    "docs/migrating-from-the-python-flow.md",
    "docs/plugins.md",
];

#[test]
fn the_readme_is_short_and_its_spec_is_the_real_one() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 160, "README.md has {lines} lines: keep it to what a user needs, link the rest");
    let shown = blocks(&readme).into_iter().find(|(info, text)| info == "toml" && text.contains("name = \"iris\""));
    let shown: toml::Table = toml::from_str(&shown.expect("the README shows pipelines/iris.toml").1).unwrap();
    let real: toml::Table = toml::from_str(&read("pipelines/iris.toml")).unwrap();
    assert_eq!(shown, real, "the README's annotated spec is no longer pipelines/iris.toml");
}

/// Every block marked `toml spec` in docs/spec.md is a spec that `runner validate` accepts, in a
/// folder where its relative paths lead where they do from `pipelines/`.
#[test]
fn the_spec_references_examples_validate() {
    plugins();
    let dir = common::temp();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    for linked in ["models", "plugins"] {
        std::os::unix::fs::symlink(root().join(linked), dir.path().join(linked)).unwrap();
    }
    let specs: Vec<String> =
        blocks(&read("docs/spec.md")).into_iter().filter(|(info, _)| info == "toml spec").map(|(_, t)| t).collect();
    assert!(!specs.is_empty(), "docs/spec.md marks no example `toml spec`");
    for (i, text) in specs.iter().enumerate() {
        let path = pipelines.join(format!("example-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = run(&["validate", path.to_str().unwrap()]);
        assert!(output.status.success(), "docs/spec.md example {i}: {}", stderr(&output));
    }
}

/// The migration guide shows how a client computes a key; run as Python, it prints the key the
/// original flow wrote for that row (models/iris/expected-keys.csv).
#[test]
fn the_migration_guides_key_is_the_flows() {
    let (info, script) = blocks(&read("docs/migrating-from-the-python-flow.md"))
        .into_iter()
        .find(|(info, _)| info.starts_with("python check-key"))
        .expect("the guide shows a client computing a key");
    assert!(info.ends_with("5.1 3.5 1.4 0.2"), "{info}");
    let output = std::process::Command::new(common::python()).args(["-c", &script]).output().expect("run python");
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = read("models/iris/expected-keys.csv");
    let first_key = expected.lines().nth(1).unwrap().split(',').next().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), first_key);
}

/// `[text](relative/path)` links in the docs point at files that exist.
#[test]
fn relative_links_lead_to_files() {
    let mut broken = Vec::new();
    for doc in DOCS {
        let text = read(doc);
        let base: PathBuf = root().join(Path::new(doc).parent().unwrap());
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let target = &rest[..rest.find(')').unwrap_or(0)];
            if target.is_empty() || target.contains("://") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            if !base.join(file).exists() {
                broken.push(format!("{doc}: {target}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:?}");
}
