//! `kind = "row-key"` transform: appends a key column, the SHA-256 of a row's values as text.
//!
//! ```toml
//! [[transform]]
//! kind = "row-key"
//! config = { columns = ["sepal_length", "sepal_width"], output = "key", prefix = "iris:" }
//! ```
//!
//! The key is exactly the original Python flow's: `sha256(" ".join(str(v) for v in row))`, hex,
//! over the chosen columns in order, where `str` is Python's: floats in shortest round-trip form
//! (`5.0`, `1e-05`, `1e+16`), integers in decimal, booleans `True`/`False`, and a missing value
//! `nan` (pandas reads an empty field as NaN). A client that holds a row can compute the key
//! itself and read the prediction back; so can `runner lookup`.

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::batch::{Batch, Column, Values};
use crate::format::PythonFloats;
use crate::step::Transform;

/// The `config` table of a `row-key` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowKeyConfig {
    /// `columns = ["a", "b"]`: the columns that make the key, in order (default: every column
    /// of the batch as it reaches this step, in order).
    #[serde(default)]
    pub columns: Vec<String>,
    /// `output = "key"`: the name of the appended column.
    #[serde(default = "default_output")]
    pub output: String,
    /// `prefix = "iris:"`: text put before each hex digest.
    #[serde(default)]
    pub prefix: String,
}

fn default_output() -> String {
    "key".into()
}

pub struct RowKey {
    config: RowKeyConfig,
}

impl RowKey {
    pub fn new(config: RowKeyConfig) -> RowKey {
        RowKey { config }
    }

    /// The key of every row of `batch`.
    pub fn keys(&self, batch: &Batch) -> anyhow::Result<Vec<String>> {
        let columns: Vec<&Column> = if self.config.columns.is_empty() {
            batch.columns().iter().collect()
        } else {
            self.config
                .columns
                .iter()
                .map(|name| {
                    batch.column(name).ok_or_else(|| {
                        let have: Vec<&str> = batch.columns().iter().map(|c| c.name.as_str()).collect();
                        anyhow::anyhow!("no column `{name}` to key on (the batch has: {})", have.join(", "))
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        let mut text = String::with_capacity(64);
        let mut keys = Vec::with_capacity(batch.rows());
        let mut floats: Vec<PythonFloats> = columns.iter().map(|_| PythonFloats::default()).collect();
        for row in 0..batch.rows() {
            text.clear();
            for (i, (column, floats)) in columns.iter().zip(&mut floats).enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                push_python_str(&mut text, column, row, floats);
            }
            let digest = Sha256::digest(text.as_bytes());
            let mut hex = [0u8; 64];
            for (pair, byte) in hex.chunks_exact_mut(2).zip(digest) {
                pair[0] = HEX[(byte >> 4) as usize];
                pair[1] = HEX[(byte & 0xF) as usize];
            }
            let mut key = String::with_capacity(self.config.prefix.len() + 64);
            key.push_str(&self.config.prefix);
            key.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
            keys.push(key);
        }
        Ok(keys)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends Python's `str()` of one value, as pandas would hand it to the original flow.
fn push_python_str(text: &mut String, column: &Column, row: usize, floats: &mut PythonFloats) {
    if column.is_null(row) {
        text.push_str("nan");
        return;
    }
    match &column.values {
        Values::F64(v) => floats.write(text, v[row]),
        Values::S64(v) => text.push_str(itoa::Buffer::new().format(v[row])),
        Values::Bool(v) => text.push_str(if v[row] { "True" } else { "False" }),
        Values::String(_) | Values::Dictionary(_) => text.push_str(column.values.text(row).unwrap_or_default()),
    }
}

#[async_trait]
impl Transform for RowKey {
    async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch> {
        if batch.column(&self.config.output).is_some() {
            anyhow::bail!("the batch already has a column `{}`; set `output` to another name", self.config.output);
        }
        let keys = self.keys(&batch)?;
        let mut columns = batch.into_columns();
        columns.push(Column::new(self.config.output.clone(), Values::String(keys)));
        Ok(Batch::new(columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_original_flows_keys() {
        // sha256(b"5.1 3.5 1.4 0.2").hexdigest(), and with an integer, a bool and a null.
        let mut nulls = Column::new("d", Values::F64(vec![0.0]));
        nulls.nulls = Some(vec![true]);
        let batch = Batch::new(vec![
            Column::new("a", Values::F64(vec![5.1])),
            Column::new("b", Values::S64(vec![3])),
            Column::new("c", Values::Bool(vec![true])),
            nulls,
        ])
        .unwrap();
        let key = |columns: &[&str], prefix: &str| {
            let config = RowKeyConfig {
                columns: columns.iter().map(|c| c.to_string()).collect(),
                output: "key".into(),
                prefix: prefix.into(),
            };
            RowKey::new(config).keys(&batch).unwrap().remove(0)
        };
        let text = |t: &str| format!("{:x}", Sha256::digest(t.as_bytes()));
        assert_eq!(key(&["a"], ""), text("5.1"));
        assert_eq!(key(&[], ""), text("5.1 3 True nan"));
        assert_eq!(key(&["d", "a"], "iris:"), format!("iris:{}", text("nan 5.1")));
    }
}
