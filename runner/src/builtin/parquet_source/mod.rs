//! `kind = "parquet"` source: reads Parquet objects into typed batches, row group by row group.
//!
//! ```toml
//! [source]
//! kind = "parquet"
//! config = { url = "s3://batch/data/iris.parquet", columns = ["sepal_length", "petal_length"] }
//! ```
//!
//! `url` is a path, `file://`, or `s3://bucket/key`; ending in `/` it names every object under
//! a prefix (but those whose name starts with `_` or `.`, as pyarrow reads a directory), read
//! in name order, all with the same schema. `columns` reads only those columns, in that order
//! (default: all of them, but a pandas index column `__index_level_N__`); the others are never
//! fetched nor decoded.
//!
//! Every object's footer is read first (a request or two each, no rows): the schema is the
//! types, with no typing pass (see `columns` for how Arrow types become batch types, as pandas's
//! `read_parquet` makes them), and the row groups are the splits a sharded run divides (a
//! shard reads a contiguous run of row groups of about equal bytes). Then the shard's row
//! groups are fetched one after the other, each in one request for its projected column chunks
//! pinned to the version listed, and decoded into batches of `batch_rows`: memory holds about
//! one row group's projected bytes and the batches in flight, whatever the input's size.
//!
//! - `footers`: the reader on object_store, the footers, one schema, the row groups as splits.
//! - `columns`: Arrow types into batch types, as pandas types them.

mod columns;
mod footers;

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Kind, Opened, PlanContext, Splits};
use crate::batch::Batch;
use crate::object_url::ObjectUrl;
use crate::spec::Role;
use crate::step::{Frame, Progress, Shard, Source, StepContext};
use columns::Planned;
use footers::{Footer, ObjectFile, RowGroup, footers, shard_row_groups, split_info};

/// The `config` table of a `parquet` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// `url = "data/iris.parquet"`: a path relative to the spec file, `file:///...`,
    /// `s3://bucket/key`, or a prefix ending in `/`.
    pub url: String,
    /// `columns = ["a", "b"]`: read only these columns, in this order (default: all).
    #[serde(default)]
    pub columns: Vec<String>,
}

/// Batches in flight between the decoding task and the pipeline.
const READ_AHEAD: usize = 2;

pub struct ParquetSource {
    batches: mpsc::Receiver<anyhow::Result<Batch>>,
}

/// `kind = "parquet"` in a source.
#[async_trait]
impl Kind for ParquetSource {
    const ROLE: Role = Role::Source;
    const NAME: &'static str = "parquet";
    const FRAME: Frame = Frame::Parquet;
    type Config = ParquetSourceConfig;

    fn check(config: &ParquetSourceConfig, _plan: &PlanContext) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        match config.columns.iter().find(|c| !seen.insert(c.as_str())) {
            Some(twice) => Err(format!("`columns` names `{twice}` twice")),
            None => Ok(()),
        }
    }

    async fn open(config: &ParquetSourceConfig, context: &StepContext) -> anyhow::Result<Opened> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let source = ParquetSource::open(config, url, context.batch_rows, context.shard, context.progress.clone());
        Ok(Opened::Source(Box::new(source.await?)))
    }

    /// The row groups of every object, from the footers.
    async fn splits(config: &ParquetSourceConfig, context: &StepContext, count: u32) -> anyhow::Result<Option<Splits>> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let footers = footers(&url, None).await?;
        let mut shards = Vec::with_capacity(count as usize);
        for index in 0..count {
            let shard = Shard::new(index, count).map_err(anyhow::Error::msg)?;
            let groups = shard_row_groups(&footers, shard);
            shards.push((shard, groups.iter().map(|g| split_info(&footers, g)).collect()));
        }
        Ok(Some(shards))
    }

    /// The first object's schema (its footer; no rows).
    async fn columns(config: &ParquetSourceConfig, context: &StepContext) -> anyhow::Result<Option<Vec<String>>> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let footers = footers(&url, None).await?;
        Ok(footers.first().map(columns::names))
    }

    /// The columns it is asked to read must be in the input.
    fn reads(config: &ParquetSourceConfig) -> Vec<String> {
        config.columns.clone()
    }

    /// Those it reads: `columns`, or all.
    fn output_columns(config: &ParquetSourceConfig, input: &[String]) -> Result<Option<Vec<String>>, String> {
        Ok(Some(if config.columns.is_empty() { input.to_vec() } else { config.columns.clone() }))
    }
}

impl ParquetSource {
    /// Reads the footers (so a wrong URL, a file that is not Parquet, or objects that disagree
    /// fail before anything else starts) and types the columns, then decodes this shard's row
    /// groups in the background.
    pub async fn open(
        config: &ParquetSourceConfig,
        url: ObjectUrl,
        batch_rows: usize,
        shard: Shard,
        progress: Arc<Progress>,
    ) -> anyhow::Result<ParquetSource> {
        let footers = footers(&url, Some(progress.clone())).await?;
        if footers.is_empty() {
            tracing::warn!("{url}: no Parquet objects under this prefix: no rows read");
        }
        let planned = columns::plan(&footers, &config.columns)?;
        let groups = shard_row_groups(&footers, shard);
        progress.expect_bytes(groups.iter().map(|g| g.range.end - g.range.start).sum());
        progress.record_splits(groups.iter().map(|g| split_info(&footers, g)).collect());
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let read = Read { url, footers, planned, batch_rows, progress };
        tokio::spawn(async move {
            if let Err(e) = read.row_groups(groups, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(ParquetSource { batches: rx })
    }
}

#[async_trait]
impl Source for ParquetSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        self.batches.recv().await.transpose()
    }
}

/// What decoding needs.
struct Read {
    url: ObjectUrl,
    footers: Vec<Footer>,
    planned: Vec<Planned>,
    batch_rows: usize,
    progress: Arc<Progress>,
}

impl Read {
    /// Decodes `groups` in order, one row group at a time (so an error names its row group),
    /// into `tx`; stops quietly when the pipeline stops listening.
    async fn row_groups(&self, groups: Vec<RowGroup>, tx: &mpsc::Sender<anyhow::Result<Batch>>) -> anyhow::Result<()> {
        for group in groups {
            let footer = &self.footers[group.object];
            let at = format!("{}, row group {}", footer.name, group.index);
            let file = ObjectFile::new(&self.url, footer.meta.clone(), Some(self.progress.clone()));
            let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(file, footer.metadata.clone());
            let mask = ProjectionMask::roots(builder.parquet_schema(), self.planned.iter().map(|p| p.index));
            let mut stream = builder
                .with_row_groups(vec![group.index])
                .with_projection(mask)
                .with_batch_size(self.batch_rows)
                .build()
                .map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            while let Some(record) = stream
                .try_next()
                .await
                .map_err(|e| anyhow::anyhow!("{at}: {}", footers::describe(&self.url, &e, "cannot read it")))?
            {
                let schema = record.schema();
                let mut columns = Vec::with_capacity(self.planned.len());
                for planned in &self.planned {
                    // The projection keeps the file's column order: find each by name.
                    let index = schema.index_of(&planned.name).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
                    columns.push(columns::column(planned, record.column(index), &footer.name)?);
                }
                if tx.send(Ok(Batch::new(columns)?)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
