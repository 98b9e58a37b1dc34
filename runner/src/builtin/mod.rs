//! Steps built into the host, one file each, and the registry that maps a spec's `kind` to them.
//!
//! | role   | kind    | file              |
//! |--------|---------|-------------------|
//! | source | `csv`   | `csv_source.rs`   |
//! | transform | `row-key` | `row_key.rs`   |
//! | sink   | `csv`   | `file_sink.rs`    |
//! | sink   | `jsonl` | `file_sink.rs`    |
//! | sink   | `redis` | `redis_sink.rs`   |
//! | sink   | `discard` | `discard_sink.rs` |
//!
//! `dead_letter.rs` holds the dead letters any step's `on_error = "dead-letter"` writes to.
//!
//! A step is *planned* first (its config decoded and checked: what `runner validate` does) and
//! *opened* when the run starts.

pub mod csv_source;
pub mod dead_letter;
pub mod discard_sink;
pub mod file_sink;
pub mod redis_sink;
pub mod row_key;

use crate::object_url::ObjectUrl;
use crate::spec::{Role, Spec, SpecError, StepSpec};
use crate::step::{Shard, Sink, Source, StepContext, Transform};
use csv_source::{CsvSource, CsvSourceConfig, SourceContext};
use discard_sink::{DiscardConfig, DiscardSink};
use file_sink::{FileSink, FileSinkConfig, Format};
use redis_sink::{RedisSink, RedisSinkConfig};
use row_key::{RowKey, RowKeyConfig};

/// The built-in kinds for each role, for `--help` and error messages.
pub fn kinds(role: Role) -> &'static [&'static str] {
    match role {
        Role::Source => &["csv"],
        Role::Transform => &["row-key"],
        Role::Sink => &["csv", "jsonl", "redis", "discard"],
    }
}

/// A built-in step with its decoded config, ready to open (as often as it has workers).
#[derive(Debug, Clone)]
pub enum Builtin {
    CsvSource(CsvSourceConfig),
    RowKey(RowKeyConfig),
    FileSink(FileSinkConfig, Format),
    Redis(RedisSinkConfig),
    Discard(DiscardConfig),
}

impl Builtin {
    /// Decodes and checks the config of built-in step `kind` in the role `step.role`, for a
    /// run of `shard`.
    pub fn plan(spec: &Spec, step: &StepSpec, kind: &str, shard: Shard) -> Result<Builtin, SpecError> {
        let file_sink = |format| {
            let config: FileSinkConfig = spec.decode_config(step)?;
            config.check(shard).map_err(|e| spec.step_error(step, e))?;
            Ok::<_, SpecError>(Builtin::FileSink(config, format))
        };
        Ok(match (step.role, kind) {
            (Role::Source, "csv") => Builtin::CsvSource(spec.decode_config(step)?),
            (Role::Transform, "row-key") => Builtin::RowKey(spec.decode_config(step)?),
            (Role::Sink, "csv") => file_sink(Format::Csv)?,
            (Role::Sink, "jsonl") => file_sink(Format::JsonLines)?,
            (Role::Sink, "redis") => {
                let config: RedisSinkConfig = spec.decode_config(step)?;
                config.check().map_err(|e| spec.step_error(step, e))?;
                Builtin::Redis(config)
            }
            (Role::Sink, "discard") => Builtin::Discard(spec.decode_config(step)?),
            (role, kind) => {
                let known = kinds(role).join(", ");
                return Err(spec.step_error(step, format!("unknown {role} kind `{kind}` (built-in {role}s: {known})")));
            }
        })
    }

    /// The file or object this step writes, if it writes one (a file sink, not to `-`).
    pub fn output(&self) -> Option<&str> {
        match self {
            Builtin::FileSink(config, _) if config.url != "-" => Some(&config.url),
            _ => None,
        }
    }

    /// Opens a source; the context's policy says what to do with the rows it cannot read.
    pub async fn open_source(&self, context: &StepContext) -> anyhow::Result<Box<dyn Source>> {
        match self {
            Builtin::CsvSource(config) => {
                let url = ObjectUrl::parse(&config.url, &context.base_dir, &context.s3)?;
                let source = SourceContext {
                    config: config.clone(),
                    batch_rows: context.batch_rows,
                    step: context.step.clone(),
                    policy: context.policy.clone(),
                    shard: context.shard,
                };
                Ok(Box::new(CsvSource::open(source, url, context.progress.clone()).await?))
            }
            other => unreachable!("{other:?} is not a source: `plan` checks roles"),
        }
    }

    pub fn open_transform(&self, _context: &StepContext) -> anyhow::Result<Box<dyn Transform>> {
        match self {
            Builtin::RowKey(config) => Ok(Box::new(RowKey::new(config.clone()))),
            other => unreachable!("{other:?} is not a transform: `plan` checks roles"),
        }
    }

    pub async fn open_sink(&self, context: &StepContext) -> anyhow::Result<Box<dyn Sink>> {
        match self {
            Builtin::FileSink(config, format) => Ok(Box::new(FileSink::open(config.clone(), *format, context).await?)),
            Builtin::Redis(config) => Ok(Box::new(RedisSink::open(config.clone()).await?)),
            Builtin::Discard(_) => Ok(Box::new(DiscardSink)),
            other => unreachable!("{other:?} is not a sink: `plan` checks roles"),
        }
    }
}
