//! Loads a tabular model and scores row-major `f32` inputs, one call per batch: an ONNX model
//! with tract (its tree ensembles by [`forest`]), or an XGBoost JSON model straight into
//! [`forest`], no ONNX export needed. Target-independent: the plugin runs it inside WebAssembly,
//! the benchmark runs it natively.

use std::sync::Arc;

use forest::Forest;
use forest::xgboost::Objective;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

/// Which implementation scores tree ensembles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeEngine {
    /// Ours: compiled, flat, blocked ([`forest`]).
    #[default]
    Fast,
    /// tract's own `TreeEnsembleClassifier` (for comparison; no regressor).
    Tract,
}

/// The labels a classifier predicts.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    Int(Vec<i64>),
    Text(Vec<String>),
}

/// What a model returned for a batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Classifiers: one label per row.
    pub labels: Option<Labels>,
    /// Class probabilities (classifiers) or values (regressors): `rows × width`, row-major.
    pub scores: Option<Vec<f32>>,
    /// Values per row in `scores`.
    pub width: usize,
}

pub struct Predictor {
    model: Model,
    features: usize,
    width: usize,
}

enum Model {
    /// An ONNX model, planned by tract: which outputs hold the labels and the scores.
    Onnx { plan: Arc<TypedRunnableModel>, label_output: Option<usize>, score_output: Option<usize> },
    /// An XGBoost model, scored by the forest alone.
    Xgboost { forest: Forest, objective: Objective },
}

impl Predictor {
    /// Loads `bytes` as a model taking `features` float features per row: XGBoost's JSON when
    /// they are a JSON document, else ONNX.
    pub fn load(bytes: &[u8], features: usize, engine: TreeEngine) -> Result<Predictor, String> {
        if forest::xgboost::is_json(bytes) {
            return Predictor::xgboost(bytes, features);
        }
        Predictor::onnx(bytes, features, engine)
    }

    fn xgboost(bytes: &[u8], features: usize) -> Result<Predictor, String> {
        let model = forest::xgboost::parse(bytes)
            .map_err(|e| format!("{e} (an XGBoost model must be saved as JSON: `save_model(\"model.json\")`)"))?;
        if model.features != features {
            return Err(format!(
                "the model takes {} input features, but {features} columns are configured",
                model.features
            ));
        }
        let forest = Forest::compile(&model.trees).map_err(|e| format!("the model's trees: {e}"))?;
        let width = match model.objective {
            Objective::Multiclass { classes } => classes,
            Objective::Binary => 2,
            Objective::Regression => 1,
        };
        Ok(Predictor { model: Model::Xgboost { forest, objective: model.objective }, features, width })
    }

    fn onnx(bytes: &[u8], features: usize, engine: TreeEngine) -> Result<Predictor, String> {
        let mut onnx = tract_onnx::onnx();
        if engine == TreeEngine::Fast {
            crate::ops::register(&mut onnx);
        }
        let mut model = onnx.model_for_read(&mut &*bytes).map_err(|e| format!("not a valid ONNX model: {e:#}"))?;
        if model.inputs.len() != 1 {
            return Err(format!(
                "the model has {} inputs; a tabular model has one, [rows, features]",
                model.inputs.len()
            ));
        }
        // The declared width, when the model states it, must match the configured columns.
        let declared = model.input_fact(0).map_err(|e| e.to_string())?.shape.dims().nth(1).and_then(|d| d.concretize());
        if let Some(width) = declared.and_then(|d| d.to_i64().ok())
            && width as usize != features
        {
            return Err(format!("the model takes {width} input features, but {features} columns are configured"));
        }
        // The number of rows is left symbolic: any batch size runs on the same plan.
        let rows = model.symbols.sym("N");
        model
            .set_input_fact(0, f32::fact([rows.to_dim(), features.to_dim()]).into())
            .map_err(|e| format!("cannot set the input shape: {e:#}"))?;
        let model = model
            .into_optimized()
            .map_err(|e| format!("the model does not fit [rows, {features}] float input: {e:#}"))?;

        // Labels: an integer or string vector. Scores: a float matrix (or vector).
        let mut label_output = None;
        let mut score_output = None;
        let mut width = 1;
        for (i, outlet) in model.output_outlets().map_err(|e| e.to_string())?.iter().enumerate() {
            let fact = model.outlet_fact(*outlet).map_err(|e| e.to_string())?;
            let rank = fact.rank();
            match fact.datum_type {
                DatumType::I64 | DatumType::I32 | DatumType::String if rank == 1 && label_output.is_none() => {
                    label_output = Some(i)
                }
                DatumType::F32 if rank <= 2 && score_output.is_none() => {
                    score_output = Some(i);
                    if rank == 2 {
                        width = fact.shape[1]
                            .to_usize()
                            .map_err(|_| "the model's output width is not fixed".to_string())?;
                    }
                }
                _ => {}
            }
        }
        if label_output.is_none() && score_output.is_none() {
            return Err("the model has neither a label output nor a float output".into());
        }
        let plan = model.into_runnable().map_err(|e| format!("cannot plan the model: {e:#}"))?;
        Ok(Predictor { model: Model::Onnx { plan, label_output, score_output }, features, width })
    }

    pub fn features(&self) -> usize {
        self.features
    }

    /// Scores `rows` rows of `features()` values each.
    pub fn predict(&self, input: &[f32], rows: usize) -> Result<Prediction, String> {
        let (plan, label_output, score_output) = match &self.model {
            Model::Onnx { plan, label_output, score_output } => (plan, label_output, score_output),
            Model::Xgboost { forest, objective } => return self.xgboost_predict(forest, *objective, input, rows),
        };
        let input = Tensor::from_shape(&[rows, self.features], input).map_err(|e| e.to_string())?;
        let outputs = plan.run(tvec!(input.into_tvalue())).map_err(|e| format!("scoring failed: {e:#}"))?;
        let labels = match label_output.map(|i| &outputs[i]) {
            None => None,
            Some(out) if out.datum_type() == DatumType::String => Some(Labels::Text(to_vec::<String>(out)?)),
            Some(out) => Some(Labels::Int(to_vec::<i64>(&*out.cast_to::<i64>().map_err(|e| e.to_string())?)?)),
        };
        let scores = score_output.map(|i| to_vec::<f32>(&outputs[i])).transpose()?;
        Ok(Prediction { labels, scores, width: self.width })
    }

    /// What XGBoost's `predict` and `predict_proba` return: the best class and the class
    /// probabilities (for `binary:logistic`, `[1 - p, p]` and `p > 0.5`), or the value.
    fn xgboost_predict(
        &self,
        forest: &Forest,
        objective: Objective,
        input: &[f32],
        rows: usize,
    ) -> Result<Prediction, String> {
        let mut scores = vec![0f32; rows * forest.n_targets()];
        match objective {
            Objective::Multiclass { .. } => {
                let mut best = vec![0i32; rows];
                forest.predict_best(input, self.features, &mut scores, &mut best)?;
                let labels = Some(Labels::Int(best.into_iter().map(i64::from).collect()));
                Ok(Prediction { labels, scores: Some(scores), width: self.width })
            }
            Objective::Binary => {
                forest.predict(input, self.features, &mut scores)?;
                let labels = scores.iter().map(|&p| i64::from(p > 0.5)).collect();
                let both = scores.iter().flat_map(|&p| [1.0 - p, p]).collect();
                Ok(Prediction { labels: Some(Labels::Int(labels)), scores: Some(both), width: 2 })
            }
            Objective::Regression => {
                forest.predict(input, self.features, &mut scores)?;
                Ok(Prediction { labels: None, scores: Some(scores), width: 1 })
            }
        }
    }
}

/// One input column, as a batch carries it.
#[derive(Debug, Clone, Copy)]
pub enum Feature<'a> {
    F64(&'a [f64]),
    S64(&'a [i64]),
    /// 1 for true, 0 for false, as XGBoost reads a boolean column.
    Bool(&'a [bool]),
}

/// Gathers feature columns (values, null mask), in the model's order, into the row-major `f32`
/// matrix it takes; a null becomes NaN, which tree ensembles treat as a missing value.
pub fn gather(columns: &[(Feature, Option<&[bool]>)], rows: usize, input: &mut Vec<f32>) {
    let width = columns.len();
    input.clear();
    input.resize(rows * width, 0.0);
    for (j, (values, nulls)) in columns.iter().enumerate() {
        match values {
            Feature::F64(v) => v.iter().enumerate().for_each(|(r, &x)| input[r * width + j] = x as f32),
            Feature::S64(v) => v.iter().enumerate().for_each(|(r, &x)| input[r * width + j] = x as f32),
            Feature::Bool(v) => v.iter().enumerate().for_each(|(r, &x)| input[r * width + j] = f32::from(u8::from(x))),
        }
        if let Some(nulls) = nulls {
            nulls.iter().enumerate().filter(|(_, n)| **n).for_each(|(r, _)| input[r * width + j] = f32::NAN);
        }
    }
}

/// Class ids as keys into a dictionary of `classes` names (the plugin returns the names once
/// per batch, not once per row); an id without a name fails with its row.
pub fn class_keys(ids: &[i64], classes: usize) -> Result<Vec<u32>, (usize, String)> {
    ids.iter()
        .enumerate()
        .map(|(row, &id)| {
            u32::try_from(id)
                .ok()
                .filter(|&k| (k as usize) < classes)
                .ok_or_else(|| (row, format!("the model predicted class {id}, but `classes` names only {classes}")))
        })
        .collect()
}

fn to_vec<T: Datum>(tensor: &Tensor) -> Result<Vec<T>, String> {
    Ok(tensor.try_as_plain_ram().map_err(|e| e.to_string())?.as_slice::<T>().map_err(|e| e.to_string())?.to_vec())
}
