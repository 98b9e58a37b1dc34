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
//! - `plan`: plan files, a sharded run's input listed and typed once ([`PlanFile`]).
//! - `checkpoint`: the splits of a planned shard that are done, for a rerun to skip ([`Checkpoints`]).

mod checkpoint;
mod plan;
mod policy;
mod progress;
mod shard;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::batch::Batch;
use crate::spec::S3Options;

pub use checkpoint::{Checkpoints, Done};
pub use plan::{
    PLAN_VERSION, PlanFile, PlanMismatch, PlannedColumn, PlannedObject, PlannedSplit, SourcePlan, spec_digest,
};
pub use policy::{DeadLetter, Policy, Rejected, reject_batch, row_json};
pub use progress::{Counting, Progress};
pub use shard::{Shard, ShardPlan, SplitInfo};

/// How the original flow's pandas reads the pipeline's source (`read_csv` or `read_parquet`):
/// the row keys follow the values it hands over, which differ between the two in one way: a
/// missing value in a boolean column is `NaN` from `read_csv` (`str`: `nan`) and `None` from
/// `read_parquet` (`str`: `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Frame {
    /// `pd.read_csv`, and any source that is not Parquet.
    #[default]
    Csv,
    /// `pd.read_parquet`.
    Parquet,
}

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
    /// How pandas reads the pipeline's source, which the row keys follow.
    pub frame: Frame,
    /// A source run from a plan file: its input as planned (it lists and types nothing).
    pub input: Option<Arc<SourcePlan>>,
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

    /// Which of this run's splits (its index among them, in reading order) the batch last
    /// returned comes from; `None` when the source does not say. A source that says keeps
    /// every batch within one split and reads its splits in order: a planned run's checkpoints
    /// record a split once the source has gone past it and the sink acknowledged its rows.
    fn split(&self) -> Option<usize> {
        None
    }
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

/// What a sink reports of the rows it was given, as its store settles them: the rows the store
/// acknowledged (durable: Redis replied, a file was committed, a plugin's `finish` returned ok)
/// and the rows it refused, each with its own reason. Reported by [`Sink::write`] (for this batch
/// or earlier ones still in flight), [`Sink::flush`] and [`Sink::commit`]; the pipeline counts
/// the acknowledged rows as written and hands the refused ones to the sink's error policy.
#[derive(Debug, Default)]
pub struct Acks {
    /// Rows acknowledged since the last report.
    pub rows: u64,
    /// Rows refused since the last report.
    pub refused: Vec<RefusedRow>,
}

/// A row a sink's store refused, and why (`WRONGTYPE ...` for a key holding a list, say).
#[derive(Debug)]
pub struct RefusedRow {
    pub row: serde_json::Value,
    pub reason: String,
}

impl Acks {
    /// `rows` acknowledged, none refused.
    pub fn rows(rows: u64) -> Acks {
        Acks { rows, refused: Vec::new() }
    }

    /// Adds a later report.
    pub fn add(&mut self, other: Acks) {
        self.rows += other.rows;
        self.refused.extend(other.refused);
    }
}

/// A sink refused a whole batch and kept none of it (a sink plugin's `write` failed): the
/// step's error policy rejects the batch. Any other error from a sink fails the run, whatever
/// its policy: the sink may have written part of the batch, so rejecting it would misreport.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchRefused(pub String);

/// Consumes batches, in three phases: `write` every batch; then, when every step succeeded,
/// `flush` (wait for what is in flight) and `commit` (make the output visible); or, when the
/// run failed or was stopped, `abort` instead (publish nothing).
#[async_trait]
pub trait Sink: Send {
    /// Takes one batch: written, or queued to be. Returns what has settled since the last
    /// call. A [`RowError`] refuses that row and means nothing of the batch was taken (the
    /// pipeline may send it again without the row); a [`BatchRefused`] refuses the whole batch,
    /// none of it taken; any other error fails the run.
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Acks>;

    /// After the last batch of a run that succeeded so far: waits until everything taken has
    /// settled (acknowledged or refused). Nothing is visible yet that `commit` would publish.
    async fn flush(&mut self) -> anyhow::Result<Acks> {
        Ok(Acks::default())
    }

    /// Every step succeeded (the dead letters too): makes the output durable and visible
    /// (renames the file into place, completes the upload). Rows durable only now are
    /// acknowledged here.
    async fn commit(&mut self) -> anyhow::Result<Acks>;

    /// The run failed or was stopped: commit nothing (remove the temporary file, abort the
    /// upload), let what is already sent settle briefly, and report it. What a store already
    /// holds stays (Redis keys are idempotent: a rerun rewrites them).
    async fn abort(&mut self) -> Acks {
        Acks::default()
    }

    /// Whether the rows of [`Sink::write`] are durable once [`Sink::flush`] has acknowledged
    /// them, before any commit (Redis: yes; a file: only once committed). A planned run then
    /// records each split done as soon as its rows are acknowledged; otherwise only once the
    /// run committed.
    fn durable_before_commit(&self) -> bool {
        false
    }

    /// Whether batches must arrive in the source's order. Transforms with several workers
    /// finish batches out of order; the pipeline puts them back in order for such a sink.
    fn ordered(&self) -> bool {
        false
    }
}
