//! `{{name}}`: a source plugin. It counts from 1 to `rows`, in a column `n`.
//!
//! Build:  cargo build --release --target wasm32-wasip2
//! Run:    runner run pipeline.toml
//!
//! The contract is `wit/plugin.wit` (world `source-plugin`): `open` gets the step's `config`
//! table as JSON; `next` returns a batch of at most `max-rows` rows, or `none` when done.

use std::cell::Cell;

use etl::plugin::types::{Batch, Column, Error, Values};
use exports::etl::plugin::source::{Guest, GuestReader, Reader};
use serde::Deserialize;

wit_bindgen::generate!({ path: "wit", world: "source-plugin" });

/// The step's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How many rows to produce.
    rows: u64,
}

struct Counter {
    rows: u64,
    next: Cell<u64>,
}

impl GuestReader for Counter {
    fn open(config: String) -> Result<Reader, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        Ok(Reader::new(Counter { rows: config.rows, next: Cell::new(1) }))
    }

    fn next(&self, max_rows: u32) -> Result<Option<Batch>, Error> {
        let first = self.next.get();
        if first > self.rows {
            return Ok(None);
        }
        let last = self.rows.min(first + max_rows as u64 - 1);
        self.next.set(last + 1);
        let n: Vec<i64> = (first as i64..=last as i64).collect();
        Ok(Some(Batch { columns: vec![Column { name: "n".into(), values: Values::S64(n), nulls: None }] }))
    }
}

struct Plugin;

impl Guest for Plugin {
    type Reader = Counter;
}

export!(Plugin);
