//! `kind = "csv"` and `kind = "jsonl"` sinks: write rows to a local file or standard output.
//!
//! ```toml
//! [sink]
//! kind = "csv"                       # or "jsonl": one JSON object per line
//! config = { url = "out/scored.csv" } # a path relative to the spec, file:///..., or "-"
//! ```
//!
//! A file is written under a temporary name next to its destination and renamed into place by
//! `finish`, so a failed run never leaves a truncated file where a complete one is expected.
//! Floats are written as Python writes them (`5.0`, `1e-05`), so they read back as floats; a
//! null is an empty CSV field or a JSON `null`; NaN and infinities are `null` in JSON.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde::Deserialize;

use crate::batch::{Batch, TextStyle, Values};
use crate::format::PythonFloats;
use crate::object_url::local_path;
use crate::step::Sink;

/// The `config` table of a `csv` or `jsonl` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// `url = "out/scored.csv"`: a path relative to the spec file, `file:///...`, or `-` for
    /// standard output.
    pub url: String,
}

/// The text format of a file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

pub struct FileSink {
    format: Format,
    out: Box<dyn Write + Send>,
    /// `(temporary, final)` paths of a file destination; `None` for standard output.
    rename: Option<(PathBuf, PathBuf)>,
    /// The column names of the first batch; later batches must match.
    header: Option<Vec<String>>,
    line: String,
    /// The texts of recent floats.
    floats: PythonFloats,
}

impl FileSink {
    pub fn open(config: FileSinkConfig, format: Format, base_dir: &Path) -> anyhow::Result<FileSink> {
        if config.url == "-" {
            return Ok(FileSink::new(format, Box::new(std::io::stdout()), None));
        }
        let path = local_path(&config.url, base_dir).context("a file sink writes a local file")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let file_name = path.file_name().with_context(|| format!("`{}` is not a file path", config.url))?;
        let temporary = path.with_file_name(format!(".{}.{}.partial", file_name.to_string_lossy(), std::process::id()));
        let file = File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
        Ok(FileSink::new(format, Box::new(file), Some((temporary, path))))
    }

    fn new(format: Format, out: Box<dyn Write + Send>, rename: Option<(PathBuf, PathBuf)>) -> FileSink {
        FileSink {
            format,
            out: Box::new(BufWriter::with_capacity(1 << 16, out)),
            rename,
            header: None,
            line: String::new(),
            floats: PythonFloats::default(),
        }
    }

    fn destination(&self) -> String {
        self.rename.as_ref().map_or_else(|| "standard output".into(), |(_, path)| path.display().to_string())
    }

    fn write_rows(&mut self, batch: &Batch) -> std::io::Result<()> {
        let columns = batch.columns();
        // JSON object keys, escaped once per batch rather than once per row.
        let keys: Vec<String> = match self.format {
            Format::JsonLines => {
                columns.iter().map(|c| serde_json::to_string(&c.name).expect("strings serialize")).collect()
            }
            Format::Csv => Vec::new(),
        };
        for row in 0..batch.rows() {
            self.line.clear();
            if self.format == Format::JsonLines {
                self.line.push('{');
            }
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    self.line.push(',');
                }
                if self.format == Format::JsonLines {
                    self.line.push_str(&keys[i]);
                    self.line.push(':');
                }
                if column.is_null(row) {
                    if self.format == Format::JsonLines {
                        self.line.push_str("null");
                    }
                    continue;
                }
                match (&column.values, self.format) {
                    (Values::F64(v), Format::JsonLines) if !v[row].is_finite() => self.line.push_str("null"),
                    (text @ (Values::String(_) | Values::Dictionary(_)), format) => {
                        let text = text.text(row).unwrap_or_default();
                        match format {
                            Format::Csv => push_csv_field(&mut self.line, text),
                            Format::JsonLines => {
                                self.line.push_str(&serde_json::to_string(text).expect("strings serialize"))
                            }
                        }
                    }
                    (values, _) => values.write_text(row, TextStyle::Plain, &mut self.floats, &mut self.line),
                }
            }
            if self.format == Format::JsonLines {
                self.line.push('}');
            }
            self.line.push('\n');
            self.out.write_all(self.line.as_bytes())?;
        }
        Ok(())
    }
}

/// Quotes a CSV field when it holds a delimiter, a quote or a line break (RFC 4180).
fn push_csv_field(line: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&field.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(field);
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: Batch) -> anyhow::Result<()> {
        let names: Vec<String> = batch.columns().iter().map(|c| c.name.clone()).collect();
        match &self.header {
            None => {
                if self.format == Format::Csv {
                    let mut line = String::new();
                    for (i, name) in names.iter().enumerate() {
                        if i > 0 {
                            line.push(',');
                        }
                        push_csv_field(&mut line, name);
                    }
                    line.push('\n');
                    self.out.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.destination()))?;
                }
                self.header = Some(names);
            }
            Some(header) if *header != names => {
                bail!("batch columns ({}) differ from the first batch's ({})", names.join(", "), header.join(", "))
            }
            Some(_) => {}
        }
        self.write_rows(&batch).with_context(|| format!("writing {}", self.destination()))
    }

    /// Files keep the rows in the source's order.
    fn ordered(&self) -> bool {
        true
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.destination()))?;
        if let Some((temporary, path)) = self.rename.take() {
            std::fs::rename(&temporary, &path)
                .with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))?;
        }
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Not finished: the run failed. Leave no partial file behind.
        if let Some((temporary, _)) = &self.rename {
            let _ = std::fs::remove_file(temporary);
        }
    }
}
