//! Steps built into the host, and the registry that maps a spec's `kind` to them.
//!
//! Each built-in kind is defined once, by an `impl Kind` beside its code: its role, its `kind`
//! name, its config type, what is checked before the run (what `runner validate` refuses), how
//! it opens, and for a source, how it divides its input among shards. A [`Registry`] holds the
//! kinds; the list of kinds in messages, planning, opening and `runner plan` all come from it,
//! so adding a kind is one `impl Kind` and one line in [`Registry::builtin`]
//! (docs/architecture.md, "Adding a built-in step").
//!
//! | role      | kind      | defined in        |
//! |-----------|-----------|-------------------|
//! | source    | `csv`     | `csv_source/`     |
//! | source    | `parquet` | `parquet_source/` |
//! | transform | `row-key` | `row_key.rs`      |
//! | sink      | `csv`     | `file_sink.rs`    |
//! | sink      | `jsonl`   | `file_sink.rs`    |
//! | sink      | `parquet` | `parquet_sink.rs` |
//! | sink      | `redis`   | `redis_sink.rs`   |
//! | sink      | `discard` | `discard_sink.rs` |
//!
//! `dead_letter.rs` holds the dead letters any step's `on_error = "dead-letter"` writes to.

pub mod csv_source;
pub mod dead_letter;
pub mod discard_sink;
pub mod file_sink;
pub mod parquet_sink;
pub mod parquet_source;
pub mod redis_sink;
pub mod row_key;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::spec::{Role, Spec, SpecError, StepSpec};
use crate::step::{Frame, Shard, Sink, Source, SourcePlan, SplitInfo, StepContext, Transform};

/// What planning a step knows besides its config: checks that depend on the run see it here.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanContext {
    /// The part of the input this run reads (`--shard I/N`): an output of a sharded run must
    /// be the shard's own.
    pub shard: Shard,
}

/// An opened built-in step, of the role its kind declares.
pub enum Opened {
    Source(Box<dyn Source>),
    Transform(Box<dyn Transform>),
    Sink(Box<dyn Sink>),
}

/// Each of `count` shards and the splits of the input it reads.
pub type Splits = Vec<(Shard, Vec<SplitInfo>)>;

/// A kind of built-in step, defined once (see the module's doc).
#[async_trait]
pub trait Kind: Send + Sync + 'static {
    /// The role the step plays.
    const ROLE: Role;
    /// Its `kind = "..."` in the spec.
    const NAME: &'static str;
    /// A source: how the original flow's pandas reads the same input (the row keys follow it).
    const FRAME: Frame = Frame::Csv;
    /// Its `config` table, decoded from the spec (errors located at their line).
    type Config: DeserializeOwned + fmt::Debug + Clone + Send + Sync + 'static;

    /// What serde cannot check, before anything runs: a config this refuses is a spec error
    /// (exit status 2, located at the step), in `runner validate` as in `runner run`.
    fn check(_config: &Self::Config, _plan: &PlanContext) -> Result<(), String> {
        Ok(())
    }

    /// Opens the step: an [`Opened`] of [`Kind::ROLE`].
    async fn open(config: &Self::Config, context: &StepContext) -> anyhow::Result<Opened>;

    /// The file or object the step writes, if it writes one: no two steps of a pipeline may
    /// write the same.
    fn output(_config: &Self::Config) -> Option<&str> {
        None
    }

    /// A source's splits for each of `count` shards, from a listing of its input (what
    /// `runner plan` prints); `None` when the source has no splits to show.
    async fn splits(_config: &Self::Config, _context: &StepContext, _count: u32) -> anyhow::Result<Option<Splits>> {
        Ok(None)
    }

    /// A source's input planned once for `count` shards (`runner plan --out`): every object
    /// with its version, the splits and their shards, the column types (a typing pass, if the
    /// kind needs one). A source opened with [`StepContext::input`] reads from it and lists
    /// nothing. `None`: the kind cannot be planned.
    async fn plan_input(
        _config: &Self::Config,
        _context: &StepContext,
        _count: u32,
    ) -> anyhow::Result<Option<SourcePlan>> {
        Ok(None)
    }

    /// A source's columns, from its header or schema, reading no rows (what `runner validate`
    /// checks the steps after it against); `None` when it cannot tell before it runs.
    async fn columns(_config: &Self::Config, _context: &StepContext) -> anyhow::Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// The columns the step needs in its input (a source: of its own columns, such as those it
    /// declares types for), which `runner validate` checks something before it provides.
    fn reads(_config: &Self::Config) -> Vec<String> {
        Vec::new()
    }

    /// A transform's output columns, given its input's; `None` when they are known only as it
    /// runs. By default it passes its input on as it is.
    fn output_columns(_config: &Self::Config, input: &[String]) -> Result<Option<Vec<String>>, String> {
        Ok(Some(input.to_vec()))
    }
}

/// The built-in kinds a plan can use: [`Registry::builtin`], to which a program embedding the
/// runner (or a test) may add its own with [`Registry::with`].
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<KindEntry>,
}

#[derive(Clone, Copy)]
struct KindEntry {
    role: Role,
    name: &'static str,
    plan: PlanFn,
}

/// How a kind plans a step: [`plan_kind`] for that kind.
type PlanFn = fn(&Spec, &StepSpec, &PlanContext) -> Result<Arc<dyn PlannedKind>, SpecError>;

impl Default for Registry {
    fn default() -> Registry {
        Registry::builtin()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds.iter().map(|k| format!("{} {}", k.role, k.name))).finish()
    }
}

impl Registry {
    /// Every kind built into the runner.
    pub fn builtin() -> Registry {
        Registry { kinds: Vec::new() }
            .with::<csv_source::CsvSource>()
            .with::<parquet_source::ParquetSource>()
            .with::<row_key::RowKey>()
            .with::<file_sink::CsvFile>()
            .with::<file_sink::JsonLinesFile>()
            .with::<parquet_sink::ParquetFile>()
            .with::<redis_sink::RedisSink>()
            .with::<discard_sink::DiscardSink>()
    }

    /// This registry and kind `K`, which replaces a kind of the same role and name.
    pub fn with<K: Kind>(mut self) -> Registry {
        self.kinds.retain(|k| (k.role, k.name) != (K::ROLE, K::NAME));
        self.kinds.push(KindEntry { role: K::ROLE, name: K::NAME, plan: plan_kind::<K> });
        self
    }

    /// The kinds of `role`, in the order they were added: for `--help` and messages.
    pub fn kinds(&self, role: Role) -> Vec<&'static str> {
        self.kinds.iter().filter(|k| k.role == role).map(|k| k.name).collect()
    }

    /// Decodes and checks the config of built-in step `kind` in the role `step.role`.
    pub fn plan(&self, spec: &Spec, step: &StepSpec, kind: &str, plan: &PlanContext) -> Result<Builtin, SpecError> {
        let Some(entry) = self.kinds.iter().find(|k| k.role == step.role && k.name == kind) else {
            let role = step.role;
            let known = self.kinds(role).join(", ");
            return Err(spec.step_error(step, format!("unknown {role} kind `{kind}` (built-in {role}s: {known})")));
        };
        Ok(Builtin { name: entry.name, planned: (entry.plan)(spec, step, plan)? })
    }
}

fn plan_kind<K: Kind>(spec: &Spec, step: &StepSpec, plan: &PlanContext) -> Result<Arc<dyn PlannedKind>, SpecError> {
    let config: K::Config = spec.decode_config(step)?;
    K::check(&config, plan).map_err(|e| spec.step_error(step, e))?;
    Ok(Arc::new(Planned::<K>(config)))
}

/// A built-in step with its decoded, checked config, ready to open (as often as it has
/// workers).
#[derive(Clone)]
pub struct Builtin {
    name: &'static str,
    planned: Arc<dyn PlannedKind>,
}

impl fmt::Debug for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.name, self.planned)
    }
}

impl Builtin {
    /// Its `kind`.
    pub fn kind(&self) -> &'static str {
        self.name
    }

    /// Its config, if it is a `C`: what `runner lookup` reads of the pipeline's steps.
    pub fn config<C: 'static>(&self) -> Option<&C> {
        self.planned.config().downcast_ref()
    }

    /// The file or object this step writes, if it writes one.
    pub fn output(&self) -> Option<&str> {
        self.planned.output()
    }

    /// A source: how pandas reads the same input.
    pub fn frame(&self) -> Frame {
        self.planned.frame()
    }

    /// A source's splits for each of `count` shards; `None` when it has none to show.
    pub async fn splits(&self, context: &StepContext, count: u32) -> anyhow::Result<Option<Splits>> {
        self.planned.splits(context, count).await
    }

    /// A source's input planned once for `count` shards; `None` when the kind cannot be planned.
    pub async fn plan_input(&self, context: &StepContext, count: u32) -> anyhow::Result<Option<SourcePlan>> {
        self.planned.plan_input(context, count).await
    }

    /// A source's columns, reading no rows; `None` when it cannot tell before it runs.
    pub async fn columns(&self, context: &StepContext) -> anyhow::Result<Option<Vec<String>>> {
        self.planned.columns(context).await
    }

    /// The columns the step needs in its input (for a source, of its own).
    pub fn reads(&self) -> Vec<String> {
        self.planned.reads()
    }

    /// A transform's output columns given its input's (`None`: known only as it runs), or why
    /// that input will not do.
    pub fn output_columns(&self, input: &[String]) -> Result<Option<Vec<String>>, String> {
        self.planned.output_columns(input)
    }

    /// Opens a source; the context's policy says what to do with the rows it cannot read.
    pub async fn open_source(&self, context: &StepContext) -> anyhow::Result<Box<dyn Source>> {
        match self.planned.open(context).await? {
            Opened::Source(source) => Ok(source),
            _ => unreachable!("{self:?} is not a source: the registry plans kinds by role"),
        }
    }

    pub async fn open_transform(&self, context: &StepContext) -> anyhow::Result<Box<dyn Transform>> {
        match self.planned.open(context).await? {
            Opened::Transform(transform) => Ok(transform),
            _ => unreachable!("{self:?} is not a transform: the registry plans kinds by role"),
        }
    }

    pub async fn open_sink(&self, context: &StepContext) -> anyhow::Result<Box<dyn Sink>> {
        match self.planned.open(context).await? {
            Opened::Sink(sink) => Ok(sink),
            _ => unreachable!("{self:?} is not a sink: the registry plans kinds by role"),
        }
    }
}

/// A kind's config, its kind forgotten: what [`Builtin`] holds.
trait PlannedKind: fmt::Debug + Send + Sync {
    fn config(&self) -> &dyn Any;
    fn output(&self) -> Option<&str>;
    fn frame(&self) -> Frame;
    fn open<'a>(&'a self, context: &'a StepContext) -> BoxFuture<'a, anyhow::Result<Opened>>;
    fn splits<'a>(&'a self, context: &'a StepContext, count: u32) -> BoxFuture<'a, anyhow::Result<Option<Splits>>>;
    fn columns<'a>(&'a self, context: &'a StepContext) -> BoxFuture<'a, anyhow::Result<Option<Vec<String>>>>;
    fn plan_input<'a>(
        &'a self,
        context: &'a StepContext,
        count: u32,
    ) -> BoxFuture<'a, anyhow::Result<Option<SourcePlan>>>;
    fn reads(&self) -> Vec<String>;
    fn output_columns(&self, input: &[String]) -> Result<Option<Vec<String>>, String>;
}

struct Planned<K: Kind>(K::Config);

impl<K: Kind> fmt::Debug for Planned<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<K: Kind> PlannedKind for Planned<K> {
    fn config(&self) -> &dyn Any {
        &self.0
    }

    fn output(&self) -> Option<&str> {
        K::output(&self.0)
    }

    fn frame(&self) -> Frame {
        K::FRAME
    }

    fn open<'a>(&'a self, context: &'a StepContext) -> BoxFuture<'a, anyhow::Result<Opened>> {
        K::open(&self.0, context)
    }

    fn splits<'a>(&'a self, context: &'a StepContext, count: u32) -> BoxFuture<'a, anyhow::Result<Option<Splits>>> {
        K::splits(&self.0, context, count)
    }

    fn columns<'a>(&'a self, context: &'a StepContext) -> BoxFuture<'a, anyhow::Result<Option<Vec<String>>>> {
        K::columns(&self.0, context)
    }

    fn plan_input<'a>(
        &'a self,
        context: &'a StepContext,
        count: u32,
    ) -> BoxFuture<'a, anyhow::Result<Option<SourcePlan>>> {
        K::plan_input(&self.0, context, count)
    }

    fn reads(&self) -> Vec<String> {
        K::reads(&self.0)
    }

    fn output_columns(&self, input: &[String]) -> Result<Option<Vec<String>>, String> {
        K::output_columns(&self.0, input)
    }
}

/// A built-in source's batches as its background task reads them, each with the index of the
/// split it comes from (among the splits the run reads), for [`Source::split`].
pub(crate) struct SplitBatches {
    rx: tokio::sync::mpsc::Receiver<anyhow::Result<(usize, crate::batch::Batch)>>,
    split: Option<usize>,
}

/// Where a source's background task sends its batches (and its error, if it fails).
pub(crate) type SplitSender = tokio::sync::mpsc::Sender<anyhow::Result<(usize, crate::batch::Batch)>>;

impl SplitBatches {
    /// A channel of `capacity` batches: the sender for the task, the receiver for the source.
    pub(crate) fn channel(capacity: usize) -> (SplitSender, SplitBatches) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (tx, SplitBatches { rx, split: None })
    }

    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<crate::batch::Batch>> {
        match self.rx.recv().await.transpose()? {
            Some((split, batch)) => {
                self.split = Some(split);
                Ok(Some(batch))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn split(&self) -> Option<usize> {
        self.split
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batch, Column, Values};
    use crate::step::Policy;
    use serde::Deserialize;
    use std::path::Path;

    /// A kind defined outside the registry's list, as docs/architecture.md shows: a transform
    /// that appends a column holding one text.
    struct Constant;

    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConstantConfig {
        column: String,
        text: String,
    }

    struct ConstantStep(ConstantConfig);

    #[async_trait]
    impl Transform for ConstantStep {
        async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch> {
            let values = Values::String(vec![self.0.text.clone(); batch.rows()]);
            let mut columns = batch.into_columns();
            columns.push(Column::new(self.0.column.clone(), values));
            Ok(Batch::new(columns)?)
        }
    }

    #[async_trait]
    impl Kind for Constant {
        const ROLE: Role = Role::Transform;
        const NAME: &'static str = "constant";
        type Config = ConstantConfig;

        fn check(config: &ConstantConfig, _plan: &PlanContext) -> Result<(), String> {
            if config.column.is_empty() { Err("`column` must name a column".into()) } else { Ok(()) }
        }

        async fn open(config: &ConstantConfig, _context: &StepContext) -> anyhow::Result<Opened> {
            Ok(Opened::Transform(Box::new(ConstantStep(config.clone()))))
        }
    }

    fn spec(config: &str) -> Spec {
        let text = format!(
            "[source]\nkind = \"csv\"\nconfig = {{ url = \"in.csv\" }}\n\n[[transform]]\nkind = \"constant\"\n\
             config = {config}\n\n[sink]\nkind = \"discard\"\n"
        );
        Spec::parse(Path::new("spec.toml"), &text).unwrap()
    }

    fn context() -> StepContext {
        StepContext {
            step: "constant".into(),
            base_dir: ".".into(),
            s3: Arc::default(),
            batch_rows: 10,
            progress: Arc::default(),
            policy: Policy::default(),
            shard: Shard::default(),
            frame: Frame::Csv,
            input: None,
        }
    }

    /// The registry picks up a kind from its `impl Kind` alone: listed, planned (its config
    /// decoded and checked, errors located), opened, and run; without it, the kind is unknown.
    #[tokio::test]
    async fn a_kind_is_one_impl() {
        let registry = Registry::builtin().with::<Constant>();
        assert_eq!(registry.kinds(Role::Transform), ["row-key", "constant"]);
        let spec = spec("{ column = \"note\", text = \"hi\" }");
        let step = spec.steps().nth(1).unwrap();
        let planned = registry.plan(&spec, step, "constant", &PlanContext::default()).unwrap();
        assert_eq!(planned.kind(), "constant");
        assert_eq!(planned.config::<ConstantConfig>().unwrap().text, "hi");
        let mut transform = planned.open_transform(&context()).await.unwrap();
        let batch = Batch::new(vec![Column::new("a", Values::S64(vec![1, 2]))]).unwrap();
        let out = transform.process(batch).await.unwrap();
        assert_eq!(out.column("note").unwrap().values.text(1), Some("hi"));

        let spec = self::spec("{ column = \"\", text = \"hi\" }");
        let e = registry.plan(&spec, spec.steps().nth(1).unwrap(), "constant", &PlanContext::default()).unwrap_err();
        assert!(e.to_string().contains("step `constant`: `column` must name a column"), "{e}");
        let spec = self::spec("{ colum = \"x\", text = \"hi\" }");
        let e = registry.plan(&spec, spec.steps().nth(1).unwrap(), "constant", &PlanContext::default()).unwrap_err();
        assert!(e.to_string().contains("spec.toml:7:"), "located at the config's line: {e}");

        let e = Registry::builtin().plan(&spec, spec.steps().nth(1).unwrap(), "constant", &PlanContext::default());
        let e = e.unwrap_err().to_string();
        assert!(e.contains("unknown transform kind `constant` (built-in transforms: row-key)"), "{e}");
    }
}
