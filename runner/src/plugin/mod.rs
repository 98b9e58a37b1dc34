//! WebAssembly component plugins: loading, sandboxing, and adapters to the step traits.
//!
//! - `bindings`: host bindings generated from `wit/plugin.wit` and the older contracts the runner
//!   still speaks (`runner/contracts/`).
//! - `cache`: compiled components on disk, so only the first run pays for Cranelift.
//! - `contract`: which world (step kind) and contract version a component implements.
//! - `sandbox`: limits (memory, time per call, fuel) and grants (directories, environment,
//!   network) of a plugin step; its stdout and stderr go to the log.
//! - `state`: the per-instance store data: the WASI context built from the grants, the memory
//!   limiter, and the host functions plugins import (`log`, `asset`).
//! - `convert`: moving batches across the boundary.
//! - `output`: bounds on what a plugin can make the host print (message size, log rate).
//! - `steps`: `PluginSource`, `PluginTransform`, `PluginSink`, the adapters the pipeline drives,
//!   and the wall-clock deadline of every call.

mod bindings;
pub mod cache;
pub mod contract;
mod convert;
pub mod output;
pub mod sandbox;
mod state;
mod steps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, Store};

pub use cache::{CacheOutcome, ComponentCache};
pub use contract::Contract;
pub use steps::{PluginSink, PluginSource, PluginStep, PluginTransform, Refused};

use crate::spec::Role;
use crate::spec::Sandbox;
use state::State;

/// The bytes of a step's assets, by the name the spec gives them.
pub type AssetBytes = Arc<BTreeMap<String, Arc<Vec<u8>>>>;

/// The wasmtime engine, the linker with everything plugins may import, and the compile cache.
/// One per run: every plugin step shares it.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<State>,
    cache: ComponentCache,
    /// What the engine's compiled code checks.
    checks: EngineChecks,
    /// Stops the epoch ticker when the runtime goes.
    ticker: Arc<std::sync::atomic::AtomicBool>,
}

/// What the compiled code of every plugin in a run checks as it runs. Each check costs time in
/// every loop of a plugin, whatever it does (docs/performance.md measures the deadline's), and
/// it is compiled in for the whole engine, so a run checks only what one of its plugin steps
/// asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineChecks {
    /// Call deadlines (epoch interruption): unless every plugin step sets
    /// `limits.call_seconds = 0`.
    pub deadline: bool,
    /// Fuel: only when a step sets `limits.fuel`.
    pub fuel: bool,
}

impl Default for EngineChecks {
    /// What a step gets when its spec says nothing: a deadline, no fuel.
    fn default() -> Self {
        EngineChecks { deadline: true, fuel: false }
    }
}

impl EngineChecks {
    /// What the plugin steps of a run need, given their sandboxes: nothing without any (unlike
    /// `default`, which is what one step with an empty spec needs).
    pub fn needed<'a>(sandboxes: impl IntoIterator<Item = &'a Sandbox>) -> EngineChecks {
        let mut checks = EngineChecks { deadline: false, fuel: false };
        for sandbox in sandboxes {
            checks.deadline |= sandbox.limits.deadline().is_some();
            checks.fuel |= sandbox.limits.fuel.is_some();
        }
        checks
    }

    /// For `runner validate`: `deadline checks, no fuel`.
    pub fn describe(&self) -> String {
        let deadline = if self.deadline { "deadline checks" } else { "no deadline checks" };
        let fuel = if self.fuel { "fuel counted" } else { "no fuel" };
        format!("{deadline}, {fuel}")
    }
}

/// How often the engine's epoch advances: the resolution of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A component compiled, checked against the contract, and ready to instantiate.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub contract: Contract,
    /// The component's size in bytes.
    pub size: u64,
    pub cache: CacheOutcome,
    /// Time to compile or to load from the cache.
    pub load_time: Duration,
    pre: InstancePre<State>,
}

/// The engine settings plugins run under (the benchmarks' WASI programs too): the component
/// model, deadlines checked by epoch and fuel counted as `checks` says.
pub fn engine_config(checks: EngineChecks) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(checks.deadline).consume_fuel(checks.fuel);
    // For profiling with `perf`: name the plugins' compiled functions in /tmp/perf-<pid>.map.
    if std::env::var_os("RUNNER_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl PluginRuntime {
    /// An engine whose compiled code makes `checks`. The compile cache keys on these settings
    /// too.
    pub fn new(cache: ComponentCache, checks: EngineChecks) -> anyhow::Result<PluginRuntime> {
        let engine = Engine::new(&engine_config(checks))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The host interfaces of every contract version the runner speaks, side by side.
        bindings::v0_2::transform::TransformPlugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        bindings::v0_1::transform::TransformPlugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        // Deadlines are counted in epochs; one thread advances them for every instance.
        let ticker = Arc::new(std::sync::atomic::AtomicBool::new(true));
        if checks.deadline {
            let (running, ticking) = (ticker.clone(), engine.weak());
            std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        }
        Ok(PluginRuntime { engine, linker, cache, checks, ticker })
    }

    pub fn checks(&self) -> EngineChecks {
        self.checks
    }

    /// Reads, compiles (or loads from the cache) and checks the component at `path`.
    /// Errors are one-line explanations meant for the user; the caller adds the step's name.
    pub fn load(&self, path: &Path) -> anyhow::Result<LoadedPlugin> {
        let started = Instant::now();
        let (bytes, component, cache) = self.compile(path)?;
        let contract = Contract::of(&component, &self.engine).with_context(|| path.display().to_string())?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{} needs an import the runner does not provide: {e}", path.display()))?;
        Ok(LoadedPlugin {
            path: path.to_path_buf(),
            contract,
            size: bytes.len() as u64,
            cache,
            load_time: started.elapsed(),
            pre,
        })
    }

    /// Describes a component file, whether or not it fits this runner (`runner plugin inspect`).
    pub fn inspect(&self, path: &Path) -> anyhow::Result<Inspection> {
        let (bytes, component, _) = self.compile(path)?;
        let ty = component.component_type();
        Ok(Inspection {
            size: bytes.len() as u64,
            imports: ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect(),
            exports: ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect(),
            contract: Contract::of(&component, &self.engine).map_err(|e| format!("{e:#}")),
            links: self.linker.instantiate_pre(&component).map(|_| ()).map_err(|e| format!("{e:#}")),
        })
    }

    /// Reads the file at `path`, checks that it is a component, and compiles it (or loads it
    /// from the cache): its bytes, the component, and whether the cache had it.
    fn compile(&self, path: &Path) -> anyhow::Result<(Vec<u8>, wasmtime::component::Component, CacheOutcome)> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?;
        contract::check_header(&bytes).with_context(|| format!("{} is not a plugin", path.display()))?;
        let (component, cache) = self
            .cache
            .load(&self.engine, &bytes)
            .with_context(|| format!("{} is not a valid WebAssembly component", path.display()))?;
        Ok((bytes, component, cache))
    }

    /// A store for one instance of a step's plugin, with the step's limits in force.
    fn store(
        &self,
        step: &str,
        assets: AssetBytes,
        sandbox: &Sandbox,
        output: Arc<output::OutputBudget>,
        shard: crate::step::Shard,
    ) -> anyhow::Result<Store<State>> {
        let mut store = Store::new(&self.engine, State::new(step, assets, sandbox, output, shard)?);
        store.limiter(|state| &mut state.limits);
        // What the host copies out of the plugin in one call (a batch it returns, a message it
        // logs) is bounded by the plugin's own memory limit, counted as wasmtime lifts it,
        // before anything is copied: strings that all point at one text cannot make the host
        // hold the text once per row.
        store.set_hostcall_fuel(usize::try_from(sandbox.limits.memory_bytes()).unwrap_or(usize::MAX));
        if self.checks.deadline {
            store.epoch_deadline_trap();
        }
        Ok(store)
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What `runner plugin inspect` reports about a component.
pub struct Inspection {
    pub size: u64,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The contract it implements, or why it implements none this runner speaks.
    pub contract: Result<Contract, String>,
    /// Whether the runner provides every import it needs.
    pub links: Result<(), String>,
}

impl LoadedPlugin {
    /// The file name, for messages: `derive.wasm`.
    pub fn file_name(&self) -> String {
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// Fails unless the component implements the world for `role`.
    pub fn expect_role(&self, role: Role) -> anyhow::Result<()> {
        if self.contract.role == role {
            Ok(())
        } else {
            anyhow::bail!(
                "{} is a {} plugin (it exports {}), but this step is a {role}",
                self.file_name(),
                self.contract.role,
                self.contract.export_name()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EngineChecks;
    use crate::spec::{Limits, Sandbox};

    fn sandbox(call_seconds: u64, fuel: Option<u64>) -> Sandbox {
        Sandbox { limits: Limits { call_seconds, fuel, ..Limits::default() }, ..Sandbox::default() }
    }

    #[test]
    fn the_engine_checks_what_one_plugin_step_needs() {
        let needed = |sandboxes: &[Sandbox]| EngineChecks::needed(sandboxes);
        assert_eq!(needed(&[]), EngineChecks { deadline: false, fuel: false });
        assert_eq!(needed(&[Sandbox::default()]), EngineChecks::default());
        assert_eq!(needed(&[sandbox(0, None)]), EngineChecks { deadline: false, fuel: false });
        assert_eq!(needed(&[sandbox(0, None), sandbox(5, None)]), EngineChecks { deadline: true, fuel: false });
        assert_eq!(needed(&[sandbox(0, Some(10)), sandbox(0, None)]), EngineChecks { deadline: false, fuel: true });
        assert_eq!(EngineChecks::default().describe(), "deadline checks, no fuel");
    }
}
