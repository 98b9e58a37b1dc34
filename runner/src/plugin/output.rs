//! What a plugin prints and logs, and the bounds on it: an operator's log is not the plugin's to
//! fill. [`LogLines`] carries a plugin's stdout and stderr into the runner's log, line by line.
//!
//! - Every text a plugin hands the host (an error message, a log line, a line of its stdout or
//!   stderr) is cut at [`MESSAGE_BYTES`], ending in `... (N bytes cut)`.
//! - The lines a step's plugin logs or prints share one budget per step, whatever the number
//!   of workers: [`RATE_BYTES`] per second on average, in bursts of up to [`BURST_BYTES`],
//!   each line counted with [`LINE_OVERHEAD`] bytes for what the log adds to it (time, level,
//!   step). Lines over the budget are dropped and counted; the run summary and the JSON report
//!   show the count, and the log says when dropping starts and stops.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWrite;

pub use crate::format::{MESSAGE_BYTES, cut, cut_owned};

/// The last lines a plugin wrote to standard error: quoted when it traps (a Rust panic prints
/// its message there).
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// Lines of standard error kept for the error message of a trap.
pub const TAIL_LINES: usize = 3;

/// The average rate of a step's log lines, in bytes per second.
pub const RATE_BYTES: u64 = 64 << 10;
/// The most a step can log at once before the rate applies, in bytes.
pub const BURST_BYTES: u64 = 256 << 10;
/// What one line costs besides its text: the log's own prefix.
pub const LINE_OVERHEAD: u64 = 128;

/// The log budget of one step, shared by all its instances: a token bucket of bytes.
#[derive(Debug)]
pub struct OutputBudget {
    step: String,
    bucket: Mutex<Bucket>,
    /// Lines dropped over the whole run.
    suppressed: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be logged now.
    tokens: u64,
    /// When `tokens` was last topped up.
    refilled: Instant,
    /// Lines dropped since dropping began, while the step is over its rate.
    dropping: Option<u64>,
}

impl OutputBudget {
    pub fn new(step: &str) -> OutputBudget {
        OutputBudget {
            step: step.to_string(),
            bucket: Mutex::new(Bucket { tokens: BURST_BYTES, refilled: Instant::now(), dropping: None }),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Lines dropped so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// Whether a line of `bytes` may be logged now; a dropped line is counted. The log says
    /// once when the step starts to be cut off, and how many lines it lost once it has slowed
    /// down (its budget half full again): two lines per episode, however long.
    pub fn admit(&self, bytes: usize) -> bool {
        let cost = bytes.min(MESSAGE_BYTES) as u64 + LINE_OVERHEAD;
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let earned = (now.duration_since(bucket.refilled).as_secs_f64() * RATE_BYTES as f64) as u64;
        if earned > 0 {
            bucket.tokens = (bucket.tokens + earned).min(BURST_BYTES);
            bucket.refilled = now;
        }
        if bucket.tokens < cost {
            if bucket.dropping.is_none() {
                tracing::warn!(
                    target: "plugin",
                    step = %self.step,
                    "the plugin's output exceeds {} KiB/s: dropping lines until it slows down",
                    RATE_BYTES >> 10
                );
            }
            *bucket.dropping.get_or_insert(0) += 1;
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(dropped) = bucket.dropping
            && bucket.tokens >= BURST_BYTES / 2
        {
            bucket.dropping = None;
            tracing::warn!(target: "plugin", step = %self.step, "{dropped} lines of the plugin's output were dropped");
        }
        bucket.tokens -= cost;
        true
    }
}

/// A writer that sends each line to the log, tagged with the step and the stream: at most
/// [`MESSAGE_BYTES`] of a line, within the step's output budget.
pub struct LogLines {
    step: String,
    stream: &'static str,
    line: Vec<u8>,
    /// Bytes of the current line past [`MESSAGE_BYTES`], not kept.
    cut: usize,
    tail: Option<StderrTail>,
    output: Arc<OutputBudget>,
}

impl LogLines {
    pub fn new(step: &str, stream: &'static str, tail: Option<StderrTail>, output: Arc<OutputBudget>) -> LogLines {
        LogLines { step: step.to_string(), stream, line: Vec::new(), cut: 0, tail, output }
    }

    fn emit(&mut self) {
        let mut text = String::from_utf8_lossy(&self.line).trim_end_matches(['\r', '\n']).to_string();
        self.line.clear();
        if std::mem::take(&mut self.cut) > 0 {
            text = cut_owned(text);
        }
        if text.is_empty() {
            return;
        }
        if let Some(tail) = &self.tail
            && let Ok(mut tail) = tail.lock()
        {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.clone());
        }
        if self.output.admit(text.len()) {
            tracing::info!(target: "plugin", step = %self.step, stream = self.stream, "{text}");
        }
    }

    /// Keeps `bytes` of the current line, up to [`MESSAGE_BYTES`]; counts the rest as cut.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MESSAGE_BYTES.saturating_sub(self.line.len()).min(bytes.len());
        self.line.extend_from_slice(&bytes[..room]);
        self.cut += bytes.len() - room;
    }
}

impl AsyncWrite for LogLines {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.keep(&rest[..end]);
            self.emit();
            rest = &rest[end + 1..];
        }
        self.keep(rest);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_held_to_the_burst() {
        let budget = OutputBudget::new("flood");
        let admitted = (0..10_000).filter(|_| budget.admit(1024)).count() as u64;
        let per_line = 1024 + LINE_OVERHEAD;
        // The burst, plus what the rate earned while the loop ran (well under a second).
        assert!(admitted >= BURST_BYTES / per_line && admitted <= (BURST_BYTES + RATE_BYTES) / per_line, "{admitted}");
        assert_eq!(budget.suppressed(), 10_000 - admitted);
    }
}
