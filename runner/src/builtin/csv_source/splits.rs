//! Cutting the input into splits for shards (`runner plan` shows them), and reading one
//! split's lines out of its byte range.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;

use super::{CsvSource, CsvSourceConfig};
use crate::builtin::Kind;
use crate::object_url::{FoundObject, ObjectUrl, Split, splits};
use crate::step::{PlanMismatch, PlannedColumn, PlannedObject, PlannedSplit, Shard, SourcePlan, SplitInfo};

/// How `runner plan` shows a split.
pub(super) fn split_info(url: &ObjectUrl, split: &Split, bytes_per_row: Option<f64>) -> SplitInfo {
    SplitInfo {
        object: url.name_of(&split.object.meta.location),
        range: split.range.clone(),
        estimated_rows: bytes_per_row.map(|b| (split.len() as f64 / b).round() as u64),
        row_group: None,
    }
}

/// Each of `count` shards' splits of the input, with their rows estimated from the first
/// 64 KiB of the first object that has rows: what `runner plan` prints.
pub(super) async fn shard_plan(
    config: &CsvSourceConfig,
    url: &ObjectUrl,
    count: u32,
) -> anyhow::Result<Vec<(Shard, Vec<SplitInfo>)>> {
    let objects = url.objects().await?;
    let bytes_per_row = match objects.iter().find(|o| o.meta.size > 0) {
        Some(object) => sample_bytes_per_row(url, object).await?,
        None => None,
    };
    let mut shards = Vec::with_capacity(count as usize);
    for index in 0..count {
        let shard = Shard::new(index, count).map_err(anyhow::Error::msg)?;
        let splits = shard_splits(&objects, config.split_bytes, shard);
        shards.push((shard, splits.iter().map(|split| split_info(url, split, bytes_per_row)).collect()));
    }
    Ok(shards)
}

/// The input planned for `count` shards: `objects` cut into splits as a run of `count` shards
/// cuts them, each with the shard that reads it and its rows estimated as [`shard_plan`] does.
pub(super) async fn plan_splits(
    config: &CsvSourceConfig,
    url: &ObjectUrl,
    objects: &[FoundObject],
    count: u32,
    step: &str,
    columns: Vec<PlannedColumn>,
) -> anyhow::Result<SourcePlan> {
    let bytes_per_row = match objects.iter().find(|o| o.meta.size > 0) {
        Some(object) => sample_bytes_per_row(url, object).await?,
        None => None,
    };
    let all = if count == 1 { splits(objects, 0) } else { splits(objects, config.split_bytes) };
    let sizes: Vec<u64> = all.iter().map(Split::len).collect();
    let mut owners = vec![0; all.len()];
    for index in 0..count {
        let shard = Shard::new(index, count).map_err(anyhow::Error::msg)?;
        owners[shard.take(&sizes)].fill(index);
    }
    let position = |split: &Split| objects.iter().position(|o| o.meta.location == split.object.meta.location);
    let planned = all.iter().zip(owners).map(|(split, shard)| PlannedSplit {
        shard,
        object: position(split).unwrap_or_default(),
        start: split.range.start,
        end: split.range.end,
        row_group: None,
        estimated_rows: bytes_per_row.map(|b| (split.len() as f64 / b).round() as u64),
    });
    Ok(SourcePlan {
        step: step.to_string(),
        kind: CsvSource::NAME.to_string(),
        url: url.to_string(),
        objects: objects.iter().map(|o| PlannedObject::new(url.name_of(&o.meta.location), &o.meta)).collect(),
        splits: planned.collect(),
        columns,
    })
}

/// A shard's splits from a plan, and every object of it (as it was when planned: each read
/// asks for that version), checked to be a CSV source's plan over this source's URL.
pub(super) fn planned_splits(
    input: &SourcePlan,
    url: &ObjectUrl,
    shard: Shard,
) -> anyhow::Result<(Vec<FoundObject>, Vec<Split>)> {
    if input.kind != CsvSource::NAME {
        return Err(PlanMismatch(format!("the plan is of a `{}` source, not `{}`", input.kind, CsvSource::NAME)).into());
    }
    input.check_url(url)?;
    let objects: Vec<FoundObject> = input.objects.iter().map(|o| FoundObject { meta: o.meta(), first: None }).collect();
    let splits = input
        .splits_of(shard)
        .map(|split| Split { object: objects[split.object].clone(), range: split.start..split.end })
        .collect();
    Ok((objects, splits))
}

/// Bytes per row over the first 64 KiB of an object (its header left out); `None` when that
/// holds fewer than two lines.
async fn sample_bytes_per_row(url: &ObjectUrl, object: &FoundObject) -> anyhow::Result<Option<f64>> {
    use futures::StreamExt;
    let sample_end = object.meta.size.min(64 << 10);
    // The first chunk, fetched with the object's HEAD, holds the sample: no request more.
    if let Some(first) = object.first.as_ref().filter(|first| first.len() as u64 >= sample_end) {
        return Ok(bytes_per_row(&first[..sample_end as usize]));
    }
    let mut chunks = Box::pin(url.read_range(object.clone(), 0..sample_end));
    let mut sample = Vec::new();
    while (sample.len() as u64) < sample_end
        && let Some(chunk) = chunks.next().await
    {
        sample.extend_from_slice(&chunk.map_err(|e| anyhow!("{url}: {}", url.describe(&e)))?);
    }
    sample.truncate(sample_end as usize);
    Ok(bytes_per_row(&sample))
}

/// Bytes per row in a sample from an object's start (its header line left out).
fn bytes_per_row(sample: &[u8]) -> Option<f64> {
    let header_end = memchr::memchr(b'\n', sample)?;
    let lines = memchr::memchr_iter(b'\n', &sample[header_end + 1..]).count();
    (lines > 0).then(|| (sample.len() - header_end - 1) as f64 / lines as f64)
}

/// The splits of `objects` that `shard` reads (all of them in a run of one shard).
pub(super) fn shard_splits(objects: &[FoundObject], split_bytes: u64, shard: Shard) -> Vec<Split> {
    let all = if shard.count == 1 { splits(objects, 0) } else { splits(objects, split_bytes) };
    let sizes: Vec<u64> = all.iter().map(Split::len).collect();
    all[shard.take(&sizes)].to_vec()
}

/// Where a split's rows are in the stream its parser reads (the object's header line, then the
/// split's data; see [`SplitReader`]), so messages can say where a record is in the object.
pub(super) struct SplitBounds {
    /// Whether the object is cut into several splits: then no field may hold a newline.
    pub(super) part: bool,
    /// Bytes of the header line put in front of the data (0 for a split at the object's start).
    pub(super) header_len: Arc<AtomicU64>,
    /// Where the data after the header starts in the object, once the first line is skipped.
    pub(super) data_start: Arc<AtomicU64>,
}

impl SplitBounds {
    pub(super) fn new(split: &Split) -> SplitBounds {
        SplitBounds {
            part: split.range != (0..split.object.meta.size),
            header_len: Arc::default(),
            data_start: Arc::new(AtomicU64::new(split.range.start)),
        }
    }
}

/// The bytes of one split, as its parser reads them after the object's header (Hadoop's
/// LineRecordReader rule, in bytes): a split not at the object's start drops everything through
/// the first newline at or past its start, and every split stops after the first newline at or
/// past its end. So a line belongs to the split it starts in, a line starting exactly at a
/// split's end belongs to that split (the next one drops it), and consecutive splits hand over
/// at the same newline. Line ends may be `\n` or `\r\n`; the last line may have none.
pub(super) struct SplitReader<R> {
    inner: R,
    /// The object offset of the next byte `inner` gives.
    at: u64,
    /// Still dropping the first (partial) line.
    skipping: bool,
    end: u64,
    done: bool,
    /// Where the split's first whole line starts in the object, once known.
    data_start: Arc<AtomicU64>,
}

impl<R: Read> SplitReader<R> {
    pub(super) fn new(inner: R, range: &std::ops::Range<u64>, data_start: Arc<AtomicU64>) -> SplitReader<R> {
        let skipping = range.start > 0;
        SplitReader { inner, at: range.start, skipping, end: range.end, done: false, data_start }
    }
}

impl<R: Read> Read for SplitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.done {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let (mut from, base) = (0, self.at);
            self.at += n as u64;
            if self.skipping {
                let Some(newline) = memchr::memchr(b'\n', &buf[..n]) else { continue };
                self.skipping = false;
                let newline_at = base + newline as u64;
                self.data_start.store(newline_at + 1, Ordering::Relaxed);
                if newline_at >= self.end {
                    self.done = true; // no line starts within this split
                    return Ok(0);
                }
                from = newline + 1;
            }
            // The first newline at or past the end ends the split's last line.
            let past_end = self.end.saturating_sub(base) as usize;
            let mut until = n;
            if past_end < n
                && let Some(newline) = memchr::memchr(b'\n', &buf[past_end.max(from)..n])
            {
                until = past_end.max(from) + newline + 1;
                self.done = true;
            }
            if until > from {
                buf.copy_within(from..until, 0);
                return Ok(until - from);
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that arrive `chunk` at a time, as from a store.
    struct Chunked<'a>(&'a [u8], usize);

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// What the reader of split `range` of `object` gives (fed from the split's start to the
    /// object's end, as a range read is), and where it says its first whole line starts.
    fn read_split(object: &str, range: std::ops::Range<u64>, chunk: usize) -> (String, u64) {
        let data_start = Arc::new(AtomicU64::new(range.start));
        let bytes = Chunked(&object.as_bytes()[range.start as usize..], chunk);
        let mut out = Vec::new();
        SplitReader::new(bytes, &range, data_start.clone()).read_to_end(&mut out).unwrap();
        (String::from_utf8(out).unwrap(), data_start.load(Ordering::Relaxed))
    }

    /// Cut anywhere, however the bytes arrive, consecutive splits hand over at one newline:
    /// together they hold every line once, in order, and a split's first whole line starts
    /// where it says (what messages locate rows by).
    #[test]
    fn splits_cut_anywhere_hold_every_line_once() {
        for object in ["a\nbb\nccc\n\ndddd\n", "a\r\nbb\r\ncc", "x\n", "no line end", "\n\n\n", "ab\ncd"] {
            let len = object.len() as u64;
            for first_end in 1..=len {
                for second_end in first_end..=len {
                    for chunk in [1, 2, 5, 64] {
                        let ranges = [0..first_end, first_end..second_end, second_end..len];
                        let mut joined = String::new();
                        for range in ranges.into_iter().filter(|r| !r.is_empty()) {
                            let (lines, data_start) = read_split(object, range.clone(), chunk);
                            if !lines.is_empty() {
                                assert_eq!(
                                    &object[data_start as usize..data_start as usize + lines.len()],
                                    lines,
                                    "{object:?} split {range:?}"
                                );
                            }
                            joined.push_str(&lines);
                        }
                        assert_eq!(joined, object, "{object:?} cut at {first_end} and {second_end}, chunks of {chunk}");
                    }
                }
            }
        }
    }

    /// A line that starts exactly at a split's end belongs to that split; the next one skips it.
    #[test]
    fn a_line_starting_at_a_splits_end_is_that_splits() {
        assert_eq!(read_split("a\nbb\ncc\n", 0..2, 64).0, "a\nbb\n");
        assert_eq!(read_split("a\nbb\ncc\n", 2..5, 64).0, "cc\n");
        assert_eq!(read_split("a\nbb\ncc\n", 5..8, 64).0, "");
    }
}
