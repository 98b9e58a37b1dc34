//! The `config` table of a `csv` source.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::batch::ColumnType;

/// The `config` table of a `csv` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// `url = "data/iris.csv"`: a path relative to the spec file, or `file:///...`.
    pub url: String,
    /// `delimiter = ";"`: the field separator, one ASCII character (default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
    /// `columns = { id = "s64", name = "string" }`: types of some or all columns; the others
    /// are typed from the whole input, as pandas types them.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnType>,
    /// `split_bytes = 67108864`: in a sharded run, objects larger than this are cut into byte
    /// ranges of this size, so several shards share them (default 64 MiB; 0: never cut an
    /// object, which a file with quoted fields holding newlines needs).
    #[serde(default = "default_split_bytes")]
    pub split_bytes: u64,
}

/// The default `split_bytes`: 64 MiB.
pub const DEFAULT_SPLIT_BYTES: u64 = 64 << 20;

fn default_split_bytes() -> u64 {
    DEFAULT_SPLIT_BYTES
}

fn comma() -> char {
    ','
}

impl CsvSourceConfig {
    /// What serde cannot check.
    pub(super) fn check(&self) -> Result<(), String> {
        if !self.delimiter.is_ascii() {
            return Err(format!("`delimiter` must be one ASCII character, found `{}`", self.delimiter));
        }
        Ok(())
    }
}
