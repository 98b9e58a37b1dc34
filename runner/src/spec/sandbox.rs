//! `limits` and `grants` of a plugin step: what a plugin instance may use (memory, time per call,
//! fuel; directories, environment variables, network). Everything not granted is denied. Pure
//! configuration: the plugin host (`plugin::sandbox`) turns it into a WASI context and store
//! limits.
//!
//! ```toml
//! [[transform]]
//! plugin = "my-plugin"
//! limits = { memory_mb = 512, call_seconds = 10, fuel = 50_000_000_000 }
//! grants = { dirs = [{ host = "../lookup", guest = "/lookup" }], env = ["LANG"], network = false }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Memory an instance may grow to when the spec does not say.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Wall-clock time one call may take when the spec does not say.
pub const DEFAULT_CALL_SECONDS: u64 = 60;

/// `limits = { ... }` of a plugin step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `memory_mb = 1024`: the most linear memory an instance may have, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// `call_seconds = 60`: the wall-clock deadline of one call into the plugin. `0`: none,
    /// for a plugin you trust to return: if no plugin step of a run has a deadline, the
    /// plugins' compiled code leaves out the checks, which makes it faster (`deadline`).
    #[serde(default = "default_call_seconds")]
    pub call_seconds: u64,
    /// `fuel = 10_000_000_000`: WebAssembly instructions (roughly) one call may execute.
    /// Off by default: the deadline is cheaper and enough to stop a loop.
    pub fuel: Option<u64>,
}

fn default_memory_mb() -> u64 {
    DEFAULT_MEMORY_MB
}

fn default_call_seconds() -> u64 {
    DEFAULT_CALL_SECONDS
}

impl Limits {
    /// The deadline of one call, unless `call_seconds = 0`.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        (self.call_seconds > 0).then(|| std::time::Duration::from_secs(self.call_seconds))
    }

    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb.saturating_mul(1 << 20)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mb: DEFAULT_MEMORY_MB, call_seconds: DEFAULT_CALL_SECONDS, fuel: None }
    }
}

/// A plugin step's limits and grants.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    pub limits: Limits,
    pub grants: Grants,
}

impl Sandbox {
    /// For `runner validate`: `limits 1024 MiB, 60 s/call; grants nothing` (`no deadline`
    /// for `call_seconds = 0`).
    pub fn describe(&self) -> String {
        let fuel = self.limits.fuel.map(|f| format!(", fuel {f}")).unwrap_or_default();
        let deadline = match self.limits.deadline() {
            Some(d) => format!("{} s/call", d.as_secs()),
            None => "no deadline".to_string(),
        };
        format!("limits {} MiB, {deadline}{fuel}; grants {}", self.limits.memory_mb, self.grants.describe())
    }
}

/// `grants = { ... }` of a plugin step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// `dirs = [{ host = "data", guest = "/data", write = false }]`: directories the plugin may
    /// read (and write, with `write = true`), seen at `guest`. `host` is relative to the spec.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// `env = ["LANG"]`: environment variables the plugin may read, with the runner's values.
    #[serde(default)]
    pub env: Vec<String>,
    /// `network = true`: the plugin may open sockets to any address and resolve names.
    #[serde(default)]
    pub network: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    #[serde(default)]
    pub write: bool,
}

impl Grants {
    /// Resolves directories against `base_dir` and checks that each grant can be given.
    pub fn resolve(mut self, base_dir: &Path) -> Result<Grants, String> {
        for dir in &mut self.dirs {
            dir.host = base_dir.join(&dir.host);
            if !dir.host.is_dir() {
                return Err(format!("grants.dirs: {} is not a directory", dir.host.display()));
            }
            if !dir.guest.starts_with('/') {
                return Err(format!("grants.dirs: guest path `{}` must be absolute (start with /)", dir.guest));
            }
        }
        for name in &self.env {
            if std::env::var_os(name).is_none() {
                return Err(format!("grants.env: `{name}` is not set in the runner's environment"));
            }
        }
        Ok(self)
    }

    /// One line per grant, for `runner validate`; "nothing" when nothing is granted.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                format!(
                    "dir {} as {} ({})",
                    d.host.display(),
                    d.guest,
                    if d.write { "read-write" } else { "read-only" }
                )
            })
            .collect();
        parts.extend(self.env.iter().map(|name| format!("env {name}")));
        if self.network {
            parts.push("network".into());
        }
        if parts.is_empty() { "nothing".into() } else { parts.join(", ") }
    }
}
