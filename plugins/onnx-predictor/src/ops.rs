//! Our tree ensembles inside tract: `TreeEnsembleClassifier` and `TreeEnsembleRegressor` are
//! registered in tract-onnx's op registry, replacing tract's own classifier (slow) and adding
//! the regressor (which tract lacks). tract stays the engine: it parses the model, runs every
//! other op (softmax, argmax, label lookup, linear models, MLPs) and plans the graph; only the
//! scoring of the trees is ours ([`forest::Forest`]).
//!
//! The classifier is wired exactly as tract wires its own (scores, base values, post-transform,
//! argmax, label lookup), so the results are the same; the binary layouts that need onnxruntime's
//! special cases are handed back to tract's own op.

use std::sync::Arc;

use forest::{Aggregate, Cmp, Forest, OnnxTrees, PostTransform};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx_opl::ml::DirectLookup;

/// Registers the fast tree ensembles in `onnx`'s op registry.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("TreeEnsembleClassifier", classifier);
    onnx.op_register.insert("TreeEnsembleRegressor", regressor);
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str) -> Vec<i64> {
    attribute(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn floats(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    if attribute(node, &format!("{name}_as_tensor")).is_some() && attribute(node, name).is_none() {
        bail!("`{name}_as_tensor` (double precision) is not supported; export `{name}` as floats");
    }
    Ok(attribute(node, name).map(|a| a.floats.clone()).unwrap_or_default())
}

fn strings(node: &NodeProto, name: &str) -> Vec<String> {
    attribute(node, name)
        .map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

fn string(node: &NodeProto, name: &str) -> Option<String> {
    attribute(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The trees of a `TreeEnsembleClassifier` (leaf prefix `class`) or `TreeEnsembleRegressor`
/// (leaf prefix `target`).
fn parse_trees(node: &NodeProto, leaf_prefix: &str, n_targets: usize, aggregate: Aggregate) -> TractResult<OnnxTrees> {
    let modes = strings(node, "nodes_modes")
        .iter()
        .map(|m| Cmp::from_onnx(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_err!("{}: {e}", node.name))?;
    Ok(OnnxTrees {
        tree_ids: ints(node, "nodes_treeids"),
        node_ids: ints(node, "nodes_nodeids"),
        feature_ids: ints(node, "nodes_featureids"),
        values: floats(node, "nodes_values")?,
        modes,
        true_ids: ints(node, "nodes_truenodeids"),
        false_ids: ints(node, "nodes_falsenodeids"),
        missing_tracks_true: ints(node, "nodes_missing_value_tracks_true").iter().map(|&v| v != 0).collect(),
        leaf_tree_ids: ints(node, &format!("{leaf_prefix}_treeids")),
        leaf_node_ids: ints(node, &format!("{leaf_prefix}_nodeids")),
        leaf_targets: ints(node, &format!("{leaf_prefix}_ids")),
        leaf_weights: floats(node, &format!("{leaf_prefix}_weights"))?,
        n_targets,
        aggregate,
        base_values: floats(node, "base_values")?,
        post_transform: PostTransform::None, // see `post_transform`
    })
}

/// The node's `post_transform` attribute (absent: none).
fn post_transform(node: &NodeProto) -> TractResult<PostTransform> {
    PostTransform::from_onnx(string(node, "post_transform").as_deref().unwrap_or("NONE"))
        .map_err(|e| format_err!("{}: {e}", node.name))
}

fn compile(node: &NodeProto, trees: &OnnxTrees) -> TractResult<Arc<Forest>> {
    Forest::compile(trees).map(Arc::new).map_err(|e| format_err!("tree ensemble `{}`: {e}", node.name))
}

fn classifier(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let int_labels = ints(node, "classlabels_int64s");
    let string_labels = strings(node, "classlabels_strings");
    let class_labels = match (int_labels.is_empty(), string_labels.is_empty()) {
        (false, true) => rctensor1(&int_labels),
        (true, false) => rctensor1(&string_labels),
        _ => bail!("expected exactly one of `classlabels_int64s` and `classlabels_strings`"),
    };
    let mut trees = parse_trees(node, "class", class_labels.len(), Aggregate::Sum)?;
    // Two classes with every weight on class 0: onnxruntime and tract special-case this layout.
    // Leave it to tract's own op rather than guess.
    if class_labels.len() < 3 && trees.leaf_targets.iter().all(|&t| t == 0) {
        let tract_own = tract_onnx::onnx().op_register.0["TreeEnsembleClassifier"];
        return tract_own(ctx, node);
    }
    trees.post_transform = post_transform(node)?;
    let forest = compile(node, &trees)?;
    Ok((expand(Classifier { forest, class_labels }), vec![]))
}

fn regressor(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = attribute(node, "n_targets").map_or(1, |a| a.i.max(1) as usize);
    let aggregate = Aggregate::from_onnx(string(node, "aggregate_function").as_deref().unwrap_or("SUM"))
        .map_err(|e| format_err!("{}: {e}", node.name))?;
    let trees =
        OnnxTrees { post_transform: post_transform(node)?, ..parse_trees(node, "target", n_targets, aggregate)? };
    let forest = compile(node, &trees)?;
    Ok((expand(Regressor { forest }), vec![]))
}

/// ONNX `TreeEnsembleClassifier`: outputs the label of the best class and the class scores.
#[derive(Debug, Clone)]
struct Classifier {
    forest: Arc<Forest>,
    class_labels: Arc<Tensor>,
}

impl Expansion for Classifier {
    fn name(&self) -> StaticName {
        "FastTreeEnsembleClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&outputs[0].datum_type, self.class_labels.datum_type())?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.class_labels.len().to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let op = TreeScores { forest: self.forest.clone(), winners: true };
        let outputs = model.wire_node(format!("{prefix}.trees"), op, inputs)?;
        let (winners, scores) = (&outputs[..1], outputs[1]);
        let fallback = Tensor::zero_dt(self.class_labels.datum_type(), &[])?.into_arc_tensor();
        let labels = model.wire_node(
            format!("{prefix}.labels"),
            DirectLookup::new(self.class_labels.clone(), fallback)?,
            winners,
        )?;
        Ok(tvec!(labels[0], scores))
    }
}

/// ONNX `TreeEnsembleRegressor`: outputs one value per target.
#[derive(Debug, Clone)]
struct Regressor {
    forest: Arc<Forest>,
}

impl Expansion for Regressor {
    fn name(&self) -> StaticName {
        "FastTreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.forest.n_targets().to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let op = TreeScores { forest: self.forest.clone(), winners: false };
        model.wire_node(format!("{prefix}.trees"), op, inputs)
    }
}

/// The typed op that scores rows `[N, F]` with a compiled forest: `[N, targets]` scores after
/// the post-transform, preceded, for a classifier (`winners`), by each row's best target `[N]`
/// (`i32`; the first of equal scores, as ONNX's `ArgMax`). Both come from
/// [`Forest::predict_best`], read straight from the table for a tabulated forest, in place of
/// tract's generic softmax and argmax, which cost many times the trees on rows of three scores.
#[derive(Debug, Clone)]
struct TreeScores {
    forest: Arc<Forest>,
    winners: bool,
}

// Ops must be comparable; two ops are the same when they share one compiled forest.
impl PartialEq for TreeScores {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.forest, &other.forest) && self.winners == other.winners
    }
}

impl Eq for TreeScores {}

impl Op for TreeScores {
    fn name(&self) -> StaticName {
        "FastTreeScores".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![self.forest.to_string()])
    }

    op_as_typed_op!();
}

impl EvalOp for TreeScores {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let shape = input.shape();
        if shape.len() != 2 {
            bail!("tree ensemble input must be [rows, features], got {shape:?}");
        }
        let (rows, features, targets) = (shape[0], shape[1], self.forest.n_targets());
        let values = input.try_as_plain_ram()?.as_slice::<f32>()?;
        // Written in place: no copy of the scores between the steps.
        let mut scores = Tensor::zero::<f32>(&[rows, targets])?;
        let mut winners = Tensor::zero::<i32>(&[if self.winners { rows } else { 0 }])?;
        {
            let mut scores = scores.try_as_plain_ram_mut()?;
            let mut winners = winners.try_as_plain_ram_mut()?;
            self.forest
                .predict_best(values, features, scores.as_slice_mut::<f32>()?, winners.as_slice_mut::<i32>()?)
                .map_err(|e| format_err!("{e}"))?;
        }
        Ok(if self.winners { tvec!(winners.into_tvalue(), scores.into_tvalue()) } else { tvec!(scores.into_tvalue()) })
    }
}

impl TypedOp for TreeScores {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = inputs[0].shape[0].clone();
        let mut facts = tvec!();
        if self.winners {
            facts.push(i32::fact([rows.clone()]));
        }
        facts.push(f32::fact([rows, self.forest.n_targets().to_dim()]));
        Ok(facts)
    }

    as_op!();
}
