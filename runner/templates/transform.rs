//! `{{name}}`: a transform plugin. It keeps the rows whose `column` is at least `min`.
//!
//! Build:  cargo build --release --target wasm32-wasip2
//! Run:    runner run pipeline.toml
//!
//! The contract is `wit/plugin.wit` (world `transform-plugin`): `open` gets the step's `config`
//! table as JSON, `process` gets one batch of columns and returns the batch to pass on.

use etl::plugin::host::{self, Level};
use etl::plugin::types::{Batch, Column, Dictionary, Error, Values};
use exports::etl::plugin::transform::{Guest, GuestTransformer, Transformer};
use serde::Deserialize;

wit_bindgen::generate!({ path: "wit", world: "transform-plugin" });

/// The step's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The numeric column to test.
    column: String,
    /// Rows with a smaller value (or none) are dropped.
    min: f64,
}

struct Filter {
    config: Config,
}

impl GuestTransformer for Filter {
    fn open(config: String) -> Result<Transformer, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        host::log(Level::Info, &format!("keeping rows with {} >= {}", config.column, config.min));
        Ok(Transformer::new(Filter { config }))
    }

    fn process(&self, input: Batch) -> Result<Batch, Error> {
        let column = input.columns.iter().find(|c| c.name == self.config.column).ok_or_else(|| Error {
            message: format!("no column `{}`", self.config.column),
            row: None,
        })?;
        let keep: Vec<bool> = match &column.values {
            Values::F64(v) => v.iter().map(|&x| x >= self.config.min).collect(),
            Values::S64(v) => v.iter().map(|&x| x as f64 >= self.config.min).collect(),
            _ => return Err(Error { message: format!("column `{}` is not numeric", self.config.column), row: None }),
        };
        let keep: Vec<bool> = match &column.nulls {
            Some(nulls) => keep.iter().zip(nulls).map(|(&k, &null)| k && !null).collect(),
            None => keep,
        };
        // Every column keeps the same rows, so the batch stays rectangular.
        let columns = input.columns.into_iter().map(|c| retain(c, &keep)).collect();
        Ok(Batch { columns })
    }

    fn finish(&self) -> Result<Option<Batch>, Error> {
        Ok(None)
    }
}

fn retain(column: Column, keep: &[bool]) -> Column {
    fn pick<T>(values: Vec<T>, keep: &[bool]) -> Vec<T> {
        values.into_iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| v).collect()
    }
    let values = match column.values {
        Values::F64(v) => Values::F64(pick(v, keep)),
        Values::S64(v) => Values::S64(pick(v, keep)),
        Values::String(v) => Values::String(pick(v, keep)),
        Values::Bool(v) => Values::Bool(pick(v, keep)),
        // Text with few distinct values: the dictionary stays, the keys are filtered.
        Values::Dictionary(d) => Values::Dictionary(Dictionary { keys: pick(d.keys, keep), ..d }),
    };
    Column { name: column.name, values, nulls: column.nulls.map(|n| pick(n, keep)) }
}

struct Plugin;

impl Guest for Plugin {
    type Transformer = Filter;
}

export!(Plugin);
