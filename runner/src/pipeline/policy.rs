//! What a step does with input it cannot handle: its error policy, shared by built-in and
//! plugin steps alike.
//!
//! ```toml
//! [source]
//! kind = "csv"
//! on_error = "dead-letter"                       # fail (default) | skip | dead-letter
//! dead_letter = { url = "out/rejected.jsonl" }   # a JSON-lines file ...
//! # dead_letter = { url = "redis://127.0.0.1:6379/0", list = "rejected" }   # ... or a Redis list
//! ```
//!
//! A row-level failure (a malformed CSV line, a row a plugin refuses) rejects that row only;
//! the rest of its batch carries on. A batch-level failure (a plugin that traps, a write that
//! fails for good) rejects the whole batch; a trapped plugin instance is replaced by a fresh
//! one. Each rejected row is counted in the run summary, and with `dead-letter` written as one
//! JSON object: `{"step": ..., "reason": ..., "row": {...}}` (plus `"at": "file:line"` for
//! source rows).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::batch::{Batch, Values};
use crate::builtin::redis_sink::{connect, redacted};
use crate::format::cut;

/// `on_error = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail the run at the first error (the default).
    #[default]
    Fail,
    /// Drop what failed, count it, and go on.
    Skip,
    /// Write what failed to `dead_letter`, count it, and go on.
    DeadLetter,
}

/// `dead_letter = { url = "...", list = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// A path (relative to the spec) or `file://` for a JSON-lines file; `redis://` or
    /// `rediss://` for a Redis list.
    pub url: String,
    /// The Redis list to push rejected rows onto (Redis only).
    pub list: Option<String>,
}

/// One rejected row.
pub struct Rejected {
    pub step: String,
    pub reason: String,
    pub row: Value,
    /// Where a source row came from: `object:line`.
    pub at: Option<String>,
}

impl Rejected {
    fn to_json(&self) -> String {
        let mut entry = json!({ "step": self.step, "reason": cut(&self.reason), "row": self.row });
        if let Some(at) = &self.at {
            entry["at"] = Value::String(at.clone());
        }
        entry.to_string()
    }
}

/// Where rejected rows go. Writes are synchronous and rare (only failures): a file write, or a
/// Redis `RPUSH` on the runner's runtime.
pub enum DeadLetter {
    File { path: String, file: Mutex<std::io::BufWriter<std::fs::File>> },
    Redis { shown: String, list: String, connection: redis::aio::ConnectionManager },
}

impl DeadLetter {
    pub async fn open(config: &DeadLetterConfig, base_dir: &Path) -> anyhow::Result<DeadLetter> {
        if config.url.starts_with("redis://") || config.url.starts_with("rediss://") {
            let Some(list) = config.list.clone() else {
                bail!("a Redis dead letter needs `list`, the list to push onto")
            };
            let connection = connect(&config.url, 10).await?;
            return Ok(DeadLetter::Redis { shown: redacted(&config.url), list, connection });
        }
        if config.list.is_some() {
            bail!("`list` is for a Redis dead letter; `{}` is a file", config.url);
        }
        let path = match config.url.strip_prefix("file://") {
            Some(path) => Path::new(path).to_path_buf(),
            None => base_dir.join(&config.url),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Appends: a rerun adds to what an earlier run rejected instead of erasing it.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the dead letter file {}", path.display()))?;
        Ok(DeadLetter::File { path: path.display().to_string(), file: Mutex::new(std::io::BufWriter::new(file)) })
    }

    pub async fn write(&self, rejected: &[Rejected]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        match self {
            DeadLetter::File { path, file } => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                for entry in rejected {
                    writeln!(file, "{}", entry.to_json()).with_context(|| format!("writing the dead letter {path}"))?;
                }
                file.flush().with_context(|| format!("writing the dead letter {path}"))
            }
            DeadLetter::Redis { shown, list, connection } => {
                let entries: Vec<String> = rejected.iter().map(Rejected::to_json).collect();
                redis::cmd("RPUSH")
                    .arg(list)
                    .arg(&entries)
                    .query_async::<()>(&mut connection.clone())
                    .await
                    .with_context(|| format!("writing the dead letter {shown} list `{list}`"))
            }
        }
    }
}

/// A step's policy, ready to apply; clones share the dead letter and the count.
#[derive(Clone, Default)]
pub struct Policy {
    pub on_error: OnError,
    pub dead_letter: Option<Arc<DeadLetter>>,
    /// Rows rejected so far (skipped or dead-lettered).
    rejected: Arc<AtomicU64>,
}

impl Policy {
    /// Whether failures are tolerated (skip or dead-letter).
    pub fn tolerant(&self) -> bool {
        self.on_error != OnError::Fail
    }

    pub fn new(on_error: OnError, dead_letter: Option<DeadLetter>) -> Policy {
        Policy { on_error, dead_letter: dead_letter.map(Arc::new), rejected: Arc::default() }
    }

    /// Rows rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Records rejected rows: written to the dead letter, or only counted when skipping.
    pub async fn reject(&self, rejected: Vec<Rejected>) -> anyhow::Result<()> {
        self.rejected.fetch_add(rejected.len() as u64, Ordering::Relaxed);
        match (&self.on_error, &self.dead_letter) {
            (OnError::DeadLetter, Some(dead_letter)) => dead_letter.write(&rejected).await,
            _ => Ok(()),
        }
    }
}

/// A row of a batch as a JSON object (floats as numbers, nulls as null).
pub fn row_json(batch: &Batch, row: usize) -> Value {
    let mut object = Map::new();
    for column in batch.columns() {
        let value = if column.is_null(row) {
            Value::Null
        } else {
            match &column.values {
                Values::F64(v) => serde_json::Number::from_f64(v[row]).map_or(Value::Null, Value::Number),
                Values::S64(v) => Value::from(v[row]),
                Values::Bool(v) => Value::Bool(v[row]),
                text @ (Values::String(_) | Values::Dictionary(_)) => {
                    Value::String(text.text(row).unwrap_or_default().to_string())
                }
            }
        };
        object.insert(column.name.clone(), value);
    }
    Value::Object(object)
}

/// Every row of a batch, rejected for one reason.
pub fn reject_batch(step: &str, batch: &Batch, reason: &str) -> Vec<Rejected> {
    (0..batch.rows())
        .map(|row| Rejected { step: step.to_string(), reason: reason.to_string(), row: row_json(batch, row), at: None })
        .collect()
}
