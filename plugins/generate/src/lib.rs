//! `generate`: a source plugin that makes Iris-like rows, the same ones for the same seed.
//!
//! ```toml
//! [source]
//! plugin = "generate"
//! config = { rows = 1_000_000, seed = 7 }
//! ```
//!
//! Columns: `sepal_length`, `sepal_width`, `petal_length`, `petal_width` (f64, two decimals,
//! drawn around the three species' means) and `id` (s64, from 0). Handy to feed a pipeline
//! without any file or server. In a sharded run (`host.shard`), shard `i` of `n` makes the `i`-th
//! of `n` equal runs of ids, the same rows as one run makes for those ids.

use std::cell::Cell;

use etl::plugin::host;
use etl::plugin::types::{Batch, Column, Error, Values};
use exports::etl::plugin::source::{Guest, GuestReader, Reader};
use serde::Deserialize;

wit_bindgen::generate!({ path: "../../wit", world: "source-plugin" });

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How many rows in all.
    #[serde(default = "default_rows")]
    rows: u64,
    /// The same seed gives the same rows.
    #[serde(default)]
    seed: u64,
}

fn default_rows() -> u64 {
    1000
}

/// Means of the four measurements for setosa, versicolor and virginica.
const MEANS: [[f64; 4]; 3] = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]];

/// Draws of the generator per row: the species, then two per measurement.
const DRAWS_PER_ROW: u64 = 9;

struct Generate {
    total: u64,
    made: Cell<u64>,
    state: Cell<u64>,
}

impl Generate {
    /// The next number of a 64-bit linear congruential generator, in [0, 1).
    fn uniform(&self) -> f64 {
        let state = self.state.get().wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.state.set(state);
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl GuestReader for Generate {
    fn open(config: String) -> Result<Reader, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let state = Cell::new(config.seed ^ 0x9E37_79B9_7F4A_7C15);
        // This shard's ids: an equal run of them; the generator skips the draws of the rows before.
        let shard = host::shard();
        let (index, count) = (u64::from(shard.index), u64::from(shard.count.max(1)));
        let (first, end) = (config.rows * index / count, config.rows * (index + 1) / count);
        let generate = Generate { total: end, made: Cell::new(first), state };
        for _ in 0..first * DRAWS_PER_ROW {
            generate.uniform();
        }
        Ok(Reader::new(generate))
    }

    fn next(&self, max_rows: u32) -> Result<Option<Batch>, Error> {
        let rows = (self.total - self.made.get()).min(max_rows as u64) as usize;
        if rows == 0 {
            return Ok(None);
        }
        let mut columns: Vec<Vec<f64>> = (0..4).map(|_| Vec::with_capacity(rows)).collect();
        let mut ids = Vec::with_capacity(rows);
        for i in 0..rows {
            let species = (self.uniform() * 3.0) as usize % 3;
            for (c, column) in columns.iter_mut().enumerate() {
                // A triangular spread of +-0.5 around the mean, at least 0.1, two decimals.
                let spread = self.uniform() - self.uniform();
                let value = (MEANS[species][c] + 0.5 * spread).max(0.1);
                column.push((value * 100.0).round() / 100.0);
            }
            ids.push((self.made.get() + i as u64) as i64);
        }
        self.made.set(self.made.get() + rows as u64);
        let names = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
        let mut batch: Vec<Column> = names
            .iter()
            .zip(columns)
            .map(|(name, values)| Column { name: name.to_string(), values: Values::F64(values), nulls: None })
            .collect();
        batch.push(Column { name: "id".into(), values: Values::S64(ids), nulls: None });
        Ok(Some(Batch { columns: batch }))
    }
}

struct Plugin;

impl Guest for Plugin {
    type Reader = Generate;
}

export!(Plugin);
