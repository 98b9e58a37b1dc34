//! `runner plugin new NAME --kind KIND`: stamps out a plugin crate that builds with one command
//! and a pipeline that runs it. The templates live in `runner/templates/` and are compiled into
//! the binary, with the WIT contract the binary speaks, so the crate matches the runner.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::plugin::contract::VERSION;
use crate::spec::Role;

const CARGO_TOML: &str = include_str!("../templates/Cargo.toml.tmpl");
const README: &str = include_str!("../templates/README.md.tmpl");
const SAMPLE: &str = include_str!("../templates/sample.csv");
const WIT: &str = include_str!("../../wit/plugin.wit");

/// Writes a new plugin crate named `name` for `role` into `parent/name`; returns its directory.
pub fn new_plugin(parent: &Path, name: &str, role: Role) -> anyhow::Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("`{name}` is not a good crate name: use lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let (code, pipeline) = match role {
        Role::Source => (include_str!("../templates/source.rs"), include_str!("../templates/pipeline-source.toml")),
        Role::Transform => {
            (include_str!("../templates/transform.rs"), include_str!("../templates/pipeline-transform.toml"))
        }
        Role::Sink => (include_str!("../templates/sink.rs"), include_str!("../templates/pipeline-sink.toml")),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{kind}}", &role.to_string())
            .replace("{{version}}", VERSION)
            .replace("{{file}}", &name.replace('-', "_"))
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("README.md", fill(README)),
        ("src/lib.rs", fill(code)),
        ("pipeline.toml", fill(pipeline)),
        ("sample.csv", SAMPLE.to_string()),
        ("wit/plugin.wit", WIT.to_string()),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the crate"))
            .with_context(|| path.display().to_string())?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}
