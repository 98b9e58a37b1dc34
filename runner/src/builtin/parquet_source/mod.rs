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

use super::{Kind, Opened, PlanContext, SplitBatches, SplitSender, Splits};
use crate::batch::Batch;
use crate::object_url::ObjectUrl;
use crate::spec::Role;
use crate::step::{Frame, PlanMismatch, PlannedObject, PlannedSplit, Progress, Shard, Source, SourcePlan, StepContext};
use columns::Planned;
use footers::{Footer, ObjectFile, RowGroup, footers, footers_of, row_groups, shard_row_groups, split_info};

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
    batches: SplitBatches,
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
        let (batch_rows, shard, progress) = (context.batch_rows, context.shard, context.progress.clone());
        let source = match context.input.as_deref() {
            Some(input) => ParquetSource::open_planned(input, url, batch_rows, shard, progress).await?,
            None => ParquetSource::open(config, url, batch_rows, shard, progress).await?,
        };
        Ok(Opened::Source(Box::new(source)))
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

    /// The footers, once: the row groups with their shards, and the columns' types.
    async fn plan_input(
        config: &ParquetSourceConfig,
        context: &StepContext,
        count: u32,
    ) -> anyhow::Result<Option<SourcePlan>> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let footers = footers(&url, None).await?;
        let planned = columns::plan(&footers, &config.columns)?;
        let groups = row_groups(&footers);
        let sizes: Vec<u64> = groups.iter().map(|g| g.range.end - g.range.start).collect();
        let mut owners = vec![0; groups.len()];
        for index in 0..count {
            owners[Shard::new(index, count).map_err(anyhow::Error::msg)?.take(&sizes)].fill(index);
        }
        let splits = groups.iter().zip(owners).map(|(group, shard)| PlannedSplit {
            shard,
            object: group.object,
            start: group.range.start,
            end: group.range.end,
            row_group: Some(group.index),
            estimated_rows: Some(group.rows),
        });
        Ok(Some(SourcePlan {
            step: context.step.clone(),
            kind: ParquetSource::NAME.to_string(),
            url: url.to_string(),
            objects: footers.iter().map(|f| PlannedObject::new(f.name.clone(), &f.meta)).collect(),
            splits: splits.collect(),
            columns: planned.iter().map(columns::planned_column).collect(),
        }))
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
        Ok(ParquetSource::start(Read { url, footers, planned, batch_rows, progress }, groups))
    }

    /// From a plan: reads the footers of the objects holding this shard's row groups only (each
    /// request pinned to the version planned) and takes the columns' types from the plan.
    pub async fn open_planned(
        input: &SourcePlan,
        url: ObjectUrl,
        batch_rows: usize,
        shard: Shard,
        progress: Arc<Progress>,
    ) -> anyhow::Result<ParquetSource> {
        if input.kind != ParquetSource::NAME {
            let e = format!("the plan is of a `{}` source, not `{}`", input.kind, ParquetSource::NAME);
            return Err(PlanMismatch(e).into());
        }
        input.check_url(&url)?;
        let planned = columns::from_plan(input)?;
        let mut objects: Vec<usize> = input.splits_of(shard).map(|split| split.object).collect();
        objects.dedup();
        let metas = objects.iter().map(|&object| input.objects[object].meta()).collect();
        let footers = footers_of(&url, metas, Some(progress.clone())).await?;
        let mut groups = Vec::new();
        for split in input.splits_of(shard) {
            let object = objects.iter().position(|&o| o == split.object).expect("every split's object is read");
            let Some(index) = split.row_group.filter(|&g| g < footers[object].row_groups()) else {
                let name = &input.objects[split.object].name;
                return Err(PlanMismatch(format!("the plan's split of {name} is not one of its row groups")).into());
            };
            let rows = split.estimated_rows.unwrap_or_default();
            groups.push(RowGroup { object, index, range: split.start..split.end, rows });
        }
        Ok(ParquetSource::start(Read { url, footers, planned, batch_rows, progress }, groups))
    }

    /// Decodes `groups` in the background.
    fn start(read: Read, groups: Vec<RowGroup>) -> ParquetSource {
        let progress = &read.progress;
        progress.expect_bytes(groups.iter().map(|g| g.range.end - g.range.start).sum());
        progress.record_splits(groups.iter().map(|g| split_info(&read.footers, g)).collect());
        let (tx, batches) = SplitBatches::channel(READ_AHEAD);
        tokio::spawn(async move {
            if let Err(e) = read.row_groups(groups, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        ParquetSource { batches }
    }
}

#[async_trait]
impl Source for ParquetSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        self.batches.next().await
    }

    fn split(&self) -> Option<usize> {
        self.batches.split()
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
    async fn row_groups(&self, groups: Vec<RowGroup>, tx: &SplitSender) -> anyhow::Result<()> {
        for (split, group) in groups.into_iter().enumerate() {
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
                if tx.send(Ok((split, Batch::new(columns)?))).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
