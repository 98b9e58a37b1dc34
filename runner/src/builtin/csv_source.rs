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
//! so it is fetched once. See [`Seen`] for the rules. A missing value is any of pandas's NA
//! texts (an empty field, `NA`, `NaN`, `null`, ...), read as a null in every column type.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::batch::{Batch, Column, ColumnType, Values};
use crate::format::{is_na, number_text, parse_bool};
use crate::object_url::{FoundObject, ObjectUrl, Split, first_line, splits};
use crate::step::{Counting, Policy, Progress, Rejected, Shard, Source, SplitInfo};

/// The `config` table of a `csv` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// `url = "data/iris.csv"`: a path relative to the spec file, or `file:///...`.
    pub url: String,
    /// `delimiter = ";"`: the field separator, one ASCII character (default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
    /// `columns = { id = "s64", name = "string" }`: types of some or all columns; the others
    /// are typed from the whole input, as pandas types them.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnType>,
    /// `split_bytes = 67108864`: in a sharded run, objects larger than this are cut into byte
    /// ranges of this size, so several shards share them (default 64 MiB; 0: never cut an
    /// object, which a file with quoted fields holding newlines needs).
    #[serde(default = "default_split_bytes")]
    pub split_bytes: u64,
}

/// The default `split_bytes`: 64 MiB.
pub const DEFAULT_SPLIT_BYTES: u64 = 64 << 20;

fn default_split_bytes() -> u64 {
    DEFAULT_SPLIT_BYTES
}

fn comma() -> char {
    ','
}

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
    batches: mpsc::Receiver<anyhow::Result<Batch>>,
}

impl CsvSource {
    /// Checks that the data is there (so a wrong URL or credentials fail before anything else
    /// starts), then reads it in the background.
    pub async fn open(source: SourceContext, url: ObjectUrl, progress: Arc<Progress>) -> anyhow::Result<CsvSource> {
        let config = &source.config;
        if !config.delimiter.is_ascii() {
            bail!("`delimiter` must be one ASCII character, found `{}`", config.delimiter);
        }
        let objects = url.objects().await?;
        let splits = shard_splits(&objects, config.split_bytes, source.shard);
        progress.expect_bytes(splits.iter().map(Split::len).sum());
        progress.record_splits(splits.iter().map(|split| split_info(&url, split, None)).collect());
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            if let Err(e) = read_objects(source, url, objects, splits, progress, tx.clone()).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(CsvSource { batches: rx })
    }
}

#[async_trait]
impl Source for CsvSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        self.batches.recv().await.transpose()
    }
}

/// The columns of the input and how each is read; every object must have the same header.
type Columns = (Vec<String>, Vec<Reading>);

/// A remote input (`s3://`) of up to this many bytes in all is kept in memory by the typing
/// pass, so that its rows are read from memory instead of being fetched a second time.
pub const KEEP_BYTES: u64 = 32 << 20;

/// Objects the typing pass kept, by location: their bytes, in chunks, in order.
type Kept = HashMap<ObjectPath, Vec<Bytes>>;

/// How a column's fields become values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// As the column type says.
    As(ColumnType),
    /// Booleans in a column with missing values: pandas makes such a column of Python objects
    /// (`True`, `False`, NaN), so it is text here, `True` or `False` whatever the spelling.
    BoolText,
}

impl Reading {
    fn column_type(self) -> ColumnType {
        match self {
            Reading::As(ty) => ty,
            Reading::BoolText => ColumnType::String,
        }
    }
}

/// What one column held, over the whole input: enough to type it as pandas does.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// A missing value ([`is_na`]).
    na: bool,
    /// An integer within `int64` (a longer one makes pandas keep the column as text).
    int: bool,
    /// A number that is not an integer.
    float: bool,
    boolean: bool,
    text: bool,
}

impl Seen {
    /// Counts one field (the number rules of `Values::push_text`).
    fn add(&mut self, field: &[u8]) {
        if self.text {
            return; // nothing can change a text column back
        }
        match plain_number(field) {
            Some(Plain::Integer) => self.int = true,
            Some(Plain::Decimal) => self.float = true,
            None => self.add_slowly(field),
        }
    }

    fn add_slowly(&mut self, field: &[u8]) {
        let Ok(text) = std::str::from_utf8(field) else {
            self.text = true;
            return;
        };
        if is_na(text) {
            self.na = true;
            return;
        }
        let number = number_text(text);
        if is_integer(number) {
            if number.parse::<i64>().is_ok() {
                self.int = true;
            } else {
                self.text = true; // beyond int64: pandas keeps such a column as text
            }
        } else if number.parse::<f64>().is_ok() {
            self.float = true;
        } else if parse_bool(text).is_some() {
            self.boolean = true;
        } else {
            self.text = true;
        }
    }

    /// pandas's type for the column: integers → `s64` (with a missing value: `f64`); numbers →
    /// `f64`; booleans → `bool` (with a missing value: text `True`/`False`, see
    /// [`Reading::BoolText`]); anything else, or booleans mixed with numbers → `string`; nothing
    /// but missing values → `f64`.
    fn reading(self) -> Reading {
        match self {
            Seen { text: true, .. } => Reading::As(ColumnType::String),
            Seen { boolean: true, int, float, na, .. } => match (int || float, na) {
                (true, _) => Reading::As(ColumnType::String),
                (false, true) => Reading::BoolText,
                (false, false) => Reading::As(ColumnType::Bool),
            },
            Seen { int: true, float: false, na: false, .. } => Reading::As(ColumnType::S64),
            _ => Reading::As(ColumnType::F64),
        }
    }
}

/// What [`plain_number`] found.
#[derive(Debug, PartialEq, Eq)]
enum Plain {
    Integer,
    Decimal,
}

/// The common case of the typing pass, told apart without parsing: an optional sign, digits,
/// and optionally a point and more digits. Up to 18 digits an integer always fits in `int64`;
/// anything else (spaces, exponents, longer integers, words) is left to the full rules.
fn plain_number(field: &[u8]) -> Option<Plain> {
    let digits = match field.first() {
        Some(b'+' | b'-') => &field[1..],
        _ => field,
    };
    let int_end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    if int_end == 0 {
        return None;
    }
    match &digits[int_end..] {
        [] if int_end <= 18 => Some(Plain::Integer),
        [b'.', fraction @ ..] if fraction.iter().all(u8::is_ascii_digit) => Some(Plain::Decimal),
        _ => None,
    }
}

/// An optional sign and decimal digits: what pandas reads as an integer.
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// How `runner plan` shows a split.
fn split_info(url: &ObjectUrl, split: &Split, bytes_per_row: Option<f64>) -> SplitInfo {
    SplitInfo {
        object: url.name_of(&split.object.meta.location),
        range: split.range.clone(),
        estimated_rows: bytes_per_row.map(|b| (split.len() as f64 / b).round() as u64),
    }
}

/// Each of `count` shards' splits of the input, with their rows estimated from the first
/// 64 KiB of the first object that has rows: what `runner plan` prints.
pub async fn shard_plan(
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
pub fn shard_splits(objects: &[FoundObject], split_bytes: u64, shard: Shard) -> Vec<Split> {
    let all = if shard.count == 1 { splits(objects, 0) } else { splits(objects, split_bytes) };
    let sizes: Vec<u64> = all.iter().map(Split::len).collect();
    all[shard.take(&sizes)].to_vec()
}

/// Reads this shard's splits, in order, one after the other, typed from every object.
async fn read_objects(
    source: SourceContext,
    url: ObjectUrl,
    objects: Vec<FoundObject>,
    splits: Vec<Split>,
    progress: Arc<Progress>,
    tx: mpsc::Sender<anyhow::Result<Batch>>,
) -> anyhow::Result<()> {
    if objects.is_empty() {
        tracing::warn!("{url}: no objects under this prefix: no rows read");
    }
    let source = Arc::new(source);
    // Every shard types the columns from the whole input, as one run would: a shard's own
    // rows could type a column otherwise, and key its rows otherwise.
    let (mut schema, mut kept) = match objects.first() {
        Some(_) => types(&source, &url, &objects).await.map(|(columns, kept)| (Some(columns), kept))?,
        None => (None, Kept::new()),
    };
    // How many of this shard's splits read each kept object: the last takes its chunks, so they
    // are freed as they are parsed.
    let mut readers: HashMap<ObjectPath, usize> = HashMap::new();
    for split in splits.iter().filter(|split| kept.contains_key(&split.object.meta.location)) {
        *readers.entry(split.object.meta.location.clone()).or_default() += 1;
    }
    kept.retain(|location, _| readers.contains_key(location)); // other shards' objects
    for split in splits {
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
        let parsed = tokio::task::spawn_blocking(move || read_csv(bytes, &name, &source, expected, bounds, &tx));
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
fn from_memory(chunks: Vec<Bytes>, start: u64) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    let mut offset = 0u64;
    let rest = chunks.into_iter().filter_map(move |chunk| {
        let begin = offset;
        offset += chunk.len() as u64;
        (offset > start).then(|| Ok(chunk.slice(start.saturating_sub(begin) as usize..)))
    });
    futures::stream::iter(rest)
}

/// The first pass: the columns of the input (the first object's header) and how to read each:
/// as declared in `columns`, else typed from every value of every object. When every column is
/// declared, only the header is read. A remote input of up to [`KEEP_BYTES`] is kept: the
/// objects read whole, by location.
async fn types(
    source: &Arc<SourceContext>,
    url: &ObjectUrl,
    objects: &[FoundObject],
) -> anyhow::Result<(Columns, Kept)> {
    let mut names: Option<Vec<String>> = None;
    let mut seen: Vec<Seen> = Vec::new();
    let keep = url.is_remote() && objects.iter().map(|found| found.meta.size).sum::<u64>() <= KEEP_BYTES;
    let mut kept = Kept::new();
    for found in objects {
        let name = url.name_of(&found.meta.location);
        let reader = url.clone();
        let size = found.meta.size;
        let read: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let tee = read.clone();
        let chunks = url
            .read_range(found.clone(), 0..size)
            .inspect_ok(move |chunk| {
                if keep {
                    tee.lock().unwrap_or_else(|e| e.into_inner()).push(chunk.clone());
                }
            })
            .map_err(move |e| std::io::Error::other(reader.describe(&e)));
        let bytes = SyncIoBridge::new(StreamReader::new(chunks));
        let (context, known) = (source.clone(), names.clone());
        let mut so_far = std::mem::take(&mut seen);
        let scanned = tokio::task::spawn_blocking(move || {
            scan(bytes, &name, &context.config, known.as_deref(), &mut so_far).map(|header| (header, so_far))
        });
        let (header, scanned) = scanned.await??;
        seen = scanned;
        let read = std::mem::take(&mut *read.lock().unwrap_or_else(|e| e.into_inner()));
        // Kept only when read whole: a pass that stopped after the header read only a part.
        if keep && read.iter().map(|chunk| chunk.len() as u64).sum::<u64>() == size {
            kept.insert(found.meta.location.clone(), read);
        }
        if header.is_empty() {
            continue; // an empty object: no header, no rows
        }
        let declared_all = header.iter().all(|column| source.config.columns.contains_key(column));
        names.get_or_insert(header);
        if declared_all {
            break;
        }
    }
    let names = names.unwrap_or_default();
    let readings = names
        .iter()
        .zip(seen.iter().copied().chain(std::iter::repeat(Seen::default())))
        .map(|(column, seen)| match source.config.columns.get(column) {
            Some(&declared) => Reading::As(declared),
            None => seen.reading(),
        })
        .collect();
    Ok(((names, readings), kept))
}

/// Reads one object's header and, unless every column is declared, counts every field of its
/// rows into `seen` (rows with the wrong number of fields are left to the second pass, which
/// reports them). Returns the header (empty for an empty object).
fn scan(
    bytes: impl Read,
    name: &str,
    config: &CsvSourceConfig,
    expected: Option<&[String]>,
    seen: &mut Vec<Seen>,
) -> anyhow::Result<Vec<String>> {
    let mut csv = csv::ReaderBuilder::new().delimiter(config.delimiter as u8).flexible(true).from_reader(bytes);
    let names = header(&mut csv, name, config, expected)?;
    if names.is_empty() || names.iter().all(|column| config.columns.contains_key(column)) {
        return Ok(names);
    }
    seen.resize(names.len(), Seen::default());
    let mut record = csv::ByteRecord::new();
    while csv.read_byte_record(&mut record).map_err(|e| csv_error(name, e))? {
        if record.len() == names.len() {
            for (seen, field) in seen.iter_mut().zip(&record) {
                seen.add(field);
            }
        }
    }
    Ok(names)
}

/// An object's header: its column names (none for an empty object), checked to be distinct, to
/// include every declared column, and to equal `expected` (the first object's) when given.
fn header<R: Read>(
    csv: &mut csv::Reader<R>,
    name: &str,
    config: &CsvSourceConfig,
    expected: Option<&[String]>,
) -> anyhow::Result<Vec<String>> {
    let header = csv.byte_headers().map_err(|e| csv_error(name, e))?.clone();
    if header.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    // Hashed, so that a header of a hundred thousand columns is read in linear time.
    let mut seen: HashSet<&str> = HashSet::with_capacity(header.len());
    for field in &header {
        let column = std::str::from_utf8(field).with_context(|| format!("{name}:1: the header is not valid UTF-8"))?;
        let column = column.trim();
        if !seen.insert(column) {
            bail!("{name}:1: duplicate column `{column}` in the header");
        }
        names.push(column.to_string());
    }
    for declared in config.columns.keys() {
        if !seen.contains(declared.as_str()) {
            bail!("{name}: `columns` declares `{declared}`, which is not in the header ({})", names.join(", "));
        }
    }
    if let Some(first) = expected
        && first != names
    {
        bail!("{name}:1: the header ({}) differs from the first object's ({})", names.join(", "), first.join(", "));
    }
    Ok(names)
}

/// One object being read, and how its bad rows are handled.
struct Rows<'a, R> {
    csv: csv::Reader<QuoteTracker<R>>,
    name: &'a str,
    names: Vec<String>,
    policy: &'a Policy,
    step: &'a str,
    /// Where the split being read is in its object.
    bounds: &'a SplitBounds,
}

impl<R: Read> Rows<'_, R> {
    /// Reads the next well-formed record into `record`; `false` at the end. A record with the
    /// wrong number of fields is a bad row.
    fn next(&mut self, record: &mut csv::ByteRecord) -> anyhow::Result<bool> {
        loop {
            match self.csv.read_byte_record(record) {
                Ok(more) if more && self.bounds.part && record.iter().any(|f| memchr::memchr(b'\n', f).is_some()) => {
                    bail!(
                        "{}: a quoted field holds a newline, so this object cannot be cut into splits at line \
                         breaks: set `split_bytes = 0` in the source's config to read it whole in one shard",
                        self.location(record.position())
                    );
                }
                Ok(more) => return Ok(more),
                Err(e) => match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        let at = self.location(e.position());
                        self.bad_row(at, record, format!("found {len} fields, but the header has {expected_len}"))?;
                    }
                    _ => return Err(csv_error(self.name, e)),
                },
            }
        }
    }

    /// Applies the step's policy to a row that cannot be read: the run fails (`fail`), or the
    /// row is counted (`skip`) and written to the dead letter (`dead-letter`).
    /// Where a record is, for messages: `object:line` when the split starts at the object's
    /// start, else `object (byte N)` (a split's line numbers count from its own start).
    fn location(&self, position: Option<&csv::Position>) -> String {
        match (position, self.bounds.header_len.load(Ordering::Relaxed)) {
            (Some(p), 0) => format!("{}:{}", self.name, p.line()),
            (Some(p), header_len) => {
                let at = self.bounds.data_start.load(Ordering::Relaxed) + p.byte().saturating_sub(header_len);
                format!("{} (byte {at})", self.name)
            }
            (None, _) => self.name.to_string(),
        }
    }

    fn bad_row(&self, at: String, record: &csv::ByteRecord, reason: String) -> anyhow::Result<()> {
        // A row that swallowed the rest of the object is not a bad row but a broken object.
        self.check_quotes(record.position())?;
        if !self.policy.tolerant() {
            bail!("{at}: {reason}");
        }
        let text = |field: &[u8]| serde_json::Value::String(String::from_utf8_lossy(field).into_owned());
        let row = if record.len() == self.names.len() {
            serde_json::Value::Object(self.names.iter().cloned().zip(record.iter().map(text)).collect())
        } else {
            serde_json::Value::Array(record.iter().map(text).collect())
        };
        let rejected = Rejected { step: self.step.to_string(), reason, row, at: Some(at) };
        // This runs on a blocking thread of the runtime: it may wait for the dead letter.
        tokio::runtime::Handle::current().block_on(self.policy.reject(vec![rejected]))
    }

    /// Fails when the object ended inside a quoted field: the csv crate reads an unclosed quote
    /// as a field running to the end, where pandas fails ("EOF inside string"); so does the
    /// runner, whatever the policy, naming the line where the field begins.
    fn check_quotes(&self, last: Option<&csv::Position>) -> anyhow::Result<()> {
        if self.csv.get_ref().ended_in_quotes() {
            bail!(
                "{}: a quoted field starting in this row is never closed (its quote runs to the end of the object, \
                 as pandas says: EOF inside string)",
                self.location(last)
            );
        }
        Ok(())
    }

    /// Appends a record to the batch being built, or applies the policy to it.
    fn push(&self, builder: &mut BatchBuilder<'_>, record: &csv::ByteRecord) -> anyhow::Result<()> {
        match builder.push(record) {
            Ok(()) => Ok(()),
            Err(reason) => self.bad_row(self.location(record.position()), record, reason),
        }
    }
}

/// Parses one object, sending a batch every `batch_rows` rows (and what is left at its end).
/// Returns the schema, or `None` when the pipeline stopped listening.
fn read_csv(
    bytes: impl Read,
    name: &str,
    source: &SourceContext,
    schema: Columns,
    bounds: SplitBounds,
    tx: &mpsc::Sender<anyhow::Result<Batch>>,
) -> anyhow::Result<Option<Columns>> {
    let (config, batch_rows) = (&source.config, source.batch_rows);
    let bytes = QuoteTracker::new(bytes, config.delimiter as u8);
    let mut csv = csv::ReaderBuilder::new().delimiter(config.delimiter as u8).from_reader(bytes);
    let names = header(&mut csv, name, config, Some(schema.0.as_slice()).filter(|names| !names.is_empty()))?;
    if names.is_empty() {
        tracing::warn!("{name}: empty object, no header row: no rows read");
        return Ok(Some(schema));
    }
    let mut rows =
        Rows { csv, name, names: names.clone(), policy: &source.policy, step: &source.step, bounds: &bounds };
    let mut builder = BatchBuilder::new(&names, &schema.1, batch_rows);
    let mut record = csv::ByteRecord::new();
    let mut last = None;
    loop {
        if builder.rows == batch_rows {
            // The row that fills the batch may be one that swallowed the rest of the object in
            // an unclosed quote: the batch goes nowhere then.
            rows.check_quotes(last.as_ref())?;
            if tx.blocking_send(Ok(builder.finish()?)).is_err() {
                return Ok(None);
            }
        }
        if !rows.next(&mut record)? {
            break;
        }
        last = record.position().cloned();
        rows.push(&mut builder, &record)?;
    }
    // With no row after it, an unclosed quote is the header's, on line 1.
    let mut header_at = csv::Position::new();
    header_at.set_line(1);
    rows.check_quotes(Some(last.as_ref().unwrap_or(&header_at)))?;
    if builder.rows > 0 && tx.blocking_send(Ok(builder.finish()?)).is_err() {
        return Ok(None);
    }
    Ok(Some(schema))
}

/// Follows the quoting of the bytes the CSV parser reads (the csv crate's rules: a quote opens a
/// quoted field only at a field's start, `""` inside one is a quote), to tell whether the object
/// ended inside a quoted field. A chunk with no quote in it, outside a quoted field, costs one
/// `memchr`: only its last byte matters.
struct QuoteTracker<R> {
    inner: R,
    delimiter: u8,
    state: Quoting,
    /// The reader returned its end.
    ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// At the start of a field.
    FieldStart,
    /// In a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: the field's end, or the first of `""`.
    QuoteInQuoted,
}

impl<R> QuoteTracker<R> {
    fn new(inner: R, delimiter: u8) -> QuoteTracker<R> {
        QuoteTracker { inner, delimiter, state: Quoting::FieldStart, ended: false }
    }

    /// Whether everything was read and it ended inside a quoted field.
    fn ended_in_quotes(&self) -> bool {
        self.ended && self.state == Quoting::Quoted
    }

    fn ends_field(&self, byte: u8) -> bool {
        byte == self.delimiter || byte == b'\n' || byte == b'\r'
    }

    fn follow(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.state, Quoting::FieldStart | Quoting::Unquoted) && memchr::memchr(b'"', bytes).is_none() {
            let last = bytes[bytes.len() - 1];
            self.state = if self.ends_field(last) { Quoting::FieldStart } else { Quoting::Unquoted };
            return;
        }
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                Quoting::Quoted => match memchr::memchr(b'"', &bytes[at..]) {
                    Some(quote) => {
                        at += quote + 1;
                        self.state = Quoting::QuoteInQuoted;
                    }
                    None => return,
                },
                Quoting::Unquoted => match memchr::memchr3(self.delimiter, b'\n', b'\r', &bytes[at..]) {
                    Some(end) => {
                        at += end + 1;
                        self.state = Quoting::FieldStart;
                    }
                    None => return,
                },
                Quoting::FieldStart | Quoting::QuoteInQuoted => {
                    let byte = bytes[at];
                    at += 1;
                    self.state = match (self.state, byte) {
                        (_, b'"') => Quoting::Quoted,
                        (_, byte) if self.ends_field(byte) => Quoting::FieldStart,
                        _ => Quoting::Unquoted,
                    };
                }
            }
        }
    }
}

impl<R: Read> Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

/// Where a split's rows are in the stream its parser reads (the object's header line, then the
/// split's data; see [`SplitReader`]), so messages can say where a record is in the object.
struct SplitBounds {
    /// Whether the object is cut into several splits: then no field may hold a newline.
    part: bool,
    /// Bytes of the header line put in front of the data (0 for a split at the object's start).
    header_len: Arc<AtomicU64>,
    /// Where the data after the header starts in the object, once the first line is skipped.
    data_start: Arc<AtomicU64>,
}

impl SplitBounds {
    fn new(split: &Split) -> SplitBounds {
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
struct SplitReader<R> {
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
    fn new(inner: R, range: &std::ops::Range<u64>, data_start: Arc<AtomicU64>) -> SplitReader<R> {
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

/// `file:line: message`, without the csv crate's own position wording.
fn csv_error(name: &str, e: csv::Error) -> anyhow::Error {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            anyhow!("{name}:{line}: found {len} fields, but the header has {expected_len}")
        }
        csv::ErrorKind::Io(io) => anyhow!("{name}: read failed: {io}"),
        _ => anyhow!("{name}:{line}: {e}"),
    }
}

/// Accumulates rows column by column.
struct BatchBuilder<'a> {
    names: &'a [String],
    readings: &'a [Reading],
    /// Per column: its values, its null mask, and whether it has a null yet.
    columns: Vec<(Values, Vec<bool>, bool)>,
    rows: usize,
    capacity: usize,
}

impl<'a> BatchBuilder<'a> {
    fn new(names: &'a [String], readings: &'a [Reading], capacity: usize) -> Self {
        // Room for a batch of rows, but for about a million values at most in all: a file of
        // many columns grows its columns as rows come instead of reserving rows × columns.
        let capacity = capacity.min(65_536).min((1 << 20) / readings.len().max(1)).max(1);
        let columns = readings
            .iter()
            .map(|r| (Values::with_capacity(r.column_type(), capacity), Vec::with_capacity(capacity), false))
            .collect();
        BatchBuilder { names, readings, columns, rows: 0, capacity }
    }

    /// Appends a record, or says why it cannot be read; a row that fails leaves no trace.
    fn push(&mut self, record: &csv::ByteRecord) -> Result<(), String> {
        let result = self.try_push(record);
        if result.is_err() {
            // Undo the columns this row already reached.
            for (values, nulls, _) in &mut self.columns {
                nulls.truncate(self.rows);
                values.truncate(self.rows);
            }
        } else {
            self.rows += 1;
        }
        result
    }

    fn try_push(&mut self, record: &csv::ByteRecord) -> Result<(), String> {
        for (i, ((values, nulls, any_null), field)) in self.columns.iter_mut().zip(record).enumerate() {
            let text =
                std::str::from_utf8(field).map_err(|_| format!("column `{}` is not valid UTF-8", self.names[i]))?;
            let normalized = match self.readings[i] {
                Reading::BoolText => parse_bool(text).map(|b| if b { "True" } else { "False" }),
                Reading::As(_) => None,
            };
            let null = values.push_text(normalized.unwrap_or(text)).map_err(|expected| {
                let shown: String = text.chars().take(40).collect();
                let more = if text.chars().count() > 40 { "..." } else { "" };
                format!("column `{}`: expected {expected}, found `{shown}{more}`", self.names[i])
            })?;
            nulls.push(null);
            *any_null |= null;
        }
        Ok(())
    }

    /// The rows so far as a batch; the builder starts over empty.
    fn finish(&mut self) -> anyhow::Result<Batch> {
        let columns = self
            .names
            .iter()
            .zip(&mut self.columns)
            .map(|(name, (values, nulls, any_null))| {
                let ty = values.column_type();
                let values = std::mem::replace(values, Values::with_capacity(ty, self.capacity));
                let nulls = std::mem::replace(nulls, Vec::with_capacity(self.capacity));
                Column { name: name.clone(), values, nulls: std::mem::take(any_null).then_some(nulls) }
            })
            .collect();
        self.rows = 0;
        Ok(Batch::new(columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn both_ways(field: &str) -> (Reading, Reading) {
        let (mut fast, mut slow) = (Seen::default(), Seen::default());
        fast.add(field.as_bytes());
        slow.add_slowly(field.as_bytes());
        (fast.reading(), slow.reading())
    }

    #[test]
    fn the_fast_path_types_fields_as_the_full_rules_do() {
        let fields = [
            "5",
            "5.1",
            "-3.25",
            "+7",
            "5.",
            "123456789012345678",
            "1234567890123456789",
            "99999999999999999999",
            "-9223372036854775808",
            ".5",
            "-",
            "+",
            ".",
            "",
            "1e5",
            " 5",
            "5 ",
            "0x10",
            "1.2.3",
            "nan",
            "True",
            "٣",
        ];
        for field in fields {
            let (fast, slow) = both_ways(field);
            assert_eq!(fast, slow, "{field:?}");
        }
    }

    /// Whether the tracker says `text`, fed in chunks of `chunk` bytes, ends inside quotes.
    fn ends_in_quotes(text: &str, chunk: usize) -> bool {
        let mut tracker = QuoteTracker::new(text.as_bytes(), b',');
        let mut buf = vec![0; chunk];
        while tracker.read(&mut buf).unwrap() > 0 {}
        tracker.ended_in_quotes()
    }

    #[test]
    fn an_unclosed_quote_is_told_from_legal_quoting() {
        let cases = [
            ("a,b\n1,2\n", false),
            ("a,b\n\"1\",2\n", false),
            ("a,b\n\"x\ny\",2\n", false),           // a quoted newline, closed
            ("a,b\n\"say \"\"hi\"\"\",2\n", false), // doubled quotes inside
            ("a,b\n5 ft 3\",2\n", false),           // a quote inside an unquoted field is text
            ("a,b\n\"\"\n", false),                 // an empty quoted field
            ("a,b\r\n\"1\",2", false),              // CRLF, no final newline
            ("a,b\n\"1,2\n3,4\n", true),            // never closed
            ("a,b\n1,\"2\n", true),
            ("\"a,b\n1,2\n", true),   // in the header
            ("a,b\n\"x\"\"\n", true), // the last quote is escaped, not closing
        ];
        for (text, unclosed) in cases {
            for chunk in [1, 2, 3, 7, 64] {
                assert_eq!(ends_in_quotes(text, chunk), unclosed, "{text:?} in chunks of {chunk}");
            }
        }
    }

    /// The row that fills a batch may be one an unclosed quote made swallow the rest of the
    /// object: the reading fails, naming its line, and that batch is never sent (a store such
    /// as Redis would keep it).
    #[test]
    fn a_batch_filled_by_an_unclosed_quote_is_never_sent() {
        let text = "key,label\nk0,a\nk1,\"oops\nk2,b\nk3,c\n";
        let config: CsvSourceConfig = toml::from_str("url = \"x.csv\"").unwrap();
        let step = "source".to_string();
        let source = SourceContext { config, batch_rows: 2, step, policy: Policy::default(), shard: Shard::default() };
        let bounds = SplitBounds { part: false, header_len: Arc::default(), data_start: Arc::default() };
        let schema = (Vec::new(), vec![Reading::As(ColumnType::String); 2]);
        let (tx, mut rx) = mpsc::channel(4);
        let e = read_csv(text.as_bytes(), "x.csv", &source, schema, bounds, &tx).unwrap_err();
        assert!(format!("{e:#}").contains("x.csv:3: a quoted field starting in this row is never closed"), "{e:#}");
        assert!(rx.try_recv().is_err(), "the batch holding the broken row was sent");
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_on_numbers(field in "[+-]?[0-9]{0,22}(\\.[0-9]{0,4})?[e ]?") {
            let (fast, slow) = both_ways(&field);
            prop_assert_eq!(fast, slow);
        }
    }
}
