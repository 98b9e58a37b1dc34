//! What a plugin instance may use: its limits (memory, time per call, fuel) and its grants
//! (directories, environment variables, network). Everything not granted is denied.
//!
//! ```toml
//! [[transform]]
//! plugin = "my-plugin"
//! limits = { memory_mb = 512, call_seconds = 10, fuel = 50_000_000_000 }
//! grants = { dirs = [{ host = "../lookup", guest = "/lookup" }], env = ["LANG"], network = false }
//! ```
//!
//! A plugin's standard output and standard error are not lost: each line goes to the runner's
//! log, tagged with the step (`RUST_LOG=plugin=info` shows them; they are on by default), cut
//! and rate-limited as `output` says.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Deserialize;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::AsyncStdoutStream;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::output::{MESSAGE_BYTES, OutputBudget, cut_owned};

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

/// The last lines a plugin wrote to standard error: quoted when it traps (a Rust panic prints
/// its message there).
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// Lines of standard error kept for the error message of a trap.
const TAIL_LINES: usize = 3;

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

    /// The WASI context of one instance: exactly what is granted, and stdio into the log
    /// (within the step's output budget).
    pub fn wasi(&self, step: &str, stderr_tail: &StderrTail, output: &Arc<OutputBudget>) -> anyhow::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        for dir in &self.dirs {
            let perms = if dir.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            builder.preopened_dir(&dir.host, &dir.guest, perms)?;
        }
        for name in &self.env {
            if let Ok(value) = std::env::var(name) {
                builder.env(name, value);
            }
        }
        if self.network {
            builder.inherit_network().allow_ip_name_lookup(true);
        }
        let lines = |stream, tail| LogLines::new(step, stream, tail, output.clone());
        builder.stdout(AsyncStdoutStream::new(1 << 16, lines("stdout", None)));
        builder.stderr(AsyncStdoutStream::new(1 << 16, lines("stderr", Some(stderr_tail.clone()))));
        Ok(builder.build())
    }
}

/// A writer that sends each line to the log, tagged with the step and the stream: at most
/// [`MESSAGE_BYTES`] of a line, within the step's output budget.
struct LogLines {
    step: String,
    stream: &'static str,
    line: Vec<u8>,
    /// Bytes of the current line past [`MESSAGE_BYTES`], not kept.
    cut: usize,
    tail: Option<StderrTail>,
    output: Arc<OutputBudget>,
}

impl LogLines {
    fn new(step: &str, stream: &'static str, tail: Option<StderrTail>, output: Arc<OutputBudget>) -> LogLines {
        LogLines { step: step.to_string(), stream, line: Vec::new(), cut: 0, tail, output }
    }

    fn emit(&mut self) {
        let mut text = String::from_utf8_lossy(&self.line).trim_end_matches(['\r', '\n']).to_string();
        self.line.clear();
        if std::mem::take(&mut self.cut) > 0 {
            text = cut_owned(text);
        }
        if text.is_empty() {
            return;
        }
        if let Some(tail) = &self.tail
            && let Ok(mut tail) = tail.lock()
        {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.clone());
        }
        if self.output.admit(text.len()) {
            tracing::info!(target: "plugin", step = %self.step, stream = self.stream, "{text}");
        }
    }

    /// Keeps `bytes` of the current line, up to [`MESSAGE_BYTES`]; counts the rest as cut.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MESSAGE_BYTES.saturating_sub(self.line.len()).min(bytes.len());
        self.line.extend_from_slice(&bytes[..room]);
        self.cut += bytes.len() - room;
    }
}

impl AsyncWrite for LogLines {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.keep(&rest[..end]);
            self.emit();
            rest = &rest[end + 1..];
        }
        self.keep(rest);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
