//! An on-disk cache of compiled components.
//!
//! Cranelift needs many seconds for a large component (18 s for the tract-based predictor);
//! loading the compiled artifact takes milliseconds. An entry is keyed by the SHA-256 of the
//! component's bytes and by the engine's compatibility hash (wasmtime version, target and every
//! `Config` setting that changes generated code), so a changed plugin or a changed engine can
//! never load stale code. Entries are written under a temporary name and renamed, so parallel
//! runners (and parallel tests) sharing a directory never see a half-written file.
//!
//! An entry is native code that the runner maps and runs as it is: whoever can write the cache
//! can run code in the host, outside the sandbox. So the cache is trusted only as ssh trusts its
//! files: the directory and each entry must be owned by the current user or root, and writable
//! by no one else (a read-only cache owned by root, baked into an image, is fine). The runner
//! creates the directory private (0700) and its entries 0600. A directory or entry that fails
//! the check is not used: the plugin is compiled in memory, with a warning that says why.

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
    /// Compiled in memory: the cache directory or entry could be written by someone else.
    Untrusted,
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "off",
            CacheOutcome::Untrusted => "untrusted",
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

    /// Compiles `bytes`, or loads the compiled artifact from an earlier run.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Disabled));
        };
        if let Err(e) = create_private(dir) {
            tracing::warn!("cannot create the plugin cache {}: {e:#}", dir.display());
        }
        if let Err(why) = trusted(dir, false) {
            tracing::warn!("not using the plugin cache {}: {why}; compiling in memory", dir.display());
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Untrusted));
        }
        let entry = dir.join(format!("{}.cwasm", key(engine, bytes)));
        if std::fs::symlink_metadata(&entry).is_ok() {
            if let Err(why) = trusted(&entry, true) {
                tracing::warn!("not loading the cache entry {}: {why}; compiling in memory", entry.display());
                return Ok((Component::new(engine, bytes)?, CacheOutcome::Untrusted));
            }
            // SAFETY: the file was written by `Component::serialize` of an engine with the same
            // compatibility hash (part of its name), and only this user (or root) can have
            // written it: `trusted` checked the entry and its directory.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!("ignoring unreadable cache entry {}: {e:#}", entry.display()),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(&entry, &component) {
            tracing::warn!("could not write the plugin cache in {}: {e:#}", dir.display());
        }
        Ok((component, CacheOutcome::Miss))
    }
}

/// Creates `dir` (and its parents) if missing; the directory itself private to the user.
fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()), // another runner made it
        other => other,
    }
}

/// Whether a cache directory or entry can hold code the runner may run: owned by the current
/// user or root and writable by no one else. The directory may be a link (to a volume, say):
/// its target is checked. An entry must be a regular file, not a link.
fn trusted(path: &Path, entry: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = if entry { std::fs::symlink_metadata(path) } else { std::fs::metadata(path) }
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if !(meta.is_dir() || meta.is_file()) {
        return Err("it is not a regular file or directory".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!("it is owned by user id {}, not by this user ({me}) or root", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("others can write it (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
}

/// Writes an entry readable by this user only, under a temporary name renamed into place.
fn store(entry: &Path, component: &Component) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = entry.with_extension(format!("{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| temporary.display().to_string())?;
    let written = file.write_all(&component.serialize()?).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(anyhow::Error::from(e).context(temporary.display().to_string()));
    }
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
