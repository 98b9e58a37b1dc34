//! The progress line of interactive runs, drawn from the steps' counters ([`Progress`]).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::step::Progress;

/// Draws a progress line on standard error until the returned guard is dropped, if the run is
/// interactive: standard output and standard error are terminals. A run whose output goes to a
/// file or a pipe, or runs in CI, draws nothing.
pub fn show(progress: &Arc<Progress>, wanted: bool) -> Option<Display> {
    if !wanted || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
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
    Some(Display { bar, task })
}

/// The progress line; cleared when dropped, before the summary is printed.
pub struct Display {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
