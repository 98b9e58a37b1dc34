//! `kind = "csv"` and `kind = "jsonl"` sinks: write rows to a file (local or on S3) or standard
//! output.
//!
//! ```toml
//! [sink]
//! kind = "csv"                       # or "jsonl": one JSON object per line
//! config = { url = "out/scored.csv" } # a path relative to the spec, file:///..., s3://..., or "-"
//! # config = { url = "s3://out/scores/part-{shard}.csv" }   # one part per shard
//! ```
//!
//! Output appears only when the run succeeds: a local file is written under a temporary name
//! next to its destination and renamed into place by `finish`; an S3 object is a multipart
//! upload that `finish` completes (parts of 8 MiB as they fill, a few in flight), and that a
//! failed run aborts. So a failed run never leaves a truncated file where a complete one is
//! expected. `{shard}` in the URL is the shard's index (`0` in a run of one shard).
//! Floats are written as Python writes them (`5.0`, `1e-05`), so they read back as floats; a
//! null is an empty CSV field or a JSON `null`; NaN and infinities are `null` in JSON.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde::Deserialize;

use crate::batch::{Batch, TextStyle, Values};
use crate::format::PythonFloats;
use crate::object_url::{ObjectUrl, local_path};
use crate::step::{Sink, StepContext};
use object_store::{ObjectStoreExt, WriteMultipart};

/// The `config` table of a `csv` or `jsonl` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// `url = "out/scored.csv"`: a path relative to the spec file, `file:///...`,
    /// `s3://bucket/key`, or `-` for standard output; `{shard}` is the shard's index.
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
    /// An object store destination: its upload (rows go through `out`, a buffer, into it).
    upload: Option<Upload>,
    /// The column names of the first batch; later batches must match.
    header: Option<Vec<String>>,
    line: String,
    /// The texts of recent floats.
    floats: PythonFloats,
}

/// A multipart upload to an object store, and the rows formatted but not yet handed to it.
struct Upload {
    writer: Option<WriteMultipart>,
    buffer: SharedBuffer,
    shown: String,
}

/// The bytes the sink formats, shared between its writer (`out`) and the upload.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes per part of an upload (S3 needs at least 5 MiB, but for the last).
const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 4;

impl FileSink {
    pub async fn open(config: FileSinkConfig, format: Format, context: &StepContext) -> anyhow::Result<FileSink> {
        if config.url == "-" {
            return Ok(FileSink::new(format, Box::new(std::io::stdout()), None));
        }
        let url = context.shard.expand(&config.url);
        if url.starts_with("s3://") {
            let to = ObjectUrl::parse(&url, &context.base_dir, &context.s3)?;
            let upload =
                to.store.put_multipart(&to.path).await.map_err(|e| anyhow::anyhow!("{to}: {}", to.describe(&e)))?;
            let buffer = SharedBuffer::default();
            let mut sink = FileSink::new(format, Box::new(buffer.clone()), None);
            let writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            sink.upload = Some(Upload { writer: Some(writer), buffer, shown: to.to_string() });
            return Ok(sink);
        }
        let base_dir = context.base_dir.as_path();
        let config = FileSinkConfig { url };
        let path = local_path(&config.url, base_dir).context("a file sink writes a local file or an S3 object")?;
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
            upload: None,
            header: None,
            line: String::new(),
            floats: PythonFloats::default(),
        }
    }

    fn destination(&self) -> String {
        if let Some(upload) = &self.upload {
            return upload.shown.clone();
        }
        self.rename.as_ref().map_or_else(|| "standard output".into(), |(_, path)| path.display().to_string())
    }

    /// Hands what was formatted to the upload, if the destination is an object store, and
    /// waits while too many parts are in flight.
    async fn upload_buffered(&mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.destination()))?;
        let Some(upload) = &mut self.upload else { return Ok(()) };
        let bytes = std::mem::take(&mut *upload.buffer.0.lock().unwrap_or_else(|p| p.into_inner()));
        let writer = upload.writer.as_mut().expect("an upload is open until finish");
        writer.write(&bytes);
        let shown = upload.shown.clone();
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| anyhow::anyhow!("writing {shown}: {e}"))?;
        Ok(())
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
        self.write_rows(&batch).with_context(|| format!("writing {}", self.destination()))?;
        self.upload_buffered().await
    }

    /// Files keep the rows in the source's order.
    fn ordered(&self) -> bool {
        true
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.destination()))?;
        self.upload_buffered().await?;
        if let Some(upload) = &mut self.upload
            && let Some(writer) = upload.writer.take()
        {
            writer.finish().await.map_err(|e| anyhow::anyhow!("finishing {}: {e}", upload.shown))?;
        }
        if let Some((temporary, path)) = self.rename.take() {
            std::fs::rename(&temporary, &path)
                .with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))?;
        }
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Not finished: the run failed. Leave no partial file behind, and no upload open.
        if let Some((temporary, _)) = &self.rename {
            let _ = std::fs::remove_file(temporary);
        }
        if let Some(writer) = self.upload.as_mut().and_then(|u| u.writer.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}
