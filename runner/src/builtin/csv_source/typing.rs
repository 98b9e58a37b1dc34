//! The first pass: the input's columns (its header) and how to read each, typed as pandas's
//! `read_csv` types them from every value of the whole input (see [`Seen`] for the rules),
//! unless declared in `columns`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use bytes::Bytes;
use std::ops::Range;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::rows::csv_error;
use super::{CsvSourceConfig, SourceContext};
use crate::batch::ColumnType;
use crate::format::{is_na, number_text, parse_bool};
use crate::object_url::{FoundObject, ObjectUrl, first_line};
use crate::step::{PlanMismatch, PlannedColumn, SourcePlan};

/// The columns of the input and how each is read; every object must have the same header.
pub(super) type Columns = (Vec<String>, Vec<Reading>);

/// A remote input (`s3://`) of up to this many bytes in all is kept in memory by the typing
/// pass, so that its rows are read from memory instead of being fetched a second time.
pub const KEEP_BYTES: u64 = 32 << 20;

/// Objects the typing pass kept, by location: their bytes, in chunks, in order.
pub(super) type Kept = HashMap<ObjectPath, Vec<Bytes>>;

/// How a column's fields become values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    /// As the column type says.
    As(ColumnType),
    /// Booleans in a column with missing values: pandas makes such a column of Python objects
    /// (`True`, `False`, NaN), so it is text here, `True` or `False` whatever the spelling.
    BoolText,
}

impl Reading {
    pub(super) fn column_type(self) -> ColumnType {
        match self {
            Reading::As(ty) => ty,
            Reading::BoolText => ColumnType::String,
        }
    }
}

/// How a plan file records a column the typing pass typed.
pub(super) fn planned_column(name: String, reading: Reading) -> PlannedColumn {
    let read = match reading {
        Reading::As(ty) => ty.to_string(),
        Reading::BoolText => BOOL_TEXT.to_string(),
    };
    PlannedColumn { name, ty: reading.column_type(), read, index: None }
}

/// A plan file's columns, as the typing pass would have typed them.
pub(super) fn planned_columns(input: &SourcePlan) -> Result<Columns, PlanMismatch> {
    let mut columns = (Vec::with_capacity(input.columns.len()), Vec::with_capacity(input.columns.len()));
    for column in &input.columns {
        let reading = match column.read.as_str() {
            BOOL_TEXT if column.ty == ColumnType::String => Reading::BoolText,
            read if read == column.ty.to_string() => Reading::As(column.ty),
            read => {
                return Err(PlanMismatch(format!(
                    "the plan's column `{}` is read as `{read}`, which a csv source does not do",
                    column.name
                )));
            }
        };
        columns.0.push(column.name.clone());
        columns.1.push(reading);
    }
    Ok(columns)
}

/// How a plan file names [`Reading::BoolText`].
const BOOL_TEXT: &str = "bool-text";

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
    /// Adds what another part of the input held (each flag only ever turns on).
    fn merge(&mut self, other: Seen) {
        self.na |= other.na;
        self.int |= other.int;
        self.float |= other.float;
        self.boolean |= other.boolean;
        self.text |= other.text;
    }

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

/// The first pass: the columns of the input (the first object's header) and how to read each:
/// as declared in `columns`, else typed from every value of every object. When every column is
/// declared, only the header is read. A remote input of up to [`KEEP_BYTES`] is kept: the
/// objects read whole, by location.
pub(super) async fn types(
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
        let size = found.meta.size;
        // A large object kept for the rows pass is fetched whole first, then typed from memory.
        let in_memory = match keep && size >= PARTS_FROM_BYTES && worth_parts(source, url, found, &name, &names).await?
        {
            true => Some(
                url.read_range(found.clone(), 0..size)
                    .try_collect::<Vec<Bytes>>()
                    .await
                    .map_err(|e| anyhow::anyhow!("{name}: {}", url.describe(&e)))?,
            ),
            false => None,
        };
        let parts = match &in_memory {
            Some(chunks) => scan_kept_parts(source, chunks, &name, names.clone(), &seen).await?,
            None if !keep && size >= PARTS_FROM_BYTES => {
                scan_parts(source, url, found, &name, names.clone(), &seen).await?
            }
            None => None,
        };
        let (header, scanned) = match parts {
            Some(typed) => typed,
            None => {
                // One pass from the start: from memory, or fetched (and kept when read whole).
                let read: Arc<Mutex<Vec<Bytes>>> = Arc::default();
                let chunks = match &in_memory {
                    Some(chunks) => super::from_memory(chunks.clone(), 0).boxed(),
                    None => {
                        let (reader, tee) = (url.clone(), read.clone());
                        url.read_range(found.clone(), 0..size)
                            .inspect_ok(move |chunk| {
                                if keep {
                                    tee.lock().unwrap_or_else(|e| e.into_inner()).push(chunk.clone());
                                }
                            })
                            .map_err(move |e| std::io::Error::other(reader.describe(&e)))
                            .boxed()
                    }
                };
                let bytes = SyncIoBridge::new(StreamReader::new(chunks));
                let (context, known, name) = (source.clone(), names.clone(), name.clone());
                let mut so_far = std::mem::take(&mut seen);
                let scanned = tokio::task::spawn_blocking(move || {
                    scan(bytes, &name, &context.config, known.as_deref(), &mut so_far).map(|header| (header, so_far))
                });
                let typed = scanned.await??;
                let read = std::mem::take(&mut *read.lock().unwrap_or_else(|e| e.into_inner()));
                // Kept only when read whole: a pass that stopped after the header read only a part.
                if keep && in_memory.is_none() && read.iter().map(|chunk| chunk.len() as u64).sum::<u64>() == size {
                    kept.insert(found.meta.location.clone(), read);
                }
                typed
            }
        };
        if let Some(chunks) = in_memory {
            kept.insert(found.meta.location.clone(), chunks);
        }
        seen = scanned;
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

/// Objects of at least this size are typed in parts at once, one per core (when not kept).
const PARTS_FROM_BYTES: u64 = 16 << 20;

/// Types one large object in parts read at once, one per core, each part a byte range under
/// the splits' line rule (a line belongs to the part it starts in) with the object's header in
/// front: the counts of every part together are the counts of the whole, whatever the order.
/// A part past the start cannot tell whether it starts inside a quoted field, so when any of
/// them meets a quote character the result is dropped (`None`) and the object is typed in one
/// pass from its start.
async fn scan_parts(
    source: &Arc<SourceContext>,
    url: &ObjectUrl,
    found: &FoundObject,
    name: &str,
    known: Option<Vec<String>>,
    seen: &[Seen],
) -> anyhow::Result<Option<(Vec<String>, Vec<Seen>)>> {
    let header = url.read_first_line(found).await?;
    let open = |range: Range<u64>| {
        let reader = url.clone();
        url.read_range(found.clone(), range).map_err(move |e| std::io::Error::other(reader.describe(&e))).boxed()
    };
    scan_parts_of(source, found.meta.size, header, open, name, known, seen).await
}

/// Whether typing `found` in parts can pay: several cores, and a column to type (its header,
/// the first line, names one not declared).
async fn worth_parts(
    source: &Arc<SourceContext>,
    url: &ObjectUrl,
    found: &FoundObject,
    name: &str,
    known: &Option<Vec<String>>,
) -> anyhow::Result<bool> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Ok(false);
    }
    let header = url.read_first_line(found).await?;
    let config = &source.config;
    let mut csv = csv::ReaderBuilder::new().delimiter(config.delimiter as u8).from_reader(&header[..]);
    let names = self::header(&mut csv, name, config, known.as_deref())?;
    Ok(!names.is_empty() && !names.iter().all(|column| config.columns.contains_key(column)))
}

/// [`scan_parts`] of an object held in memory (`chunks`, as the typing pass kept them).
async fn scan_kept_parts(
    source: &Arc<SourceContext>,
    chunks: &[Bytes],
    name: &str,
    known: Option<Vec<String>>,
    seen: &[Seen],
) -> anyhow::Result<Option<(Vec<String>, Vec<Seen>)>> {
    let size = chunks.iter().map(|chunk| chunk.len() as u64).sum();
    let header = Bytes::from(first_line(super::from_memory(chunks.to_vec(), 0)).await?);
    let open = |range: Range<u64>| super::from_memory(chunks.to_vec(), range.start).boxed();
    scan_parts_of(source, size, header, open, name, known, seen).await
}

/// The parts of an object of `size` bytes with the first line `header`, each read from what
/// `open` gives for its range (the bytes from the range's start on).
async fn scan_parts_of(
    source: &Arc<SourceContext>,
    size: u64,
    header: Bytes,
    open: impl Fn(Range<u64>) -> BoxStream<'static, std::io::Result<Bytes>>,
    name: &str,
    known: Option<Vec<String>>,
    seen: &[Seen],
) -> anyhow::Result<Option<(Vec<String>, Vec<Seen>)>> {
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if parts < 2 {
        return Ok(None);
    }
    let config = &source.config;
    let mut csv = csv::ReaderBuilder::new().delimiter(config.delimiter as u8).from_reader(&header[..]);
    let names = self::header(&mut csv, name, config, known.as_deref())?;
    if names.is_empty() || names.iter().all(|column| config.columns.contains_key(column)) {
        return Ok(None); // nothing to type: the header is all one pass reads
    }
    let mut tasks = Vec::new();
    for part in 0..parts {
        let range = size * part / parts..size * (part + 1) / parts;
        let chunks = open(range.clone());
        let data =
            super::splits::SplitReader::new(SyncIoBridge::new(StreamReader::new(chunks)), &range, Arc::default());
        let quoted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let data = Quotes { inner: data, seen: quoted.clone(), watch: part > 0 };
        let front = if part == 0 { Bytes::new() } else { header.clone() };
        let (context, known, name) = (source.clone(), known.clone(), name.to_string());
        let mut so_far = seen.to_vec();
        tasks.push(tokio::task::spawn_blocking(move || {
            let bytes = std::io::Cursor::new(front).chain(data);
            let header = scan(bytes, &name, &context.config, known.as_deref(), &mut so_far)?;
            anyhow::Ok((header, so_far, quoted.load(std::sync::atomic::Ordering::Relaxed)))
        }));
    }
    let mut merged: Option<(Vec<String>, Vec<Seen>)> = None;
    let mut quoted = false;
    for task in tasks {
        let (header, part, saw_quote) = task.await??;
        quoted |= saw_quote;
        merged = Some(match merged {
            None => (header, part),
            Some((header, mut all)) => {
                all.resize(all.len().max(part.len()), Seen::default());
                for (all, part) in all.iter_mut().zip(part) {
                    all.merge(part);
                }
                (header, all)
            }
        });
    }
    if quoted {
        tracing::debug!("{name}: a quote character past the object's start: typed in one pass");
        return Ok(None);
    }
    Ok(merged)
}

/// A reader that notes whether a quote character went through it (when `watch`).
struct Quotes<R> {
    inner: R,
    seen: Arc<std::sync::atomic::AtomicBool>,
    watch: bool,
}

impl<R: Read> Read for Quotes<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.watch && memchr::memchr(b'"', &buf[..n]).is_some() {
            self.seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
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
pub(super) fn header<R: Read>(
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

    proptest! {
        #[test]
        fn the_fast_path_agrees_on_numbers(field in "[+-]?[0-9]{0,22}(\\.[0-9]{0,4})?[e ]?") {
            let (fast, slow) = both_ways(&field);
            prop_assert_eq!(fast, slow);
        }
    }
}
