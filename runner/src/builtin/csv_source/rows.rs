//! The second pass: an object's rows, parsed as they arrive, into batches of typed columns;
//! a row that cannot be read goes to the step's error policy, and an unclosed quote fails the
//! run as pandas does.

use std::io::Read;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail};

use super::SourceContext;
use super::splits::SplitBounds;
use super::typing::{Columns, Reading, header};
use crate::batch::{Batch, Column, Values};
use crate::builtin::SplitSender;
use crate::format::parse_bool;
use crate::step::{Policy, Rejected};

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
pub(super) fn read_csv(
    bytes: impl Read,
    name: &str,
    source: &SourceContext,
    schema: Columns,
    bounds: SplitBounds,
    split: usize,
    tx: &SplitSender,
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
            if tx.blocking_send(Ok((split, builder.finish()?))).is_err() {
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
    if builder.rows > 0 && tx.blocking_send(Ok((split, builder.finish()?))).is_err() {
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

/// `file:line: message`, without the csv crate's own position wording.
pub(super) fn csv_error(name: &str, e: csv::Error) -> anyhow::Error {
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
    use std::sync::Arc;

    use crate::batch::ColumnType;
    use crate::builtin::csv_source::CsvSourceConfig;
    use crate::step::Shard;

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
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let e = read_csv(text.as_bytes(), "x.csv", &source, schema, bounds, 0, &tx).unwrap_err();
        assert!(format!("{e:#}").contains("x.csv:3: a quoted field starting in this row is never closed"), "{e:#}");
        assert!(rx.try_recv().is_err(), "the batch holding the broken row was sent");
    }
}
