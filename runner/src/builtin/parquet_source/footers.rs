//! Reading Parquet objects through object_store: a reader pinned to the version listed, every
//! object's footer, one schema for all of them, and the row groups as splits for shards.

use std::ops::Range;
use std::sync::Arc;

use anyhow::bail;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::object_url::{ObjectUrl, get_version};
use crate::step::{Progress, Shard, SplitInfo};

/// Bytes asked for at an object's end, where the footer is: most footers fit, so one request
/// reads them (a larger one costs a second).
const FOOTER_HINT: usize = 64 << 10;
/// Column chunks closer than this are fetched in one request (a row group's chunks are next to
/// each other: one request per row group).
const COALESCE_GAP: u64 = 1 << 20;
/// Footers fetched at once.
const FOOTERS_IN_FLIGHT: usize = 8;

/// One Parquet object, read through object_store: every request asks for the version (ETag)
/// seen when the object was listed, so an object replaced mid-run fails the read instead of
/// mixing two files; the bytes read are counted in the run's progress.
pub(super) struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    progress: Option<Arc<Progress>>,
}

impl ObjectFile {
    pub(super) fn new(url: &ObjectUrl, meta: ObjectMeta, progress: Option<Arc<Progress>>) -> ObjectFile {
        ObjectFile { store: url.store.clone(), meta, progress }
    }

    fn fetch(&self, range: Range<u64>) -> BoxFuture<'static, parquet::errors::Result<Bytes>> {
        let (store, meta, progress) = (self.store.clone(), self.meta.clone(), self.progress.clone());
        async move {
            let bytes = get_version(&*store, &meta, range).await.map_err(external)?;
            if let Some(progress) = &progress {
                progress.read_bytes(bytes.len() as u64);
            }
            Ok(bytes)
        }
        .boxed()
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.fetch(range)
    }

    /// The ranges, neighbours fetched together (one request for a row group's column chunks),
    /// the requests concurrently.
    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let mut merged: Vec<Range<u64>> = Vec::new();
        let mut sorted = ranges.clone();
        sorted.sort_by_key(|r| r.start);
        for range in sorted {
            match merged.last_mut() {
                Some(last) if range.start <= last.end.saturating_add(COALESCE_GAP) => {
                    last.end = last.end.max(range.end)
                }
                _ => merged.push(range),
            }
        }
        let fetches: Vec<_> = merged.iter().map(|r| self.fetch(r.clone())).collect();
        async move {
            let fetched = futures::future::try_join_all(fetches).await?;
            let slice = |range: &Range<u64>| {
                // The merged range that holds it: the last one starting at or before it.
                let at = merged.partition_point(|m| m.start <= range.start).saturating_sub(1);
                let (start, bytes) = (merged[at].start, &fetched[at]);
                bytes.slice((range.start - start) as usize..(range.end - start) as usize)
            };
            Ok(ranges.iter().map(slice).collect())
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let size = self.meta.size;
        async move {
            let reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(FOOTER_HINT));
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}

/// A Parquet object and what its footer says.
#[derive(Clone)]
pub(super) struct Footer {
    pub(super) meta: ObjectMeta,
    /// How messages name it.
    pub(super) name: String,
    pub(super) metadata: ArrowReaderMetadata,
}

impl Footer {
    /// Row group `index`'s bytes in the object: from its first column chunk's start to its last's end.
    pub(super) fn row_group_range(&self, index: usize) -> Range<u64> {
        let group = self.metadata.metadata().row_group(index);
        let ranges = group.columns().iter().map(|c| {
            let (start, len) = c.byte_range();
            start..start + len
        });
        ranges.reduce(|a, b| a.start.min(b.start)..a.end.max(b.end)).unwrap_or(0..0)
    }

    pub(super) fn row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }
}

/// The Parquet objects `url` names, with their footers, in name order. Under a prefix, objects
/// whose name starts with `_` or `.` are left out, as pyarrow leaves them (`_SUCCESS`,
/// `_metadata`, temporary files); so is a URL ending in a directory's marker. Every object must
/// have the same columns of the same types as the first: an object that differs, is not
/// Parquet, or whose footer is cut short fails here, named.
pub(super) async fn footers(url: &ObjectUrl, progress: Option<Arc<Progress>>) -> anyhow::Result<Vec<Footer>> {
    let objects = url.metas().await?;
    let objects = objects.into_iter().filter(|meta| {
        let file = meta.location.filename().unwrap_or_default();
        !url.is_prefix || !(file.starts_with('_') || file.starts_with('.'))
    });
    let footers = footers_of(url, objects.collect(), progress).await?;
    if let Some(first) = footers.first() {
        for other in &footers[1..] {
            same_schema(first, other)?;
        }
    }
    Ok(footers)
}

/// The footers of `objects` (as listed, or as a plan lists them: each read asks for that
/// version), in their order, a few at a time.
pub(super) async fn footers_of(
    url: &ObjectUrl,
    objects: Vec<ObjectMeta>,
    progress: Option<Arc<Progress>>,
) -> anyhow::Result<Vec<Footer>> {
    futures::stream::iter(objects)
        .map(|meta| {
            let (url, progress) = (url.clone(), progress.clone());
            async move {
                let name = url.name_of(&meta.location);
                let mut file = ObjectFile::new(&url, meta.clone(), progress);
                let metadata = ArrowReaderMetadata::load_async(&mut file, ArrowReaderOptions::new())
                    .await
                    .map_err(|e| anyhow::anyhow!("{name}: {}", describe(&url, &e, "cannot read its Parquet footer")))?;
                Ok::<_, anyhow::Error>(Footer { meta, name, metadata })
            }
        })
        .buffered(FOOTERS_IN_FLIGHT)
        .try_collect()
        .await
}

/// `other` has the columns of `first`, in the same order and of the same types.
fn same_schema(first: &Footer, other: &Footer) -> anyhow::Result<()> {
    let (a, b) = (first.metadata.schema().fields(), other.metadata.schema().fields());
    let differs = |what: String| -> anyhow::Result<()> {
        bail!("{}: its schema differs from {}'s, the first object under the prefix: {what}", other.name, first.name)
    };
    for (i, field) in b.iter().enumerate() {
        match a.get(i) {
            None => return differs(format!("it has a column `{}` more", field.name())),
            Some(f) if f.name() != field.name() => {
                return differs(format!("column {} is `{}` there, `{}` here", i + 1, f.name(), field.name()));
            }
            Some(f) if f.data_type() != field.data_type() => {
                return differs(format!(
                    "column `{}` is {} there, {} here",
                    f.name(),
                    f.data_type(),
                    field.data_type()
                ));
            }
            Some(_) => {}
        }
    }
    if a.len() > b.len() {
        return differs(format!("it lacks column `{}`", a[b.len()].name()));
    }
    Ok(())
}

/// A Parquet error in one line: what failed, and why (a store error as the store's errors are
/// described; a file that is not Parquet said so).
pub(super) fn describe(url: &ObjectUrl, e: &ParquetError, doing: &str) -> String {
    if let ParquetError::External(source) = e
        && let Some(store) = source.downcast_ref::<object_store::Error>()
    {
        return format!("{doing}: {}", url.describe(store));
    }
    let text = e.to_string();
    if text.contains("magic") || text.contains("Corrupt footer") {
        return format!("{doing}: not a Parquet file ({text})");
    }
    format!("{doing}: {text}")
}

/// One row group of one object: a split.
#[derive(Clone)]
pub(super) struct RowGroup {
    /// Index into the footers.
    pub(super) object: usize,
    pub(super) index: usize,
    pub(super) range: Range<u64>,
    pub(super) rows: u64,
}

/// Every row group of every object, in order.
pub(super) fn row_groups(footers: &[Footer]) -> Vec<RowGroup> {
    let mut all = Vec::new();
    for (object, footer) in footers.iter().enumerate() {
        for index in 0..footer.row_groups() {
            let rows = footer.metadata.metadata().row_group(index).num_rows().max(0) as u64;
            all.push(RowGroup { object, index, range: footer.row_group_range(index), rows });
        }
    }
    all
}

/// The row groups `shard` reads: a contiguous run of about equal bytes (all in a run of one).
pub(super) fn shard_row_groups(footers: &[Footer], shard: Shard) -> Vec<RowGroup> {
    let all = row_groups(footers);
    let sizes: Vec<u64> = all.iter().map(|g| g.range.end - g.range.start).collect();
    all[shard.take(&sizes)].to_vec()
}

/// How reports and `runner plan` show a row group.
pub(super) fn split_info(footers: &[Footer], group: &RowGroup) -> SplitInfo {
    SplitInfo {
        object: footers[group.object].name.clone(),
        range: group.range.clone(),
        estimated_rows: Some(group.rows),
        row_group: Some(group.index),
    }
}
