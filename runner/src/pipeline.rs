//! Builds the steps a spec declares, wires them with bounded channels, runs them, and reports.
//!
//! Two phases:
//! - [`Plan::new`] checks everything that can be checked before data flows: each built-in
//!   step's config, each plugin's file, component type, step kind and contract version. This is
//!   all `runner validate` does, and its errors are spec errors.
//! - [`Plan::run`] opens the steps and streams batches: source → transforms → sink, each stage
//!   a task, joined by channels of [`CHANNEL_BATCHES`] batches. A slow stage makes the ones
//!   before it wait (backpressure), so memory stays bounded by the batches in flight.
//!
//! This module knows the step traits, not the concrete steps: `builtin` and `plugin` build them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::builtin::Builtin;
use crate::object_url::{ObjectUrl, S3Options, describe_error};
use crate::plugin::{
    AssetBytes, ComponentCache, LoadedPlugin, PluginRuntime, PluginSink, PluginSource, PluginTransform,
};
use crate::report::{Counts, PluginLoad, RunReport, StepStats};
use crate::spec::{Implementation, Spec, SpecError, StepSpec};
use crate::step::{Sink, Source, Transform};

/// Batches buffered between two stages.
pub const CHANNEL_BATCHES: usize = 2;

/// Where plugins are found and compiled components cached; from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directories searched for `plugin = "name"`, before the spec's `plugin_dir`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The compiled-component cache.
    pub cache: Option<PathBuf>,
}

/// A checked pipeline, ready to run.
pub struct Plan {
    pub spec: Spec,
    pub steps: Vec<PlannedStep>,
    /// How to reach `s3://` URLs (the spec's `[s3]` table).
    pub s3: S3Options,
    runtime: Option<Arc<PluginRuntime>>,
}

pub struct PlannedStep {
    pub spec: StepSpec,
    pub implementation: PlannedImplementation,
}

pub enum PlannedImplementation {
    Builtin(Builtin),
    Plugin {
        plugin: LoadedPlugin,
        /// The step's `config` table as JSON.
        config: String,
        /// Asset name → URL, fetched when the step opens.
        assets: BTreeMap<String, String>,
    },
}

impl PlannedStep {
    /// `csv`, or `plugin derive.wasm`.
    pub fn label(&self) -> String {
        match (&self.implementation, &self.spec.implementation) {
            (PlannedImplementation::Plugin { plugin, .. }, _) => format!("plugin {}", plugin.file_name()),
            (_, Implementation::Builtin(kind)) => kind.clone(),
            (_, Implementation::Plugin(name)) => name.clone(),
        }
    }
}

impl Plan {
    /// Checks every step; loads (compiles or fetches from the cache) every plugin.
    pub fn new(spec: Spec, options: &Options) -> Result<Plan, SpecError> {
        let s3 = spec.s3()?;
        let mut runtime: Option<Arc<PluginRuntime>> = None;
        let mut steps = Vec::new();
        for step in spec.steps() {
            let assets = spec.assets(step)?;
            let implementation = match &step.implementation {
                Implementation::Builtin(_) if !assets.is_empty() => {
                    return Err(spec.step_error(step, "`assets` are for plugins; built-in steps take none"));
                }
                Implementation::Builtin(kind) => PlannedImplementation::Builtin(Builtin::plan(&spec, step, kind)?),
                Implementation::Plugin(name) => {
                    let path = resolve_plugin(&spec, step, name, &options.plugin_dirs)?;
                    let runtime = match &runtime {
                        Some(r) => r,
                        None => runtime
                            .insert(Arc::new(PluginRuntime::new(ComponentCache::new(options.cache.clone())).map_err(
                                |e| spec.step_error(step, format!("cannot start the plugin engine: {e:#}")),
                            )?)),
                    };
                    tracing::debug!(step = %step.name, "loading plugin {}", path.display());
                    let plugin = runtime.load(&path).map_err(|e| spec.step_error(step, format!("{e:#}")))?;
                    plugin.expect_role(step.role).map_err(|e| spec.step_error(step, e))?;
                    let config = spec.config_json(step)?;
                    PlannedImplementation::Plugin { plugin, config, assets }
                }
            };
            steps.push(PlannedStep { spec: step.clone(), implementation });
        }
        Ok(Plan { spec, steps, s3, runtime })
    }

    /// Opens every step and streams all data from the source to the sink.
    pub async fn run(self) -> RunReport {
        let started = Instant::now();
        let pipeline = self.spec.name();
        let mut steps: Vec<StepStats> = self.steps.iter().map(PlannedStep::stats).collect();
        let error = self.stream(&mut steps).await.err();
        RunReport { pipeline, steps, elapsed: started.elapsed(), error }
    }

    /// Opens only the source and reads its first batch: how `runner lookup` learns the types.
    pub async fn first_batch(self) -> anyhow::Result<Option<Batch>> {
        let Plan { spec, steps, s3, runtime } = self;
        let context = OpenContext { spec: &spec, s3: &s3, runtime: runtime.as_deref() };
        let source = steps.into_iter().next().expect("a plan has a source");
        let name = source.spec.name.clone();
        open_source(&context, source).await?.next_batch().await.with_context(|| format!("step `{name}`"))
    }

    async fn stream(self, stats: &mut [StepStats]) -> anyhow::Result<()> {
        let Plan { spec, steps, s3, runtime } = self;
        let context = OpenContext { spec: &spec, s3: &s3, runtime: runtime.as_deref() };
        let mut planned = steps.into_iter();
        let first = planned.next().expect("a plan has a source");
        let last = planned.next_back().expect("a plan has a sink");

        let source = open_source(&context, first).await?;
        let mut transforms = Vec::new();
        for step in planned {
            transforms.push(open_transform(&context, step).await?);
        }
        let sink = open_sink(&context, last).await?;

        // Set by the first stage that fails, before it hangs up: the stages after it then stop
        // without calling `finish`, so a sink never commits the output of a failed run.
        let failed = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
        tasks.push(tokio::spawn(source_stage(source, tx, failed.clone())));
        for transform in transforms {
            let (tx, next) = mpsc::channel(CHANNEL_BATCHES);
            tasks.push(tokio::spawn(transform_stage(transform, rx, tx, failed.clone())));
            rx = next;
        }
        tasks.push(tokio::spawn(sink_stage(sink, rx, failed)));

        let mut first_error = None;
        for (task, stats) in tasks.into_iter().zip(stats.iter_mut()) {
            let (counts, result) = task.await.context("a pipeline stage panicked")?;
            stats.counts = counts;
            if let Err(e) = result {
                first_error.get_or_insert(e.context(format!("step `{}`", stats.name)));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

type Opened<T> = anyhow::Result<Box<T>>;

/// What opening a step needs besides the step itself.
pub struct OpenContext<'a> {
    pub spec: &'a Spec,
    pub s3: &'a S3Options,
    runtime: Option<&'a PluginRuntime>,
}

async fn open_source(context: &OpenContext<'_>, step: PlannedStep) -> Opened<dyn Source> {
    let (spec, runtime) = (context.spec, context.runtime);
    let name = step.spec.name;
    let opened: Opened<dyn Source> = match step.implementation {
        PlannedImplementation::Builtin(b) => b.open_source(context).await,
        PlannedImplementation::Plugin { plugin, config, assets } => {
            let runtime = runtime.expect("plugins were loaded");
            let batch_rows = spec.pipeline.batch_rows.get();
            match fetch_assets(context, &assets).await {
                Ok(bytes) => PluginSource::open(runtime, &plugin, &name, &config, bytes, batch_rows)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Source>)
                    .map_err(|e| with_assets(e, &assets)),
                Err(e) => Err(e),
            }
        }
    };
    opened.with_context(|| format!("step `{name}`"))
}

async fn open_transform(context: &OpenContext<'_>, step: PlannedStep) -> Opened<dyn Transform> {
    let runtime = context.runtime;
    let name = step.spec.name;
    let opened: Opened<dyn Transform> = match step.implementation {
        PlannedImplementation::Builtin(b) => b.open_transform(context),
        PlannedImplementation::Plugin { plugin, config, assets } => {
            let runtime = runtime.expect("plugins were loaded");
            match fetch_assets(context, &assets).await {
                Ok(bytes) => PluginTransform::open(runtime, &plugin, &name, &config, bytes)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Transform>)
                    .map_err(|e| with_assets(e, &assets)),
                Err(e) => Err(e),
            }
        }
    };
    opened.with_context(|| format!("step `{name}`"))
}

async fn open_sink(context: &OpenContext<'_>, step: PlannedStep) -> Opened<dyn Sink> {
    let runtime = context.runtime;
    let name = step.spec.name;
    let opened: Opened<dyn Sink> = match step.implementation {
        PlannedImplementation::Builtin(b) => b.open_sink(context).await,
        PlannedImplementation::Plugin { plugin, config, assets } => {
            let runtime = runtime.expect("plugins were loaded");
            match fetch_assets(context, &assets).await {
                Ok(bytes) => PluginSink::open(runtime, &plugin, &name, &config, bytes)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Sink>)
                    .map_err(|e| with_assets(e, &assets)),
                Err(e) => Err(e),
            }
        }
    };
    opened.with_context(|| format!("step `{name}`"))
}

/// Reads every asset a plugin step declares, through the same stores as the data.
async fn fetch_assets(context: &OpenContext<'_>, assets: &BTreeMap<String, String>) -> anyhow::Result<AssetBytes> {
    let mut bytes = BTreeMap::new();
    for (name, url) in assets {
        let location =
            ObjectUrl::parse(url, context.spec.base_dir(), context.s3).with_context(|| format!("asset `{name}`"))?;
        let data = match location.store.get(&location.path).await {
            Ok(object) => object.bytes().await,
            Err(e) => Err(e),
        }
        .map_err(|e| anyhow::anyhow!("asset `{name}` ({location}): {}", describe_error(&e)))?;
        bytes.insert(name.clone(), Arc::new(data.to_vec()));
    }
    Ok(Arc::new(bytes))
}

/// A plugin that fails to open often fails on an asset: say where each one came from.
fn with_assets(error: anyhow::Error, assets: &BTreeMap<String, String>) -> anyhow::Error {
    if assets.is_empty() {
        return error;
    }
    let list: Vec<String> = assets.iter().map(|(name, url)| format!("{name} = {url}")).collect();
    anyhow::anyhow!("{error:#} (assets: {})", list.join(", "))
}

/// Finds the file of `plugin = "name"`: a path (has a `/` or ends in `.wasm`) is taken relative
/// to the spec; a bare name is looked up as `name.wasm` (or with `-` as `_`, as Cargo names
/// its outputs) in the `--plugin-dir` directories, then in the spec's `plugin_dir`.
fn resolve_plugin(spec: &Spec, step: &StepSpec, name: &str, plugin_dirs: &[PathBuf]) -> Result<PathBuf, SpecError> {
    if name.contains('/') || name.ends_with(".wasm") {
        let path = spec.base_dir().join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(spec.step_error(step, format!("plugin file {} not found", path.display())))
        };
    }
    let mut dirs: Vec<PathBuf> = plugin_dirs.to_vec();
    if let Some(dir) = &spec.pipeline.plugin_dir {
        dirs.push(spec.base_dir().join(dir));
    }
    if dirs.is_empty() {
        return Err(spec.step_error(
            step,
            format!("cannot find plugin `{name}`: no plugin directory (set `plugin_dir` under [pipeline], pass --plugin-dir, or give a path to the .wasm file)"),
        ));
    }
    let files = [format!("{name}.wasm"), format!("{}.wasm", name.replace('-', "_"))];
    for dir in &dirs {
        for file in &files {
            let path = dir.join(file);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(spec.step_error(step, format!("plugin `{name}` not found: no {} in {}", files[0], looked.join(", "))))
}

async fn source_stage(mut source: Box<dyn Source>, tx: mpsc::Sender<Batch>, failed: Arc<AtomicBool>) -> StageResult {
    let mut counts = Counts::default();
    let result = async {
        loop {
            let started = Instant::now();
            let batch = source.next_batch().await;
            counts.busy += started.elapsed();
            let Some(batch) = batch? else { return Ok(()) };
            counts.batches += 1;
            counts.rows_out += batch.rows() as u64;
            if tx.send(batch).await.is_err() {
                return Ok(()); // downstream stopped; it reports why
            }
        }
    }
    .await;
    stage_done(counts, result, &failed)
}

async fn transform_stage(
    mut transform: Box<dyn Transform>,
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Batch>,
    failed: Arc<AtomicBool>,
) -> StageResult {
    let mut counts = Counts::default();
    let result = async {
        while let Some(batch) = rx.recv().await {
            counts.batches += 1;
            counts.rows_in += batch.rows() as u64;
            let started = Instant::now();
            let output = transform.process(batch).await;
            counts.busy += started.elapsed();
            let output = output?;
            counts.rows_out += output.rows() as u64;
            if tx.send(output).await.is_err() {
                return Ok(());
            }
        }
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let started = Instant::now();
        let rest = transform.finish().await;
        counts.busy += started.elapsed();
        if let Some(output) = rest? {
            counts.rows_out += output.rows() as u64;
            let _ = tx.send(output).await;
        }
        Ok(())
    }
    .await;
    stage_done(counts, result, &failed)
}

async fn sink_stage(mut sink: Box<dyn Sink>, mut rx: mpsc::Receiver<Batch>, failed: Arc<AtomicBool>) -> StageResult {
    let mut counts = Counts::default();
    let result = async {
        while let Some(batch) = rx.recv().await {
            counts.batches += 1;
            let rows = batch.rows() as u64;
            counts.rows_in += rows;
            let started = Instant::now();
            let written = sink.write(batch).await;
            counts.busy += started.elapsed();
            written?;
            counts.rows_out += rows;
        }
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let started = Instant::now();
        let finished = sink.finish().await;
        counts.busy += started.elapsed();
        finished
    }
    .await;
    stage_done(counts, result, &failed)
}

type StageResult = (Counts, anyhow::Result<()>);

fn stage_done(counts: Counts, result: anyhow::Result<()>, failed: &AtomicBool) -> StageResult {
    if result.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    (counts, result)
}

impl PlannedStep {
    /// Counters for this step, zero until it runs.
    fn stats(&self) -> StepStats {
        StepStats {
            name: self.spec.name.clone(),
            role: self.spec.role,
            label: self.label(),
            plugin: match &self.implementation {
                PlannedImplementation::Plugin { plugin, .. } => {
                    Some(PluginLoad { cache: plugin.cache.to_string(), load_time: plugin.load_time, size: plugin.size })
                }
                PlannedImplementation::Builtin(_) => None,
            },
            counts: Counts::default(),
        }
    }
}
