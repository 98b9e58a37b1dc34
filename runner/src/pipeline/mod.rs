//! Builds the steps a spec declares, wires them with bounded channels, runs them, and reports.
//!
//! Two phases:
//! - [`Plan::new`] checks everything that can be checked before data flows: each built-in
//!   step's config, each plugin's file, component type, step kind and contract version. This is
//!   all `runner validate` does, and its errors are spec errors.
//! - [`Plan::run`] opens the steps and streams batches from the source through the transforms
//!   to the sink (see `stages`): a transform runs as several workers, each with its own
//!   instance, and every channel is bounded, so a slow stage makes the ones before it wait and
//!   memory stays bounded by the batches in flight, whatever the size of the input.
//!
//! - `open`: turning a planned step into running instances (assets fetched once per step).
//! - `stages`: the tasks that move batches, the order they keep, and how a failure stops them.
//! - `progress`: the progress line of interactive runs.
//!
//! This module knows the step traits, not the concrete steps: `builtin` and `plugin` build them.

mod open;
mod progress;
mod stages;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::builtin::dead_letter::DeadLetterTarget;
use crate::builtin::{Builtin, PlanContext, Registry};
use crate::format::redact_url;
use crate::metrics::{Metrics, Sample, StepSample};
use crate::object_url;
use crate::plugin::output::OutputBudget;
use crate::plugin::{ComponentCache, EngineChecks, LoadedPlugin, PluginRuntime};
use crate::report::{Counts, PluginLoad, Resumed, RunReport, StepStats};
use crate::spec::{DeadLetterConfig, Implementation, Role, S3Options, Sandbox, Spec, SpecError, StepSpec};
use crate::step::{
    Checkpoints, Frame, PlanMismatch, Policy, Progress, Shard, ShardPlan, Sink, Source, SourcePlan, Transform,
};
use open::OpenContext;
use stages::CHANNEL_BATCHES;
pub use stages::Interrupted;
pub use stages::Stop;
use stages::{Checkpointing, StepPolicy};

/// Where plugins are found and compiled components cached; from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directories searched for `plugin = "name"`, before the spec's `plugin_dir`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The compiled-component cache.
    pub cache: Option<PathBuf>,
    /// Show progress: a progress line when the run is interactive, else a log line every
    /// `progress_every`.
    pub progress: bool,
    /// How often a run that is not interactive logs its progress (`None`: never).
    pub progress_every: Option<std::time::Duration>,
    /// Where the run pushes its metrics, if anywhere.
    pub metrics: Option<Metrics>,
    /// The part of the input this run reads (`--shard I/N`).
    pub shard: Shard,
    /// The built-in kinds (`kind = "..."`) steps may use.
    pub registry: Registry,
    /// The source's input as a plan file planned it (`--plan`): the run lists and types nothing.
    pub input: Option<Arc<SourcePlan>>,
}

/// A checked pipeline, ready to run.
pub struct Plan {
    pub spec: Arc<Spec>,
    pub steps: Vec<Arc<PlannedStep>>,
    /// How to reach `s3://` URLs (the spec's `[s3]` table).
    pub s3: Arc<S3Options>,
    runtime: Option<Arc<PluginRuntime>>,
    progress: progress::Wanted,
    metrics: Option<Metrics>,
    /// When planning began: a run's time counts the loading of its plugins.
    started: Instant,
    /// The part of the input this run reads.
    pub shard: Shard,
    /// The source's input, planned (`--plan`).
    input: Option<Arc<SourcePlan>>,
    /// A planned run's checkpoints, and whether to forget what they hold first (`--restart`).
    checkpoints: Option<(Arc<Checkpoints>, bool)>,
}

impl Plan {
    /// What the plugins' compiled code checks in this run, if it has plugins.
    pub fn plugin_checks(&self) -> Option<EngineChecks> {
        self.runtime.as_ref().map(|r| r.checks())
    }
}

pub struct PlannedStep {
    pub spec: StepSpec,
    pub implementation: PlannedImplementation,
    /// Instances of a transform that process batches in parallel (1 for a source or sink).
    pub workers: usize,
    /// Where `on_error = "dead-letter"` writes rejected rows.
    pub dead_letter: Option<DeadLetterConfig>,
}

// One per step, planned once: the plugin case's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum PlannedImplementation {
    Builtin(Builtin),
    Plugin {
        plugin: LoadedPlugin,
        /// The step's `config` table as JSON.
        config: String,
        /// Asset name → URL, fetched when the step opens.
        assets: BTreeMap<String, String>,
        /// Its limits and grants.
        sandbox: Sandbox,
        /// What its instances may print, together; counts what it drops.
        output: Arc<OutputBudget>,
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
        let started = Instant::now();
        let s3 = spec.s3()?;
        let mut sandboxes = Vec::new();
        for step in spec.steps() {
            sandboxes.push(spec.sandbox(step)?);
        }
        // Checks slow every plugin: the engine compiles in only those a plugin step needs.
        let default = Sandbox::default();
        let checks = EngineChecks::needed(
            spec.steps()
                .zip(&sandboxes)
                .filter(|(step, _)| matches!(step.implementation, Implementation::Plugin(_)))
                .map(|(_, sandbox)| sandbox.as_ref().unwrap_or(&default)),
        );
        let mut runtime: Option<Arc<PluginRuntime>> = None;
        let mut steps = Vec::new();
        for (step, sandbox) in spec.steps().zip(sandboxes) {
            let assets = spec.assets(step)?;
            let implementation = match &step.implementation {
                Implementation::Builtin(_) if !assets.is_empty() => {
                    return Err(spec.step_error(step, "`assets` are for plugins; built-in steps take none"));
                }
                Implementation::Builtin(_) if sandbox.is_some() => {
                    return Err(
                        spec.step_error(step, "`limits` and `grants` are for plugins: a built-in step is trusted code")
                    );
                }
                Implementation::Builtin(kind) => {
                    let plan = PlanContext { shard: options.shard };
                    PlannedImplementation::Builtin(options.registry.plan(&spec, step, kind, &plan)?)
                }
                Implementation::Plugin(name) => {
                    let path = resolve_plugin(&spec, step, name, &options.plugin_dirs)?;
                    let runtime = match &runtime {
                        Some(r) => r,
                        None => runtime.insert(Arc::new(
                            PluginRuntime::new(ComponentCache::new(options.cache.clone()), checks)
                                .map_err(|e| spec.step_error(step, format!("cannot start the plugin engine: {e:#}")))?,
                        )),
                    };
                    tracing::debug!(step = %step.name, "loading plugin {}", path.display());
                    let plugin = runtime.load(&path).map_err(|e| spec.step_error(step, format!("{e:#}")))?;
                    plugin.expect_role(step.role).map_err(|e| spec.step_error(step, e))?;
                    if step.role == Role::Source && options.shard.count > 1 && !plugin.contract.knows_its_shard() {
                        return Err(spec.step_error(
                            step,
                            format!(
                                "plugin `{}` was built against contract {}, which cannot tell a source its shard, so it \
                                 cannot run sharded (--shard {}): rebuild it against the runner's wit/ (0.2.1 or later)",
                                plugin.file_name(),
                                plugin.contract.export_name(),
                                options.shard
                            ),
                        ));
                    }
                    let config = spec.config_json(step)?;
                    let output = Arc::new(OutputBudget::new(&step.name));
                    let sandbox = sandbox.unwrap_or_default();
                    PlannedImplementation::Plugin { plugin, config, assets, sandbox, output }
                }
            };
            let workers = match (step.role, step.workers, &implementation) {
                (Role::Transform, Some(n), _) => n.get(),
                // Plugins do the heavy work (scoring): one instance per core by default.
                (Role::Transform, None, PlannedImplementation::Plugin { .. }) => {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                }
                (Role::Transform, None, PlannedImplementation::Builtin(_)) => 1,
                (_, Some(_), _) => {
                    return Err(spec.step_error(step, "`workers` applies to transforms: a source and a sink run once"));
                }
                (_, None, _) => 1,
            };
            let dead_letter = spec.dead_letter(step)?;
            if let Some(config) = &dead_letter {
                DeadLetterTarget::check(config, options.shard).map_err(|e| spec.step_error(step, e))?;
            }
            steps.push(Arc::new(PlannedStep { spec: step.clone(), implementation, workers, dead_letter }));
        }
        check_outputs(&spec, &steps, options.shard)?;
        let (spec, s3) = (Arc::new(spec), Arc::new(s3));
        Ok(Plan {
            spec,
            steps,
            s3,
            runtime,
            progress: progress::Wanted { shown: options.progress, every: options.progress_every },
            metrics: options.metrics.clone(),
            started,
            shard: options.shard,
            input: options.input.clone(),
            checkpoints: None,
        })
    }

    /// Opens every step and streams all data from the source to the sink.
    /// The run's time counts from the start of [`Plan::new`]: loading (and compiling) the
    /// plugins is part of it.
    /// `stop` is how the caller asks the run to stop early (the binary: on a signal).
    pub async fn run(mut self, stop: Arc<Stop>) -> RunReport {
        let started = self.started;
        let self_shard = self.shard;
        let pipeline = self.spec.name();
        let planned = self.steps.clone();
        let progress = Arc::new(Progress::default());
        let mut steps: Vec<StepStats> = self.steps.iter().map(|s| s.stats()).collect();
        // Each step's policy, once the steps are open: their rejected rows, for the metrics.
        let policies: Arc<OnceLock<Vec<Policy>>> = Arc::default();
        let metrics = self.metrics.clone();
        let pushing = metrics.as_ref().map(|metrics| {
            let (progress, policies) = (progress.clone(), policies.clone());
            let names: Vec<(String, String)> =
                self.steps.iter().map(|s| (s.spec.name.clone(), s.spec.role.to_string())).collect();
            metrics.start(move || running_sample(&names, &progress, policies.get(), started.elapsed()))
        });
        let (resumed, error) = match self.resume().await {
            Ok(None) => (None, self.stream(&mut steps, progress.clone(), stop, &policies, None).await.err()),
            // Every split of the shard is done: nothing to open, nothing to write.
            Ok(Some((resumed, None))) => (Some(resumed), None),
            Ok(Some((resumed, tracking))) => {
                (Some(resumed), self.stream(&mut steps, progress.clone(), stop, &policies, tracking).await.err())
            }
            Err(e) => (None, Some(e)),
        };
        // Counted even when the run failed while opening (a plugin that floods in `open`).
        for (stats, step) in steps.iter_mut().zip(&planned) {
            stats.counts.suppressed = step.suppressed_lines();
        }
        let first_rows = progress.first_rows().map(|at| at.duration_since(started));
        let (shard, splits) = (self_shard, progress.splits());
        let elapsed = started.elapsed();
        let report = RunReport { pipeline, steps, elapsed, first_rows, shard, splits, resumed, error };
        if let (Some(metrics), Some(pushing)) = (metrics, pushing) {
            pushing.stop().await;
            metrics.pusher.push(&Sample::of_report(&report, &progress)).await;
        }
        report
    }

    /// Checks that every column a built-in step reads reaches it: the source's columns (from
    /// its header or schema: one line read, no rows), then each step's output, in order. A step
    /// that names a column nothing before it provides is a [`SpecError`], located at the step.
    /// Where the columns cannot be known before the run (after a plugin, whose output columns
    /// only its run tells; a source that cannot be read now), the checks are skipped and the
    /// returned notes say which and why. What `runner validate` does after [`Plan::new`].
    pub async fn check_columns(&self) -> Result<Vec<String>, SpecError> {
        let context = self.context(Arc::default());
        let mut notes = Vec::new();
        let source = &self.steps[0];
        // The columns that reach the next step, when known; else what hides them.
        let mut known: Result<Vec<String>, String> = match &source.implementation {
            PlannedImplementation::Builtin(builtin) => {
                // A store that does not answer soon leaves the columns unchecked rather than
                // holding `validate` through its retries.
                let step = context.step(source, Policy::default());
                match tokio::time::timeout(HEADER_WAIT, builtin.columns(&step)).await {
                    Ok(Ok(Some(columns))) => {
                        self.needs(source, builtin, &columns)?;
                        match builtin.output_columns(&columns) {
                            Ok(Some(output)) => Ok(output),
                            Ok(None) => Err(format!("the source `{}` makes its columns as it runs", source.spec.name)),
                            Err(e) => return Err(self.spec.step_error(&source.spec, e)),
                        }
                    }
                    Ok(Ok(None)) => Err(format!("the source `{}` has no header to read", source.spec.name)),
                    Ok(Err(e)) => Err(format!("the source `{}` cannot be read now ({e:#})", source.spec.name)),
                    Err(_) => Err(format!(
                        "the source `{}` did not answer within {} s",
                        source.spec.name,
                        HEADER_WAIT.as_secs()
                    )),
                }
            }
            PlannedImplementation::Plugin { .. } => {
                Err(format!("the source `{}` is a plugin, whose columns only its run tells", source.spec.name))
            }
        };
        for step in &self.steps[1..] {
            known = match (&step.implementation, known) {
                (PlannedImplementation::Builtin(builtin), Ok(columns)) => {
                    self.needs(step, builtin, &columns)?;
                    match builtin.output_columns(&columns) {
                        Ok(Some(output)) => Ok(output),
                        Ok(None) => Err(format!("step `{}` makes its columns as it runs", step.spec.name)),
                        Err(e) => return Err(self.spec.step_error(&step.spec, e)),
                    }
                }
                (PlannedImplementation::Builtin(builtin), Err(why)) => {
                    if !builtin.reads().is_empty() {
                        notes.push(format!("step `{}`: its columns are not checked: {why}", step.spec.name));
                    }
                    Err(why)
                }
                (PlannedImplementation::Plugin { plugin, .. }, _) => Err(format!(
                    "they come from step `{}` (plugin {}), whose output columns only its run tells",
                    step.spec.name,
                    plugin.file_name()
                )),
            };
        }
        Ok(notes)
    }

    /// Every column `builtin` (planned for `step`) reads is among `columns`.
    fn needs(&self, step: &PlannedStep, builtin: &Builtin, columns: &[String]) -> Result<(), SpecError> {
        let Some(column) = builtin.reads().into_iter().find(|column| !columns.contains(column)) else { return Ok(()) };
        let message = match step.spec.role {
            Role::Source => {
                format!("`columns` names `{column}`, which is not among the input's columns ({})", columns.join(", "))
            }
            _ => format!("no column `{column}` reaches this step (it gets: {})", columns.join(", ")),
        };
        Err(self.spec.step_error(&step.spec, message))
    }

    /// Opens every plugin step once with its config and assets, reading no data, and drops it:
    /// a plugin that refuses its config fails with a [`SpecError`] (inside the error), located
    /// at the step's `config` table. What `runner validate` does after [`Plan::new`].
    pub async fn check_plugins(&self) -> anyhow::Result<()> {
        let context = self.context(Arc::default());
        for step in &self.steps {
            if let PlannedImplementation::Plugin { .. } = step.implementation {
                open::check_plugin(&context, step).await?;
            }
        }
        Ok(())
    }

    /// Each of `count` shards' part of the input, from the listing of the source's objects
    /// (and a 64 KiB sample, to estimate rows): what `runner plan` prints.
    pub async fn shard_plan(&self, count: u32) -> anyhow::Result<ShardPlan> {
        let source = &self.steps[0];
        if let PlannedImplementation::Builtin(builtin) = &source.implementation {
            let context = self.context(Arc::default()).step(source, Policy::default());
            if let Some(shards) = builtin.splits(&context, count).await? {
                return Ok(ShardPlan { shards, note: None });
            }
        }
        Ok(ShardPlan {
            shards: (0..count).map(|i| (Shard { index: i, count }, Vec::new())).collect(),
            note: Some(format!(
                "step `{}` ({}) divides its input itself: each shard learns its index from the host",
                source.spec.name,
                source.label()
            )),
        })
    }

    /// The source's input planned once for `count` shards, as a plan file holds it (`runner
    /// plan --out`). A source that cannot be planned (a plugin, which divides its input itself)
    /// is refused, naming the step.
    pub async fn plan_input(&self, count: u32) -> anyhow::Result<SourcePlan> {
        let source = &self.steps[0];
        if let PlannedImplementation::Builtin(builtin) = &source.implementation {
            let context = self.context(Arc::default()).step(source, Policy::default());
            if let Some(input) = builtin.plan_input(&context, count).await? {
                return Ok(input);
            }
        }
        Err(PlanMismatch(format!(
            "step `{}` ({}) cannot be planned: a plan file needs a built-in source that divides its input \
             (csv, parquet)",
            source.spec.name,
            source.label()
        ))
        .into())
    }

    /// This plan run from a plan file's input: its source lists and types nothing. The caller
    /// checks that the file was made from this spec for this number of shards
    /// ([`crate::step::PlanFile::check`]).
    pub fn with_input(mut self, input: SourcePlan) -> Plan {
        self.input = Some(Arc::new(input));
        self
    }

    /// A planned run records its progress in `checkpoints` and skips the splits they say are
    /// done; with `restart`, it forgets them first.
    pub fn with_checkpoints(mut self, checkpoints: Checkpoints, restart: bool) -> Plan {
        self.checkpoints = Some((Arc::new(checkpoints), restart));
        self
    }

    /// What the checkpoints say is done: the run reads the rest of the shard's splits, tracked
    /// (`None` when every split is done); `None` when the run has no checkpoints.
    async fn resume(&mut self) -> anyhow::Result<Option<(Resumed, Option<Arc<Checkpointing>>)>> {
        let (Some((checkpoints, restart)), Some(input)) = (&self.checkpoints, &self.input) else { return Ok(None) };
        if *restart {
            checkpoints.clear().await?;
        }
        let done = checkpoints.done().await?;
        let skipped = |i: usize| done.complete || done.splits.contains(&i);
        let mine: Vec<usize> = (0..input.splits.len()).filter(|&i| input.splits[i].shard == self.shard.index).collect();
        let remaining: Vec<usize> = mine.iter().copied().filter(|&i| !skipped(i)).collect();
        let resumed =
            Resumed { checkpoints: checkpoints.to_string(), done: mine.len() - remaining.len(), splits: mine.len() };
        if resumed.done > 0 {
            tracing::info!("resuming: {} of {} splits already done ({})", resumed.done, resumed.splits, checkpoints);
        }
        if remaining.is_empty() && !mine.is_empty() {
            return Ok(Some((resumed, None)));
        }
        if resumed.done > 0 {
            // The source reads the plan's splits of this shard that are not done.
            let mut input = SourcePlan::clone(input);
            let shard = self.shard.index;
            let splits = std::mem::take(&mut input.splits).into_iter().enumerate();
            input.splits = splits.filter(|(i, split)| split.shard != shard || !skipped(*i)).map(|(_, s)| s).collect();
            self.input = Some(Arc::new(input));
        }
        Ok(Some((resumed, Some(Arc::new(Checkpointing::new(checkpoints.clone(), remaining))))))
    }

    /// The plan file's input this plan runs from, if any.
    pub fn input(&self) -> Option<&SourcePlan> {
        self.input.as_deref()
    }

    /// Opens only the source and reads its first batch: how `runner lookup` learns the types.
    pub async fn first_batch(self) -> anyhow::Result<Option<Batch>> {
        let context = self.context(Arc::default());
        let source = &self.steps[0];
        let mut opened = open::source(&context, source, Policy::default()).await?;
        opened.next_batch().await.with_context(|| format!("step `{}`", source.spec.name))
    }

    fn context(&self, progress: Arc<Progress>) -> OpenContext {
        OpenContext {
            spec: self.spec.clone(),
            s3: self.s3.clone(),
            progress,
            runtime: self.runtime.clone(),
            shard: self.shard,
            frame: self.frame(),
            input: self.input.clone(),
            dead_letters: Arc::default(),
        }
    }

    /// How pandas reads the pipeline's source: the row keys follow it.
    pub fn frame(&self) -> Frame {
        match &self.steps[0].implementation {
            PlannedImplementation::Builtin(builtin) => builtin.frame(),
            PlannedImplementation::Plugin { .. } => Frame::Csv,
        }
    }

    async fn stream(
        self,
        stats: &mut [StepStats],
        progress: Arc<Progress>,
        stop: Arc<Stop>,
        opened_policies: &OnceLock<Vec<Policy>>,
        tracking: Option<Arc<Checkpointing>>,
    ) -> anyhow::Result<()> {
        let context = self.context(progress.clone());
        let (last, middle) = self.steps[1..].split_last().expect("a plan has a source and a sink");
        // A stop requested while the steps open (a plugin's `open` that never returns, with no
        // deadline) ends the run at once, with its summary.
        let opening = async {
            let mut policies = Vec::new();
            for step in &self.steps {
                policies.push(open::policy(&context, step).await?);
            }
            let opened = open_all(&context, &self.steps, &policies).await?;
            Ok::<_, anyhow::Error>((policies, opened))
        };
        tracing::debug!("opening the steps");
        let (policies, (source, transforms, sink)) = tokio::select! {
            opened = opening => opened?,
            signal = stop.signalled() => return Err(Interrupted(signal).into()),
        };
        tracing::debug!("the steps are open");
        let _ = opened_policies.set(policies.clone());
        let rejected = self.steps.iter().map(|s| s.spec.name.clone()).zip(policies.iter().cloned()).collect();
        let _display = progress::show(&progress, self.progress, rejected);

        let failed = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // Each channel holds a few batches per worker of the stage that reads it.
        let capacity = |readers: usize| CHANNEL_BATCHES * readers;
        let (tx, mut rx) = mpsc::channel(capacity(middle.first().map_or(1, |s| s.workers)));
        if let Some(tracking) = &tracking {
            tracking
                .record_each_split(sink.durable_before_commit() && policies.iter().all(|p| p.dead_letter.is_none()));
        }
        let tracked = tracking.clone();
        tasks.push(tokio::spawn(stages::source(source, tx, failed.clone(), stop.clone(), progress.clone(), tracked)));
        for (i, workers) in transforms.into_iter().enumerate() {
            let (tx, next) = mpsc::channel(capacity(middle.get(i + 1).map_or(1, |s| s.workers)));
            let step = StepPolicy { name: middle[i].spec.name.clone(), policy: policies[i + 1].clone() };
            tasks.push(tokio::spawn(stages::transform(workers, step, rx, tx, failed.clone())));
            rx = next;
        }
        let step = StepPolicy { name: last.spec.name.clone(), policy: policies[policies.len() - 1].clone() };
        let tracked = tracking.clone();
        let sink_task = tokio::spawn(stages::sink(sink, step.clone(), rx, failed, progress.clone(), tracked));

        let mut first_error = None;
        for (task, stats) in tasks.into_iter().zip(stats.iter_mut()) {
            let (counts, result) = task.await.context("a pipeline stage panicked")?;
            stats.counts = counts;
            if let Err(e) = result {
                first_error.get_or_insert(e.context(format!("step `{}`", stats.name)));
            }
        }
        let ((mut counts, result), mut sink) = sink_task.await.context("a pipeline stage panicked")?;
        if let Err(e) = result {
            first_error.get_or_insert(e.context(format!("step `{}`", last.spec.name)));
        }
        let dead_letters: Vec<(&str, &Policy)> =
            self.steps.iter().map(|planned| planned.spec.name.as_str()).zip(&policies).collect();
        let mut ended = end_sink(&mut *sink, &step, &mut counts, &progress, &dead_letters, &stop, first_error).await;
        if let (Ok(()), Some(tracking)) = (&ended, &tracking) {
            // Committed: the whole shard is done.
            ended = tracking.checkpoints.complete().await.context(
                "every row is written, but the shard's completion could not be recorded: a rerun writes its rows again",
            );
        }
        let sink_stats = stats.last_mut().expect("a plan has a sink");
        sink_stats.counts = counts;
        for (stats, policy) in stats.iter_mut().zip(&policies) {
            stats.counts.rejected = policy.rejected();
        }
        ended
    }
}

/// What a run has done so far, for a push while it goes: the source's rows out, the sink's
/// rows acknowledged, each step's rejected rows (once the steps are open), the bytes read.
fn running_sample(
    steps: &[(String, String)],
    progress: &Progress,
    policies: Option<&Vec<Policy>>,
    elapsed: std::time::Duration,
) -> Sample {
    let last = steps.len() - 1;
    let steps = steps
        .iter()
        .enumerate()
        .map(|(i, (name, role))| StepSample {
            name: name.clone(),
            role: role.clone(),
            rows_out: match i {
                0 => Some(progress.read()),
                i if i == last => Some(progress.acknowledged()),
                _ => None,
            },
            rejected: policies.and_then(|p| p.get(i)).map_or(0, Policy::rejected),
            ..StepSample::default()
        })
        .collect();
    let (round_trips, retries) = progress.round_trips();
    Sample { steps, bytes_read: progress.bytes().0, round_trips, retries, duration: elapsed, ended_ok: None }
}

/// How long `runner validate` waits for a source's header before leaving the columns unchecked.
const HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a dead letter at the sink's own output: the sink's file would replace the rejected
/// rows, or hold them among its own. Steps may name one dead letter: they share its writer
/// (`open::policy`).
fn check_outputs(spec: &Spec, steps: &[Arc<PlannedStep>], shard: Shard) -> Result<(), SpecError> {
    let sink = &steps.last().expect("a plan has a sink").implementation;
    let PlannedImplementation::Builtin(builtin) = sink else { return Ok(()) };
    let Some(output) = builtin.output() else { return Ok(()) };
    let output = object_url::place(&shard.expand(output), spec.base_dir());
    for planned in steps {
        if let Some(dead_letter) = &planned.dead_letter
            && DeadLetterTarget::place(dead_letter, spec.base_dir(), shard).as_ref() == Some(&output)
        {
            return Err(spec.step_error(
                &planned.spec,
                format!(
                    "its dead letter `{}` is the sink's output: give it a file of its own",
                    redact_url(&dead_letter.url)
                ),
            ));
        }
    }
    Ok(())
}

/// Ends the sink once every other stage is done. The run succeeded so far and no signal came:
/// the sink flushes (what it reports goes to its policy), and the run begins to commit (a signal
/// no longer stops it): the dead letters are completed, then the sink commits. Otherwise (a
/// failure, a dead letter that cannot be completed, or a signal before the commit began) the
/// sink is aborted and nothing is published; a dead letter object put for a commit that then
/// fails is deleted again. Returns how the run ended.
async fn end_sink(
    sink: &mut dyn Sink,
    step: &StepPolicy,
    counts: &mut Counts,
    progress: &Progress,
    policies: &[(&str, &Policy)],
    stop: &Stop,
    mut first_error: Option<anyhow::Error>,
) -> anyhow::Result<()> {
    let in_step = |e: anyhow::Error, name: &str| e.context(format!("step `{name}`"));
    if first_error.is_none() && stop.signal().is_none() {
        tracing::debug!("waiting for the sink's acknowledgements");
        let started = Instant::now();
        // A signal while the sink waits for acknowledgements stops the run like any other.
        let flushed = tokio::select! {
            flushed = sink.flush() => Some(flushed),
            _ = stop.signalled() => None,
        };
        counts.busy += started.elapsed();
        if let Some(flushed) = flushed {
            let settled = match flushed {
                Ok(acks) => stages::settle(acks, step, counts, progress).await,
                Err(e) => Err(e),
            };
            if let Err(e) = settled {
                first_error = Some(in_step(e, &step.name));
            }
        }
    }
    if first_error.is_none() && stop.begin_commit() {
        // The dead letters before the sink's commit: when one fails, the run fails with the
        // sink's output unpublished.
        for (name, policy) in policies {
            if let Err(e) = policy.finish().await {
                first_error = Some(in_step(e, name));
                break;
            }
        }
        if first_error.is_none() {
            let started = Instant::now();
            let committed = sink.commit().await;
            counts.busy += started.elapsed();
            return match committed {
                Ok(acks) => stages::settle(acks, step, counts, progress).await.map_err(|e| in_step(e, &step.name)),
                Err(e) => {
                    withdraw(policies).await;
                    Err(in_step(e, &step.name))
                }
            };
        }
        withdraw(policies).await;
    }
    let acks = sink.abort().await;
    counts.rows_out += acks.rows;
    progress.rows_acknowledged(acks.rows);
    if let Some(signal) = stop.signal() {
        first_error.get_or_insert(anyhow::Error::new(Interrupted(signal)));
    }
    Err(first_error.expect("a run that does not commit has failed or was stopped"))
}

/// Undoes what the dead letters published for a commit that did not happen.
async fn withdraw(policies: &[(&str, &Policy)]) {
    for (_, policy) in policies {
        policy.withdraw().await;
    }
}

/// Opens every step at once, each in its own task: the source's first request, the plugins'
/// assets and instances, and the sink's connection overlap instead of queueing behind each
/// other. The first failure ends the wait and cancels the rest (a source's bad URL is not held
/// up by a sink's connection retries).
async fn open_all(
    context: &OpenContext,
    steps: &[Arc<PlannedStep>],
    policies: &[Policy],
) -> anyhow::Result<(Box<dyn Source>, Vec<Vec<Box<dyn Transform>>>, Box<dyn Sink>)> {
    enum Opened {
        Source(Box<dyn Source>),
        Transform(usize, Vec<Box<dyn Transform>>),
        Sink(Box<dyn Sink>),
    }
    let last = steps.len() - 1;
    let mut opening = tokio::task::JoinSet::new();
    for (i, step) in steps.iter().enumerate() {
        let (context, step, policy) = (context.clone(), step.clone(), policies[i].clone());
        opening.spawn(async move {
            match i {
                0 => open::source(&context, &step, policy).await.map(Opened::Source),
                i if i == last => open::sink(&context, &step).await.map(Opened::Sink),
                i => open::transform(&context, &step).await.map(|workers| Opened::Transform(i, workers)),
            }
        });
    }
    let (mut source, mut sink) = (None, None);
    let mut transforms: Vec<Option<Vec<Box<dyn Transform>>>> = (1..last).map(|_| None).collect();
    while let Some(opened) = opening.join_next().await {
        match opened.context("a step panicked while opening")?? {
            Opened::Source(s) => source = Some(s),
            Opened::Transform(i, workers) => transforms[i - 1] = Some(workers),
            Opened::Sink(s) => sink = Some(s),
        }
    }
    let missing = "every step was opened";
    Ok((source.expect(missing), transforms.into_iter().map(|t| t.expect(missing)).collect(), sink.expect(missing)))
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

impl PlannedStep {
    /// Lines of its plugin's output dropped over the rate limit so far (0 for a built-in step).
    pub fn suppressed_lines(&self) -> u64 {
        match &self.implementation {
            PlannedImplementation::Plugin { output, .. } => output.suppressed(),
            PlannedImplementation::Builtin(_) => 0,
        }
    }

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
            workers: self.workers,
            counts: Counts::default(),
        }
    }
}
