//! Scores a CSV natively with the predictor's code, for the benchmark (bench/scoring.py):
//! the same `Predictor` the plugin runs inside WebAssembly, without WebAssembly.
//!
//! ```text
//! cargo run --release --example score -- MODEL CSV [--engine fast|tract] [--rows N] [--batch N] [--repeat N]
//! ```
//! Every CSV column is a feature, in order; an empty field is a missing value. The rows are
//! parsed into columnar batches first; then each batch goes through what the plugin does with
//! it: gather the feature columns, score them, name the classes (Iris's three names, as a
//! dictionary and a key per row, as the plugin returns them). Prints one
//! JSON line: rows, seconds spent on that (model loading excluded; the best of `--repeat`
//! passes) and microseconds per row. `runner/examples/score_plugin.rs` is its WebAssembly
//! counterpart: the same work plus the trip across the component boundary.

use std::time::Instant;

use onnx_predictor::predictor::{Feature, Predictor, TreeEngine, class_keys, gather};

/// Natively, the runner's allocator (as `runner/examples/score_plugin.rs` has): the label
/// strings cost what they cost in the host.
#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A feature column's values and null mask.
type Column = (Vec<f64>, Option<Vec<bool>>);

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: score MODEL CSV [--engine fast|tract] [--rows N] [--batch N] [--repeat N]";
    let (model, csv) = match (args.first(), args.get(1)) {
        (Some(m), Some(c)) => (m, c),
        _ => return Err(usage.into()),
    };
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let engine = match option("--engine").as_deref() {
        None | Some("fast") => TreeEngine::Fast,
        Some("tract") => TreeEngine::Tract,
        Some(other) => return Err(format!("unknown engine {other}; {usage}")),
    };
    let max_rows: usize = option("--rows").map_or(Ok(usize::MAX), |v| v.parse()).map_err(|e| format!("--rows: {e}"))?;
    let batch: usize = option("--batch").map_or(Ok(4096), |v| v.parse()).map_err(|e| format!("--batch: {e}"))?;
    let repeat: usize = option("--repeat").map_or(Ok(1), |v| v.parse()).map_err(|e| format!("--repeat: {e}"))?;

    let text = std::fs::read_to_string(csv).map_err(|e| format!("{csv}: {e}"))?;
    let mut lines = text.lines();
    let width = lines.next().ok_or("empty CSV")?.split(',').count();
    // Columnar batches of (values, null mask), as the plugin receives them.
    let mut batches: Vec<Vec<Column>> = Vec::new();
    let mut rows = 0;
    for line in lines.take(max_rows) {
        if rows % batch == 0 {
            batches.push(vec![(Vec::with_capacity(batch), Some(Vec::with_capacity(batch))); width]);
        }
        let columns = batches.last_mut().expect("pushed above");
        for ((values, nulls), field) in columns.iter_mut().zip(line.split(',')) {
            let value = field.parse::<f64>().ok();
            values.push(value.unwrap_or(0.0));
            nulls.as_mut().expect("set until the end").push(value.is_none());
        }
        rows += 1;
    }
    // A column without nulls comes without a mask.
    for (_, nulls) in batches.iter_mut().flatten() {
        if !nulls.as_ref().is_some_and(|n| n.contains(&true)) {
            *nulls = None;
        }
    }
    let bytes = std::fs::read(model).map_err(|e| format!("{model}: {e}"))?;
    let predictor = Predictor::load(&bytes, width, engine)?;
    let classes: Vec<String> = ["setosa", "versicolor", "virginica"].map(String::from).into();

    let mut seconds = f64::INFINITY;
    let mut checksum = 0.0f64;
    let mut input = Vec::new();
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        checksum = 0.0;
        for columns in &batches {
            let features: Vec<(Feature, Option<&[bool]>)> =
                columns.iter().map(|(values, nulls)| (Feature::F64(values), nulls.as_deref())).collect();
            let n = columns[0].0.len();
            gather(&features, n, &mut input);
            let prediction = predictor.predict(&input, n)?;
            if let Some(onnx_predictor::predictor::Labels::Int(ids)) = &prediction.labels {
                // As the plugin does: a dictionary of the names, a key per row.
                let names = classes.clone();
                let keys = class_keys(ids, names.len()).map_err(|(row, e)| format!("row {row}: {e}"))?;
                checksum += keys.iter().map(|&k| names[k as usize].len() as f64).sum::<f64>();
            }
            checksum += prediction.scores.map_or(0.0, |s| s.iter().map(|&v| v as f64).sum());
        }
        seconds = seconds.min(started.elapsed().as_secs_f64());
    }
    println!(
        "{{\"engine\": \"{engine:?}\", \"rows\": {rows}, \"seconds\": {seconds}, \"us_per_row\": {}, \"checksum\": {checksum}}}",
        seconds * 1e6 / rows as f64
    );
    Ok(())
}
