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
//! grow with the object. Column types come from `columns` when declared, otherwise from the
//! first batch of rows, as pandas does: all integers → `s64`, all numbers → `f64`, all
//! `true`/`false` → `bool`, else `string`. An empty field is a null.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use futures::TryStreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::batch::{Batch, Column, ColumnType, Values};
use crate::object_url::{Found, ObjectUrl};
use crate::pipeline::policy::{Policy, Rejected};
use crate::pipeline::{Counting, Progress};
use crate::step::Source;

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
    /// are inferred from the first batch.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnType>,
}

fn comma() -> char {
    ','
}

/// What the reader needs besides the data: its config, its batch size, and its step's policy.
pub struct SourceContext {
    pub config: CsvSourceConfig,
    pub batch_rows: usize,
    pub step: String,
    pub policy: Policy,
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
        progress.expect_bytes(objects.iter().map(|found| found.meta.size).sum());
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            if let Err(e) = read_objects(source, url, objects, progress, tx.clone()).await {
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

/// The columns and types of the first object; every later object must have the same header.
type Schema = (Vec<String>, Vec<ColumnType>);

/// Reads every object the URL names, in order, one after the other.
async fn read_objects(
    source: SourceContext,
    url: ObjectUrl,
    objects: Vec<Found>,
    progress: Arc<Progress>,
    tx: mpsc::Sender<anyhow::Result<Batch>>,
) -> anyhow::Result<()> {
    if objects.is_empty() {
        tracing::warn!("{url}: no objects under this prefix: no rows read");
    }
    let source = Arc::new(source);
    let mut schema: Option<Schema> = None;
    for found in objects {
        let name = url.name_of(&found.meta.location);
        // The parser is synchronous; the bridge lets it pull bytes from the async stream.
        let reader = url.clone();
        let chunks = url.read_chunks(found).map_err(move |e| std::io::Error::other(reader.describe(&e)));
        let stream = StreamReader::new(chunks);
        let bytes = Counting::new(SyncIoBridge::new(stream), progress.clone());
        let (source, tx) = (source.clone(), tx.clone());
        let parsed = tokio::task::spawn_blocking(move || read_csv(bytes, &name, &source, schema, &tx));
        match parsed.await? {
            Ok(Some(read)) => schema = Some(read),
            Ok(None) => return Ok(()), // the pipeline stopped listening
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One object being read, and how its bad rows are handled.
struct Rows<'a, R> {
    csv: csv::Reader<R>,
    name: &'a str,
    names: Vec<String>,
    policy: &'a Policy,
    step: &'a str,
}

impl<R: Read> Rows<'_, R> {
    /// Reads the next well-formed record into `record`; `false` at the end. A record with the
    /// wrong number of fields is a bad row.
    fn next(&mut self, record: &mut csv::ByteRecord) -> anyhow::Result<bool> {
        loop {
            match self.csv.read_byte_record(record) {
                Ok(more) => return Ok(more),
                Err(e) => match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        let line = e.position().map_or(0, |p| p.line());
                        self.bad_row(line, record, format!("found {len} fields, but the header has {expected_len}"))?;
                    }
                    _ => return Err(csv_error(self.name, e)),
                },
            }
        }
    }

    /// Applies the step's policy to a row that cannot be read: the run fails (`fail`), or the
    /// row is counted (`skip`) and written to the dead letter (`dead-letter`).
    fn bad_row(&self, line: u64, record: &csv::ByteRecord, reason: String) -> anyhow::Result<()> {
        if !self.policy.tolerant() {
            bail!("{}:{line}: {reason}", self.name);
        }
        let text = |field: &[u8]| serde_json::Value::String(String::from_utf8_lossy(field).into_owned());
        let row = if record.len() == self.names.len() {
            serde_json::Value::Object(self.names.iter().cloned().zip(record.iter().map(text)).collect())
        } else {
            serde_json::Value::Array(record.iter().map(text).collect())
        };
        let rejected = Rejected { step: self.step.to_string(), reason, row, at: Some(format!("{}:{line}", self.name)) };
        // This runs on a blocking thread of the runtime: it may wait for the dead letter.
        tokio::runtime::Handle::current().block_on(self.policy.reject(vec![rejected]))
    }

    /// Appends a record to the batch being built, or applies the policy to it.
    fn push(&self, builder: &mut BatchBuilder<'_>, record: &csv::ByteRecord) -> anyhow::Result<()> {
        match builder.push(record) {
            Ok(()) => Ok(()),
            Err(reason) => self.bad_row(record.position().map_or(0, |p| p.line()), record, reason),
        }
    }
}

/// Parses one object, sending a batch every `batch_rows` rows (and what is left at its end).
/// Returns the schema, or `None` when the pipeline stopped listening.
fn read_csv(
    bytes: impl Read,
    name: &str,
    source: &SourceContext,
    schema: Option<Schema>,
    tx: &mpsc::Sender<anyhow::Result<Batch>>,
) -> anyhow::Result<Option<Schema>> {
    let (config, batch_rows) = (&source.config, source.batch_rows);
    let mut csv = csv::ReaderBuilder::new().delimiter(config.delimiter as u8).from_reader(bytes);
    let header = csv.byte_headers().map_err(|e| csv_error(name, e))?.clone();
    if header.is_empty() {
        tracing::warn!("{name}: empty object, no header row: no rows read");
        return Ok(schema);
    }
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for field in &header {
        let column = std::str::from_utf8(field)
            .with_context(|| format!("{name}:1: the header is not valid UTF-8"))?
            .trim()
            .to_string();
        if names.contains(&column) {
            bail!("{name}:1: duplicate column `{column}` in the header");
        }
        names.push(column);
    }
    for declared in config.columns.keys() {
        if !names.contains(declared) {
            bail!("{name}: `columns` declares `{declared}`, which is not in the header ({})", names.join(", "));
        }
    }
    if let Some((first_names, _)) = &schema
        && *first_names != names
    {
        bail!(
            "{name}:1: the header ({}) differs from the first object's ({})",
            names.join(", "),
            first_names.join(", ")
        );
    }

    let mut rows = Rows { csv, name, names: names.clone(), policy: &source.policy, step: &source.step };
    // The first batch is buffered to infer the types of undeclared columns.
    let mut first = Vec::with_capacity(batch_rows.min(65_536));
    let mut record = csv::ByteRecord::new();
    while first.len() < batch_rows && rows.next(&mut record)? {
        first.push(record.clone());
    }
    let types: Vec<ColumnType> = match schema {
        Some((_, types)) => types,
        None => names
            .iter()
            .enumerate()
            .map(|(i, column)| {
                config.columns.get(column).copied().unwrap_or_else(|| infer(first.iter().map(|r| &r[i])))
            })
            .collect(),
    };

    let mut builder = BatchBuilder::new(&names, &types, batch_rows);
    for record in &first {
        rows.push(&mut builder, record)?;
    }
    drop(first);
    loop {
        if builder.rows == batch_rows && tx.blocking_send(Ok(builder.finish()?)).is_err() {
            return Ok(None);
        }
        if !rows.next(&mut record)? {
            break;
        }
        rows.push(&mut builder, &record)?;
    }
    if builder.rows > 0 && tx.blocking_send(Ok(builder.finish()?)).is_err() {
        return Ok(None);
    }
    Ok(Some((names, types)))
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

/// The narrowest type that holds every non-empty value seen.
fn infer<'a>(values: impl Iterator<Item = &'a [u8]> + Clone) -> ColumnType {
    let present = values.filter_map(|v| std::str::from_utf8(v).ok().map(str::trim).filter(|v| !v.is_empty()));
    if present.clone().all(|v| v.parse::<i64>().is_ok()) && present.clone().next().is_some() {
        ColumnType::S64
    } else if present.clone().all(|v| v.parse::<f64>().is_ok()) {
        // Also the choice for a column with no values at all: pandas reads it as float NaN.
        ColumnType::F64
    } else if present.clone().all(|v| parse_bool(v).is_some()) {
        ColumnType::Bool
    } else {
        ColumnType::String
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Accumulates rows column by column.
struct BatchBuilder<'a> {
    names: &'a [String],
    columns: Vec<(Values, Vec<bool>, bool)>,
    rows: usize,
    capacity: usize,
}

impl<'a> BatchBuilder<'a> {
    fn new(names: &'a [String], types: &[ColumnType], capacity: usize) -> Self {
        let capacity = capacity.min(65_536);
        let columns =
            types.iter().map(|&t| (Values::with_capacity(t, capacity), Vec::with_capacity(capacity), false)).collect();
        BatchBuilder { names, columns, rows: 0, capacity }
    }

    /// Appends a record, or says why it cannot be read; a row that fails leaves no trace.
    fn push(&mut self, record: &csv::ByteRecord) -> Result<(), String> {
        let result = self.try_push(record);
        if result.is_err() {
            // Undo the columns this row already reached.
            for (values, nulls, _) in &mut self.columns {
                nulls.truncate(self.rows);
                match values {
                    Values::F64(v) => v.truncate(self.rows),
                    Values::S64(v) => v.truncate(self.rows),
                    Values::String(v) => v.truncate(self.rows),
                    Values::Bool(v) => v.truncate(self.rows),
                    Values::Dictionary(d) => d.keys.truncate(self.rows),
                }
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
            let null = text.is_empty();
            nulls.push(null);
            *any_null |= null;
            let bad = |ty: &str| {
                let shown: String = text.chars().take(40).collect();
                let more = if text.chars().count() > 40 { "..." } else { "" };
                format!("column `{}`: expected {ty}, found `{shown}{more}`", self.names[i])
            };
            let trimmed = text.trim();
            match values {
                Values::F64(v) => {
                    v.push(if null { 0.0 } else { trimmed.parse().map_err(|_| bad("a number (f64)"))? })
                }
                Values::S64(v) => {
                    v.push(if null { 0 } else { trimmed.parse().map_err(|_| bad("an integer (s64)"))? })
                }
                Values::Bool(v) => v.push(!null && parse_bool(trimmed).ok_or_else(|| bad("true or false"))?),
                Values::String(v) => v.push(text.to_string()),
                Values::Dictionary(_) => unreachable!("the builder's columns come from Values::with_capacity"),
            }
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
