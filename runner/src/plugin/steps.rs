//! Adapters that make a plugin instance look like a built-in step.
//!
//! Each adapter owns one wasmtime `Store` (so one instance, one linear memory) and the handle of
//! the resource the plugin's `open` returned. Before every call the step's limits are re-armed
//! (deadline, fuel); every error names the plugin, and a trap says which limit it hit.

use std::sync::Arc;

use async_trait::async_trait;
use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap};

use super::bindings::{sink, source, transform, types as wit};
use super::sandbox::{Limits, Sandbox};
use super::{AssetBytes, LoadedPlugin, PluginRuntime, State, convert};
use crate::batch::Batch;
use crate::step::{RowError, Sink, Source, Transform};

/// Shared by the three adapters: the store, the resource, and what errors need to say.
struct Instance<B> {
    store: Store<State>,
    bindings: B,
    handle: ResourceAny,
    plugin: String,
    limits: Limits,
    fuel: bool,
}

/// A fresh store for `plugin`, and the plugin's file name.
fn store(
    runtime: &PluginRuntime,
    plugin: &LoadedPlugin,
    step: &str,
    assets: AssetBytes,
    sandbox: &Sandbox,
) -> anyhow::Result<(Store<State>, String)> {
    let mut store = runtime.store(step, assets, sandbox)?;
    arm(&mut store, &sandbox.limits, runtime.fuel)?;
    Ok((store, plugin.file_name()))
}

/// Resets the per-call budgets before a call into the plugin.
fn arm(store: &mut Store<State>, limits: &Limits, fuel: bool) -> anyhow::Result<()> {
    let ticks = (limits.call_seconds * 1000).div_ceil(super::EPOCH_TICK.as_millis() as u64).max(1);
    store.set_epoch_deadline(ticks);
    if fuel {
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
    }
    Ok(())
}

/// Why a call into the plugin did not return: a limit, a crash, or a failed host call.
fn trap_message(e: &wasmtime::Error, store: &Store<State>, limits: &Limits) -> String {
    let text = format!("{e:#}");
    let reason = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            format!("exceeded its time limit: a call ran longer than {} s (limits.call_seconds)", limits.call_seconds)
        }
        Some(Trap::OutOfFuel) => {
            format!("used up its fuel: {} units in one call (limits.fuel)", limits.fuel.unwrap_or(u64::MAX))
        }
        _ if text.contains("growing memory") => {
            format!("exceeded its memory limit of {} MiB (limits.memory_mb)", limits.memory_mb)
        }
        Some(Trap::UnreachableCodeReached) => "crashed (a panic, or `unreachable`)".to_string(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed: {}", text.lines().next().unwrap_or_default()),
    };
    // A Rust panic prints its message on stderr just before the trap: quote it.
    let tail = store.data().stderr_tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "));
    match tail {
        Ok(tail) if !tail.is_empty() => format!("{reason}; its last words on stderr: {tail}"),
        _ => reason,
    }
}

impl<B> Instance<B> {
    fn arm(&mut self) -> anyhow::Result<()> {
        arm(&mut self.store, &self.limits, self.fuel)
    }

    fn trapped(&self, e: wasmtime::Error) -> anyhow::Error {
        anyhow::anyhow!("plugin `{}` {}", self.plugin, trap_message(&e, &self.store, &self.limits))
    }

    /// An error the plugin returned through the contract; one that names a row is a
    /// [`RowError`], so the step's policy can reject just that row.
    fn failed(&self, e: wit::Error) -> anyhow::Error {
        match e.row {
            Some(row) => RowError {
                row: row as usize,
                message: format!("plugin `{}` failed at row {row} of the batch: {}", self.plugin, e.message),
            }
            .into(),
            None => anyhow::anyhow!("plugin `{}` failed: {}", self.plugin, e.message),
        }
    }

    fn check(&self, batch: wit::Batch) -> anyhow::Result<Batch> {
        convert::from_wit(batch)
            .map_err(|e| anyhow::anyhow!("plugin `{}` returned a malformed batch: {e}", self.plugin))
    }
}

/// Maps the outcome of a plugin's `open`.
fn opened(
    result: wasmtime::Result<Result<ResourceAny, String>>,
    plugin: &str,
    store: &Store<State>,
    limits: &Limits,
) -> anyhow::Result<ResourceAny> {
    match result {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(message)) => Err(anyhow::anyhow!("plugin `{plugin}` failed to open: {message}")),
        Err(e) => Err(anyhow::anyhow!("plugin `{plugin}` {} while opening", trap_message(&e, store, limits))),
    }
}

pub struct PluginTransform {
    instance: Instance<transform::TransformPlugin>,
    /// Set by a trap: the instance cannot be entered again; `recover` replaces it.
    poisoned: bool,
    reopen: Reopen,
}

/// What it takes to open a fresh instance of a transform.
struct Reopen {
    runtime: Arc<PluginRuntime>,
    plugin: LoadedPlugin,
    step: String,
    config: String,
    assets: AssetBytes,
    sandbox: Sandbox,
}

impl PluginTransform {
    /// Instantiates the plugin and opens its transformer with the step's config (JSON).
    pub async fn open(
        runtime: &Arc<PluginRuntime>,
        plugin: &LoadedPlugin,
        step: &str,
        config: &str,
        assets: AssetBytes,
        sandbox: &Sandbox,
    ) -> anyhow::Result<PluginTransform> {
        let reopen = Reopen {
            runtime: runtime.clone(),
            plugin: plugin.clone(),
            step: step.to_string(),
            config: config.to_string(),
            assets,
            sandbox: sandbox.clone(),
        };
        Ok(PluginTransform { instance: reopen.instance().await?, poisoned: false, reopen })
    }
}

impl Reopen {
    async fn instance(&self) -> anyhow::Result<Instance<transform::TransformPlugin>> {
        let Reopen { runtime, plugin, step, config, assets, sandbox } = self;
        let (mut store, name) = store(runtime, plugin, step, assets.clone(), sandbox)?;
        let bindings = transform::TransformPluginPre::new(plugin.pre.clone())?.instantiate_async(&mut store).await?;
        let result = bindings.etl_plugin_transform().transformer().call_open(&mut store, config).await;
        let handle = opened(result, &name, &store, &sandbox.limits)?;
        let (limits, fuel) = (sandbox.limits.clone(), runtime.fuel);
        Ok(Instance { store, bindings, handle, plugin: name, limits, fuel })
    }
}

#[async_trait]
impl Transform for PluginTransform {
    async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch> {
        let i = &mut self.instance;
        i.arm()?;
        let input = convert::to_wit(batch);
        let result = i.bindings.etl_plugin_transform().transformer().call_process(&mut i.store, i.handle, &input).await;
        match result {
            Ok(Ok(output)) => i.check(output),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => {
                self.poisoned = true;
                Err(i.trapped(e))
            }
        }
    }

    async fn recover(&mut self) -> anyhow::Result<()> {
        if self.poisoned {
            tracing::warn!(step = %self.reopen.step, "replacing the plugin instance after a trap");
            self.instance = self.reopen.instance().await?;
            self.poisoned = false;
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.instance;
        i.arm()?;
        let result = i.bindings.etl_plugin_transform().transformer().call_finish(&mut i.store, i.handle).await;
        match result {
            Ok(Ok(Some(output))) => i.check(output).map(Some),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

pub struct PluginSource {
    instance: Instance<source::SourcePlugin>,
    batch_rows: u32,
}

impl PluginSource {
    pub async fn open(
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        step: &str,
        config: &str,
        assets: AssetBytes,
        sandbox: &Sandbox,
        batch_rows: usize,
    ) -> anyhow::Result<PluginSource> {
        let (mut store, name) = store(runtime, plugin, step, assets, sandbox)?;
        let bindings = source::SourcePluginPre::new(plugin.pre.clone())?.instantiate_async(&mut store).await?;
        let result = bindings.etl_plugin_source().reader().call_open(&mut store, config).await;
        let handle = opened(result, &name, &store, &sandbox.limits)?;
        let (limits, fuel) = (sandbox.limits.clone(), runtime.fuel);
        let instance = Instance { store, bindings, handle, plugin: name, limits, fuel };
        Ok(PluginSource { instance, batch_rows: u32::try_from(batch_rows).unwrap_or(u32::MAX) })
    }
}

#[async_trait]
impl Source for PluginSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.instance;
        i.arm()?;
        let result = i.bindings.etl_plugin_source().reader().call_next(&mut i.store, i.handle, self.batch_rows).await;
        match result {
            Ok(Ok(Some(output))) => i.check(output).map(Some),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

pub struct PluginSink(Instance<sink::SinkPlugin>);

impl PluginSink {
    pub async fn open(
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        step: &str,
        config: &str,
        assets: AssetBytes,
        sandbox: &Sandbox,
    ) -> anyhow::Result<PluginSink> {
        let (mut store, name) = store(runtime, plugin, step, assets, sandbox)?;
        let bindings = sink::SinkPluginPre::new(plugin.pre.clone())?.instantiate_async(&mut store).await?;
        let result = bindings.etl_plugin_sink().writer().call_open(&mut store, config).await;
        let handle = opened(result, &name, &store, &sandbox.limits)?;
        let (limits, fuel) = (sandbox.limits.clone(), runtime.fuel);
        Ok(PluginSink(Instance { store, bindings, handle, plugin: name, limits, fuel }))
    }
}

#[async_trait]
impl Sink for PluginSink {
    async fn write(&mut self, batch: Batch) -> anyhow::Result<()> {
        let i = &mut self.0;
        i.arm()?;
        let input = convert::to_wit(batch);
        let result = i.bindings.etl_plugin_sink().writer().call_write(&mut i.store, i.handle, &input).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        let i = &mut self.0;
        i.arm()?;
        let result = i.bindings.etl_plugin_sink().writer().call_finish(&mut i.store, i.handle).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}
