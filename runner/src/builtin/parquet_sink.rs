//! `kind = "parquet"` sink: writes the rows to a Parquet file, local or on S3.
//!
//! ```toml
//! [sink]
//! kind = "parquet"
//! config = { url = "s3://out/scores/part-{shard}.parquet", compression = "zstd", row_group_rows = 1048576 }
//! ```
//!
//! The schema is the first batch's: `f64` columns are `double`, `s64` `int64`, `bool`
//! `boolean`, `string` (dictionary-encoded or not) `utf8`, every column nullable; later batches
//! must have the same columns of the same types. Rows are encoded into row groups of
//! `row_group_rows` (default 1 Mi rows, pyarrow's default) compressed with `compression`
//! (`snappy`, the default as in pyarrow and Spark, `zstd`, or `none`). The file is written as the
//! other file sinks write theirs (`file_sink.rs`): under a temporary name renamed into place on
//! success, or as a multipart upload completed on success; a failed or stopped run leaves
//! nothing. `{shard}` in the URL is the shard's index, and a sharded run needs it.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

use super::file_sink::Output;
use super::{Kind, Opened, PlanContext};
use crate::batch::{Batch, Column, ColumnType, Values};
use crate::spec::Role;
use crate::step::{Acks, Sink, StepContext};

/// The `config` table of a `parquet` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// `url = "out/scored.parquet"`: a path relative to the spec file, `file:///...`, or
    /// `s3://bucket/key`; `{shard}` is the shard's index.
    pub url: String,
    /// `compression = "zstd"`: `snappy` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Codec,
    /// `row_group_rows = 1048576`: rows per row group (default 1 Mi).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
}

/// The compression of a Parquet sink's pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    Snappy,
    Zstd,
    None,
}

fn default_row_group_rows() -> usize {
    1 << 20
}

/// `kind = "parquet"` in a sink.
pub struct ParquetFile;

/// A Parquet file being written.
pub struct ParquetSink {
    output: Output,
    /// Until `commit` writes the footer.
    writer: Option<ArrowWriter<Box<dyn Write + Send>>>,
    properties: WriterProperties,
    /// The first batch's column names and types, once it came.
    schema: Option<(SchemaRef, Vec<ColumnType>)>,
    /// Where bytes go until the writer exists.
    pending: Option<Box<dyn Write + Send>>,
    rows: u64,
}

#[async_trait]
impl Kind for ParquetFile {
    const ROLE: Role = Role::Sink;
    const NAME: &'static str = "parquet";
    type Config = ParquetSinkConfig;

    fn check(config: &ParquetSinkConfig, plan: &PlanContext) -> Result<(), String> {
        if config.url == "-" {
            return Err("`url`: a Parquet file is not written to standard output; name a file or an object".into());
        }
        if config.row_group_rows == 0 {
            return Err("`row_group_rows` must be at least 1".into());
        }
        let as_file = super::file_sink::FileSinkConfig { url: config.url.clone() };
        as_file.check(plan.shard)
    }

    async fn open(config: &ParquetSinkConfig, context: &StepContext) -> anyhow::Result<Opened> {
        let (output, out) = Output::open(&config.url, context).await?;
        let compression = match config.compression {
            Codec::Snappy => Compression::SNAPPY,
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::None => Compression::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .build();
        let sink = ParquetSink { output, writer: None, properties, schema: None, pending: Some(out), rows: 0 };
        Ok(Opened::Sink(Box::new(sink)))
    }

    fn output(config: &ParquetSinkConfig) -> Option<&str> {
        Some(config.url.as_str())
    }
}

impl ParquetSink {
    /// The Arrow schema of the first batch, and its column types, checked by later batches.
    fn schema_of(batch: &Batch) -> (SchemaRef, Vec<ColumnType>) {
        let types: Vec<ColumnType> = batch.columns().iter().map(|c| c.values.column_type()).collect();
        let fields: Vec<Field> = batch
            .columns()
            .iter()
            .zip(&types)
            .map(|(column, ty)| {
                let data_type = match ty {
                    ColumnType::F64 => DataType::Float64,
                    ColumnType::S64 => DataType::Int64,
                    ColumnType::Bool => DataType::Boolean,
                    ColumnType::String => DataType::Utf8,
                };
                Field::new(&column.name, data_type, true)
            })
            .collect();
        (Arc::new(Schema::new(fields)), types)
    }

    fn destination(&self) -> String {
        self.output.destination()
    }
}

/// One batch column as an Arrow array of the schema's type (text as `utf8`: a dictionary is
/// spelled out; Parquet dictionary-encodes its pages itself).
fn array(column: &Column) -> ArrayRef {
    let valid = |row: usize| !column.is_null(row);
    match &column.values {
        Values::F64(v) => Arc::new(Float64Array::from_iter(v.iter().enumerate().map(|(i, &x)| valid(i).then_some(x)))),
        Values::S64(v) => Arc::new(Int64Array::from_iter(v.iter().enumerate().map(|(i, &x)| valid(i).then_some(x)))),
        Values::Bool(v) => Arc::new(BooleanArray::from_iter(v.iter().enumerate().map(|(i, &x)| valid(i).then_some(x)))),
        Values::String(v) => {
            Arc::new(StringArray::from_iter(v.iter().enumerate().map(|(i, x)| valid(i).then_some(x.as_str()))))
        }
        Values::Dictionary(d) => {
            let texts = d.keys.iter().enumerate().map(|(i, &k)| valid(i).then(|| d.values[k as usize].as_str()));
            Arc::new(StringArray::from_iter(texts))
        }
    }
}

#[async_trait]
impl Sink for ParquetSink {
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Acks> {
        if self.schema.is_none() {
            let (schema, types) = ParquetSink::schema_of(&batch);
            let out = self.pending.take().expect("the writer is made once");
            let writer = ArrowWriter::try_new(out, schema.clone(), Some(self.properties.clone()))
                .with_context(|| format!("writing {}", self.destination()))?;
            self.writer = Some(writer);
            self.schema = Some((schema, types));
        }
        let (schema, types) = self.schema.as_ref().expect("set above");
        let names = batch.columns().iter().map(|c| c.name.as_str());
        let same = names.eq(schema.fields().iter().map(|f| f.name().as_str()))
            && batch.columns().iter().map(|c| c.values.column_type()).eq(types.iter().copied());
        if !same {
            let have: Vec<String> =
                batch.columns().iter().map(|c| format!("{} {}", c.name, c.values.column_type())).collect();
            let first: Vec<String> =
                schema.fields().iter().zip(types).map(|(f, ty)| format!("{} {ty}", f.name())).collect();
            bail!("batch columns ({}) differ from the first batch's ({})", have.join(", "), first.join(", "));
        }
        let arrays: Vec<ArrayRef> = batch.columns().iter().map(array).collect();
        let record = RecordBatch::try_new(schema.clone(), arrays).context("a batch as Arrow")?;
        let destination = self.destination();
        let writer = self.writer.as_mut().expect("open until commit");
        writer.write(&record).with_context(|| format!("writing {destination}"))?;
        self.rows += batch.rows() as u64;
        // Row groups the writer finished are in its output: hand them to the upload.
        writer.inner_mut().flush().with_context(|| format!("writing {destination}"))?;
        self.output.drain().await?;
        Ok(Acks::default())
    }

    /// Files keep the rows in the source's order.
    fn ordered(&self) -> bool {
        true
    }

    /// Every row group written so far is stored; the last one and the footer wait for `commit`.
    async fn flush(&mut self) -> anyhow::Result<Acks> {
        self.output.flush().await?;
        Ok(Acks::default())
    }

    /// Writes the last row group and the footer, then renames the file into place or completes
    /// the upload. A run with no rows writes a file of no columns and no rows.
    async fn commit(&mut self) -> anyhow::Result<Acks> {
        let destination = self.destination();
        let writer = match self.writer.take() {
            Some(writer) => writer,
            None => {
                let out = self.pending.take().expect("the writer is made once");
                ArrowWriter::try_new(out, Arc::new(Schema::empty()), Some(self.properties.clone()))
                    .with_context(|| format!("writing {destination}"))?
            }
        };
        let mut out = writer.into_inner().with_context(|| format!("writing {destination}"))?;
        out.flush().with_context(|| format!("writing {destination}"))?;
        drop(out);
        self.output.commit().await?;
        Ok(Acks::rows(self.rows))
    }

    /// Leaves nothing: the temporary file removed, the upload aborted.
    async fn abort(&mut self) -> Acks {
        self.writer = None;
        self.output.abort().await;
        Acks::default()
    }
}
