//! How a run shows its progress, from the steps' counters ([`Progress`]): a progress line on an
//! interactive run, else a log line at a fixed interval.
//!
//! The log line is one line of `key=value` fields, after `progress:`, for grep and log tools:
//!
//! ```text
//! progress: elapsed_s=20 read_rows=1200000 written_rows=1180000 rejected_rows=3 rows_per_s=61000 bytes_read=52428800 bytes_total=104857600 percent=50.0 eta_s=20 rejected.source=2 rejected.score=1
//! ```
//!
//! `read_rows` the source produced, `written_rows` the sink's store acknowledged,
//! `rejected_rows` all steps' error policies rejected (and `rejected.STEP` each step's, when
//! any), `rows_per_s` written over the last interval; `bytes_read`, `bytes_total`, `percent` and
//! `eta_s` (at the last interval's pace) when the source knows its size.

use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::step::{Policy, Progress};

/// What the caller asked for: progress shown at all, and how often a run that is not
/// interactive logs it.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub shown: bool,
    pub every: Option<Duration>,
}

/// Shows progress until the returned guard is dropped: a progress line on standard error when
/// the run is interactive (standard output and standard error are terminals), else, every
/// `wanted.every`, a log line ([`line`]). `rejected`: each step's name and policy, whose count
/// of rejected rows the log line reports.
pub fn show(progress: &Arc<Progress>, wanted: Wanted, rejected: Vec<(String, Policy)>) -> Option<Display> {
    if !wanted.shown {
        return None;
    }
    if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        return Some(bar(progress));
    }
    let every = wanted.every?;
    let progress = progress.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut last = (started, 0, 0);
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            interval.tick().await;
            let now = Instant::now();
            let (written, (read_bytes, _)) = (progress.acknowledged(), progress.bytes());
            tracing::info!("{}", line(&progress, &rejected, now - started, (now - last.0, last.1, last.2)));
            last = (now, written, read_bytes);
        }
    });
    Some(Display { bar: None, task })
}

/// The log line: the counters now, and rates over the last interval (its length, and the rows
/// written and bytes read at its start).
fn line(progress: &Progress, rejected: &[(String, Policy)], elapsed: Duration, last: (Duration, u64, u64)) -> String {
    let (interval, written_then, read_then) = last;
    let seconds = interval.as_secs_f64().max(1e-3);
    let written = progress.acknowledged();
    let all_rejected: u64 = rejected.iter().map(|(_, policy)| policy.rejected()).sum();
    let mut line = format!(
        "progress: elapsed_s={} read_rows={} written_rows={written} rejected_rows={all_rejected} rows_per_s={:.0}",
        elapsed.as_secs(),
        progress.read(),
        written.saturating_sub(written_then) as f64 / seconds,
    );
    let (read, total) = progress.bytes();
    if total > 0 {
        let pace = read.saturating_sub(read_then) as f64 / seconds;
        let _ =
            write!(line, " bytes_read={read} bytes_total={total} percent={:.1}", read as f64 * 100.0 / total as f64);
        if pace > 0.0 {
            let _ = write!(line, " eta_s={:.0}", total.saturating_sub(read) as f64 / pace);
        }
    }
    for (step, policy) in rejected {
        if policy.rejected() > 0 {
            let key: String =
                step.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
            let _ = write!(line, " rejected.{key}={}", policy.rejected());
        }
    }
    line
}

/// The progress line of an interactive run, redrawn five times a second.
fn bar(progress: &Arc<Progress>) -> Display {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    let progress = progress.clone();
    let started = Instant::now();
    let ticker = bar.clone();
    let task = tokio::spawn(async move {
        let sized = ProgressStyle::with_template("{spinner} {msg}  [{bar:24}] {percent:>3}% of input, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> ");
        let rows_only = ProgressStyle::with_template("{spinner} {msg}").expect("a valid template");
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            interval.tick().await;
            let rows = progress.rows();
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let (read, total) = progress.bytes();
            if total > 0 {
                ticker.set_style(sized.clone());
                ticker.set_length(total);
                ticker.set_position(read.min(total));
            } else {
                ticker.set_style(rows_only.clone());
            }
            ticker.set_message(format!("{rows} rows to the sink, {rate:.0} rows/s"));
            ticker.tick();
        }
    });
    Display { bar: Some(bar), task }
}

/// Progress being shown; stopped (the line cleared) when dropped, before the summary is printed.
pub struct Display {
    bar: Option<ProgressBar>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
