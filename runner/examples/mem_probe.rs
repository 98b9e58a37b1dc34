//! How fast this machine reads memory at random, in one process: nanoseconds per read from a
//! table of `BYTES` (default 1 MiB), 20 million reads at pseudo-random places.
//!
//! ```text
//! cargo run --release -p runner --example mem_probe -- [BYTES]
//! for i in $(seq 12); do target/release/examples/mem_probe; done
//! ```
//! On the 2-core VM these benchmarks were measured on, the figure differs from process to
//! process (3.10-3.48 or 4.04-4.74 ns at 1 MiB in twelve runs, 17.4-33.6 ns at 8 MiB in eight): the
//! memory each process is given is not equally fast. Every memory-bound program inherits that
//! (the tree scoring, native or WebAssembly, and redis-server), so compare only figures from
//! many processes taken in turn (README, "How fast").

use std::time::Instant;

const READS: u64 = 20_000_000;

fn main() {
    let bytes: usize = std::env::args().nth(1).map_or(1 << 20, |b| b.parse().expect("BYTES: a number"));
    let n = (bytes / 4).max(1);
    let table: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let (mut x, mut sum) = (88_172_645_463_325_252u64, 0u64);
    let started = Instant::now();
    for _ in 0..READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(u64::from(table[(x % n as u64) as usize]));
    }
    let ns = started.elapsed().as_nanos() as f64 / READS as f64;
    println!("{ns:.2} ns per read ({bytes} bytes; checksum {sum})");
}
