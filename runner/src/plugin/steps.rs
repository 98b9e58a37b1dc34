//! Adapters that make a plugin instance look like a built-in step.
//!
//! Each adapter owns one wasmtime `Store` (so one instance, one linear memory) and the handle of
//! the resource the plugin's `open` returned. Every call into the plugin, instantiation
//! included, runs under the step's limits: the per-call budgets (deadline, fuel) are re-armed
//! before it, and it must return within `limits.call_seconds` of wall-clock time, whatever it
//! does: computing (the epoch deadline traps it) or blocked in a host call such as a sleep (the
//! call is abandoned; see [`within`]). Every error names the plugin, says which limit a call hit,
//! and quotes at most [`MESSAGE_BYTES`](super::output::MESSAGE_BYTES) of anything the plugin wrote.
//!
//! A plugin is called through the bindings of the contract version it was built against
//! ([`Bindings`]); the code of a call is the same for every version (see `either!` below).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap};

use super::bindings::{v0_1, v0_2};
use super::contract::Generation;
use super::convert::CallError;
use super::output::{OutputBudget, cut, cut_owned};
use super::{AssetBytes, EngineChecks, LoadedPlugin, PluginRuntime, State};
use crate::batch::{Batch, BatchError};
use crate::spec::{Limits, Sandbox};
use crate::step::{Acks, BatchRefused, RowError, Shard, Sink, Source, Transform};

/// Everything it takes to open an instance of a plugin step (again, after a trap).
#[derive(Clone)]
pub struct PluginStep {
    pub runtime: Arc<PluginRuntime>,
    pub plugin: LoadedPlugin,
    /// The step's name, for logs and errors.
    pub step: String,
    /// The step's `config` table as JSON text.
    pub config: String,
    pub assets: AssetBytes,
    pub sandbox: Sandbox,
    /// What the step's instances may print, together.
    pub output: Arc<OutputBudget>,
    /// The part of the input this run reads (what `host.shard` tells the plugin).
    pub shard: Shard,
}

/// The plugin's `open` returned an error: it refused the step's `config` (or its assets). The
/// spec is at fault, not the run: the pipeline reports it as a spec error.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` refused to open: {message}")]
pub struct Refused {
    pub plugin: String,
    /// The plugin's message, cut at [`MESSAGE_BYTES`](super::output::MESSAGE_BYTES).
    pub message: String,
}

/// A call ran past its wall-clock deadline while the plugin was not computing (blocked in a
/// host call): the call was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the call did not return within its deadline")]
struct DeadlinePassed;

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

/// Instantiates the step's plugin in `$store` through the bindings (`$world::$pre`) of its
/// version, within the step's deadline: `wasmtime::Result<Bindings<..>>`.
macro_rules! instantiate {
    ($step:expr, $store:expr, $world:ident :: $pre:ident) => {{
        let deadline = $step.sandbox.limits.deadline();
        match $step.plugin.contract.generation {
            Generation::V0_2 => match v0_2::$world::$pre::new($step.plugin.pre.clone()) {
                Ok(pre) => within(deadline, pre.instantiate_async($store)).await.map(Bindings::V0_2),
                Err(e) => Err(e),
            },
            Generation::V0_1 => match v0_1::$world::$pre::new($step.plugin.pre.clone()) {
                Ok(pre) => within(deadline, pre.instantiate_async($store)).await.map(Bindings::V0_1),
                Err(e) => Err(e),
            },
        }
    }};
}

/// Runs one call into a plugin under a wall-clock `deadline` (none for `None`).
///
/// While the plugin computes, the epoch deadline traps it ([`arm`]); while it waits in a host
/// call (a sleep, a read), its code does not run and cannot be trapped, but the call yields to
/// the runtime, so the timer here fires and drops the call: wasmtime then unwinds the plugin's
/// stack. The instance is not used again.
async fn within<T>(deadline: Option<Duration>, call: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    match deadline {
        None => call.await,
        Some(deadline) => match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::new(DeadlinePassed)),
        },
    }
}

/// Shared by the three adapters: the store, the resource, and what errors need to say.
struct Instance<B> {
    store: Store<State>,
    bindings: B,
    handle: ResourceAny,
    plugin: String,
    limits: Limits,
    checks: EngineChecks,
}

/// A deadline in epoch ticks that no call reaches (and the engine's epoch plus it cannot
/// overflow).
const NEVER: u64 = u64::MAX / 2;

/// Resets the per-call budgets before a call into the plugin.
fn arm(store: &mut Store<State>, limits: &Limits, checks: EngineChecks) -> anyhow::Result<()> {
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

/// Why a call into the plugin did not return: a limit, a crash, an exit, or a failed host call.
fn trap_message(e: &wasmtime::Error, store: &Store<State>, limits: &Limits) -> String {
    let text = format!("{e:#}");
    let reason =
        if e.downcast_ref::<DeadlinePassed>().is_some() || matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            format!("exceeded its time limit: a call ran longer than {} s (limits.call_seconds)", limits.call_seconds)
        } else if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            // WASI 0.2's `exit` (what Rust's and C's `exit` call) passes only success or failure:
            // `exit(3)` arrives as 1. `exit-with-code` (WASI 0.2.12) passes the code itself.
            match exit.0 {
                0 => "exited (status 0) instead of returning from its call".to_string(),
                1 => "exited with a failure status (1: WASI 0.2 passes any non-zero exit code as 1)".to_string(),
                code => format!("exited with status {code}"),
            }
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => {
                    format!("used up its fuel: {} units in one call (limits.fuel)", limits.fuel.unwrap_or(u64::MAX))
                }
                _ if text.contains("growing memory") => {
                    format!("exceeded its memory limit of {} MiB (limits.memory_mb)", limits.memory_mb)
                }
                // wasmtime's bound on what one call hands the host (`set_hostcall_fuel`).
                _ if text.contains("too much data is being copied between the host and the guest") => format!(
                    "returned more data than its memory limit of {} MiB holds (limits.memory_mb): the host copies no \
                     more than that out of one call",
                    limits.memory_mb
                ),
                Some(Trap::UnreachableCodeReached) => "crashed (a panic, or `unreachable`)".to_string(),
                Some(trap) => format!("trapped: {trap}"),
                None => format!("failed: {}", cut(text.lines().next().unwrap_or_default())),
            }
        };
    // A Rust panic prints its message on stderr just before the trap: quote it.
    let tail = store.data().stderr_tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "));
    match tail {
        Ok(tail) if !tail.is_empty() => format!("{reason}; its last words on stderr: {}", cut(&tail)),
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
        let message = cut(&e.message);
        match e.row {
            Some(row) => RowError {
                row: row as usize,
                message: format!("plugin `{}` failed at row {row} of the batch: {message}", self.plugin),
            }
            .into(),
            None => anyhow::anyhow!("plugin `{}` failed: {message}", self.plugin),
        }
    }

    /// A batch the plugin returned, checked on the way in (`Batch::new`), and bounded by the
    /// step's memory limit: a plugin cannot hold more than `memory_mb` of data, so the host
    /// takes no more from it than that, however the batch encodes it ([`check_size`]).
    fn check(&self, batch: Result<Batch, BatchError>) -> anyhow::Result<Batch> {
        let batch = batch.map_err(|e| anyhow::anyhow!("plugin `{}` returned a malformed batch: {e}", self.plugin))?;
        check_size(&batch, &self.limits).map_err(|e| anyhow::anyhow!("plugin `{}` returned {e}", self.plugin))?;
        Ok(batch)
    }
}

/// Bytes of memory a plugin's limit allows per column it returns: at the default 1024 MiB, a
/// million columns.
const BYTES_PER_COLUMN: u64 = 1024;

/// Whether a batch fits the step's memory limit once spelled out: dictionary-encoded text (one
/// value referenced by every row: a 16 MiB text times 150 rows is 2.4 GiB in the steps after it),
/// and the number of columns (each costs the host whatever its size).
fn check_size(batch: &Batch, limits: &Limits) -> Result<(), String> {
    let budget = limits.memory_bytes();
    let columns = batch.columns().len() as u64;
    if columns > budget / BYTES_PER_COLUMN {
        return Err(format!(
            "a batch of {columns} columns, more than its memory limit of {} MiB allows (a column per KiB: \
             limits.memory_mb)",
            limits.memory_mb
        ));
    }
    let mut spelled_out = 0u64;
    for column in batch.columns() {
        if let crate::batch::Values::Dictionary(dictionary) = &column.values {
            for &key in &dictionary.keys {
                spelled_out += dictionary.values[key as usize].len() as u64;
                if spelled_out > budget {
                    return Err(format!(
                        "a batch whose dictionary-encoded text, spelled out (column `{}`), is more than its memory \
                         limit of {} MiB (limits.memory_mb): the host does not expand it",
                        column.name, limits.memory_mb
                    ));
                }
            }
        }
    }
    Ok(())
}

impl PluginStep {
    /// A fresh store with the step's limits armed, and the plugin's file name.
    fn store(&self) -> anyhow::Result<(Store<State>, String)> {
        let mut store =
            self.runtime.store(&self.step, self.assets.clone(), &self.sandbox, self.output.clone(), self.shard)?;
        arm(&mut store, &self.sandbox.limits, self.runtime.checks)?;
        Ok((store, self.plugin.file_name()))
    }

    /// The instance around a resource `open` returned, or why there is none: the plugin's
    /// refusal ([`Refused`]), or how instantiating or opening it failed.
    fn opened<B>(
        &self,
        store: Store<State>,
        bindings: B,
        name: String,
        result: wasmtime::Result<Result<ResourceAny, String>>,
    ) -> anyhow::Result<Instance<B>> {
        let limits = &self.sandbox.limits;
        match result {
            Ok(Ok(handle)) => Ok(Instance {
                store,
                bindings,
                handle,
                plugin: name,
                limits: limits.clone(),
                checks: self.runtime.checks,
            }),
            Ok(Err(message)) => Err(Refused { plugin: name, message: cut_owned(message) }.into()),
            Err(e) => Err(anyhow::anyhow!("plugin `{name}` {} while opening", trap_message(&e, &store, limits))),
        }
    }

    /// A failed instantiation: a trap in the component's start, or its deadline.
    fn not_instantiated(&self, e: wasmtime::Error, store: &Store<State>, name: &str) -> anyhow::Error {
        anyhow::anyhow!("plugin `{name}` {} while starting", trap_message(&e, store, &self.sandbox.limits))
    }

    async fn transform(&self) -> anyhow::Result<Instance<TransformBindings>> {
        let (mut store, name) = self.store()?;
        let bindings = match instantiate!(self, &mut store, transform::TransformPluginPre) {
            Ok(bindings) => bindings,
            Err(e) => return Err(self.not_instantiated(e, &store, &name)),
        };
        let deadline = self.sandbox.limits.deadline();
        let result = either!(&bindings, b => within(deadline, b.etl_plugin_transform().transformer().call_open(&mut store, &self.config)).await);
        self.opened(store, bindings, name, result)
    }

    async fn source(&self) -> anyhow::Result<Instance<SourceBindings>> {
        let (mut store, name) = self.store()?;
        let bindings = match instantiate!(self, &mut store, source::SourcePluginPre) {
            Ok(bindings) => bindings,
            Err(e) => return Err(self.not_instantiated(e, &store, &name)),
        };
        let deadline = self.sandbox.limits.deadline();
        let result = either!(&bindings, b => within(deadline, b.etl_plugin_source().reader().call_open(&mut store, &self.config)).await);
        self.opened(store, bindings, name, result)
    }

    async fn sink(&self) -> anyhow::Result<Instance<SinkBindings>> {
        let (mut store, name) = self.store()?;
        let bindings = match instantiate!(self, &mut store, sink::SinkPluginPre) {
            Ok(bindings) => bindings,
            Err(e) => return Err(self.not_instantiated(e, &store, &name)),
        };
        let deadline = self.sandbox.limits.deadline();
        let result = either!(&bindings, b => within(deadline, b.etl_plugin_sink().writer().call_open(&mut store, &self.config)).await);
        self.opened(store, bindings, name, result)
    }

    /// Instantiates the plugin once and opens it with the step's config and assets, then drops
    /// it: what `runner validate` does to learn whether the plugin accepts its config.
    pub async fn check_open(&self) -> anyhow::Result<()> {
        match self.plugin.contract.role {
            crate::spec::Role::Source => self.source().await.map(drop),
            crate::spec::Role::Transform => self.transform().await.map(drop),
            crate::spec::Role::Sink => self.sink().await.map(drop),
        }
    }
}

pub struct PluginTransform {
    instance: Instance<TransformBindings>,
    /// Set by a trap or a deadline: the instance cannot be entered again; `recover` replaces it.
    poisoned: bool,
    step: PluginStep,
}

impl PluginTransform {
    /// Instantiates the plugin and opens its transformer with the step's config (JSON).
    pub async fn open(step: &PluginStep) -> anyhow::Result<PluginTransform> {
        Ok(PluginTransform { instance: step.transform().await?, poisoned: false, step: step.clone() })
    }
}

#[async_trait]
impl Transform for PluginTransform {
    async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch> {
        let i = &mut self.instance;
        i.arm()?;
        let deadline = i.limits.deadline();
        let result = either!(&i.bindings, b => within(deadline, b
            .etl_plugin_transform()
            .transformer()
            .call_process(&mut i.store, i.handle, &batch.into()))
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
            tracing::warn!(step = %self.step.step, "replacing the plugin instance after a trap");
            self.instance = self.step.transform().await?;
            self.poisoned = false;
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.instance;
        i.arm()?;
        let deadline = i.limits.deadline();
        let result = either!(&i.bindings, b => within(deadline, b
            .etl_plugin_transform()
            .transformer()
            .call_finish(&mut i.store, i.handle))
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
    pub async fn open(step: &PluginStep, batch_rows: usize) -> anyhow::Result<PluginSource> {
        let instance = step.source().await?;
        Ok(PluginSource { instance, batch_rows: u32::try_from(batch_rows).unwrap_or(u32::MAX) })
    }
}

#[async_trait]
impl Source for PluginSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.instance;
        i.arm()?;
        let deadline = i.limits.deadline();
        let result = either!(&i.bindings, b => within(deadline, b
            .etl_plugin_source()
            .reader()
            .call_next(&mut i.store, i.handle, self.batch_rows))
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

pub struct PluginSink {
    instance: Instance<SinkBindings>,
    /// Rows the plugin's `write` took: durable once its `finish` returns ok.
    taken: u64,
}

impl PluginSink {
    pub async fn open(step: &PluginStep) -> anyhow::Result<PluginSink> {
        Ok(PluginSink { instance: step.sink().await?, taken: 0 })
    }
}

#[async_trait]
impl Sink for PluginSink {
    /// A failed `write` took nothing of the batch (the contract): an error naming a row
    /// refuses that row, any other refuses the batch. A trap fails the run.
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Acks> {
        let i = &mut self.instance;
        i.arm()?;
        let deadline = i.limits.deadline();
        let rows = batch.rows() as u64;
        let result = either!(&i.bindings, b => within(deadline, b
            .etl_plugin_sink()
            .writer()
            .call_write(&mut i.store, i.handle, &batch.into()))
            .await
            .map(|r| r.map_err(CallError::from)));
        match result {
            Ok(Ok(())) => {
                self.taken += rows;
                Ok(Acks::default())
            }
            Ok(Err(e)) if e.row.is_some() => Err(i.failed(e)),
            Ok(Err(e)) => Err(BatchRefused(format!("{:#}", i.failed(e))).into()),
            Err(e) => Err(i.trapped(e)),
        }
    }

    /// The plugin's `finish`: what it took is durable once it returns ok.
    async fn commit(&mut self) -> anyhow::Result<Acks> {
        let i = &mut self.instance;
        i.arm()?;
        let deadline = i.limits.deadline();
        let result = either!(&i.bindings, b => within(deadline, b
            .etl_plugin_sink()
            .writer()
            .call_finish(&mut i.store, i.handle))
            .await
            .map(|r| r.map_err(CallError::from)));
        match result {
            Ok(Ok(())) => Ok(Acks::rows(self.taken)),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_past_its_deadline_is_abandoned() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        };
        let started = std::time::Instant::now();
        let e = within(Some(Duration::from_millis(50)), slow).await.unwrap_err();
        assert!(e.downcast_ref::<DeadlinePassed>().is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(within(None, async { Ok(7) }).await.unwrap(), 7);
    }
}
