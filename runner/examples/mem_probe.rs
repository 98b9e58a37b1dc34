//! Times three loops in one process, in nanoseconds per iteration: 20 million reads at
//! pseudo-random places of a table of `BYTES` (default 1 MiB, rounded down to a power of two),
//! the index masked; the same with the index taken by a 64-bit division (`%` of a length the
//! compiler cannot see); and the arithmetic alone, no read.
//!
//! ```text
//! cargo run --release -p runner --example mem_probe -- [BYTES]
//! for i in $(seq 12); do target/release/examples/mem_probe; done
//! ```
//! On the 2-core VM the benchmarks were measured on, some figures differ from process to
//! process by up to half (README, "How fast"), with no WebAssembly involved: compare only
//! figures from many processes taken in turn, as the benchmarks do.

use std::hint::black_box;
use std::time::Instant;

const READS: u32 = 20_000_000;

/// The next of Marsaglia's xorshift64 sequence.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Nanoseconds per iteration of `step`, which adds to the checksum.
fn time(sum: &mut u64, mut step: impl FnMut(&mut u64) -> u64) -> f64 {
    let mut x = 88_172_645_463_325_252u64;
    let started = Instant::now();
    for _ in 0..READS {
        *sum = sum.wrapping_add(step(&mut x));
    }
    started.elapsed().as_nanos() as f64 / f64::from(READS)
}

fn main() {
    let bytes: usize = std::env::args().nth(1).map_or(1 << 20, |b| b.parse().expect("BYTES: a number"));
    let len = 1usize << (bytes / 4).max(1).ilog2();
    let table: Vec<u32> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761)).collect();
    let (mask, n) = (len as u64 - 1, black_box(len as u64));
    let mut sum = 0;
    let masked = time(&mut sum, |x| u64::from(table[(next(x) & mask) as usize]));
    let divided = time(&mut sum, |x| u64::from(table[(next(x) % n) as usize]));
    let alone = time(&mut sum, |x| black_box(next(x) & mask));
    println!(
        "{masked:.2} ns a read, {divided:.2} with a division, {alone:.2} without the read ({} bytes; checksum {sum})",
        len * 4
    );
}
