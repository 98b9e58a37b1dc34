//! Which world (step kind) and which contract version a component implements.
//!
//! A plugin exports exactly one of `etl:plugin/source`, `etl:plugin/transform` or
//! `etl:plugin/sink`, and the export's name carries the WIT package version it was built
//! against (`etl:plugin/transform@0.2.0`). Reading it before instantiation turns a wrong or
//! outdated plugin into a one-line message instead of a linker error.

use anyhow::bail;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::spec::Role;

/// The WIT package this host implements.
pub const PACKAGE: &str = "etl:plugin";
/// Its current version, the one new plugins are built against: keep in step with
/// `package etl:plugin@…` in `wit/plugin.wit` (a test checks).
pub const VERSION: &str = "0.2.1";

/// Every version the runner runs plugins of, newest first: the current one and the frozen
/// copies in `runner/contracts/` (a test checks that each has one).
pub const SPOKEN: [(&str, Generation); 2] = [(VERSION, Generation::V0_2), ("0.1.0", Generation::V0_1)];

/// Which of the spoken contracts a plugin uses: picks the bindings the host calls it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// `etl:plugin@0.2.x`: dictionary-encoded text; from 0.2.1, `host.shard`.
    V0_2,
    /// `etl:plugin@0.1.x`.
    V0_1,
}

/// What a component says it implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub role: Role,
    /// The contract version it was built against.
    pub version: String,
    pub generation: Generation,
}

impl Contract {
    /// Reads the contract from the component's exports.
    pub fn of(component: &Component, engine: &Engine) -> anyhow::Result<Contract> {
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
        let mut found = Vec::new();
        for name in &exports {
            let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix('/')) else { continue };
            let (interface, version) = rest.split_once('@').unwrap_or((rest, "?"));
            let role = match interface {
                "source" => Role::Source,
                "transform" => Role::Transform,
                "sink" => Role::Sink,
                _ => continue,
            };
            found.push((role, version.to_string()));
        }
        let (role, version) = match found.len() {
            1 => found.remove(0),
            0 => bail!(
                "it exports no {PACKAGE} source, transform or sink interface, so it is not a plugin for this runner \
                 (its exports: {})",
                if exports.is_empty() { "none".to_string() } else { exports.join(", ") }
            ),
            _ => bail!("it exports several step interfaces ({}); a plugin implements exactly one", exports.join(", ")),
        };
        match SPOKEN.iter().find(|(spoken, _)| compatible(&version, spoken)) {
            Some(&(_, generation)) => Ok(Contract { role, version, generation }),
            None => bail!(
                "it was built against contract {PACKAGE}@{version}, but this runner speaks {}: \
                 rebuild the plugin against the runner's wit/ directory",
                spoken_versions()
            ),
        }
    }

    /// Whether a source built against this version can learn its shard (`host.shard`, 0.2.1).
    pub fn knows_its_shard(&self) -> bool {
        let mut parts = self.version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
        let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor, patch) >= (0, 2, 1)
    }

    /// The export that carries the contract: `etl:plugin/transform@0.2.0`.
    pub fn export_name(&self) -> String {
        format!("{PACKAGE}/{}@{}", self.role, self.version)
    }
}

/// The versions this runner speaks, for messages: `etl:plugin@0.2.0 and 0.1.0`.
pub fn spoken_versions() -> String {
    let older: Vec<&str> = SPOKEN[1..].iter().map(|(v, _)| *v).collect();
    if older.is_empty() {
        format!("{PACKAGE}@{VERSION}")
    } else {
        format!("{PACKAGE}@{VERSION} and {}", older.join(", "))
    }
}

/// Semver compatibility as Cargo reads it: same major version, and while 0.x, same minor.
fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(plugin), parse(host)) {
        (Some((0, minor)), Some((0, host_minor))) => minor == host_minor,
        (Some((major, _)), Some((host_major, _))) => major == host_major,
        _ => false,
    }
}

/// Rejects, with a precise reason, files that are not WebAssembly components at all.
pub fn check_header(bytes: &[u8]) -> anyhow::Result<()> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            bail!("it is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target")
        }
        Some([0, b'a', b's', b'm', ..]) => Ok(()),
        _ => bail!("it is not WebAssembly (no `\\0asm` header)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_wit_package() {
        let wit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/plugin.wit")).unwrap();
        assert!(
            wit.contains(&format!("package {PACKAGE}@{VERSION};")),
            "wit/plugin.wit and contract::VERSION disagree"
        );
        for (version, _) in &SPOKEN[1..] {
            let path = format!("{}/contracts/{version}/plugin.wit", env!("CARGO_MANIFEST_DIR"));
            let frozen = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(frozen.contains(&format!("package {PACKAGE}@{version};")), "{path} is not {version}");
        }
        assert_eq!(spoken_versions(), "etl:plugin@0.2.1 and 0.1.0");
        // The runner's frozen 0.1.0 is the one the test fixture stands for.
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/fixtures/contract-v0-1-0/wit/plugin.wit");
        let frozen = concat!(env!("CARGO_MANIFEST_DIR"), "/contracts/0.1.0/plugin.wit");
        assert_eq!(std::fs::read_to_string(fixture).unwrap(), std::fs::read_to_string(frozen).unwrap());
    }

    #[test]
    fn compatibility_follows_cargo_semver() {
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(compatible("0.1.5", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.4.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("?", "0.1.0"));
    }

    #[test]
    fn headers() {
        assert!(check_header(b"not wasm").unwrap_err().to_string().contains("not WebAssembly"));
        assert!(check_header(b"\0asm\x01\0\0\0").unwrap_err().to_string().contains("core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
