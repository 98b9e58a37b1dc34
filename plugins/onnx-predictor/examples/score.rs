//! Scores a CSV natively with the predictor's code, for the benchmark (bench/scoring.py):
//! the same `Predictor` the plugin runs inside WebAssembly, without WebAssembly.
//!
//! ```text
//! cargo run --release --example score -- MODEL CSV [--engine fast|tract] [--rows N] [--batch N] [--repeat N]
//! ```
//! Every CSV column is a feature, in order; an empty field is a missing value. Prints one JSON
//! line: rows, seconds spent scoring (model loading excluded; the best of `--repeat` passes) and
//! microseconds per row. `runner/examples/score_plugin.rs` is its WebAssembly counterpart.

use std::time::Instant;

use onnx_predictor::predictor::{Predictor, TreeEngine};

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
    let mut input = Vec::new();
    let mut rows = 0;
    for line in lines.take(max_rows) {
        input.extend(
            line.split(',')
                .map(|v| if v.is_empty() { f32::NAN } else { v.parse::<f64>().map_or(f32::NAN, |x| x as f32) }),
        );
        rows += 1;
    }
    let bytes = std::fs::read(model).map_err(|e| format!("{model}: {e}"))?;
    let predictor = Predictor::load(&bytes, width, engine)?;

    let mut seconds = f64::INFINITY;
    let mut checksum = 0.0f64;
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        checksum = 0.0;
        for chunk in input.chunks(batch * width) {
            let prediction = predictor.predict(chunk, chunk.len() / width)?;
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
