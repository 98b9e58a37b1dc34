//! Tree ensembles as ONNX describes them (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`),
//! compiled once into a flat, cache-friendly layout and evaluated many rows at a time.
//!
//! Why not tract's own op: it decodes every node from a generic tensor on each visit and finds a
//! leaf's weights by iterating over all leaves before it, about 3 ms per row on the Iris model.
//! Here a node is 16 bytes (four to a cache line), each tree's nodes are laid out breadth-first
//! so the top levels share cache lines, a leaf points straight at its weights, and rows are
//! scored in blocks, tree by tree, so a tree stays in cache while a block of rows walks it.
//! When every branch uses the same comparison (XGBoost: `<`, scikit-learn: `<=`), the walk is
//! monomorphised for it.
//!
//! Semantics follow the ONNX spec (as onnxruntime implements it): a missing value (NaN) takes the
//! branch `nodes_missing_value_tracks_true` says, scores are aggregated over trees (sum, average,
//! min or max), then `base_values` are added. Sums run in tree order in `f32`, as tract does, so
//! results match tract's op bit for bit on sums.

use std::collections::HashMap;
use std::fmt;

/// How a branch compares the feature `x` with its threshold `t`: "go to the true child if ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmp {
    /// `x <= t` (`BRANCH_LEQ`)
    Leq = 0,
    /// `x < t` (`BRANCH_LT`)
    Lt = 1,
    /// `x >= t` (`BRANCH_GTE`)
    Gte = 2,
    /// `x > t` (`BRANCH_GT`)
    Gt = 3,
    /// `x == t` (`BRANCH_EQ`)
    Eq = 4,
    /// `x != t` (`BRANCH_NEQ`)
    Neq = 5,
}

impl Cmp {
    /// Parses an ONNX `nodes_modes` entry; `None` for `LEAF`.
    pub fn from_onnx(mode: &str) -> Result<Option<Cmp>, String> {
        Ok(Some(match mode {
            "BRANCH_LEQ" => Cmp::Leq,
            "BRANCH_LT" => Cmp::Lt,
            "BRANCH_GTE" => Cmp::Gte,
            "BRANCH_GT" => Cmp::Gt,
            "BRANCH_EQ" => Cmp::Eq,
            "BRANCH_NEQ" => Cmp::Neq,
            "LEAF" => return Ok(None),
            other => return Err(format!("unsupported node mode `{other}`")),
        }))
    }

    #[inline(always)]
    fn test(self, x: f32, t: f32) -> bool {
        match self {
            Cmp::Leq => x <= t,
            Cmp::Lt => x < t,
            Cmp::Gte => x >= t,
            Cmp::Gt => x > t,
            Cmp::Eq => x == t,
            Cmp::Neq => x != t,
        }
    }

    fn from_bits(bits: u32) -> Cmp {
        match bits {
            0 => Cmp::Leq,
            1 => Cmp::Lt,
            2 => Cmp::Gte,
            3 => Cmp::Gt,
            4 => Cmp::Eq,
            _ => Cmp::Neq,
        }
    }
}

/// How the trees' contributions to one target are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    #[default]
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    /// Parses the ONNX `aggregate_function` attribute.
    pub fn from_onnx(name: &str) -> Result<Aggregate, String> {
        match name {
            "SUM" => Ok(Aggregate::Sum),
            "AVERAGE" => Ok(Aggregate::Average),
            "MIN" => Ok(Aggregate::Min),
            "MAX" => Ok(Aggregate::Max),
            other => Err(format!("unsupported aggregate function `{other}`")),
        }
    }
}

/// A tree ensemble in ONNX's parallel-array form: one entry per node, one per leaf weight.
/// `leaf_*` are the `class_*` (classifier) or `target_*` (regressor) attributes.
#[derive(Debug, Clone, Default)]
pub struct OnnxTrees {
    pub tree_ids: Vec<i64>,
    pub node_ids: Vec<i64>,
    pub feature_ids: Vec<i64>,
    pub values: Vec<f32>,
    /// `None` for a leaf.
    pub modes: Vec<Option<Cmp>>,
    pub true_ids: Vec<i64>,
    pub false_ids: Vec<i64>,
    /// Per node: a missing value goes to the true child. Empty means all false.
    pub missing_tracks_true: Vec<bool>,
    pub leaf_tree_ids: Vec<i64>,
    pub leaf_node_ids: Vec<i64>,
    pub leaf_targets: Vec<i64>,
    pub leaf_weights: Vec<f32>,
    /// Classes (classifier) or targets (regressor).
    pub n_targets: usize,
    pub aggregate: Aggregate,
    /// Added to each target after aggregation. Empty means zeros.
    pub base_values: Vec<f32>,
}

// Node layout, 16 bytes: `meta` packs the feature index (low 24 bits), the comparison
// (bits 24-27), "missing goes true" (bit 28) and "is a leaf" (bit 31). A branch's `value` is
// its threshold and `yes`/`no` are node indices; a leaf's `yes..no` is its range in `leaves`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Node {
    meta: u32,
    value: f32,
    yes: u32,
    no: u32,
}

const FEATURE_MASK: u32 = 0x00FF_FFFF;
const CMP_SHIFT: u32 = 24;
const MISSING_TRUE: u32 = 1 << 28;
const LEAF: u32 = 1 << 31;

/// A compiled tree ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    /// Root node of each tree, in tree order.
    roots: Vec<u32>,
    nodes: Vec<Node>,
    /// `(target, weight)` of every leaf, contiguous per leaf.
    leaves: Vec<(u32, f32)>,
    n_targets: usize,
    /// Inputs must have more features than this.
    max_feature: usize,
    aggregate: Aggregate,
    base_values: Vec<f32>,
    /// The comparison every branch uses, if they all use the same one.
    uniform: Option<Cmp>,
}

impl fmt::Display for Forest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} trees, {} nodes, {} targets, {:?}",
            self.roots.len(),
            self.nodes.len(),
            self.n_targets,
            self.aggregate
        )
    }
}

/// Rows scored together: tree by tree over a block, so each tree stays in cache.
const BLOCK_ROWS: usize = 64;

impl Forest {
    /// Validates and compiles an ensemble.
    pub fn compile(t: &OnnxTrees) -> Result<Forest, String> {
        let n = t.node_ids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".into());
        }
        for (name, len) in [
            ("nodes_treeids", t.tree_ids.len()),
            ("nodes_featureids", t.feature_ids.len()),
            ("nodes_values", t.values.len()),
            ("nodes_modes", t.modes.len()),
            ("nodes_truenodeids", t.true_ids.len()),
            ("nodes_falsenodeids", t.false_ids.len()),
        ] {
            if len != n {
                return Err(format!("`{name}` has {len} entries, `nodes_nodeids` has {n}"));
            }
        }
        if !t.missing_tracks_true.is_empty() && t.missing_tracks_true.len() != n {
            return Err(format!(
                "`nodes_missing_value_tracks_true` has {} entries, expected {n}",
                t.missing_tracks_true.len()
            ));
        }
        let leaves_n = t.leaf_weights.len();
        if t.leaf_tree_ids.len() != leaves_n || t.leaf_node_ids.len() != leaves_n || t.leaf_targets.len() != leaves_n {
            return Err("leaf attributes (tree ids, node ids, targets, weights) differ in length".into());
        }
        if t.n_targets == 0 {
            return Err("the ensemble has no targets".into());
        }
        if !t.base_values.is_empty() && t.base_values.len() != t.n_targets {
            return Err(format!("`base_values` has {} entries for {} targets", t.base_values.len(), t.n_targets));
        }

        // (tree, node id) -> position in the ONNX arrays.
        let mut position: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        for i in 0..n {
            if position.insert((t.tree_ids[i], t.node_ids[i]), i).is_some() {
                return Err(format!("tree {} has node {} twice", t.tree_ids[i], t.node_ids[i]));
            }
        }
        // (tree, node id) -> its leaf weights, in attribute order.
        let mut weights: HashMap<(i64, i64), Vec<(u32, f32)>> = HashMap::new();
        for j in 0..leaves_n {
            let target = t.leaf_targets[j];
            if target < 0 || target as usize >= t.n_targets {
                return Err(format!("leaf weight {j} targets class {target}, but there are {} targets", t.n_targets));
            }
            weights
                .entry((t.leaf_tree_ids[j], t.leaf_node_ids[j]))
                .or_default()
                .push((target as u32, t.leaf_weights[j]));
        }

        // Trees in ascending id order; each tree's root is its node no other node points to.
        let mut tree_ids: Vec<i64> = t.tree_ids.clone();
        tree_ids.sort_unstable();
        tree_ids.dedup();
        let mut is_child = vec![false; n];
        for i in 0..n {
            if t.modes[i].is_some() {
                for child in [t.true_ids[i], t.false_ids[i]] {
                    let c = *position.get(&(t.tree_ids[i], child)).ok_or_else(|| {
                        format!(
                            "tree {} node {} points to node {child}, which does not exist",
                            t.tree_ids[i], t.node_ids[i]
                        )
                    })?;
                    is_child[c] = true;
                }
            }
        }
        let mut roots_by_tree: HashMap<i64, usize> = HashMap::new();
        for (i, &child) in is_child.iter().enumerate() {
            if !child && roots_by_tree.insert(t.tree_ids[i], i).is_some() {
                return Err(format!("tree {} has more than one root", t.tree_ids[i]));
            }
        }

        let mut forest = Forest {
            roots: Vec::with_capacity(tree_ids.len()),
            nodes: Vec::with_capacity(n),
            leaves: Vec::with_capacity(leaves_n),
            n_targets: t.n_targets,
            max_feature: 0,
            aggregate: t.aggregate,
            base_values: if t.base_values.is_empty() { vec![0.0; t.n_targets] } else { t.base_values.clone() },
            uniform: None,
        };
        let mut modes_seen: Vec<Cmp> = Vec::new();
        for tree in tree_ids {
            let root = *roots_by_tree.get(&tree).ok_or_else(|| format!("tree {tree} has no root (a cycle?)"))?;
            // Breadth-first: `order[k]` is the ONNX position of the k-th node of this tree.
            let base = forest.nodes.len();
            let mut order = vec![root];
            let mut index_of: HashMap<usize, u32> = HashMap::from([(root, base as u32)]);
            let mut k = 0;
            while k < order.len() {
                let i = order[k];
                if t.modes[i].is_some() {
                    for child in [t.true_ids[i], t.false_ids[i]] {
                        let c = position[&(tree, child)];
                        if let std::collections::hash_map::Entry::Vacant(slot) = index_of.entry(c) {
                            slot.insert((base + order.len()) as u32);
                            order.push(c);
                        }
                    }
                }
                k += 1;
                if order.len() > n {
                    return Err(format!("tree {tree} is not a tree (a node is reachable twice)"));
                }
            }
            forest.roots.push(base as u32);
            for &i in &order {
                let node = match t.modes[i] {
                    Some(cmp) => {
                        let feature = t.feature_ids[i];
                        if !(0..=FEATURE_MASK as i64).contains(&feature) {
                            return Err(format!("tree {tree} node {}: bad feature index {feature}", t.node_ids[i]));
                        }
                        forest.max_feature = forest.max_feature.max(feature as usize);
                        if !modes_seen.contains(&cmp) {
                            modes_seen.push(cmp);
                        }
                        let missing = t.missing_tracks_true.get(i).copied().unwrap_or(false);
                        Node {
                            meta: feature as u32 | (cmp as u32) << CMP_SHIFT | if missing { MISSING_TRUE } else { 0 },
                            value: t.values[i],
                            yes: index_of[&position[&(tree, t.true_ids[i])]],
                            no: index_of[&position[&(tree, t.false_ids[i])]],
                        }
                    }
                    None => {
                        let start = forest.leaves.len() as u32;
                        if let Some(w) = weights.get(&(tree, t.node_ids[i])) {
                            forest.leaves.extend_from_slice(w);
                        }
                        Node { meta: LEAF, value: 0.0, yes: start, no: forest.leaves.len() as u32 }
                    }
                };
                forest.nodes.push(node);
            }
        }
        forest.uniform = match modes_seen[..] {
            [one] => Some(one),
            [] => Some(Cmp::Leq), // only leaves: any will do
            _ => None,
        };
        Ok(forest)
    }

    pub fn n_targets(&self) -> usize {
        self.n_targets
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// The smallest number of input features the ensemble can read.
    pub fn min_features(&self) -> usize {
        self.max_feature + 1
    }

    /// Scores `input`, rows of `n_features` values, into `output`, rows of `n_targets()`
    /// values: aggregated tree outputs plus base values, before any post-transform.
    pub fn predict(&self, input: &[f32], n_features: usize, output: &mut [f32]) -> Result<(), String> {
        if n_features < self.min_features() {
            return Err(format!(
                "the ensemble reads feature #{}, but rows have {n_features} features",
                self.max_feature
            ));
        }
        if n_features == 0 || !input.len().is_multiple_of(n_features) {
            return Err(format!("input of {} values is not rows of {n_features} features", input.len()));
        }
        let rows = input.len() / n_features;
        if output.len() != rows * self.n_targets {
            return Err(format!("output has {} values, expected {}", output.len(), rows * self.n_targets));
        }
        match self.uniform {
            Some(Cmp::Leq) => self.predict_with::<0>(input, n_features, output),
            Some(Cmp::Lt) => self.predict_with::<1>(input, n_features, output),
            Some(Cmp::Gte) => self.predict_with::<2>(input, n_features, output),
            Some(Cmp::Gt) => self.predict_with::<3>(input, n_features, output),
            Some(Cmp::Eq) => self.predict_with::<4>(input, n_features, output),
            Some(Cmp::Neq) => self.predict_with::<5>(input, n_features, output),
            None => self.predict_with::<MIXED>(input, n_features, output),
        }
        Ok(())
    }

    /// `C` is the comparison every branch uses, or `MIXED` to read it from each node.
    fn predict_with<const C: u32>(&self, input: &[f32], n_features: usize, output: &mut [f32]) {
        let t = self.n_targets;
        let init = match self.aggregate {
            Aggregate::Sum | Aggregate::Average => 0.0,
            Aggregate::Min => f32::INFINITY,
            Aggregate::Max => f32::NEG_INFINITY,
        };
        output.fill(init);
        // For min/max: whether any tree reached a target (else the target scores 0).
        let mut reached =
            vec![false; if matches!(self.aggregate, Aggregate::Min | Aggregate::Max) { output.len() } else { 0 }];
        for (block, (rows, scores)) in
            input.chunks(BLOCK_ROWS * n_features).zip(output.chunks_mut(BLOCK_ROWS * t)).enumerate()
        {
            for &root in &self.roots {
                for (r, row) in rows.chunks_exact(n_features).enumerate() {
                    let leaf = self.walk::<C>(root, row);
                    let scores = &mut scores[r * t..(r + 1) * t];
                    for &(target, weight) in &self.leaves[leaf.yes as usize..leaf.no as usize] {
                        let s = &mut scores[target as usize];
                        match self.aggregate {
                            Aggregate::Sum | Aggregate::Average => *s += weight,
                            Aggregate::Min => *s = s.min(weight),
                            Aggregate::Max => *s = s.max(weight),
                        }
                        if !reached.is_empty() {
                            reached[(block * BLOCK_ROWS + r) * t + target as usize] = true;
                        }
                    }
                }
            }
        }
        let trees = self.roots.len() as f32;
        for (i, s) in output.iter_mut().enumerate() {
            match self.aggregate {
                Aggregate::Sum => {}
                Aggregate::Average => *s /= trees,
                Aggregate::Min | Aggregate::Max => {
                    if !reached[i] {
                        *s = 0.0
                    }
                }
            }
            *s += self.base_values[i % t];
        }
    }

    /// Follows one row from `root` to its leaf.
    #[inline(always)]
    fn walk<const C: u32>(&self, root: u32, row: &[f32]) -> Node {
        let mut node = self.nodes[root as usize];
        while node.meta & LEAF == 0 {
            let x = row[(node.meta & FEATURE_MASK) as usize];
            let cmp = if C == MIXED { Cmp::from_bits((node.meta >> CMP_SHIFT) & 0xF) } else { Cmp::from_bits(C) };
            let go_true = if x.is_nan() { node.meta & MISSING_TRUE != 0 } else { cmp.test(x, node.value) };
            node = self.nodes[if go_true { node.yes } else { node.no } as usize];
        }
        node
    }
}

/// `predict_with::<MIXED>` reads each node's own comparison.
const MIXED: u32 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    /// Tree 0: x0 < 1 ? leaf(+1 to class 0) : (x1 <= 2 ? leaf(+2 to class 1) : leaf(+3 to 0, +4 to 1)),
    /// missing x0 goes true. Tree 1: a single leaf, +0.5 to class 1. Node ids are deliberately
    /// not in layout order.
    fn trees(aggregate: Aggregate, second_mode: Cmp) -> OnnxTrees {
        OnnxTrees {
            tree_ids: vec![0, 0, 0, 0, 0, 1],
            node_ids: vec![4, 0, 7, 2, 9, 0],
            feature_ids: vec![0, 0, 1, 0, 0, 0],
            values: vec![0.0, 1.0, 2.0, 0.0, 0.0, 0.0],
            modes: vec![None, Some(Cmp::Lt), Some(second_mode), None, None, None],
            true_ids: vec![0, 4, 2, 0, 0, 0],
            false_ids: vec![0, 7, 9, 0, 0, 0],
            missing_tracks_true: vec![false, true, false, false, false, false],
            leaf_tree_ids: vec![0, 0, 0, 0, 1],
            leaf_node_ids: vec![4, 2, 9, 9, 0],
            leaf_targets: vec![0, 1, 0, 1, 1],
            leaf_weights: vec![1.0, 2.0, 3.0, 4.0, 0.5],
            n_targets: 2,
            aggregate,
            base_values: vec![10.0, 20.0],
        }
    }

    fn predict(forest: &Forest, rows: &[[f32; 2]]) -> Vec<f32> {
        let input: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut out = vec![0.0; rows.len() * 2];
        forest.predict(&input, 2, &mut out).unwrap();
        out
    }

    #[test]
    fn walks_branches_and_missing_values() {
        let forest = Forest::compile(&trees(Aggregate::Sum, Cmp::Leq)).unwrap();
        assert_eq!(forest.n_trees(), 2);
        assert_eq!(forest.uniform, None, "two comparison kinds");
        let out = predict(&forest, &[[0.5, 9.0], [1.0, 2.0], [1.0, 2.5], [f32::NAN, 9.0], [5.0, f32::NAN]]);
        assert_eq!(
            out,
            vec![
                11.0, 20.5, // x0 < 1: +1 to class 0
                10.0, 22.5, // x1 <= 2: +2 to class 1
                13.0, 24.5, // else: +3, +4
                11.0, 20.5, // missing x0 tracks true
                13.0, 24.5, // missing x1 goes false
            ]
        );
    }

    #[test]
    fn uniform_comparisons_are_specialised_with_the_same_results() {
        let mixed = Forest::compile(&trees(Aggregate::Sum, Cmp::Leq)).unwrap();
        let uniform = Forest::compile(&trees(Aggregate::Sum, Cmp::Lt)).unwrap();
        assert_eq!(uniform.uniform, Some(Cmp::Lt));
        // Away from the second threshold both trees agree.
        let rows: Vec<[f32; 2]> = (0..200).map(|i| [(i % 7) as f32 * 0.4, (i % 5) as f32 + 0.5]).collect();
        assert_eq!(predict(&mixed, &rows), predict(&uniform, &rows), "{BLOCK_ROWS}-row blocks and the tail");
    }

    #[test]
    fn aggregates() {
        let rows = [[1.0, 2.5]]; // tree 0: +3 to class 0, +4 to class 1; tree 1: +0.5 to class 1
        let score = |a| predict(&Forest::compile(&trees(a, Cmp::Leq)).unwrap(), &rows);
        assert_eq!(score(Aggregate::Sum), vec![13.0, 24.5]);
        assert_eq!(score(Aggregate::Average), vec![11.5, 22.25]);
        assert_eq!(score(Aggregate::Min), vec![13.0, 20.5]);
        assert_eq!(score(Aggregate::Max), vec![13.0, 24.0]);
        assert_eq!(
            predict(&Forest::compile(&trees(Aggregate::Min, Cmp::Leq)).unwrap(), &[[0.5, 0.0]]),
            vec![11.0, 20.5]
        );
    }

    #[test]
    fn rejects_broken_ensembles_and_inputs() {
        let mut bad = trees(Aggregate::Sum, Cmp::Leq);
        bad.true_ids[1] = 99;
        assert!(Forest::compile(&bad).unwrap_err().contains("points to node 99"));
        let mut bad = trees(Aggregate::Sum, Cmp::Leq);
        bad.leaf_targets[0] = 5;
        assert!(Forest::compile(&bad).unwrap_err().contains("targets class 5"));
        let forest = Forest::compile(&trees(Aggregate::Sum, Cmp::Leq)).unwrap();
        assert_eq!(forest.min_features(), 2);
        let mut out = vec![0.0; 2];
        assert!(forest.predict(&[1.0], 1, &mut out).unwrap_err().contains("reads feature #1"));
    }
}
