//! `derive`: a transform plugin that appends columns computed from arithmetic over other columns.
//!
//! ```toml
//! [[transform]]
//! plugin = "derive"
//! [[transform.config.columns]]
//! name = "petal_area"
//! expr = "petal_length * petal_width"
//! ```
//!
//! An expression has numbers, column names (f64 or s64 columns; a name with other characters
//! goes in backticks), `+ - * /`, unary minus and parentheses. The result is an f64 column; a
//! row where any input is null gets a null. Expressions are parsed once, when the plugin opens,
//! so a typo fails the pipeline before any data flows.

mod expr;

use std::collections::HashMap;

use etl::plugin::host::{self, Level};
use etl::plugin::types::{Batch, Column, Error, Values};
use exports::etl::plugin::transform::{Guest, GuestTransformer, Transformer};
use expr::Expr;
use serde::Deserialize;

wit_bindgen::generate!({ path: "../../wit", world: "transform-plugin" });

/// The step's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The columns to append, in order.
    columns: Vec<ColumnSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnSpec {
    name: String,
    expr: String,
}

struct Derive {
    columns: Vec<(String, Expr)>,
}

impl GuestTransformer for Derive {
    fn open(config: String) -> Result<Transformer, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let mut columns = Vec::with_capacity(config.columns.len());
        for spec in config.columns {
            let expr = Expr::parse(&spec.expr)
                .map_err(|e| format!("column `{}`: expression `{}`: {e}", spec.name, spec.expr))?;
            columns.push((spec.name, expr));
        }
        host::log(Level::Debug, &format!("deriving {} column(s)", columns.len()));
        Ok(Transformer::new(Derive { columns }))
    }

    fn process(&self, mut input: Batch) -> Result<Batch, Error> {
        let rows = input.columns.first().map_or(0, |c| len(&c.values));
        let mut derived = Vec::with_capacity(self.columns.len());
        {
            // Inputs are read as f64 once per batch, not once per use in an expression.
            let mut numeric: HashMap<&str, (Vec<f64>, Option<&[bool]>)> = HashMap::new();
            for (name, expr) in &self.columns {
                for input_name in expr.columns() {
                    if numeric.contains_key(input_name) {
                        continue;
                    }
                    let column = input
                        .columns
                        .iter()
                        .find(|c| c.name == input_name)
                        .ok_or_else(|| error(format!("column `{name}`: no input column `{input_name}`")))?;
                    let values = match &column.values {
                        Values::F64(v) => v.clone(),
                        Values::S64(v) => v.iter().map(|&x| x as f64).collect(),
                        _ => return Err(error(format!("column `{name}`: input `{input_name}` is not numeric"))),
                    };
                    numeric.insert(input_name, (values, column.nulls.as_deref()));
                }
                let mut nulls = vec![false; rows];
                let mut any_null = false;
                for input_name in expr.columns() {
                    if let Some(mask) = numeric[input_name].1 {
                        for (n, &m) in nulls.iter_mut().zip(mask) {
                            *n |= m;
                            any_null |= m;
                        }
                    }
                }
                let values = expr.eval(rows, &|c| numeric[c].0.as_slice());
                derived.push(Column {
                    name: name.clone(),
                    values: Values::F64(values),
                    nulls: any_null.then_some(nulls),
                });
            }
        }
        input.columns.extend(derived);
        Ok(input)
    }

    fn finish(&self) -> Result<Option<Batch>, Error> {
        Ok(None)
    }
}

fn len(values: &Values) -> usize {
    match values {
        Values::F64(v) => v.len(),
        Values::S64(v) => v.len(),
        Values::String(v) => v.len(),
        Values::Bool(v) => v.len(),
        Values::Dictionary(d) => d.keys.len(),
    }
}

fn error(message: String) -> Error {
    Error { message, row: None }
}

struct Plugin;

impl Guest for Plugin {
    type Transformer = Derive;
}

export!(Plugin);
