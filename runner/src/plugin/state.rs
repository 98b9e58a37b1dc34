//! The data each plugin instance's store holds, and the host functions plugins import.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::AssetBytes;
use super::bindings::v0_1;
use super::bindings::v0_2::{host, types};
use super::output::StderrTail;
use super::output::{OutputBudget, cut};
use crate::spec::Sandbox;
use crate::step::Shard;

pub struct State {
    /// WASI as the plugin sees it: only what the step's `grants` give (by default no
    /// directory, no environment variable, no socket); stdout and stderr go to the log.
    wasi: WasiCtx,
    table: ResourceTable,
    /// The step's name, to tag the plugin's log lines.
    step: Arc<str>,
    assets: AssetBytes,
    /// What the step's instances may log, together.
    output: Arc<OutputBudget>,
    /// The part of the input this run reads (`host.shard`).
    shard: Shard,
    /// The memory cap, enforced by wasmtime when the instance grows its memory.
    pub limits: StoreLimits,
    pub stderr_tail: StderrTail,
}

impl State {
    pub fn new(
        step: &str,
        assets: AssetBytes,
        sandbox: &Sandbox,
        output: Arc<OutputBudget>,
        shard: Shard,
    ) -> anyhow::Result<State> {
        let stderr_tail = StderrTail::default();
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size((sandbox.limits.memory_mb << 20) as usize)
            .trap_on_grow_failure(true)
            .build();
        Ok(State {
            wasi: super::sandbox::wasi(&sandbox.grants, step, &stderr_tail, &output)?,
            table: ResourceTable::new(),
            step: step.into(),
            assets,
            output,
            shard,
            limits,
            stderr_tail,
        })
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for State {}

impl host::Host for State {
    fn log(&mut self, level: host::Level, message: String) {
        // `tracing` needs the level at compile time, hence one arm per level (twice). A line the
        // log filter hides costs nothing of the step's output budget.
        let shown = match level {
            host::Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            host::Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            host::Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            host::Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            host::Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if !shown || !self.output.admit(message.len()) {
            return;
        }
        let step = &*self.step;
        let message = cut(&message);
        match level {
            host::Level::Trace => tracing::trace!(target: "plugin", step = %step, "{message}"),
            host::Level::Debug => tracing::debug!(target: "plugin", step = %step, "{message}"),
            host::Level::Info => tracing::info!(target: "plugin", step = %step, "{message}"),
            host::Level::Warn => tracing::warn!(target: "plugin", step = %step, "{message}"),
            host::Level::Error => tracing::error!(target: "plugin", step = %step, "{message}"),
        }
    }

    fn asset(&mut self, name: String) -> Result<Vec<u8>, String> {
        self.asset_bytes(&name)
    }

    fn shard(&mut self) -> host::ShardOf {
        host::ShardOf { index: self.shard.index, count: self.shard.count }
    }
}

impl v0_1::types::Host for State {}

/// Contract 0.1.0's `host` is the same as today's.
impl v0_1::host::Host for State {
    fn log(&mut self, level: v0_1::host::Level, message: String) {
        use v0_1::host::Level as Old;
        let level = match level {
            Old::Trace => host::Level::Trace,
            Old::Debug => host::Level::Debug,
            Old::Info => host::Level::Info,
            Old::Warn => host::Level::Warn,
            Old::Error => host::Level::Error,
        };
        host::Host::log(self, level, message)
    }

    fn asset(&mut self, name: String) -> Result<Vec<u8>, String> {
        self.asset_bytes(&name)
    }
}

impl State {
    fn asset_bytes(&self, name: &str) -> Result<Vec<u8>, String> {
        match self.assets.get(name) {
            Some(bytes) => Ok(bytes.as_ref().clone()),
            None if self.assets.is_empty() => {
                Err(format!("step `{}` declares no assets; add `assets = {{ {name} = \"url\" }}` to it", self.step))
            }
            None => Err(format!(
                "step `{}` declares no asset `{name}` (it declares: {})",
                self.step,
                self.assets.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}
