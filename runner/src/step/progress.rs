//! How far a run has got, as the steps report it: rows the sink took and rows its store
//! acknowledged, rows the source produced, bytes the source read out of how many. The pipeline
//! draws the progress line, or logs progress lines, from these counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::SplitInfo;

/// Counters updated by the steps while they run (relaxed atomics: display only).
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows the source produced.
    read: AtomicU64,
    rows: AtomicU64,
    acknowledged: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
    /// Round trips to the sink's store (Redis) that settled, and the attempts past the first.
    round_trips: AtomicU64,
    retries: AtomicU64,
    /// When the sink took its first rows.
    first_rows: std::sync::OnceLock<Instant>,
    /// The parts of the input the source reads (a CSV source says; for the report).
    splits: std::sync::Mutex<Vec<SplitInfo>>,
}

impl Progress {
    /// Rows the source produced.
    pub fn rows_read(&self, rows: u64) {
        self.read.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows the source produced so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Rows the sink took (written, or queued to be).
    pub fn rows_taken(&self, rows: u64) {
        if rows > 0 {
            self.first_rows.get_or_init(Instant::now);
        }
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows the sink's store acknowledged (durable).
    pub fn rows_acknowledged(&self, rows: u64) {
        self.acknowledged.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// The source reads these parts of the input.
    pub fn record_splits(&self, splits: Vec<SplitInfo>) {
        *self.splits.lock().unwrap_or_else(|p| p.into_inner()) = splits;
    }

    /// What [`Progress::record_splits`] recorded.
    pub fn splits(&self) -> Vec<SplitInfo> {
        self.splits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// When the sink took its first rows, if it has.
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

    /// A round trip to the sink's store settled, after `attempts` sends.
    pub fn round_trip(&self, attempts: u64) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.retries.fetch_add(attempts.saturating_sub(1), Ordering::Relaxed);
    }

    /// Round trips to the sink's store so far, and retries.
    pub fn round_trips(&self) -> (u64, u64) {
        (self.round_trips.load(Ordering::Relaxed), self.retries.load(Ordering::Relaxed))
    }

    /// Rows the sink took so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Bytes read so far, and in all (0 when the source does not know).
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_read.load(Ordering::Relaxed), self.bytes_total.load(Ordering::Relaxed))
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
