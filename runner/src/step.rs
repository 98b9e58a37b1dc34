//! The one seam of the pipeline: what a source, a transform and a sink can do.
//!
//! Built-in steps (`builtin/`) and plugin adapters (`plugin/`) both implement these traits, so
//! `pipeline.rs` never knows which kind of step it drives.

use async_trait::async_trait;

use crate::batch::Batch;

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
