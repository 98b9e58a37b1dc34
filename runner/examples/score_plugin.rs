//! Scores a CSV with the predictor plugin inside WebAssembly, for the benchmarks: the WASM
//! counterpart of `plugins/onnx-predictor/examples/score.rs`, under the same conditions.
//!
//! ```text
//! cargo run --release -p runner --example score_plugin -- PLUGIN MODEL CSV [--batch N] [--repeat N] [--class-ids] [--config JSON] [--no-deadline]
//! ```
//! Every CSV column is a feature (the four Iris columns). All rows are parsed into batches of
//! `--batch` rows before the clock starts, so only the plugin calls are timed, one instance, with
//! nothing else running: each call hands a columnar batch to the guest, which gathers the
//! features, scores them with tract and appends the label column, which comes back to the host.
//! The best of `--repeat` passes is reported, as one JSON line like the native example's.
//! `--class-ids` leaves `classes` out of the plugin's config, so the label column holds class ids
//! instead of names (a dictionary of the names, a key per row): what the names cost.
//! `--config JSON` replaces the plugin's config altogether, to time another transform plugin on
//! the same batches (`--config '{"attack": "none"}'` with the `hostile` fixture, which returns
//! its input: what the boundary alone costs). `--no-deadline` runs the step with
//! `limits.call_seconds = 0`, on an engine that compiles no deadline checks, as `runner run` does
//! when no plugin step has a deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use runner::batch::{Batch, Column, Values};
use runner::plugin::cache::ComponentCache;
use runner::plugin::output::OutputBudget;
use runner::plugin::{EngineChecks, PluginRuntime, PluginStep, PluginTransform};
use runner::spec::Sandbox;
use runner::step::Transform;

/// The runner's allocator (see `main.rs`), so the host's side of each call costs what it costs
/// in `runner run`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: score_plugin PLUGIN MODEL CSV [--batch N] [--repeat N] [--class-ids] [--config JSON] [--no-deadline]";
    let [plugin, model, csv] = [0, 1, 2].map(|i| args.get(i).cloned());
    let (Some(plugin), Some(model), Some(csv)) = (plugin, model, csv) else { anyhow::bail!(usage) };
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let batch_rows: usize = option("--batch").map_or(Ok(4096), |v| v.parse()).context("--batch")?;
    let repeat: usize = option("--repeat").map_or(Ok(3), |v| v.parse()).context("--repeat")?;

    let batches = read_batches(Path::new(&csv), batch_rows)?;
    let rows: usize = batches.iter().map(Batch::rows).sum();
    let cache =
        ComponentCache::new(std::env::var_os("RUNNER_CACHE_DIR").map(Into::into).or_else(ComponentCache::default_dir));
    let mut sandbox = Sandbox::default();
    if args.iter().any(|a| a == "--no-deadline") {
        sandbox.limits.call_seconds = 0;
    }
    let runtime = Arc::new(PluginRuntime::new(cache, EngineChecks::needed([&sandbox]))?);
    let loaded = runtime.load(Path::new(&plugin))?;
    let assets = Arc::new(BTreeMap::from([("model".to_string(), Arc::new(std::fs::read(&model).context(model)?))]));
    if option("--config").is_some() && args.iter().any(|a| a == "--class-ids") {
        anyhow::bail!("--class-ids changes the predictor's config; with --config, write the config you want");
    }
    let config = if let Some(config) = option("--config") {
        serde_json::from_str(&config).context("--config")?
    } else if args.iter().any(|a| a == "--class-ids") {
        serde_json::json!({ "features": FEATURES })
    } else {
        serde_json::json!({ "features": FEATURES, "classes": ["setosa", "versicolor", "virginica"] })
    };
    let step = PluginStep {
        runtime,
        plugin: loaded,
        step: "score".into(),
        config: config.to_string(),
        assets,
        sandbox,
        output: Arc::new(OutputBudget::new("score")),
        shard: Default::default(),
    };
    let mut step = PluginTransform::open(&step).await?;

    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let inputs = batches.clone();
        let started = Instant::now();
        for batch in inputs {
            step.process(batch).await?;
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("{{\"rows\": {rows}, \"seconds\": {best}, \"us_per_row\": {}}}", best * 1e6 / rows as f64);
    Ok(())
}

/// The CSV's rows as batches of `f64` columns named after the Iris features.
fn read_batches(path: &Path, batch_rows: usize) -> anyhow::Result<Vec<Batch>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let mut batches = Vec::new();
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); FEATURES.len()];
    let mut flush = |columns: &mut Vec<Vec<f64>>| -> anyhow::Result<()> {
        let full = std::mem::replace(columns, vec![Vec::new(); FEATURES.len()]);
        let named = FEATURES.iter().zip(full).map(|(name, v)| Column::new(*name, Values::F64(v))).collect();
        batches.push(Batch::new(named)?);
        Ok(())
    };
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), line + 2))?;
        for (column, field) in columns.iter_mut().zip(record.iter()) {
            column.push(field.parse().with_context(|| format!("{}: row {}", path.display(), line + 2))?);
        }
        if columns[0].len() == batch_rows {
            flush(&mut columns)?;
        }
    }
    if !columns[0].is_empty() {
        flush(&mut columns)?;
    }
    Ok(batches)
}
