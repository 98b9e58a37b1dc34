//! The WIT glue: the step's config, the model asset, and batches in and out.
//!
//! ```toml
//! [[transform]]
//! name = "score"
//! plugin = "onnx-predictor"
//! assets = { model = "../models/iris/model.json" }   # XGBoost JSON, or an ONNX model
//! [transform.config]
//! features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]  # model input order
//! classes = ["setosa", "versicolor", "virginica"]  # label i is written as classes[i]
//! output = "label"                                 # the appended column (default "label")
//! probabilities = true                             # also append p_setosa, p_versicolor, ...
//! ```

use std::cell::RefCell;

use serde::Deserialize;

use crate::predictor::{Feature, Labels, Prediction, Predictor, TreeEngine, class_keys, gather};
use etl::plugin::host::{self, Level};
use etl::plugin::types::{Batch, Column, Dictionary, Error, Values};
use exports::etl::plugin::transform::{Guest, GuestTransformer, Transformer};

wit_bindgen::generate!({ path: "../../wit", world: "transform-plugin" });

/// The step's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Input columns (f64 or s64), in the order the model expects them.
    features: Vec<String>,
    /// Class names by class index. Empty: labels are written as the model gives them.
    #[serde(default)]
    classes: Vec<String>,
    /// The appended column: the label (classifiers) or the value (regressors).
    #[serde(default = "default_output")]
    output: String,
    /// Also append one probability (or score) column per class: `{probability_prefix}{class}`.
    #[serde(default)]
    probabilities: bool,
    #[serde(default = "default_prefix")]
    probability_prefix: String,
    /// The name of the asset that holds the model (`assets = { model = "..." }`).
    #[serde(default = "default_asset")]
    model: String,
    /// `"fast"` (default) or `"tract"`: which implementation scores an ONNX model's tree
    /// ensembles (an XGBoost model is always scored by the fast one).
    #[serde(default)]
    tree_engine: TreeEngine,
}

fn default_output() -> String {
    "label".into()
}

fn default_prefix() -> String {
    "p_".into()
}

fn default_asset() -> String {
    "model".into()
}

struct Predict {
    config: Config,
    predictor: Predictor,
    /// The model's input, reused from batch to batch.
    input: RefCell<Vec<f32>>,
}

impl GuestTransformer for Predict {
    fn open(config: String) -> Result<Transformer, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        if config.features.is_empty() {
            return Err("`features` lists no columns".into());
        }
        let bytes = host::asset(&config.model)?;
        let predictor = Predictor::load(&bytes, config.features.len(), config.tree_engine)
            .map_err(|e| format!("asset `{}`: {e} (features: {})", config.model, config.features.join(", ")))?;
        host::log(
            Level::Debug,
            &format!("loaded model `{}` ({} bytes, {:?} tree engine)", config.model, bytes.len(), config.tree_engine),
        );
        Ok(Transformer::new(Predict { config, predictor, input: RefCell::new(Vec::new()) }))
    }

    fn process(&self, mut batch: Batch) -> Result<Batch, Error> {
        let rows = batch.columns.first().map_or(0, |c| len(&c.values));
        let prediction = {
            let mut input = self.input.borrow_mut();
            self.features(&batch, rows, &mut input)?;
            self.predictor.predict(&input, rows).map_err(error)?
        };
        let columns = self.columns(prediction, rows)?;
        for column in &columns {
            if batch.columns.iter().any(|c| c.name == column.name) {
                return Err(error(format!(
                    "the input already has a column `{}`; set `output` or `probability_prefix`",
                    column.name
                )));
            }
        }
        batch.columns.extend(columns);
        Ok(batch)
    }

    fn finish(&self) -> Result<Option<Batch>, Error> {
        Ok(None)
    }
}

impl Predict {
    /// Gathers the feature columns into the model's row-major input.
    fn features(&self, batch: &Batch, rows: usize, input: &mut Vec<f32>) -> Result<(), Error> {
        let columns = self
            .config
            .features
            .iter()
            .map(|name| {
                let column = batch.columns.iter().find(|c| &c.name == name).ok_or_else(|| {
                    let have: Vec<&str> = batch.columns.iter().map(|c| c.name.as_str()).collect();
                    error(format!("no input column `{name}` (the batch has: {})", have.join(", ")))
                })?;
                let values = match &column.values {
                    Values::F64(v) => Feature::F64(v),
                    Values::S64(v) => Feature::S64(v),
                    Values::Bool(v) => Feature::Bool(v),
                    _ => return Err(error(format!("feature column `{name}` is not numeric"))),
                };
                Ok((values, column.nulls.as_deref()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        gather(&columns, rows, input);
        Ok(())
    }

    /// The output column, then the probability columns if asked for.
    fn columns(&self, prediction: Prediction, rows: usize) -> Result<Vec<Column>, Error> {
        let Prediction { labels, scores, width } = prediction;
        let label = |values: Values| Column { name: self.config.output.clone(), values, nulls: None };
        let mut columns = Vec::new();
        match (labels, &scores) {
            (Some(Labels::Text(text)), _) => columns.push(label(Values::String(text))),
            (Some(Labels::Int(ids)), _) => columns.push(label(self.named(ids)?)),
            // No label output, several scores: the best class.
            (None, Some(scores)) if width > 1 => {
                let ids = scores
                    .chunks_exact(width)
                    .map(|row| {
                        row.iter().enumerate().fold(0, |best, (i, &s)| if s > row[best] { i } else { best }) as i64
                    })
                    .collect();
                columns.push(label(self.named(ids)?));
            }
            // No label output, one value per row: a regression.
            (None, Some(scores)) => columns.push(label(Values::F64(scores.iter().map(|&v| v as f64).collect()))),
            (None, None) => unreachable!("Predictor::load refuses models without outputs"),
        }
        if self.config.probabilities {
            let scores =
                scores.ok_or_else(|| error("`probabilities = true`, but the model has no float output".into()))?;
            for c in 0..width {
                let class = self.config.classes.get(c).cloned().unwrap_or_else(|| c.to_string());
                let values = (0..rows).map(|r| scores[r * width + c] as f64).collect();
                columns.push(Column {
                    name: format!("{}{class}", self.config.probability_prefix),
                    values: Values::F64(values),
                    nulls: None,
                });
            }
        }
        Ok(columns)
    }

    /// Class ids as names when `classes` is configured (dictionary-encoded: each name crosses
    /// the boundary once per batch), else as integers.
    fn named(&self, ids: Vec<i64>) -> Result<Values, Error> {
        if self.config.classes.is_empty() {
            return Ok(Values::S64(ids));
        }
        let keys = class_keys(&ids, self.config.classes.len())
            .map_err(|(row, message)| Error { message, row: Some(row as u32) })?;
        Ok(Values::Dictionary(Dictionary { values: self.config.classes.clone(), keys }))
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
    type Transformer = Predict;
}

export!(Plugin);
