//! How far a run has got: rows written, and the share of the input read when the source knows
//! its size. Shown as a progress line on standard error for interactive runs.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters updated by the steps while they run (relaxed atomics: display only).
#[derive(Debug, Default)]
pub struct Progress {
    rows: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
    /// When the sink accepted its first rows.
    first_rows: std::sync::OnceLock<Instant>,
}

impl Progress {
    /// Rows the sink accepted.
    pub fn rows_written(&self, rows: u64) {
        if rows > 0 {
            self.first_rows.get_or_init(Instant::now);
        }
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// When the sink accepted its first rows, if it has.
    pub fn first_rows(&self) -> Option<Instant> {
        self.first_rows.get().copied()
    }

    /// The source will read this many more bytes in all.
    pub fn expect_bytes(&self, bytes: u64) {
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The source read this many bytes.
    pub fn read_bytes(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Draws a progress line on standard error until the returned guard is dropped, if the run
    /// is interactive: standard output and standard error are terminals. A run whose output
    /// goes to a file or a pipe, or runs in CI, draws nothing.
    pub fn show(self: &Arc<Self>, wanted: bool) -> Option<Display> {
        if !wanted || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
        let progress = self.clone();
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
                let rows = progress.rows.load(Ordering::Relaxed);
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                let total = progress.bytes_total.load(Ordering::Relaxed);
                if total > 0 {
                    ticker.set_style(sized.clone());
                    ticker.set_length(total);
                    ticker.set_position(progress.bytes_read.load(Ordering::Relaxed).min(total));
                } else {
                    ticker.set_style(rows_only.clone());
                }
                ticker.set_message(format!("{rows} rows written, {rate:.0} rows/s"));
                ticker.tick();
            }
        });
        Some(Display { bar, task })
    }
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

/// A reader that reports the bytes it passes on.
pub struct Counting<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R> Counting<R> {
    pub fn new(inner: R, progress: Arc<Progress>) -> Counting<R> {
        Counting { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.read_bytes(n as u64);
        Ok(n)
    }
}
