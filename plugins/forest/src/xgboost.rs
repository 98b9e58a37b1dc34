//! XGBoost's own JSON model format (`model.save_model("model.json")`), read into the same
//! [`OnnxTrees`] an ONNX `TreeEnsemble*` node gives, so the same compiled [`Forest`](crate::Forest)
//! scores it, with XGBoost's semantics:
//!
//! - a branch sends a value to its left child when `value < split_condition` (in `f32`, as
//!   XGBoost compares), a missing value (NaN) where `default_left` says;
//! - a leaf's value is its `split_conditions` entry; the trees of class `k` (`tree_info`) add
//!   up to the margin of class `k`, starting from the model's base score (its intercept): as is
//!   for `multi:*` and `reg:squarederror`, as a logit for `binary:logistic`;
//! - then `multi:softprob` and `multi:softmax` take the softmax of the margins (what
//!   `predict_proba` returns; the label is the best class), `binary:logistic` the logistic of its
//!   one margin (the probability of class 1), and `reg:squarederror` keeps the margin.
//!
//! Other objectives, boosters (`gblinear`, `dart`), categorical splits and vector leaves are
//! refused with a message that says so.

use serde::Deserialize;

use crate::{Aggregate, Cmp, OnnxTrees, PostTransform};

/// What the model predicts, from its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// `multi:softprob` or `multi:softmax`: `classes` probabilities, the best is the label.
    Multiclass { classes: usize },
    /// `binary:logistic`: the probability of class 1; the label is 1 above 0.5.
    Binary,
    /// `reg:squarederror`: one value.
    Regression,
}

/// An XGBoost model, as trees the forest compiles.
#[derive(Debug, Clone)]
pub struct XgbModel {
    pub trees: OnnxTrees,
    pub objective: Objective,
    /// Features per row the model was trained on.
    pub features: usize,
}

#[derive(Deserialize)]
struct File {
    learner: Learner,
}

#[derive(Deserialize)]
struct Learner {
    learner_model_param: ModelParam,
    objective: NamedObjective,
    gradient_booster: Booster,
}

#[derive(Deserialize)]
struct ModelParam {
    /// `"5E-1"` (XGBoost 1.x) or `"[0E0,0E0,0E0]"` (one per class or target, XGBoost 2+).
    base_score: String,
    #[serde(default)]
    num_class: String,
    num_feature: String,
}

#[derive(Deserialize)]
struct NamedObjective {
    name: String,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    model: Option<GbTree>,
}

#[derive(Deserialize)]
struct GbTree {
    trees: Vec<Tree>,
    tree_info: Vec<i64>,
}

#[derive(Deserialize)]
struct Tree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f64>,
    default_left: Vec<DefaultLeft>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default)]
    tree_param: TreeParam,
}

/// `default_left` is written as integers by some versions and booleans by others.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum DefaultLeft {
    Int(i64),
    Bool(bool),
}

#[derive(Deserialize, Default)]
struct TreeParam {
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

/// Whether `bytes` look like a JSON document (what [`parse`] reads), rather than a binary model.
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Reads an XGBoost JSON model.
pub fn parse(bytes: &[u8]) -> Result<XgbModel, String> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| format!("not an XGBoost JSON model: {e}"))?;
    let learner = file.learner;
    let booster = &learner.gradient_booster;
    if booster.name != "gbtree" {
        return Err(format!("booster `{}` is not supported: only tree models (`gbtree`) are", booster.name));
    }
    let model = booster.model.as_ref().ok_or("the model has no trees (`gradient_booster.model` is missing)")?;
    let param = &learner.learner_model_param;
    let features: usize =
        param.num_feature.parse().map_err(|_| format!("`num_feature` is not a number: `{}`", param.num_feature))?;
    let num_class: usize = if param.num_class.is_empty() { 0 } else { param.num_class.parse().unwrap_or(0) };
    let (objective, post_transform) = match learner.objective.name.as_str() {
        "multi:softprob" | "multi:softmax" if num_class >= 2 => {
            (Objective::Multiclass { classes: num_class }, PostTransform::Softmax)
        }
        "binary:logistic" => (Objective::Binary, PostTransform::Logistic),
        "reg:squarederror" => (Objective::Regression, PostTransform::None),
        other => {
            return Err(format!(
                "objective `{other}` is not supported (supported: multi:softprob, multi:softmax, binary:logistic, \
                 reg:squarederror)"
            ));
        }
    };
    let n_targets = match objective {
        Objective::Multiclass { classes } => classes,
        Objective::Binary | Objective::Regression => 1,
    };
    let base = base_scores(&param.base_score, n_targets)?;
    let base_values = match objective {
        // XGBoost keeps the base score as a probability and starts the margin at its logit.
        Objective::Binary => base.iter().map(|&p| -(1.0 / p - 1.0).ln()).collect(),
        Objective::Multiclass { .. } | Objective::Regression => base,
    };
    if model.tree_info.len() != model.trees.len() {
        return Err(format!("{} trees but {} entries in `tree_info`", model.trees.len(), model.tree_info.len()));
    }

    let mut trees = OnnxTrees { n_targets, aggregate: Aggregate::Sum, post_transform, ..OnnxTrees::default() };
    // XGBoost starts each margin at the base score and adds the trees to it in order, in `f32`.
    // The forest adds `base_values` after the trees (as ONNX says), which rounds differently:
    // the base scores go first instead, as one single-leaf tree per target.
    for (target, &base) in base_values.iter().enumerate() {
        let id = target as i64;
        trees.tree_ids.push(id);
        trees.node_ids.push(0);
        trees.feature_ids.push(0);
        trees.values.push(0.0);
        trees.modes.push(None);
        trees.true_ids.push(0);
        trees.false_ids.push(0);
        trees.missing_tracks_true.push(false);
        trees.leaf_tree_ids.push(id);
        trees.leaf_node_ids.push(0);
        trees.leaf_targets.push(id);
        trees.leaf_weights.push(base);
    }
    let first = n_targets as i64;
    for (t, (tree, &target)) in model.trees.iter().zip(&model.tree_info).enumerate() {
        let n = tree.left_children.len();
        let lengths =
            [tree.right_children.len(), tree.split_indices.len(), tree.split_conditions.len(), tree.default_left.len()];
        if lengths.iter().any(|&len| len != n) || n == 0 {
            return Err(format!("tree {t}: its node arrays have different lengths ({n} and {lengths:?})"));
        }
        if tree.split_type.iter().any(|&kind| kind != 0) {
            return Err(format!("tree {t}: categorical splits are not supported"));
        }
        if tree.tree_param.size_leaf_vector.as_deref().is_some_and(|size| size != "1" && size != "0") {
            return Err(format!("tree {t}: vector leaves (multi-target trees) are not supported"));
        }
        if target < 0 || target as usize >= n_targets {
            return Err(format!("tree {t} adds to class {target}, but the model has {n_targets}"));
        }
        for i in 0..n {
            let (tree_id, node) = (first + t as i64, i as i64);
            let leaf = tree.left_children[i] < 0;
            trees.tree_ids.push(tree_id);
            trees.node_ids.push(node);
            trees.feature_ids.push(if leaf { 0 } else { tree.split_indices[i] });
            trees.values.push(tree.split_conditions[i] as f32);
            trees.modes.push(if leaf { None } else { Some(Cmp::Lt) });
            trees.true_ids.push(if leaf { 0 } else { tree.left_children[i] });
            trees.false_ids.push(if leaf { 0 } else { tree.right_children[i] });
            trees.missing_tracks_true.push(match tree.default_left[i] {
                DefaultLeft::Int(v) => v != 0,
                DefaultLeft::Bool(v) => v,
            });
            if leaf {
                trees.leaf_tree_ids.push(tree_id);
                trees.leaf_node_ids.push(node);
                trees.leaf_targets.push(target);
                trees.leaf_weights.push(tree.split_conditions[i] as f32);
            }
        }
    }
    Ok(XgbModel { trees, objective, features })
}

/// The base score, one per target: `"5E-1"` applies to every target, `"[a,b,c]"` gives each.
fn base_scores(text: &str, n_targets: usize) -> Result<Vec<f32>, String> {
    let bad = || format!("`base_score` is not a number or a list of numbers: `{text}`");
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    let values: Vec<f32> =
        inner.split(',').map(|v| v.trim().parse::<f32>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    match values.len() {
        1 => Ok(vec![values[0]; n_targets]),
        len if len == n_targets => Ok(values),
        len => Err(format!("`base_score` has {len} values for {n_targets} targets")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Forest;

    /// A model of one stump per class: feature 0 below 0.5 goes left; missing goes right.
    fn model(objective: &str, num_class: usize, base: &str) -> String {
        let classes = num_class.max(1);
        let trees: Vec<String> = (0..classes)
            .map(|k| {
                format!(
                    r#"{{"left_children":[1,-1,-1],"right_children":[2,-1,-1],"split_indices":[0,0,0],
                        "split_conditions":[0.5,{left},{right}],"default_left":[0,0,0],"split_type":[0,0,0],
                        "base_weights":[0,0,0],"tree_param":{{"num_nodes":"3","size_leaf_vector":"1"}}}}"#,
                    left = k as f32 * 0.5,
                    right = -(k as f32),
                )
            })
            .collect();
        let info: Vec<String> = (0..classes).map(|k| k.to_string()).collect();
        format!(
            r#"{{"learner":{{"learner_model_param":{{"base_score":"{base}","num_class":"{num_class}","num_feature":"2"}},
                "objective":{{"name":"{objective}"}},
                "gradient_booster":{{"name":"gbtree","model":{{"trees":[{}],"tree_info":[{}]}}}}}},"version":[3,2,0]}}"#,
            trees.join(","),
            info.join(",")
        )
    }

    fn scores(json: &str, rows: &[[f32; 2]]) -> Vec<f32> {
        let model = parse(json.as_bytes()).unwrap();
        let forest = Forest::compile(&model.trees).unwrap();
        let input: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut out = vec![0.0; rows.len() * forest.n_targets()];
        forest.predict(&input, 2, &mut out).unwrap();
        out
    }

    #[test]
    fn branches_compare_below_and_missing_values_follow_default_left() {
        let json = model("reg:squarederror", 0, "[1E0]");
        // 0.25 < 0.5: left (leaf 0); 0.5 is not below 0.5: right (leaf -0); NaN: right.
        assert_eq!(scores(&json, &[[0.25, 0.0], [0.5, 0.0], [f32::NAN, 0.0]]), [1.0, 1.0, 1.0]);
        let json =
            model("reg:squarederror", 0, "[0E0]").replace(r#""default_left":[0,0,0]"#, r#""default_left":[1,0,0]"#);
        assert_eq!(scores(&json, &[[f32::NAN, 0.0]]), [0.0]);
    }

    #[test]
    fn objectives_finish_the_margins_as_xgboost_does() {
        // Three classes; row [0.25, _]: leaves 0, 0.5, 1.0 on top of base scores 0, 0, 0.
        let probabilities = scores(&model("multi:softprob", 3, "[0E0,0E0,0E0]"), &[[0.25, 0.0]]);
        let e = [0f32, 0.5, 1.0].map(f32::exp);
        let sum: f32 = e.iter().sum();
        for (p, e) in probabilities.iter().zip(e) {
            assert!((p - e / sum).abs() < 1e-6, "{probabilities:?}");
        }
        // Binary: the margin starts at logit(0.25) and the leaf adds 0.
        let p = scores(&model("binary:logistic", 0, "[2.5E-1]"), &[[0.25, 0.0]])[0];
        assert!((p - 0.25).abs() < 1e-6, "{p}");
        let p = scores(&model("binary:logistic", 0, "5E-1"), &[[0.25, 0.0]])[0];
        assert!((p - 0.5).abs() < 1e-6, "{p}");
    }

    #[test]
    fn what_is_not_supported_is_refused_clearly() {
        let refused = |json: String| parse(json.as_bytes()).unwrap_err();
        assert!(refused(model("rank:pairwise", 0, "5E-1")).contains("objective `rank:pairwise` is not supported"));
        assert!(
            refused(
                model("multi:softprob", 3, "[0E0,0E0,0E0]")
                    .replace(r#""split_type":[0,0,0]"#, r#""split_type":[1,0,0]"#)
            )
            .contains("categorical splits are not supported")
        );
        assert!(
            refused(model("reg:squarederror", 0, "5E-1").replace("gbtree", "gblinear")).contains("booster `gblinear`")
        );
        assert!(refused("[1, 2]".into()).starts_with("not an XGBoost JSON model"));
        assert!(is_json(b"  {\"learner\": 1}") && !is_json(b"\x08ONNX"));
    }
}
