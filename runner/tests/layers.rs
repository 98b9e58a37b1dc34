//! The module chain stated in `runner/src/lib.rs` is the code's, not a wish: every module of the
//! library imports only modules before it in the chain, and `builtin` and `plugin`, side by
//! side, never import each other. A `use crate::...` (or a `crate::...` path) that reaches up
//! the chain fails this test, naming the file and the line.

mod common;

use std::path::Path;

/// The chain, first to last: a module may use the ones before it. Modules on one line are side
/// by side and may not use each other.
const CHAIN: &[&[&str]] = &[
    &["format"],
    &["batch"],
    &["spec"],
    &["object_url", "redis_client"],
    &["step"],
    &["report"],
    &["metrics"],
    &["builtin", "plugin"],
    &["pipeline"],
    &["lookup", "scaffold"],
];

fn level(module: &str) -> Option<usize> {
    CHAIN.iter().position(|level| level.contains(&module))
}

/// The modules a line of code names through `crate::`: `crate::spec::X`, `crate::{batch, spec}`.
fn crate_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.push(name);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let src = common::root().join("runner/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue; // the binary is above everything; lib.rs only declares the modules
        }
        let own = level(&module).unwrap_or_else(|| panic!("{module} (runner/src/{first}) is not in the chain: add it"));
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for used in crate_modules(code) {
                if used == module {
                    continue;
                }
                checked += 1;
                let Some(theirs) = level(&used) else { continue };
                if theirs >= own {
                    violations.push(format!(
                        "runner/src/{}:{}: `{module}` uses `{used}`: {}",
                        relative.display(),
                        n + 1,
                        code.trim()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} crate paths found: is the scan broken?");
    assert!(violations.is_empty(), "imports up (or across) the module chain:\n{}", violations.join("\n"));
}

#[test]
fn the_scan_sees_groups_and_paths() {
    assert_eq!(crate_modules("use crate::batch::{Batch, Values};"), ["batch"]);
    assert_eq!(crate_modules("use crate::{spec, step::Policy};"), ["spec", "step"]);
    assert_eq!(crate_modules("let x = crate::format::cut(&y); crate::spec::Role::Source"), ["format", "spec"]);
}
