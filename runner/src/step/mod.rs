//! The one seam of the pipeline: what a source, a transform and a sink can do, and what every
//! step needs besides its own config.
//!
//! Built-in steps (`builtin/`) and plugin adapters (`plugin/`) both implement these traits, so
//! `pipeline` never knows which kind of step it drives.
//!
//! - [`RowError`]: a step's failure on one row, which its error policy can reject alone.
//! - `policy`: the error policy itself ([`Policy`]) and rejected rows ([`Rejected`]).
//! - `progress`: the counters steps update as they run ([`Progress`]).
//! - `shard`: which part of the input a run reads ([`Shard`]).

mod policy;
mod progress;
mod shard;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::batch::Batch;
use crate::spec::S3Options;

pub use policy::{DeadLetter, Policy, Rejected, reject_batch, row_json};
pub use progress::{Counting, Progress};
pub use shard::{Shard, ShardPlan, SplitInfo};

/// What a built-in step needs to open, besides its config: cheap to clone, one per step.
#[derive(Clone)]
pub struct StepContext {
    /// The step's name, for messages and rejected rows.
    pub step: String,
    /// Relative paths in the spec are resolved against this directory.
    pub base_dir: PathBuf,
    /// How to reach `s3://` URLs.
    pub s3: Arc<S3Options>,
    /// Rows per batch a source produces.
    pub batch_rows: usize,
    /// The run's counters.
    pub progress: Arc<Progress>,
    /// The step's error policy.
    pub policy: Policy,
    /// The part of the input a source reads in this run.
    pub shard: Shard,
}

/// A step failed on one row of its input batch: the rest of the batch can be retried without
/// it. Steps return it inside their `anyhow::Error`; the pipeline looks for it to apply the
/// step's error policy to that row only.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RowError {
    /// The row's index in the input batch.
    pub row: usize,
    /// The whole message, naming the step's implementation and the row.
    pub message: String,
}

/// Produces batches until it is exhausted.
#[async_trait]
pub trait Source: Send {
    /// The next batch, or `None` when there is no more data.
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>>;
}

/// Turns each batch into another.
#[async_trait]
pub trait Transform: Send {
    /// Transforms one batch. The output may have other columns and another number of rows.
    async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch>;

    /// Called once after the last batch; returns whatever the step still holds.
    async fn finish(&mut self) -> anyhow::Result<Option<Batch>> {
        Ok(None)
    }

    /// Called after `process` failed, when the step's policy goes on: make the step usable
    /// again (a plugin that trapped gets a fresh instance).
    async fn recover(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Consumes batches.
#[async_trait]
pub trait Sink: Send {
    /// Writes one batch.
    async fn write(&mut self, batch: Batch) -> anyhow::Result<()>;

    /// Called once after the last batch: flush and close. Data is durable only after this.
    async fn finish(&mut self) -> anyhow::Result<()>;

    /// Whether batches must arrive in the source's order. Transforms with several workers
    /// finish batches out of order; the pipeline puts them back in order for such a sink.
    fn ordered(&self) -> bool {
        false
    }
}
