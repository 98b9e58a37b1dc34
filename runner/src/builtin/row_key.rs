//! `kind = "row-key"` transform: appends a key column, the SHA-256 of a row's values as text.
//!
//! ```toml
//! [[transform]]
//! kind = "row-key"
//! config = { columns = ["sepal_length", "sepal_width"], output = "key", prefix = "iris:" }
//! ```
//!
//! The key is exactly the original Python flow's: `sha256(" ".join(map(str, row)))`, hex, over
//! the chosen columns in order, where `row` is what pandas's `DataFrame.apply(..., axis=1)`
//! hands over: one Series of the columns' common type, so the text of a value depends on the
//! types of all the key columns ([`RowType`]): integers among floats are written as floats
//! (`5.0`), and so on. `str` is Python's: floats in shortest round-trip form (`5.0`, `1e-05`,
//! `1e+16`), integers in decimal, booleans `True`/`False`, and a missing value `nan`. The flow
//! keys every column of its frame: key the same columns (all the source's, in order) and the
//! keys are the flow's. A client that holds a row can compute the key itself and read the
//! prediction back; so can `runner lookup`.

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Kind, Opened};
use crate::batch::{Batch, Column, ColumnType, TextStyle, Values};
use crate::format::PythonFloats;
use crate::spec::Role;
use crate::step::{Frame, StepContext, Transform};

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
    frame: Frame,
}

/// `kind = "row-key"` in a transform.
#[async_trait]
impl Kind for RowKey {
    const ROLE: Role = Role::Transform;
    const NAME: &'static str = "row-key";
    type Config = RowKeyConfig;

    async fn open(config: &RowKeyConfig, context: &StepContext) -> anyhow::Result<Opened> {
        Ok(Opened::Transform(Box::new(RowKey::new(config.clone(), context.frame))))
    }

    fn reads(config: &RowKeyConfig) -> Vec<String> {
        config.columns.clone()
    }

    /// Its input, and the key column after it.
    fn output_columns(config: &RowKeyConfig, input: &[String]) -> Result<Option<Vec<String>>, String> {
        if input.contains(&config.output) {
            return Err(format!("its input already has a column `{}`: set `output` to another name", config.output));
        }
        Ok(Some(input.iter().cloned().chain([config.output.clone()]).collect()))
    }
}

impl RowKey {
    /// Keys as the original flow does over the frame pandas reads the source into.
    pub fn new(config: RowKeyConfig, frame: Frame) -> RowKey {
        RowKey { config, frame }
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
        let row_type = RowType::of(columns.iter().map(|c| c.values.column_type()));
        let mut text = String::with_capacity(64);
        let mut keys = Vec::with_capacity(batch.rows());
        let mut floats: Vec<PythonFloats> = columns.iter().map(|_| PythonFloats::default()).collect();
        for row in 0..batch.rows() {
            text.clear();
            for (i, (column, floats)) in columns.iter().zip(&mut floats).enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                push_python_str(&mut text, column, row, row_type, self.frame, floats);
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

/// The type of the Series pandas makes of a row: the common type of its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowType {
    /// Every column `s64`: integers as integers (`5`).
    Int,
    /// `f64` columns, maybe with `s64` ones: integers as floats (`5.0`).
    Float,
    /// Every column `bool`.
    Bool,
    /// Text among them, or booleans among numbers: pandas's `object`; each value is written as
    /// its own type (`5`, `5.5`, `True`, `x`).
    Object,
}

impl RowType {
    /// The common type of columns of these types.
    pub fn of(types: impl IntoIterator<Item = ColumnType>) -> RowType {
        let (mut int, mut float, mut boolean, mut text) = (false, false, false, false);
        for ty in types {
            match ty {
                ColumnType::S64 => int = true,
                ColumnType::F64 => float = true,
                ColumnType::Bool => boolean = true,
                ColumnType::String => text = true,
            }
        }
        match (int, float, boolean, text) {
            (_, _, _, true) | (true, _, true, _) | (_, true, true, _) => RowType::Object,
            (_, _, true, false) => RowType::Bool,
            (_, true, false, false) => RowType::Float,
            _ => RowType::Int,
        }
    }
}

/// Appends Python's `str()` of one value, as pandas hands it to the original flow in a row of
/// type `row_type`, from a frame read as `frame` says.
fn push_python_str(
    text: &mut String,
    column: &Column,
    row: usize,
    row_type: RowType,
    frame: Frame,
    floats: &mut PythonFloats,
) {
    if column.is_null(row) {
        // pyarrow hands pandas a missing boolean as `None` (an `object` column); every other
        // missing value is NaN (pandas's `str` dtype, categories, floats).
        let none = frame == Frame::Parquet && matches!(column.values, Values::Bool(_));
        text.push_str(if none { "None" } else { "nan" });
        return;
    }
    let style = TextStyle::Python { ints_as_floats: row_type == RowType::Float };
    column.values.write_text(row, style, floats, text);
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
            RowKey::new(config, Frame::Csv).keys(&batch).unwrap().remove(0)
        };
        let text = |t: &str| format!("{:x}", Sha256::digest(t.as_bytes()));
        assert_eq!(key(&["a"], ""), text("5.1"));
        // A row of pandas's `object` type (a bool among numbers): each value as its own type.
        assert_eq!(key(&[], ""), text("5.1 3 True nan"));
        assert_eq!(key(&["d", "a"], "iris:"), format!("iris:{}", text("nan 5.1")));
        // Integers among floats are upcast, as pandas upcasts the row; alone they stay integers.
        assert_eq!(key(&["a", "b"], ""), text("5.1 3.0"));
        assert_eq!(key(&["b"], ""), text("3"));
        assert_eq!(key(&["c"], ""), text("True"));
    }

    #[test]
    fn rows_take_the_common_type_of_their_columns() {
        use ColumnType::*;
        let of = |types: &[ColumnType]| RowType::of(types.iter().copied());
        assert_eq!(of(&[S64, S64]), RowType::Int);
        assert_eq!(of(&[S64, F64]), RowType::Float);
        assert_eq!(of(&[F64]), RowType::Float);
        assert_eq!(of(&[Bool, Bool]), RowType::Bool);
        assert_eq!(of(&[Bool, S64]), RowType::Object);
        assert_eq!(of(&[F64, Bool]), RowType::Object);
        assert_eq!(of(&[F64, String]), RowType::Object);
        assert_eq!(of(&[]), RowType::Int);
    }
}
