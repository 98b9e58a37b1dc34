//! An on-disk cache of compiled components.
//!
//! Cranelift needs many seconds for a large component (18 s for the tract-based predictor);
//! loading the compiled artifact takes milliseconds. An entry is keyed by the SHA-256 of the
//! component's bytes and by the engine's compatibility hash (wasmtime version, target and every
//! `Config` setting that changes generated code), so a changed plugin or a changed engine can
//! never load stale code. Entries are written under a temporary name and renamed, so parallel
//! runners (and parallel tests) sharing a directory never see a half-written file.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a load was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a compiled artifact.
    Hit,
    /// Compiled, and stored the result.
    Miss,
    /// Compiled; the cache is turned off.
    Disabled,
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "off",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// A cache in `dir`, or no cache at all for `None`.
    pub fn new(dir: Option<PathBuf>) -> ComponentCache {
        ComponentCache { dir }
    }

    /// `$RUNNER_CACHE_DIR`, else the user's cache directory (`~/.cache/etl-runner` on Linux).
    pub fn default_dir() -> Option<PathBuf> {
        match std::env::var_os("RUNNER_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => dirs::cache_dir().map(|d| d.join("etl-runner")),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Compiles `bytes`, or loads the compiled artifact from an earlier run.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Disabled));
        };
        let entry = dir.join(format!("{}.cwasm", key(engine, bytes)));
        if entry.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the same
            // compatibility hash (part of its name), in a directory only this tool writes to.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!("ignoring unreadable cache entry {}: {e:#}", entry.display()),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(dir, &entry, &component) {
            tracing::warn!("could not write the plugin cache in {}: {e:#}", dir.display());
        }
        Ok((component, CacheOutcome::Miss))
    }
}

fn store(dir: &Path, entry: &Path, component: &Component) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = entry.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&temporary, component.serialize()?).with_context(|| temporary.display().to_string())?;
    std::fs::rename(&temporary, entry).with_context(|| entry.display().to_string())?;
    Ok(())
}

/// `<sha256 of the component>-<sha256 of the engine's compatibility hash>`, both shortened.
fn key(engine: &Engine, bytes: &[u8]) -> String {
    /// Feeds `Hash` output into SHA-256: stable across processes, unlike `DefaultHasher`.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            unreachable!("only `write` is used")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut compat = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut compat);
    let component = Sha256::digest(bytes);
    format!("{}-{}", hex(&component[..16]), hex(&compat.0.finalize()[..8]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
