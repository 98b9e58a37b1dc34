//! What a step does with input it cannot handle: its error policy (`on_error` in the spec,
//! `spec::OnError`), shared by built-in and plugin steps alike.
//!
//! A row-level failure (a malformed CSV line, a row a plugin refuses) rejects that row only;
//! the rest of its batch carries on. A batch-level failure (a transform plugin that traps, a
//! sink plugin's `write` that returns an error) rejects the whole batch; a trapped transform
//! instance is replaced by a fresh one. Each rejected row is counted in the run summary, and with `dead-letter` written to the
//! step's [`DeadLetter`] as one JSON object: `{"step": ..., "reason": ..., "row": {...}}` (plus
//! `"at": "file:line"` for source rows); its reason cut at `format::MESSAGE_BYTES`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::batch::{Batch, Values};
use crate::format::cut;
use crate::spec::OnError;

/// Where a step's rejected rows are written (`dead_letter = { url = ... }`): a file or a Redis
/// list (`builtin::dead_letter`).
#[async_trait]
pub trait DeadLetter: Send + Sync {
    /// Appends the rows, one JSON object each ([`Rejected::to_json`]).
    async fn write(&self, rejected: &[Rejected]) -> anyhow::Result<()>;

    /// Called as the run commits, before the sink does, once for each step that shares this
    /// dead letter: make what was written durable (an object store's dead letter is written at
    /// the first call, whole).
    async fn finish(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The run failed after [`finish`](DeadLetter::finish) (the sink's commit failed): undo what
    /// `finish` published, where it can (an object put is deleted; appended lines stay).
    async fn withdraw(&self) {}
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
    pub fn to_json(&self) -> String {
        let mut entry = json!({ "step": self.step, "reason": cut(&self.reason), "row": self.row });
        if let Some(at) = &self.at {
            entry["at"] = Value::String(at.clone());
        }
        entry.to_string()
    }
}

/// A step's policy, ready to apply; clones share the dead letter and the count.
#[derive(Clone, Default)]
pub struct Policy {
    pub on_error: OnError,
    pub dead_letter: Option<Arc<dyn DeadLetter>>,
    /// Rows rejected so far (skipped or dead-lettered).
    rejected: Arc<AtomicU64>,
}

impl Policy {
    /// Whether failures are tolerated (skip or dead-letter).
    pub fn tolerant(&self) -> bool {
        self.on_error != OnError::Fail
    }

    pub fn new(on_error: OnError, dead_letter: Option<Arc<dyn DeadLetter>>) -> Policy {
        Policy { on_error, dead_letter, rejected: Arc::default() }
    }

    /// Rows rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The run commits: the dead letter, if any, makes its rows durable.
    pub async fn finish(&self) -> anyhow::Result<()> {
        match &self.dead_letter {
            Some(dead_letter) => dead_letter.finish().await,
            None => Ok(()),
        }
    }

    /// The run failed after [`Policy::finish`]: the dead letter undoes what it published.
    pub async fn withdraw(&self) {
        if let Some(dead_letter) = &self.dead_letter {
            dead_letter.withdraw().await;
        }
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
