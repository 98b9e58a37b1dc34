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
//! Output appears only when the run succeeds (see `Sink`'s phases): a local file is written
//! under a temporary name next to its destination (`.NAME.PID.RANDOM.partial`, created
//! exclusively, so a link planted there is never followed) and renamed into place by `commit`;
//! an aborted run, or a rename that fails, removes it, and a temporary a killed run left behind
//! is removed by the next run that writes the same file. An S3 object is a multipart upload
//! (parts of 8 MiB as they fill, a few in flight) that `commit` completes and `abort` aborts.
//! So a failed or stopped run never leaves a truncated file where a complete one is expected.
//! `{shard}` in the URL is the shard's index (`0` in a run of one shard); a sharded run needs
//! it, or every shard would write the same file. Standard output is a stream: what was printed
//! stays printed. Floats are written as Python writes them (`5.0`, `1e-05`), so they read back
//! as floats; a null is an empty CSV field or a JSON `null`; NaN and infinities are `null` in
//! JSON.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde::Deserialize;

use super::{Kind, Opened, PlanContext};
use crate::batch::{Batch, TextStyle, Values};
use crate::format::PythonFloats;
use crate::object_url::{ObjectUrl, local_path};
use crate::spec::Role;
use crate::step::{Acks, Shard, Sink, StepContext};
use object_store::{ObjectStoreExt, WriteMultipart};

/// The `config` table of a `csv` or `jsonl` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// `url = "out/scored.csv"`: a path relative to the spec file, `file:///...`,
    /// `s3://bucket/key`, or `-` for standard output; `{shard}` is the shard's index.
    pub url: String,
}

impl FileSinkConfig {
    /// What can be checked before the run: a URL the sink can write, and one file per shard in
    /// a sharded run.
    pub fn check(&self, shard: Shard) -> Result<(), String> {
        if self.url == "-" {
            return Ok(());
        }
        match self.url.split_once("://") {
            None | Some(("file" | "s3", _)) => {}
            Some((scheme, _)) => {
                return Err(format!(
                    "`url`: `{scheme}://` is not a place a file sink writes (a path, file:// or s3://)"
                ));
            }
        }
        shard.check_output(&self.url)
    }
}

/// `kind = "csv"` in a sink.
pub struct CsvFile;

/// `kind = "jsonl"` in a sink.
pub struct JsonLinesFile;

macro_rules! file_kind {
    ($kind:ty, $name:literal, $format:expr) => {
        #[async_trait]
        impl Kind for $kind {
            const ROLE: Role = Role::Sink;
            const NAME: &'static str = $name;
            type Config = FileSinkConfig;

            fn check(config: &FileSinkConfig, plan: &PlanContext) -> Result<(), String> {
                config.check(plan.shard)
            }

            async fn open(config: &FileSinkConfig, context: &StepContext) -> anyhow::Result<Opened> {
                Ok(Opened::Sink(Box::new(FileSink::open(config.clone(), $format, context).await?)))
            }

            fn output(config: &FileSinkConfig) -> Option<&str> {
                Some(config.url.as_str()).filter(|url| *url != "-")
            }
        }
    };
}

file_kind!(CsvFile, "csv", Format::Csv);
file_kind!(JsonLinesFile, "jsonl", Format::JsonLines);

/// The text format of a file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

pub struct FileSink {
    format: Format,
    /// The writer into `output` (buffered).
    out: Box<dyn Write + Send>,
    output: Output,
    /// The column names of the first batch; later batches must match.
    header: Option<Vec<String>>,
    line: String,
    /// The texts of recent floats.
    floats: PythonFloats,
    /// Rows written so far: acknowledged when the output is committed.
    rows: u64,
}

/// A local file being written: the temporary file (removed when dropped) and its destination.
struct LocalFile {
    temporary: tempfile::TempPath,
    /// The temporary file, to make it durable before the rename.
    file: File,
    path: std::path::PathBuf,
}

/// A multipart upload to an object store, and the rows formatted but not yet handed to it.
struct Upload {
    writer: Option<WriteMultipart>,
    buffer: SharedBuffer,
    /// Where it goes, to name it (and describe its errors) in messages.
    to: ObjectUrl,
    shown: String,
}

impl Upload {
    /// A store error of this upload, in one line without credentials.
    fn error(&self, doing: &str, e: &object_store::Error) -> anyhow::Error {
        anyhow::anyhow!("{doing} {}: {}", self.shown, self.to.describe(e))
    }
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

/// Where a file sink's bytes go, invisible until `commit`: a temporary file beside the
/// destination (renamed into place), a multipart upload (completed), or standard output.
pub(super) struct Output {
    /// A local destination: its temporary file, renamed into place by `commit`.
    local: Option<LocalFile>,
    /// An object store destination: its upload (bytes go through the writer, a buffer, into it).
    upload: Option<Upload>,
}

impl Output {
    /// Opens `url` (a path, `file://`, `s3://`, or `-`; `{shard}` expanded), and the writer
    /// that fills it: buffered, flushed by [`Output::drain`].
    pub(super) async fn open(url: &str, context: &StepContext) -> anyhow::Result<(Output, Box<dyn Write + Send>)> {
        let buffered =
            |out: Box<dyn Write + Send>| -> Box<dyn Write + Send> { Box::new(BufWriter::with_capacity(1 << 16, out)) };
        if url == "-" {
            return Ok((Output { local: None, upload: None }, buffered(Box::new(std::io::stdout()))));
        }
        let url = context.shard.expand(url);
        if url.starts_with("s3://") {
            let to = ObjectUrl::parse(&url, &context.base_dir, &context.s3)?;
            let upload =
                to.store.put_multipart(&to.path).await.map_err(|e| anyhow::anyhow!("{to}: {}", to.describe(&e)))?;
            let buffer = SharedBuffer::default();
            let writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let upload = Upload { writer: Some(writer), buffer: buffer.clone(), shown: to.to_string(), to };
            return Ok((Output { local: None, upload: Some(upload) }, buffered(Box::new(buffer))));
        }
        let path = local_path(&url, &context.base_dir).context("a file sink writes a local file or an S3 object")?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
        let file_name = path.file_name().with_context(|| format!("`{url}` is not a file path"))?.to_string_lossy();
        remove_stale_temporaries(dir, &file_name);
        // Created exclusively under a name no one can guess, in the destination's directory (so
        // the rename stays on one file system); with the permissions of a new file (umask).
        let (prefix, pid) = (format!(".{file_name}."), std::process::id());
        let temporary = tempfile::Builder::new()
            .prefix(&format!("{prefix}{pid}."))
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        let (file, temporary) = temporary.into_parts();
        let synced = file.try_clone().with_context(|| format!("cannot open {}", temporary.display()))?;
        let local = LocalFile { temporary, file: synced, path };
        Ok((Output { local: Some(local), upload: None }, buffered(Box::new(file))))
    }

    /// How messages name it.
    pub(super) fn destination(&self) -> String {
        if let Some(upload) = &self.upload {
            return upload.shown.clone();
        }
        self.local.as_ref().map_or_else(|| "standard output".into(), |local| local.path.display().to_string())
    }

    /// Hands what the writer wrote (flushed first by the caller) to the upload, if the
    /// destination is an object store, and waits while too many parts are in flight.
    pub(super) async fn drain(&mut self) -> anyhow::Result<()> {
        let Some(upload) = &mut self.upload else { return Ok(()) };
        let bytes = std::mem::take(&mut *upload.buffer.0.lock().unwrap_or_else(|p| p.into_inner()));
        let writer = upload.writer.as_mut().expect("an upload is open until finish");
        writer.write(&bytes);
        let waited = writer.wait_for_capacity(PARTS_IN_FLIGHT).await;
        waited.map_err(|e| upload.error("writing", &e))
    }

    /// Drains, then waits for every part in flight: everything is stored, nothing visible.
    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        self.drain().await?;
        if let Some(upload) = &mut self.upload
            && let Some(writer) = upload.writer.as_mut()
        {
            let waited = writer.wait_for_capacity(0).await;
            waited.map_err(|e| upload.error("writing", &e))?;
        }
        Ok(())
    }

    /// Renames the file into place (after making it durable), or completes the upload; the
    /// writer has been flushed and dropped.
    pub(super) async fn commit(&mut self) -> anyhow::Result<()> {
        self.flush().await?;
        if let Some(upload) = &mut self.upload
            && let Some(writer) = upload.writer.take()
        {
            writer.finish().await.map_err(|e| upload.error("finishing", &e))?;
        }
        if let Some(LocalFile { temporary, file, path }) = self.local.take() {
            file.sync_all().with_context(|| format!("writing {}", temporary.display()))?;
            // A rename that fails drops the temporary path, which removes the file.
            temporary
                .persist(&path)
                .map_err(|e| anyhow::anyhow!("cannot move {} to {}: {}", e.path.display(), path.display(), e.error))?;
            // The rename survives a crash once its directory is on disk too. The file is in
            // place already: a directory that cannot be synced is worth a warning, not a failure.
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Err(e) = File::open(dir).and_then(|dir| dir.sync_all()) {
                tracing::warn!("{}: cannot sync its directory after the rename: {e}", path.display());
            }
        }
        Ok(())
    }

    /// Removes the temporary file, or aborts the upload (its parts are never an object).
    pub(super) async fn abort(&mut self) {
        self.local = None;
        if let Some(upload) = &mut self.upload
            && let Some(writer) = upload.writer.take()
            && let Err(e) = writer.abort().await
        {
            tracing::warn!(
                "aborting the upload of {}: {} (its parts are not an object; a bucket lifecycle rule for incomplete multipart uploads removes them)",
                upload.shown,
                upload.to.describe(&e)
            );
        }
    }
}

impl Drop for Output {
    /// Neither committed nor aborted (a task that panicked): the temporary file goes with
    /// `local`; an upload still open is aborted in the background.
    fn drop(&mut self) {
        if let Some(writer) = self.upload.as_mut().and_then(|u| u.writer.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

impl FileSink {
    pub async fn open(config: FileSinkConfig, format: Format, context: &StepContext) -> anyhow::Result<FileSink> {
        let (output, out) = Output::open(&config.url, context).await?;
        Ok(FileSink {
            format,
            out,
            output,
            header: None,
            line: String::new(),
            floats: PythonFloats::default(),
            rows: 0,
        })
    }

    fn destination(&self) -> String {
        self.output.destination()
    }

    /// Hands what was formatted to the destination.
    async fn upload_buffered(&mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.destination()))?;
        self.output.drain().await
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
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Acks> {
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
        self.rows += batch.rows() as u64;
        self.upload_buffered().await?;
        Ok(Acks::default())
    }

    /// Files keep the rows in the source's order.
    fn ordered(&self) -> bool {
        true
    }

    /// Everything written goes to the file or the upload (every full part stored), but nothing
    /// is visible yet. A part that failed fails here, so the run aborts the upload and says so.
    async fn flush(&mut self) -> anyhow::Result<Acks> {
        self.out.flush().with_context(|| format!("writing {}", self.destination()))?;
        self.output.flush().await?;
        Ok(Acks::default())
    }

    /// Renames the file into place (after making it durable), or completes the upload.
    async fn commit(&mut self) -> anyhow::Result<Acks> {
        self.out.flush().with_context(|| format!("writing {}", self.destination()))?;
        self.output.commit().await?;
        Ok(Acks::rows(self.rows))
    }

    /// Removes the temporary file, or aborts the upload (its parts are never an object).
    async fn abort(&mut self) -> Acks {
        self.output.abort().await;
        Acks::default()
    }
}

/// Removes the temporary files an earlier run writing `file_name` left in `dir` when it was
/// killed (`.NAME.PID.RANDOM.partial`, its process gone). One whose process still runs is left
/// alone; a file of another name is never touched.
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    let prefix = format!(".{file_name}.");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.strip_suffix(".partial"))
        else {
            continue;
        };
        let Some(pid) = rest.split_once('.').and_then(|(pid, _)| pid.parse::<i32>().ok()).filter(|&pid| pid > 0) else {
            continue;
        };
        if pid == std::process::id() as i32 || !process_exists(pid) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) => tracing::warn!("cannot remove {}, left by a killed run: {e}", entry.path().display()),
            }
        }
    }
    match removed.as_slice() {
        [] => {}
        [one] => tracing::info!("removed {}, left by a run that was killed", one.display()),
        [first, ..] => tracing::info!(
            "removed {} temporary files left by runs that were killed ({} and others)",
            removed.len(),
            first.display()
        ),
    }
}

/// Whether a process with this id runs on this machine (signal 0 checks without sending).
fn process_exists(pid: i32) -> bool {
    // SAFETY: `kill` with signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
