//! Runs a WASI program (a wasm32-wasip2 command component) on the engine settings plugins get,
//! for the benchmarks: `bench/scoring.py` runs the predictor's native benchmark program,
//! `plugins/onnx-predictor/examples/score.rs`, compiled to WebAssembly this way. The same code
//! then runs natively and in WebAssembly doing the same work, without the component boundary
//! a plugin call adds (`score_plugin.rs` measures that call).
//!
//! ```text
//! cargo run --release -p runner --example wasi_command -- PROGRAM.wasm [--no-deadline] [--dir DIR ...] -- ARGS...
//! ```
//! Each `--dir` is readable by the program at the same path; it sees nothing else of the host.
//! `--no-deadline` compiles the program without deadline checks, as the runner compiles plugins
//! when no plugin step of a run has a deadline (`limits.call_seconds = 0`).
//! Its stdout and stderr are the runner's. The compiled program is cached as plugins are.

use std::path::Path;

use anyhow::{Context, bail};
use runner::plugin::contract::{PACKAGE, VERSION};
use runner::plugin::{ComponentCache, EngineChecks, engine_config};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

struct Program {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Program {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: wasi_command PROGRAM.wasm [--no-deadline] [--dir DIR ...] -- ARGS...";
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (ours, theirs) = (&args[..split], args.get(split + 1..).unwrap_or_default());
    let Some(program) = ours.first() else { bail!(usage) };

    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdout().inherit_stderr().arg(program).args(theirs);
    let mut checks = EngineChecks::default();
    let mut rest = ours[1..].iter();
    while let Some(option) = rest.next() {
        if option == "--no-deadline" {
            checks.deadline = false;
            continue;
        }
        match (option.as_str(), rest.next()) {
            ("--dir", Some(dir)) => {
                wasi.preopened_dir(dir, dir, FsPerms::ReadOnly).map_err(|e| anyhow::anyhow!("{dir}: {e}"))?;
            }
            _ => bail!(usage),
        }
    }

    let engine = Engine::new(&engine_config(checks))?;
    let bytes = std::fs::read(program).with_context(|| program.clone())?;
    let cache =
        ComponentCache::new(std::env::var_os("RUNNER_CACHE_DIR").map(Into::into).or_else(ComponentCache::default_dir));
    let (component, _) = cache.load(&engine, &bytes).with_context(|| program.clone())?;

    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // The predictor's library carries its plugin glue, which imports the runner's `host`
    // interface; a program never calls it.
    let mut host = linker.instance(&format!("{PACKAGE}/host@{VERSION}"))?;
    for name in ["log", "asset"] {
        host.func_new(name, move |_, _, _, _| Err(wasmtime::format_err!("a program cannot call host.{name}")))?;
    }
    let mut store = Store::new(&engine, Program { wasi: wasi.build(), table: ResourceTable::new() });
    if checks.deadline {
        // A program runs to its end: a deadline it never reaches, as for a plugin step whose
        // `call_seconds = 0` in a run where others have deadlines.
        store.set_epoch_deadline(u64::MAX / 2);
    }
    let command = Command::instantiate_async(&mut store, &component, &linker).await?;
    match command.wasi_cli_run().call_run(&mut store).await? {
        Ok(()) => Ok(()),
        Err(()) => bail!("{} exited with an error", Path::new(program).display()),
    }
}
