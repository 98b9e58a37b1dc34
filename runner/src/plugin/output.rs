//! Bounds on what a plugin can make the host print: an operator's log is not the plugin's to
//! fill.
//!
//! - Every text a plugin hands the host (an error message, a log line, a line of its stdout or
//!   stderr) is cut at [`MESSAGE_BYTES`], ending in `... (N bytes cut)`.
//! - The lines a step's plugin logs or prints share one budget per step, whatever the number
//!   of workers: [`RATE_BYTES`] per second on average, in bursts of up to [`BURST_BYTES`],
//!   each line counted with [`LINE_OVERHEAD`] bytes for what the log adds to it (time, level,
//!   step). Lines over the budget are dropped and counted; the run summary and the JSON report
//!   show the count, and the log says when dropping starts and stops.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use crate::format::{MESSAGE_BYTES, cut, cut_owned};

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
