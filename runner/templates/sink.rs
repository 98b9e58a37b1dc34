//! `{{name}}`: a sink plugin. It logs how many rows it received, per batch and in all.
//!
//! Build:  cargo build --release --target wasm32-wasip2
//! Run:    runner run pipeline.toml
//!
//! The contract is `wit/plugin.wit` (world `sink-plugin`): `open` gets the step's `config`
//! table as JSON, `write` gets each batch, `finish` is called once at the end. A sink that
//! writes files needs a directory granted in the spec (`grants = { dirs = [...] }`).

use std::cell::Cell;

use etl::plugin::host::{self, Level};
use etl::plugin::types::{Batch, Error, Values};
use exports::etl::plugin::sink::{Guest, GuestWriter, Writer};
use serde::Deserialize;

wit_bindgen::generate!({ path: "wit", world: "sink-plugin" });

/// The step's `config` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A word to put in front of every log line.
    #[serde(default)]
    label: String,
}

struct Count {
    config: Config,
    rows: Cell<u64>,
}

impl GuestWriter for Count {
    fn open(config: String) -> Result<Writer, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        Ok(Writer::new(Count { config, rows: Cell::new(0) }))
    }

    fn write(&self, input: Batch) -> Result<(), Error> {
        let rows = input.columns.first().map_or(0, |c| match &c.values {
            Values::F64(v) => v.len(),
            Values::S64(v) => v.len(),
            Values::String(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Dictionary(d) => d.keys.len(),
        });
        self.rows.set(self.rows.get() + rows as u64);
        host::log(Level::Info, &format!("{}received {rows} rows", self.config.label));
        Ok(())
    }

    fn finish(&self) -> Result<(), Error> {
        host::log(Level::Info, &format!("{}received {} rows in all", self.config.label, self.rows.get()));
        Ok(())
    }
}

struct Plugin;

impl Guest for Plugin {
    type Writer = Count;
}

export!(Plugin);
