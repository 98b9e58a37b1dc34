//! Adapters that make a plugin instance look like a built-in step.
//!
//! Each adapter owns one wasmtime `Store` (so one instance, one linear memory) and the handle of
//! the resource the plugin's `open` returned. Before every call the step's limits are re-armed
//! (deadline, fuel); every error names the plugin, and a trap says which limit it hit.
//!
//! A plugin is called through the bindings of the contract version it was built against
//! ([`Bindings`]); the code of a call is the same for every version (see `either!` below).

use std::sync::Arc;

use async_trait::async_trait;
use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap};

use super::bindings::{v0_1, v0_2};
use super::contract::Generation;
use super::convert::CallError;
use super::sandbox::{Limits, Sandbox};
use super::{AssetBytes, Checks, LoadedPlugin, PluginRuntime, State};
use crate::batch::{Batch, BatchError};
use crate::step::{RowError, Sink, Source, Transform};

/// A plugin's bindings, in the contract version it was built against.
enum Bindings<Current, V0_1> {
    V0_2(Current),
    V0_1(V0_1),
}

type TransformBindings = Bindings<v0_2::transform::TransformPlugin, v0_1::transform::TransformPlugin>;
type SourceBindings = Bindings<v0_2::source::SourcePlugin, v0_1::source::SourcePlugin>;
type SinkBindings = Bindings<v0_2::sink::SinkPlugin, v0_1::sink::SinkPlugin>;

/// Evaluates `$call` with `$b` bound to the bindings of whichever version the plugin has. The
/// generated types differ from version to version, but the conversions in `convert` (`From`,
/// `TryFrom`) are implemented for each, so one expression serves all.
macro_rules! either {
    ($bindings:expr, $b:ident => $call:expr) => {
        match $bindings {
            Bindings::V0_2($b) => $call,
            Bindings::V0_1($b) => $call,
        }
    };
}

/// Instantiates `$plugin` in `$store` through the bindings (`$world::$pre`) of its version.
macro_rules! instantiate {
    ($plugin:expr, $store:expr, $world:ident :: $pre:ident) => {
        match $plugin.contract.generation {
            Generation::V0_2 => {
                Bindings::V0_2(v0_2::$world::$pre::new($plugin.pre.clone())?.instantiate_async($store).await?)
            }
            Generation::V0_1 => {
                Bindings::V0_1(v0_1::$world::$pre::new($plugin.pre.clone())?.instantiate_async($store).await?)
            }
        }
    };
}

/// Shared by the three adapters: the store, the resource, and what errors need to say.
struct Instance<B> {
    store: Store<State>,
    bindings: B,
    handle: ResourceAny,
    plugin: String,
    limits: Limits,
    checks: Checks,
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
    arm(&mut store, &sandbox.limits, runtime.checks)?;
    Ok((store, plugin.file_name()))
}

/// A deadline in epoch ticks that no call reaches (and the engine's epoch plus it cannot
/// overflow).
const NEVER: u64 = u64::MAX / 2;

/// Resets the per-call budgets before a call into the plugin.
fn arm(store: &mut Store<State>, limits: &Limits, checks: Checks) -> anyhow::Result<()> {
    if checks.deadline {
        // Without a deadline of its own, a step's calls get one they never reach (other steps
        // of the run have deadlines, so the code checks).
        let ticks = match limits.deadline() {
            Some(d) => d.as_millis().div_ceil(super::EPOCH_TICK.as_millis()).clamp(1, NEVER as u128) as u64,
            None => NEVER,
        };
        store.set_epoch_deadline(ticks);
    }
    if checks.fuel {
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
        arm(&mut self.store, &self.limits, self.checks)
    }

    fn trapped(&self, e: wasmtime::Error) -> anyhow::Error {
        anyhow::anyhow!("plugin `{}` {}", self.plugin, trap_message(&e, &self.store, &self.limits))
    }

    /// An error the plugin returned through the contract; one that names a row is a
    /// [`RowError`], so the step's policy can reject just that row.
    fn failed(&self, e: CallError) -> anyhow::Error {
        match e.row {
            Some(row) => RowError {
                row: row as usize,
                message: format!("plugin `{}` failed at row {row} of the batch: {}", self.plugin, e.message),
            }
            .into(),
            None => anyhow::anyhow!("plugin `{}` failed: {}", self.plugin, e.message),
        }
    }

    /// A batch the plugin returned, checked on the way in (`Batch::new`).
    fn check(&self, batch: Result<Batch, BatchError>) -> anyhow::Result<Batch> {
        batch.map_err(|e| anyhow::anyhow!("plugin `{}` returned a malformed batch: {e}", self.plugin))
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
    instance: Instance<TransformBindings>,
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
    async fn instance(&self) -> anyhow::Result<Instance<TransformBindings>> {
        let Reopen { runtime, plugin, step, config, assets, sandbox } = self;
        let (mut store, name) = store(runtime, plugin, step, assets.clone(), sandbox)?;
        let bindings = instantiate!(plugin, &mut store, transform::TransformPluginPre);
        let result =
            either!(&bindings, b => b.etl_plugin_transform().transformer().call_open(&mut store, config).await);
        let handle = opened(result, &name, &store, &sandbox.limits)?;
        let (limits, checks) = (sandbox.limits.clone(), runtime.checks);
        Ok(Instance { store, bindings, handle, plugin: name, limits, checks })
    }
}

#[async_trait]
impl Transform for PluginTransform {
    async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch> {
        let i = &mut self.instance;
        i.arm()?;
        let result = either!(&i.bindings, b => b
            .etl_plugin_transform()
            .transformer()
            .call_process(&mut i.store, i.handle, &batch.into())
            .await
            .map(|r| r.map(Batch::try_from).map_err(CallError::from)));
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
        let result = either!(&i.bindings, b => b
            .etl_plugin_transform()
            .transformer()
            .call_finish(&mut i.store, i.handle)
            .await
            .map(|r| r.map(|batch| batch.map(Batch::try_from)).map_err(CallError::from)));
        match result {
            Ok(Ok(Some(output))) => i.check(output).map(Some),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

pub struct PluginSource {
    instance: Instance<SourceBindings>,
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
        let bindings = instantiate!(plugin, &mut store, source::SourcePluginPre);
        let result = either!(&bindings, b => b.etl_plugin_source().reader().call_open(&mut store, config).await);
        let handle = opened(result, &name, &store, &sandbox.limits)?;
        let (limits, checks) = (sandbox.limits.clone(), runtime.checks);
        let instance = Instance { store, bindings, handle, plugin: name, limits, checks };
        Ok(PluginSource { instance, batch_rows: u32::try_from(batch_rows).unwrap_or(u32::MAX) })
    }
}

#[async_trait]
impl Source for PluginSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.instance;
        i.arm()?;
        let result = either!(&i.bindings, b => b
            .etl_plugin_source()
            .reader()
            .call_next(&mut i.store, i.handle, self.batch_rows)
            .await
            .map(|r| r.map(|batch| batch.map(Batch::try_from)).map_err(CallError::from)));
        match result {
            Ok(Ok(Some(output))) => i.check(output).map(Some),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

pub struct PluginSink(Instance<SinkBindings>);

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
        let bindings = instantiate!(plugin, &mut store, sink::SinkPluginPre);
        let result = either!(&bindings, b => b.etl_plugin_sink().writer().call_open(&mut store, config).await);
        let handle = opened(result, &name, &store, &sandbox.limits)?;
        let (limits, checks) = (sandbox.limits.clone(), runtime.checks);
        Ok(PluginSink(Instance { store, bindings, handle, plugin: name, limits, checks }))
    }
}

#[async_trait]
impl Sink for PluginSink {
    async fn write(&mut self, batch: Batch) -> anyhow::Result<()> {
        let i = &mut self.0;
        i.arm()?;
        let result = either!(&i.bindings, b => b
            .etl_plugin_sink()
            .writer()
            .call_write(&mut i.store, i.handle, &batch.into())
            .await
            .map(|r| r.map_err(CallError::from)));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        let i = &mut self.0;
        i.arm()?;
        let result = either!(&i.bindings, b => b
            .etl_plugin_sink()
            .writer()
            .call_finish(&mut i.store, i.handle)
            .await
            .map(|r| r.map_err(CallError::from)));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}
