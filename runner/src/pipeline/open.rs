//! Opening planned steps: built-in steps from their decoded config, plugins as fresh instances
//! of their compiled component, with their assets fetched once per step.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStoreExt;

use super::{PlannedImplementation, PlannedStep};
use crate::builtin::dead_letter::DeadLetterTarget;
use crate::format::redact_url;
use crate::object_url::ObjectUrl;
use crate::plugin::{AssetBytes, PluginRuntime, PluginSink, PluginSource, PluginStep, PluginTransform, Refused};
use crate::spec::{DeadLetterConfig, S3Options, Spec};
use crate::step::{DeadLetter, Frame, Policy, Progress, Shard, Sink, Source, SourcePlan, StepContext, Transform};

/// What opening a step needs besides the step itself. Cheap to clone: each step opens in its
/// own task, with its own copy.
#[derive(Clone)]
pub struct OpenContext {
    pub spec: Arc<Spec>,
    pub s3: Arc<S3Options>,
    pub progress: Arc<Progress>,
    pub(super) runtime: Option<Arc<PluginRuntime>>,
    /// The part of the input this run reads.
    pub shard: Shard,
    /// How pandas reads the pipeline's source.
    pub frame: Frame,
    /// The source's input, when the run is one shard of a plan file.
    pub input: Option<Arc<SourcePlan>>,
    /// The file and object dead letters opened so far, by the place they write: steps that
    /// name one share it (one writer, so their lines never interleave; one object put).
    pub(super) dead_letters: Arc<tokio::sync::Mutex<BTreeMap<String, Arc<dyn DeadLetter>>>>,
}

impl OpenContext {
    fn runtime(&self) -> &Arc<PluginRuntime> {
        self.runtime.as_ref().expect("a plan with plugins has a runtime")
    }

    /// What a built-in step needs to open.
    pub(super) fn step(&self, step: &PlannedStep, policy: Policy) -> StepContext {
        StepContext {
            step: step.spec.name.clone(),
            base_dir: self.spec.base_dir().to_path_buf(),
            s3: self.s3.clone(),
            batch_rows: self.spec.pipeline.batch_rows.get(),
            progress: self.progress.clone(),
            policy,
            shard: self.shard,
            frame: self.frame,
            input: self.input.clone(),
        }
    }
}

/// A step's error policy, with its dead letter opened.
pub async fn policy(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<Policy> {
    let dead_letter = match &step.dead_letter {
        Some(config) => Some(
            dead_letter(context, config).await.with_context(|| format!("step `{}`: dead letter", step.spec.name))?,
        ),
        None => None,
    };
    Ok(Policy::new(step.spec.on_error, dead_letter))
}

/// The dead letter `config` names: opened, or shared with a step that opened it already (a
/// file or an object; each Redis dead letter pushes on its own connection).
async fn dead_letter(context: &OpenContext, config: &DeadLetterConfig) -> anyhow::Result<Arc<dyn DeadLetter>> {
    let base_dir = context.spec.base_dir();
    let Some(place) = DeadLetterTarget::place(config, base_dir, context.shard) else {
        return DeadLetterTarget::open(config, base_dir, &context.s3, context.shard).await;
    };
    let mut opened = context.dead_letters.lock().await;
    if let Some(shared) = opened.get(&place) {
        return Ok(shared.clone());
    }
    let dead_letter = DeadLetterTarget::open(config, base_dir, &context.s3, context.shard).await?;
    opened.insert(place, dead_letter.clone());
    Ok(dead_letter)
}

pub async fn source(context: &OpenContext, step: &PlannedStep, policy: Policy) -> anyhow::Result<Box<dyn Source>> {
    let name = &step.spec.name;
    match &step.implementation {
        PlannedImplementation::Builtin(b) => {
            b.open_source(&context.step(step, policy)).await.with_context(|| format!("step `{name}`"))
        }
        PlannedImplementation::Plugin { .. } => {
            let plugin = plugin_step(context, step).await?;
            let batch_rows = context.spec.pipeline.batch_rows.get();
            let source = PluginSource::open(&plugin, batch_rows).await.map_err(|e| open_failed(context, step, e))?;
            Ok(Box::new(source))
        }
    }
}

/// Opens `step.workers` instances of a transform.
pub async fn transform(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<Vec<Box<dyn Transform>>> {
    let mut workers: Vec<Box<dyn Transform>> = Vec::with_capacity(step.workers);
    match &step.implementation {
        PlannedImplementation::Builtin(b) => {
            for _ in 0..step.workers {
                let context = context.step(step, Policy::default());
                workers.push(b.open_transform(&context).await.with_context(|| format!("step `{}`", step.spec.name))?);
            }
        }
        PlannedImplementation::Plugin { .. } => {
            let plugin = plugin_step(context, step).await?;
            for _ in 0..step.workers {
                let transform = PluginTransform::open(&plugin).await.map_err(|e| open_failed(context, step, e))?;
                workers.push(Box::new(transform));
            }
        }
    }
    Ok(workers)
}

pub async fn sink(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<Box<dyn Sink>> {
    let name = &step.spec.name;
    match &step.implementation {
        PlannedImplementation::Builtin(b) => {
            b.open_sink(&context.step(step, Policy::default())).await.with_context(|| format!("step `{name}`"))
        }
        PlannedImplementation::Plugin { .. } => {
            let plugin = plugin_step(context, step).await?;
            Ok(Box::new(PluginSink::open(&plugin).await.map_err(|e| open_failed(context, step, e))?))
        }
    }
}

/// Instantiates a plugin step once and opens it with its config and assets (no data flows):
/// its refusal of the config is a spec error.
pub async fn check_plugin(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<()> {
    let plugin = plugin_step(context, step).await?;
    plugin.check_open().await.map_err(|e| open_failed(context, step, e))
}

/// What it takes to open instances of a plugin step: its assets are fetched here, once.
async fn plugin_step(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<PluginStep> {
    let PlannedImplementation::Plugin { plugin, config, assets, sandbox, output } = &step.implementation else {
        unreachable!("only plugin steps have plugins")
    };
    let bytes = fetch_assets(context, assets).await.with_context(|| format!("step `{}`", step.spec.name))?;
    Ok(PluginStep {
        runtime: context.runtime().clone(),
        plugin: plugin.clone(),
        step: step.spec.name.clone(),
        config: config.clone(),
        assets: bytes,
        sandbox: sandbox.clone(),
        output: output.clone(),
        shard: context.shard,
    })
}

/// A plugin that refused its config points at the `config` table of the spec (a spec error);
/// any other failure to open names the step and its assets.
fn open_failed(context: &OpenContext, step: &PlannedStep, error: anyhow::Error) -> anyhow::Error {
    let PlannedImplementation::Plugin { assets, .. } = &step.implementation else { return error };
    match error.downcast::<Refused>() {
        Ok(refused) => {
            let message = format!("{}{}", refused.message, assets_note(assets));
            context.spec.config_refused(&step.spec, &refused.plugin, &message).into()
        }
        Err(error) => anyhow::anyhow!("{error:#}{}", assets_note(assets)).context(format!("step `{}`", step.spec.name)),
    }
}

/// Reads every asset a plugin step declares, through the same stores as the data.
async fn fetch_assets(context: &OpenContext, assets: &BTreeMap<String, String>) -> anyhow::Result<AssetBytes> {
    let mut bytes = BTreeMap::new();
    for (name, url) in assets {
        let location =
            ObjectUrl::parse(url, context.spec.base_dir(), &context.s3).with_context(|| format!("asset `{name}`"))?;
        let data = match location.store.get(&location.path).await {
            Ok(object) => object.bytes().await,
            Err(e) => Err(e),
        }
        .map_err(|e| anyhow::anyhow!("asset `{name}` ({location}): {}", location.describe(&e)))?;
        bytes.insert(name.clone(), Arc::new(data.to_vec()));
    }
    Ok(Arc::new(bytes))
}

/// A plugin that fails to open often fails on an asset: say where each one came from
/// (` (assets: model = s3://...)`; empty without assets).
fn assets_note(assets: &BTreeMap<String, String>) -> String {
    if assets.is_empty() {
        return String::new();
    }
    let list: Vec<String> = assets.iter().map(|(name, url)| format!("{name} = {}", redact_url(url))).collect();
    format!(" (assets: {})", list.join(", "))
}
