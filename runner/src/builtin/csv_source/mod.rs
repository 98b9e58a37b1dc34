//! `kind = "csv"` source: reads CSV objects with a header row into typed batches.
//!
//! ```toml
//! [source]
//! kind = "csv"
//! config = { url = "data/iris.csv", delimiter = ",", columns = { id = "s64" } }
//! ```
//!
//! `url` is a path, `file://`, or `s3://bucket/key`; ending in `/` it names every object under
//! a prefix, read one after the other in name order, each with the same header.
//!
//! The object is streamed: a blocking thread parses it with the `csv` crate while bytes arrive
//! from the store, and hands over one batch at a time through a small channel, so memory does not
//! grow with the object.
//!
//! Column types come from `columns` when declared; the others are typed as pandas's `read_csv`
//! types them, from every value of the whole input (every object under a prefix), so the
//! original flow and the runner see the same types: a first pass reads the input for that
//! alone, unless every column is declared (it then stops after the header). A remote input of
//! up to [`KEEP_BYTES`] in all is kept in memory by that pass and the rows are read from there,
//! so it is fetched once. See `typing` for the rules. A missing value is any of pandas's NA
//! texts (an empty field, `NA`, `NaN`, `null`, ...), read as a null in every column type.
//!
//! - `config`: the `config` table.
//! - `typing`: the first pass, typing columns as pandas's `read_csv` does, and the header.
//! - `splits`: cutting the input into splits for shards, and reading one split's lines.
//! - `rows`: the second pass, rows into batches under the step's error policy.

mod config;
mod rows;
mod splits;
mod typing;

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{Kind, Opened, PlanContext, SplitBatches, SplitSender, Splits};
use crate::batch::Batch;
use crate::object_url::{FoundObject, ObjectUrl, Split, first_line};
use crate::spec::Role;
use crate::step::{Counting, Policy, Progress, Shard, Source, SourcePlan, StepContext};
pub use config::{CsvSourceConfig, DEFAULT_SPLIT_BYTES};
use rows::read_csv;
use splits::{SplitBounds, SplitReader, plan_splits, planned_splits, shard_plan, shard_splits, split_info};
pub use typing::KEEP_BYTES;
use typing::{Kept, planned_column, planned_columns, types};

/// What the reader needs besides the data: its config, its batch size, its step's policy, and
/// the shard of the input it reads.
pub struct SourceContext {
    pub config: CsvSourceConfig,
    pub batch_rows: usize,
    pub step: String,
    pub policy: Policy,
    pub shard: Shard,
}

/// Batches in flight between the parsing thread and the pipeline.
const READ_AHEAD: usize = 2;

pub struct CsvSource {
    batches: SplitBatches,
}

/// `kind = "csv"` in a source.
#[async_trait]
impl Kind for CsvSource {
    const ROLE: Role = Role::Source;
    const NAME: &'static str = "csv";
    type Config = CsvSourceConfig;

    fn check(config: &CsvSourceConfig, _plan: &PlanContext) -> Result<(), String> {
        config.check()
    }

    async fn open(config: &CsvSourceConfig, context: &StepContext) -> anyhow::Result<Opened> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let source = SourceContext {
            config: config.clone(),
            batch_rows: context.batch_rows,
            step: context.step.clone(),
            policy: context.policy.clone(),
            shard: context.shard,
        };
        let input = context.input.as_deref();
        Ok(Opened::Source(Box::new(CsvSource::open(source, url, input, context.progress.clone()).await?)))
    }

    async fn splits(config: &CsvSourceConfig, context: &StepContext, count: u32) -> anyhow::Result<Option<Splits>> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        Ok(Some(shard_plan(config, &url, count).await?))
    }

    /// The listing, the splits with their shards, and the typing pass, once.
    async fn plan_input(
        config: &CsvSourceConfig,
        context: &StepContext,
        count: u32,
    ) -> anyhow::Result<Option<SourcePlan>> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let objects = url.objects().await?;
        let source = Arc::new(SourceContext {
            config: config.clone(),
            batch_rows: context.batch_rows,
            step: context.step.clone(),
            policy: context.policy.clone(),
            shard: Shard::default(),
        });
        let (names, readings) = match objects.first() {
            Some(_) => types(&source, &url, &objects).await?.0,
            None => (Vec::new(), Vec::new()),
        };
        let columns = names.into_iter().zip(readings).map(|(name, reading)| planned_column(name, reading)).collect();
        Ok(Some(plan_splits(config, &url, &objects, count, &context.step, columns).await?))
    }

    /// The first object's header (the first that is not empty): one line read.
    async fn columns(config: &CsvSourceConfig, context: &StepContext) -> anyhow::Result<Option<Vec<String>>> {
        let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
        let objects = url.objects().await?;
        let Some(found) = objects.iter().find(|found| found.meta.size > 0) else { return Ok(None) };
        let line = url.read_first_line(found).await?;
        let mut csv = csv::ReaderBuilder::new().delimiter(config.delimiter as u8).from_reader(&line[..]);
        // Declared columns are checked by the caller, against this header, as a spec error.
        let undeclared = CsvSourceConfig { columns: Default::default(), ..config.clone() };
        let names = typing::header(&mut csv, &url.name_of(&found.meta.location), &undeclared, None)?;
        Ok(Some(names))
    }

    /// The columns it declares types for must be in its header.
    fn reads(config: &CsvSourceConfig) -> Vec<String> {
        config.columns.keys().cloned().collect()
    }
}

impl CsvSource {
    /// Checks that the data is there (so a wrong URL or credentials fail before anything else
    /// starts), then reads it in the background.
    /// From a plan (`input`), it lists and types nothing: its splits and their columns' types
    /// are the plan's.
    pub async fn open(
        source: SourceContext,
        url: ObjectUrl,
        input: Option<&SourcePlan>,
        progress: Arc<Progress>,
    ) -> anyhow::Result<CsvSource> {
        let config = &source.config;
        config.check().map_err(anyhow::Error::msg)?;
        let (objects, splits, planned) = match input {
            Some(input) => {
                let (objects, splits) = planned_splits(input, &url, source.shard)?;
                progress.record_splits(input.splits_of(source.shard).map(|split| input.split_info(split)).collect());
                (objects, splits, Some(planned_columns(input)?))
            }
            None => {
                let objects = url.objects().await?;
                let splits = shard_splits(&objects, config.split_bytes, source.shard);
                progress.record_splits(splits.iter().map(|split| split_info(&url, split, None)).collect());
                (objects, splits, None)
            }
        };
        progress.expect_bytes(splits.iter().map(Split::len).sum());
        let (tx, batches) = SplitBatches::channel(READ_AHEAD);
        tokio::spawn(async move {
            if let Err(e) = read_objects(source, url, objects, splits, planned, progress, tx.clone()).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(CsvSource { batches })
    }
}

#[async_trait]
impl Source for CsvSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        self.batches.next().await
    }

    fn split(&self) -> Option<usize> {
        self.batches.split()
    }
}

/// Reads this shard's splits, in order, one after the other, typed from every object (or as
/// `planned`).
async fn read_objects(
    source: SourceContext,
    url: ObjectUrl,
    objects: Vec<FoundObject>,
    splits: Vec<Split>,
    planned: Option<typing::Columns>,
    progress: Arc<Progress>,
    tx: SplitSender,
) -> anyhow::Result<()> {
    if objects.is_empty() {
        tracing::warn!("{url}: no objects under this prefix: no rows read");
    }
    let source = Arc::new(source);
    // Every shard types the columns from the whole input, as one run would: a shard's own
    // rows could type a column otherwise, and key its rows otherwise.
    let (mut schema, mut kept) = match (planned, objects.first()) {
        (Some(planned), _) => (Some(planned), Kept::new()),
        (None, Some(_)) => types(&source, &url, &objects).await.map(|(columns, kept)| (Some(columns), kept))?,
        (None, None) => (None, Kept::new()),
    };
    // How many of this shard's splits read each kept object: the last takes its chunks, so they
    // are freed as they are parsed.
    let mut readers: HashMap<ObjectPath, usize> = HashMap::new();
    for split in splits.iter().filter(|split| kept.contains_key(&split.object.meta.location)) {
        *readers.entry(split.object.meta.location.clone()).or_default() += 1;
    }
    kept.retain(|location, _| readers.contains_key(location)); // other shards' objects
    for (index, split) in splits.into_iter().enumerate() {
        let name = url.name_of(&split.object.meta.location);
        let bounds = SplitBounds::new(&split);
        let location = &split.object.meta.location;
        let in_memory = readers.get_mut(location).map(|left| {
            *left -= 1;
            match left {
                0 => kept.remove(location).unwrap_or_default(),
                _ => kept.get(location).cloned().unwrap_or_default(),
            }
        });
        // Past the object's start, a split's rows come after the object's header line and
        // begin after the first newline at or past the split's start (Hadoop's rule).
        let header = match (split.range.start, &in_memory) {
            (0, _) => Vec::new(),
            (_, Some(chunks)) => first_line(from_memory(chunks.clone(), 0)).await?,
            (_, None) => url.read_first_line(&split.object).await?.to_vec(),
        };
        bounds.header_len.store(header.len() as u64, Ordering::Relaxed);
        let chunks: BoxStream<'static, std::io::Result<Bytes>> = match in_memory {
            Some(chunks) => from_memory(chunks, split.range.start).boxed(),
            None => {
                let reader = url.clone();
                url.read_range(split.object.clone(), split.range.clone())
                    .map_err(move |e| std::io::Error::other(reader.describe(&e)))
                    .boxed()
            }
        };
        // The parser is synchronous; the bridge lets it pull bytes from the async stream.
        let data = SyncIoBridge::new(StreamReader::new(chunks));
        let data = SplitReader::new(data, &split.range, bounds.data_start.clone());
        let bytes = Counting::new(std::io::Cursor::new(header).chain(data), progress.clone());
        let (source, tx) = (source.clone(), tx.clone());
        let expected = schema.take().expect("the schema is known before the first object");
        let parsed = tokio::task::spawn_blocking(move || read_csv(bytes, &name, &source, expected, bounds, index, &tx));
        match parsed.await? {
            Ok(Some(read)) => schema = Some(read),
            Ok(None) => return Ok(()), // the pipeline stopped listening
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An object's bytes from `start` to its end, out of the chunks the typing pass kept: what
/// [`ObjectUrl::read_range`] would fetch for a split starting there (a split's reader reads
/// past its end to finish its last line).
pub(super) fn from_memory(
    chunks: Vec<Bytes>,
    start: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    let mut offset = 0u64;
    let rest = chunks.into_iter().filter_map(move |chunk| {
        let begin = offset;
        offset += chunk.len() as u64;
        (offset > start).then(|| Ok(chunk.slice(start.saturating_sub(begin) as usize..)))
    });
    futures::stream::iter(rest)
}
