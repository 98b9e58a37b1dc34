//! Opening planned steps: built-in steps from their decoded config, plugins as fresh instances
//! of their compiled component, with their assets fetched once per step.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStoreExt;

use super::policy::{DeadLetter, Policy};
use super::progress::Progress;
use super::{PlannedImplementation, PlannedStep};
use crate::object_url::{ObjectUrl, S3Options, describe_error};
use crate::plugin::{AssetBytes, PluginRuntime, PluginSink, PluginSource, PluginTransform};
use crate::spec::Spec;
use crate::step::{Sink, Source, Transform};

/// What opening a step needs besides the step itself. Cheap to clone: each step opens in its
/// own task, with its own copy.
#[derive(Clone)]
pub struct OpenContext {
    pub spec: Arc<Spec>,
    pub s3: Arc<S3Options>,
    pub progress: Arc<Progress>,
    pub(super) runtime: Option<Arc<PluginRuntime>>,
}

impl OpenContext {
    fn runtime(&self) -> &Arc<PluginRuntime> {
        self.runtime.as_ref().expect("a plan with plugins has a runtime")
    }
}

/// A step's error policy, with its dead letter opened.
pub async fn policy(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<Policy> {
    let dead_letter = match &step.dead_letter {
        Some(config) => Some(
            DeadLetter::open(config, context.spec.base_dir())
                .await
                .with_context(|| format!("step `{}`: dead letter", step.spec.name))?,
        ),
        None => None,
    };
    Ok(Policy::new(step.spec.on_error, dead_letter))
}

pub async fn source(context: &OpenContext, step: &PlannedStep, policy: Policy) -> anyhow::Result<Box<dyn Source>> {
    let name = &step.spec.name;
    let opened: anyhow::Result<Box<dyn Source>> = async {
        match &step.implementation {
            PlannedImplementation::Builtin(b) => b.open_source(context, name, policy).await,
            PlannedImplementation::Plugin { plugin, config, assets, sandbox } => {
                let bytes = fetch_assets(context, assets).await?;
                let batch_rows = context.spec.pipeline.batch_rows.get();
                let source =
                    PluginSource::open(context.runtime(), plugin, name, config, bytes, sandbox, batch_rows).await;
                Ok(Box::new(source.map_err(|e| with_assets(e, assets))?) as Box<dyn Source>)
            }
        }
    }
    .await;
    opened.with_context(|| format!("step `{name}`"))
}

/// Opens `step.workers` instances of a transform.
pub async fn transform(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<Vec<Box<dyn Transform>>> {
    let name = &step.spec.name;
    let opened: anyhow::Result<Vec<Box<dyn Transform>>> = async {
        let mut workers: Vec<Box<dyn Transform>> = Vec::with_capacity(step.workers);
        match &step.implementation {
            PlannedImplementation::Builtin(b) => {
                for _ in 0..step.workers {
                    workers.push(b.open_transform(context)?);
                }
            }
            PlannedImplementation::Plugin { plugin, config, assets, sandbox } => {
                let bytes = fetch_assets(context, assets).await?;
                for _ in 0..step.workers {
                    let transform =
                        PluginTransform::open(context.runtime(), plugin, name, config, bytes.clone(), sandbox).await;
                    workers.push(Box::new(transform.map_err(|e| with_assets(e, assets))?));
                }
            }
        }
        Ok(workers)
    }
    .await;
    opened.with_context(|| format!("step `{name}`"))
}

pub async fn sink(context: &OpenContext, step: &PlannedStep) -> anyhow::Result<Box<dyn Sink>> {
    let name = &step.spec.name;
    let opened: anyhow::Result<Box<dyn Sink>> = async {
        match &step.implementation {
            PlannedImplementation::Builtin(b) => b.open_sink(context).await,
            PlannedImplementation::Plugin { plugin, config, assets, sandbox } => {
                let bytes = fetch_assets(context, assets).await?;
                let sink = PluginSink::open(context.runtime(), plugin, name, config, bytes, sandbox).await;
                Ok(Box::new(sink.map_err(|e| with_assets(e, assets))?) as Box<dyn Sink>)
            }
        }
    }
    .await;
    opened.with_context(|| format!("step `{name}`"))
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
