//! What a run did: counts and timings per step, as a text table or as JSON (`--report json`).

use std::time::Duration;

use serde_json::json;

use crate::spec::Role;
use crate::step::{Shard, SplitInfo};

/// What one stage did.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub batches: u64,
    pub rows_in: u64,
    /// For a sink: rows it accepted.
    pub rows_out: u64,
    /// Time spent inside the step's own calls, summed over its workers.
    pub busy: Duration,
    /// Rows the step's error policy skipped or dead-lettered.
    pub rejected: u64,
    /// Lines of a plugin's output (log, stdout, stderr) dropped over its rate limit.
    pub suppressed: u64,
}

impl Counts {
    /// Adds another worker's counts.
    pub fn add(&mut self, other: &Counts) {
        self.batches += other.batches;
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.busy += other.busy;
        self.rejected += other.rejected;
        self.suppressed += other.suppressed;
    }
}

/// How a plugin step's component was loaded.
#[derive(Debug, Clone)]
pub struct PluginLoad {
    /// `hit`, `miss` or `off`.
    pub cache: String,
    pub load_time: Duration,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct StepStats {
    pub name: String,
    pub role: Role,
    /// `csv`, `plugin derive.wasm`.
    pub label: String,
    pub plugin: Option<PluginLoad>,
    /// Instances running in parallel (transforms).
    pub workers: usize,
    pub counts: Counts,
}

/// The outcome of a run: counts per step, and the error if it failed.
pub struct RunReport {
    pub pipeline: String,
    pub steps: Vec<StepStats>,
    /// The whole run, loading the plugins included.
    pub elapsed: Duration,
    /// From the start until the sink accepted its first rows (none if it accepted none).
    pub first_rows: Option<Duration>,
    /// The part of the input this run read: shard `i/N`, and the source's splits of it.
    pub shard: Shard,
    pub splits: Vec<SplitInfo>,
    /// A planned run's checkpoints: where, and how many of the shard's splits were already done.
    pub resumed: Option<Resumed>,
    pub error: Option<anyhow::Error>,
}

/// What a planned shard found recorded in its checkpoints when it started.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The shard's checkpoints (a folder or an `s3://` prefix).
    pub checkpoints: String,
    /// The shard's splits already done, skipped by this run.
    pub done: usize,
    /// The shard's splits in the plan.
    pub splits: usize,
}

impl RunReport {
    /// Rows the source produced.
    pub fn rows_read(&self) -> u64 {
        self.steps.first().map_or(0, |s| s.counts.rows_out)
    }

    /// Rows the sink accepted.
    pub fn rows_written(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.counts.rows_out)
    }
}

impl RunReport {
    /// The report as one JSON object, for scripts and benchmarks.
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<_> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "role": s.role.to_string(),
                    "implementation": s.label,
                    "workers": s.workers,
                    "batches": s.counts.batches,
                    "rows_in": s.counts.rows_in,
                    "rows_out": s.counts.rows_out,
                    "busy_seconds": s.counts.busy.as_secs_f64(),
                    "rejected": s.counts.rejected,
                    "suppressed_lines": s.counts.suppressed,
                    "plugin": s.plugin.as_ref().map(|p| json!({
                        "cache": p.cache,
                        "load_seconds": p.load_time.as_secs_f64(),
                        "bytes": p.size,
                    })),
                })
            })
            .collect();
        json!({
            "pipeline": self.pipeline,
            "ok": self.error.is_none(),
            "error": self.error.as_ref().map(|e| format!("{e:#}")),
            "seconds": self.elapsed.as_secs_f64(),
            "first_row_seconds": self.first_rows.map(|d| d.as_secs_f64()),
            "rows_read": self.rows_read(),
            "rows_written": self.rows_written(),
            "shard": { "index": self.shard.index, "count": self.shard.count },
            "splits": self.splits.iter().map(|s| {
                let mut split = json!({ "object": s.object, "start": s.range.start, "end": s.range.end });
                if let Some(group) = s.row_group {
                    split["row_group"] = json!(group);
                }
                split
            }).collect::<Vec<_>>(),
            "resumed": self.resumed.as_ref().map(|r| json!({
                "checkpoints": r.checkpoints,
                "done": r.done,
                "splits": r.splits,
            })),
            "steps": steps,
        })
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 { self.rows_read() as f64 / seconds } else { 0.0 };
        let outcome = if self.error.is_some() { "FAILED after" } else { "finished in" };
        let first = self.first_rows.map(|d| format!(" (first row written at {:.3} s)", d.as_secs_f64()));
        let shard = if self.shard.count > 1 { format!(", shard {}", self.shard) } else { String::new() };
        writeln!(
            f,
            "pipeline `{}`{shard} {outcome} {seconds:.3} s{}: {} rows read, {} rows written, {rate:.0} rows/s",
            self.pipeline,
            first.unwrap_or_default(),
            self.rows_read(),
            self.rows_written(),
        )?;
        if self.shard.count > 1 {
            let bytes: u64 = self.splits.iter().map(|s| s.range.end - s.range.start).sum();
            writeln!(f, "  read {} splits of the input, {bytes} bytes", self.splits.len())?;
        }
        match &self.resumed {
            Some(resumed) if resumed.done > 0 => writeln!(
                f,
                "  resumed: {} of {} splits already done (checkpoints: {})",
                resumed.done, resumed.splits, resumed.checkpoints
            )?,
            Some(resumed) => writeln!(f, "  checkpoints: {}", resumed.checkpoints)?,
            None => {}
        }
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
        // `plugin x.wasm ×2`: the implementation, and its workers when there are several.
        let labels: Vec<String> = self
            .steps
            .iter()
            .map(|s| if s.workers > 1 { format!("{} ×{}", s.label, s.workers) } else { s.label.clone() })
            .collect();
        let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max("implementation".len());
        writeln!(
            f,
            "  {:<width$}  {:<9}  {:<label_width$}  {:>10}  {:>10}  {:>10}",
            "step", "role", "implementation", "rows in", "rows out", "busy"
        )?;
        for (step, label) in self.steps.iter().zip(&labels) {
            let rows_in = if step.role == Role::Source { "-".to_string() } else { step.counts.rows_in.to_string() };
            write!(
                f,
                "  {:<width$}  {:<9}  {:<label_width$}  {:>10}  {:>10}  {:>10}",
                step.name,
                step.role.to_string(),
                label,
                rows_in,
                step.counts.rows_out,
                format_duration(step.counts.busy),
            )?;
            if step.counts.rejected > 0 {
                write!(f, "  ({} rows rejected)", step.counts.rejected)?;
            }
            if step.counts.suppressed > 0 {
                write!(f, "  ({} lines of plugin output dropped)", step.counts.suppressed)?;
            }
            if let Some(load) = &step.plugin {
                write!(
                    f,
                    "  (cache {}, loaded in {}, {} KiB)",
                    load.cache,
                    format_duration(load.load_time),
                    load.size / 1024
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn format_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}
