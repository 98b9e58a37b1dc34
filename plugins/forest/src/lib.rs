//! Tree ensembles as ONNX describes them (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`),
//! or as XGBoost saves them ([`xgboost`]), compiled once into a flat, cache-friendly layout and
//! evaluated many rows at a time.
//!
//! Why not tract's own op: it decodes every node from a generic tensor on each visit and finds a
//! leaf's weights by iterating over all leaves before it, about 3 ms per row on the Iris model.
//! Here a node is 16 bytes (four to a cache line), each tree's nodes are laid out breadth-first
//! so the top levels share cache lines, a leaf points straight at its weights, and rows are
//! scored in blocks, tree by tree, so a tree stays in cache while a block of rows walks it.
//! When every branch uses the same comparison (XGBoost: `<`, scikit-learn: `<=`), the walk is
//! monomorphised for it.
//!
//! When the trees read few features at few distinct thresholds (Iris: 4 features, 31
//! thresholds, 300 trees), the whole ensemble is a function of which interval between
//! thresholds each feature falls in: 4,860 cells for Iris. The forest then also tabulates its
//! scores per cell, computed by the walk itself, and scores a row by locating its cell and
//! reading the table: the same bits as the walk, at a cost independent of the number of trees.
//!
//! Semantics follow the ONNX spec (as onnxruntime implements it): a missing value (NaN) takes the
//! branch `nodes_missing_value_tracks_true` says, scores are aggregated over trees (sum, average,
//! min or max), then `base_values` are added, then the post-transform (softmax or logistic) is
//! applied and, for classifiers, the best target taken (the first of equal scores). Sums run in
//! tree order in `f32`, as tract does, so results match tract's op to within a few units in the
//! last place.

use std::collections::HashMap;
use std::fmt;

pub mod xgboost;

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

/// What is applied to each row's scores after aggregation (ONNX `post_transform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostTransform {
    #[default]
    None,
    /// `exp(s - max) / sum`, over the row's targets.
    Softmax,
    /// `1 / (1 + exp(-s))`, per target.
    Logistic,
}

impl PostTransform {
    /// Parses the ONNX `post_transform` attribute (absent means `NONE`).
    pub fn from_onnx(name: &str) -> Result<PostTransform, String> {
        match name {
            "NONE" => Ok(PostTransform::None),
            "SOFTMAX" => Ok(PostTransform::Softmax),
            "LOGISTIC" => Ok(PostTransform::Logistic),
            other => Err(format!("post_transform {other} is not supported")),
        }
    }

    fn apply(self, row: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Softmax => {
                // (`f32::max` is a libm call in WebAssembly; a comparison is not.)
                let max = row.iter().fold(f32::NEG_INFINITY, |max, &s| if s > max { s } else { max });
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let scale = sum.recip();
                row.iter_mut().for_each(|s| *s *= scale);
            }
            PostTransform::Logistic => row.iter_mut().for_each(|s| *s = 1.0 / (1.0 + (-*s).exp())),
        }
    }
}

/// The index of a row's highest score, the first of equal ones (as ONNX's `ArgMax`).
#[inline]
fn best(row: &[f32]) -> i32 {
    (1..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as i32
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
    /// Applied to each row's scores last.
    pub post_transform: PostTransform,
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
    post_transform: PostTransform,
    /// The comparison every branch uses, if they all use the same one.
    uniform: Option<Cmp>,
    /// The same trees padded to complete binary trees, when they all use one comparison and
    /// padding costs little: then rows are scored without a branch per node.
    levels: Option<Levels>,
    /// The scores tabulated per cell of the threshold grid, when the grid is small.
    table: Option<Table>,
}

/// The ensemble's scores tabulated over the grid its thresholds make: every branch compares
/// one feature with one threshold, so the leaf each tree reaches, and with it the score, only
/// depends on which interval between a feature's sorted distinct thresholds each value falls
/// in (its bin). A row's cell is its bins in mixed radix; the table holds each cell's final
/// scores (post-transform applied) and best target, as [`Forest::score`] and
/// [`Forest::finish_rows`] compute them for a row in that cell, so reading it gives the same
/// bits with no `exp` left per row. Rows with a missing value in a feature the trees read take
/// the walk.
#[derive(Debug, Clone, PartialEq)]
struct Table {
    /// The features the trees read.
    features: Vec<Axis>,
    /// `x <= t`-style branches (`Leq`, `Gt`): a bin counts the thresholds below the value;
    /// `x < t`-style (`Lt`, `Gte`): the thresholds at or below it.
    below_only: bool,
    /// `n_targets` scores per cell, post-transformed.
    scores: Vec<f32>,
    /// The best target of each cell.
    best: Vec<i32>,
    /// Every feature's thresholds padded with NaN (which no comparison counts) to `width`, a
    /// power of two up to [`MAX_COUNTED`]: a bin is then a fixed number of comparisons with no
    /// loop left to run, which compiles to a few SIMD instructions under LLVM and Cranelift
    /// alike. Empty (width 0) when a feature has more thresholds: those take the binary search.
    padded: Vec<f32>,
    width: usize,
}

/// Most thresholds per feature whose bins are counted rather than searched.
const MAX_COUNTED: usize = 64;

#[derive(Debug, Clone, PartialEq)]
struct Axis {
    feature: usize,
    /// Distinct, ascending.
    thresholds: Vec<f32>,
    /// Cells between consecutive bins of this feature.
    stride: usize,
}

/// Tabulate when the grid has at most this many cells ...
const MAX_TABLE_CELLS: usize = 1 << 16;
/// ... and filling it walks at most this many trees (a few milliseconds).
const MAX_TABLE_WORK: usize = 1 << 23;

/// Trees padded to complete binary trees (heap order: the children of node `i` are `2i + 1`,
/// taken when the test is true, and `2i + 2`). A leaf above the bottom level is repeated in
/// every bottom slot below it, so every walk takes exactly `depth` steps: no leaf test, no
/// data-dependent branch, and several rows can walk a tree in lockstep.
#[derive(Debug, Clone, PartialEq)]
struct Levels {
    trees: Vec<LevelTree>,
    nodes: Vec<LevelNode>,
    /// Per bottom slot: the range of its leaf's weights in `Forest::leaves`.
    slots: Vec<(u32, u32)>,
    /// When every leaf has at most one weight (XGBoost, gradient boosting): per bottom slot,
    /// that `(target, weight)` itself (weight 0 for an empty leaf), so summing needs no
    /// indirection. See [`Levels::sum`].
    single: Option<Vec<(u32, f32)>>,
    /// For [`Levels::sum`]: the trees deeper than a single leaf, and the sum of the single
    /// leaves' weights per target (a stump adds the same weight to every row: add it once).
    deep: Vec<LevelTree>,
    stumps: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct LevelTree {
    depth: u32,
    /// Index of the tree's first node in `Levels::nodes`, and of its first slot in `slots`.
    nodes: u32,
    slots: u32,
}

/// A padded node: the feature (low 31 bits; the top bit: a missing value goes true) and the
/// threshold. Padding nodes below a leaf test feature 0; either way leads to the same leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct LevelNode {
    feature: u32,
    threshold: f32,
}

const LEVEL_MISSING_TRUE: u32 = 1 << 31;
/// Deeper trees are walked node by node: padding them would cost too much memory.
const MAX_LEVEL_DEPTH: u32 = 14;
/// Rows walking one tree in lockstep: independent loads overlap.
const LANES: usize = 8;

impl fmt::Display for Forest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} trees, {} nodes, {} targets, {:?}, post-transform {:?}",
            self.roots.len(),
            self.nodes.len(),
            self.n_targets,
            self.aggregate,
            self.post_transform
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
            post_transform: t.post_transform,
            uniform: None,
            levels: None,
            table: None,
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
        if forest.uniform.is_some() {
            forest.levels = forest.levels();
        }
        forest.table = forest.table();
        Ok(forest)
    }

    /// The table of scores per cell, or `None` when branches compare in mixed ways or for
    /// (in)equality, a threshold is NaN, or the grid is too large to fill quickly.
    fn table(&self) -> Option<Table> {
        let below_only = match self.uniform? {
            Cmp::Lt | Cmp::Gte => false,
            Cmp::Leq | Cmp::Gt => true,
            Cmp::Eq | Cmp::Neq => return None,
        };
        let mut thresholds: Vec<Vec<f32>> = vec![Vec::new(); self.max_feature + 1];
        for node in self.nodes.iter().filter(|n| n.meta & LEAF == 0) {
            if node.value.is_nan() {
                return None;
            }
            thresholds[(node.meta & FEATURE_MASK) as usize].push(node.value);
        }
        let mut features = Vec::new();
        let mut cells = 1usize;
        for (feature, mut t) in thresholds.into_iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            t.sort_unstable_by(f32::total_cmp);
            t.dedup_by(|a, b| a == b); // -0.0 == 0.0: one threshold
            let stride = cells;
            cells = cells.checked_mul(t.len() + 1).filter(|&c| c <= MAX_TABLE_CELLS)?;
            features.push(Axis { feature, thresholds: t, stride });
        }
        if cells.saturating_mul(self.roots.len()) > MAX_TABLE_WORK {
            return None;
        }
        // One row per cell, each feature at a value inside its bin: for `x < t` branches, bin
        // 0 is below the first threshold and bin b starts at threshold b - 1; for `x <= t`,
        // bin b ends at threshold b and the last bin is above them all.
        let width = self.min_features();
        let mut scores = vec![0.0; cells * self.n_targets];
        let mut rows = Vec::new();
        const CHUNK: usize = 4096;
        for (first, out) in (0..cells).step_by(CHUNK).zip(scores.chunks_mut(CHUNK * self.n_targets)) {
            rows.clear();
            rows.resize(out.len() / self.n_targets * width, 0.0);
            for (cell, row) in (first..).zip(rows.chunks_exact_mut(width)) {
                for axis in &features {
                    let bin = cell / axis.stride % (axis.thresholds.len() + 1);
                    row[axis.feature] = match (below_only, bin) {
                        (false, 0) => f32::NEG_INFINITY,
                        (false, b) => axis.thresholds[b - 1],
                        (true, b) => axis.thresholds.get(b).copied().unwrap_or(f32::INFINITY),
                    };
                }
            }
            self.score(&rows, width, out);
        }
        let mut best = vec![0; cells];
        self.finish_rows(&mut scores, &mut best);
        let (padded, width) = Table::pad(&features);
        Some(Table { features, below_only, scores, best, padded, width })
    }

    /// The padded layout, or `None` when a tree is too deep or padding would cost more than
    /// 16 times the nodes (and at least 64k nodes).
    fn levels(&self) -> Option<Levels> {
        fn depth(nodes: &[Node], i: u32) -> u32 {
            let node = nodes[i as usize];
            if node.meta & LEAF != 0 { 0 } else { 1 + depth(nodes, node.yes).max(depth(nodes, node.no)) }
        }
        let depths: Vec<u32> = self.roots.iter().map(|&r| depth(&self.nodes, r)).collect();
        if depths.iter().any(|&d| d > MAX_LEVEL_DEPTH) {
            return None;
        }
        let padded: usize = depths.iter().map(|&d| (1usize << d) - 1).sum();
        if padded > (16 * self.nodes.len()).max(1 << 16) {
            return None;
        }
        let mut levels = Levels {
            trees: Vec::new(),
            nodes: Vec::with_capacity(padded),
            slots: Vec::new(),
            single: None,
            deep: Vec::new(),
            stumps: vec![0.0; self.n_targets],
        };
        for (&root, &d) in self.roots.iter().zip(&depths) {
            let tree = LevelTree { depth: d, nodes: levels.nodes.len() as u32, slots: levels.slots.len() as u32 };
            levels.nodes.resize(levels.nodes.len() + (1 << d) - 1, LevelNode { feature: 0, threshold: 0.0 });
            levels.slots.resize(levels.slots.len() + (1 << d), (0, 0));
            self.fill(&mut levels, tree, root, 0, 0);
            levels.trees.push(tree);
        }
        if levels.slots.iter().all(|&(start, end)| end - start <= 1) {
            let weight = |(start, end): (u32, u32)| if end > start { self.leaves[start as usize] } else { (0, 0.0) };
            let single: Vec<(u32, f32)> = levels.slots.iter().map(|&slot| weight(slot)).collect();
            for tree in &levels.trees {
                if tree.depth == 0 {
                    let (target, weight) = single[tree.slots as usize];
                    levels.stumps[target as usize] += weight;
                } else {
                    levels.deep.push(*tree);
                }
            }
            levels.single = Some(single);
        }
        Some(levels)
    }

    /// Copies the subtree at `node` to heap position `position` at level `level` of `tree`.
    fn fill(&self, levels: &mut Levels, tree: LevelTree, node: u32, position: usize, level: u32) {
        let n = self.nodes[node as usize];
        if n.meta & LEAF == 0 {
            let missing = if n.meta & MISSING_TRUE != 0 { LEVEL_MISSING_TRUE } else { 0 };
            levels.nodes[tree.nodes as usize + position] =
                LevelNode { feature: (n.meta & FEATURE_MASK) | missing, threshold: n.value };
            self.fill(levels, tree, n.yes, 2 * position + 1, level + 1);
            self.fill(levels, tree, n.no, 2 * position + 2, level + 1);
        } else {
            // Every bottom slot below this position holds this leaf. The padding nodes on the
            // way stay at their default: any path through them reaches one of these slots.
            let below = tree.depth - level;
            let first = ((position + 1) << below) - 1 - ((1usize << tree.depth) - 1);
            for slot in first..first + (1 << below) {
                levels.slots[tree.slots as usize + slot] = (n.yes, n.no);
            }
        }
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
    /// values: aggregated tree outputs plus base values, post-transformed.
    pub fn predict(&self, input: &[f32], n_features: usize, output: &mut [f32]) -> Result<(), String> {
        self.predict_best(input, n_features, output, &mut [])
    }

    /// [`Forest::predict`], and each row's best target (the first of equal scores) into
    /// `best`, one per row, unless `best` is empty.
    pub fn predict_best(
        &self,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        best: &mut [i32],
    ) -> Result<(), String> {
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
        if !best.is_empty() && best.len() != rows {
            return Err(format!("room for {} best targets, expected {rows}", best.len()));
        }
        match &self.table {
            Some(table) => table.predict(self, input, n_features, output, best),
            None => {
                self.score(input, n_features, output);
                self.finish_rows(output, best);
            }
        }
        Ok(())
    }

    /// The last steps of scoring, on rows of aggregated scores: the post-transform, then each
    /// row's best target unless `best` is empty.
    fn finish_rows(&self, scores: &mut [f32], best: &mut [i32]) {
        for (r, row) in scores.chunks_exact_mut(self.n_targets).enumerate() {
            self.post_transform.apply(row);
            if let Some(b) = best.get_mut(r) {
                *b = crate::best(row);
            }
        }
    }

    /// [`Forest::predict`] without the table and before the post-transform, on checked arguments.
    fn score(&self, input: &[f32], n_features: usize, output: &mut [f32]) {
        // Sums of one weight per leaf (boosted trees): walk and add in one pass.
        if let (Some(levels @ Levels { single: Some(_), .. }), Some(cmp), Aggregate::Sum | Aggregate::Average) =
            (&self.levels, self.uniform, self.aggregate)
        {
            match cmp {
                Cmp::Leq => levels.sum::<0>(input, n_features, output, self.n_targets),
                Cmp::Lt => levels.sum::<1>(input, n_features, output, self.n_targets),
                Cmp::Gte => levels.sum::<2>(input, n_features, output, self.n_targets),
                Cmp::Gt => levels.sum::<3>(input, n_features, output, self.n_targets),
                Cmp::Eq => levels.sum::<4>(input, n_features, output, self.n_targets),
                Cmp::Neq => levels.sum::<5>(input, n_features, output, self.n_targets),
            }
            self.finish_scores(output, &[]);
            return;
        }
        // Otherwise each walker writes, for a block of rows, the leaf range every tree reaches
        // for every row (tree-major), monomorphised for the comparison all branches share.
        match (&self.levels, self.uniform) {
            (Some(levels), Some(cmp)) => match cmp {
                Cmp::Leq => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<0>(rows, n_features, out))
                }
                Cmp::Lt => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<1>(rows, n_features, out))
                }
                Cmp::Gte => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<2>(rows, n_features, out))
                }
                Cmp::Gt => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<3>(rows, n_features, out))
                }
                Cmp::Eq => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<4>(rows, n_features, out))
                }
                Cmp::Neq => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<5>(rows, n_features, out))
                }
            },
            (None, Some(cmp)) => match cmp {
                Cmp::Leq => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<0>(rows, n_features, out))
                }
                Cmp::Lt => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<1>(rows, n_features, out))
                }
                Cmp::Gte => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<2>(rows, n_features, out))
                }
                Cmp::Gt => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<3>(rows, n_features, out))
                }
                Cmp::Eq => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<4>(rows, n_features, out))
                }
                Cmp::Neq => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<5>(rows, n_features, out))
                }
            },
            (_, None) => {
                self.aggregate(input, n_features, output, |rows, out| self.walk_all::<MIXED>(rows, n_features, out))
            }
        }
    }

    /// Scores blocks of rows: `walk` gives the leaf each tree reaches for each row of a block
    /// (tree-major), then the leaves' weights are aggregated per row and target in tree order.
    fn aggregate(
        &self,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        walk: impl Fn(&[f32], &mut Vec<(u32, u32)>),
    ) {
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
        let mut leaves = Vec::with_capacity(self.roots.len() * BLOCK_ROWS);
        for (block, (rows, scores)) in
            input.chunks(BLOCK_ROWS * n_features).zip(output.chunks_mut(BLOCK_ROWS * t)).enumerate()
        {
            let n = rows.len() / n_features;
            leaves.clear();
            walk(rows, &mut leaves);
            for tree_leaves in leaves.chunks_exact(n) {
                for (r, &(start, end)) in tree_leaves.iter().enumerate() {
                    let scores = &mut scores[r * t..(r + 1) * t];
                    for &(target, weight) in &self.leaves[start as usize..end as usize] {
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
        self.finish_scores(output, &reached);
    }

    /// After aggregation: averages, min/max of targets no tree reached, then base values.
    fn finish_scores(&self, output: &mut [f32], reached: &[bool]) {
        let t = self.n_targets;
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

    /// The node-by-node walk, for trees the padded layout does not take.
    fn walk_all<const C: u32>(&self, rows: &[f32], n_features: usize, out: &mut Vec<(u32, u32)>) {
        for &root in &self.roots {
            for row in rows.chunks_exact(n_features) {
                let leaf = self.walk::<C>(root, row);
                out.push((leaf.yes, leaf.no));
            }
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

impl Table {
    /// The features' thresholds padded with NaN to one power-of-two width (at least 4), and
    /// that width; `(vec![], 0)` when a feature has more than [`MAX_COUNTED`].
    fn pad(features: &[Axis]) -> (Vec<f32>, usize) {
        let longest = features.iter().map(|a| a.thresholds.len()).max().unwrap_or(0);
        if longest > MAX_COUNTED {
            return (Vec::new(), 0);
        }
        let width = longest.next_power_of_two().max(4);
        let mut padded = Vec::with_capacity(features.len() * width);
        for axis in features {
            padded.extend_from_slice(&axis.thresholds);
            padded.resize(padded.len() + width - axis.thresholds.len(), f32::NAN);
        }
        (padded, width)
    }

    /// Scores rows (and their best targets, unless `best` is empty) by their cells; rows with
    /// a missing value the trees read take the walk.
    fn predict(&self, forest: &Forest, input: &[f32], n_features: usize, output: &mut [f32], best: &mut [i32]) {
        let (f, n) = (forest, n_features);
        match self.width {
            4 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<4>(row)),
            8 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<8>(row)),
            16 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<16>(row)),
            32 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<32>(row)),
            64 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<64>(row)),
            _ => self.predict_with(f, input, n, output, best, |row| self.cell(row)),
        }
    }

    /// Scores every row from the table, its cell found by `cell`, and its best target unless
    /// `best` is empty; rows without a cell (a missing value) take the walk.
    #[inline]
    fn predict_with(
        &self,
        forest: &Forest,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        best: &mut [i32],
        cell: impl Fn(&[f32]) -> Option<usize>,
    ) {
        let t = forest.n_targets;
        let mut missing = Vec::new();
        for (r, (row, scores)) in input.chunks_exact(n_features).zip(output.chunks_exact_mut(t)).enumerate() {
            match cell(row) {
                Some(cell) => {
                    copy_scores(scores, &self.scores[cell * t..(cell + 1) * t]);
                    if let Some(b) = best.get_mut(r) {
                        *b = self.best[cell];
                    }
                }
                None => missing.push(r),
            }
        }
        if !missing.is_empty() {
            let rows: Vec<f32> =
                missing.iter().flat_map(|&r| &input[r * n_features..(r + 1) * n_features]).copied().collect();
            let mut scores = vec![0.0; missing.len() * t];
            let mut missing_best = vec![0; if best.is_empty() { 0 } else { missing.len() }];
            forest.score(&rows, n_features, &mut scores);
            forest.finish_rows(&mut scores, &mut missing_best);
            for (i, (&r, s)) in missing.iter().zip(scores.chunks_exact(t)).enumerate() {
                output[r * t..(r + 1) * t].copy_from_slice(s);
                if let Some(b) = best.get_mut(r) {
                    *b = missing_best[i];
                }
            }
        }
    }

    /// The cell of `row`, or `None` when a feature the trees read is missing (NaN).
    #[inline]
    fn cell(&self, row: &[f32]) -> Option<usize> {
        let mut cell = 0;
        for axis in &self.features {
            let x = row[axis.feature];
            if x.is_nan() {
                return None;
            }
            cell += axis.stride * self.bin(&axis.thresholds, x);
        }
        Some(cell)
    }

    /// [`Table::cell`] with each bin counted over the `W` padded thresholds of its feature: the
    /// same bin, as the thresholds are sorted. `W` is the table's `width`.
    #[inline]
    fn counted_cell<const W: usize>(&self, row: &[f32]) -> Option<usize> {
        if self.below_only { self.counted::<W, true>(row) } else { self.counted::<W, false>(row) }
    }

    /// [`Table::counted_cell`] for one kind of comparison (`BELOW_ONLY` as `below_only`).
    #[inline]
    fn counted<const W: usize, const BELOW_ONLY: bool>(&self, row: &[f32]) -> Option<usize> {
        let mut cell = 0;
        for (axis, thresholds) in self.features.iter().zip(self.padded.chunks_exact(W)) {
            let x = row[axis.feature];
            if x.is_nan() {
                return None;
            }
            let thresholds: &[f32; W] = thresholds.try_into().expect("chunks of W");
            cell += axis.stride * count_below::<W, BELOW_ONLY>(thresholds, x) as usize;
        }
        Some(cell)
    }

    /// The bin of `x` (not NaN) among `thresholds`: how many lie below it (or at it, for
    /// `x < t` branches). A binary search whose steps select rather than branch: the number of
    /// steps depends only on the length, so nothing is mispredicted, in WebAssembly as natively.
    #[inline]
    fn bin(&self, thresholds: &[f32], x: f32) -> usize {
        let (mut below, mut unknown) = (0, thresholds.len());
        while unknown > 0 {
            let half = unknown / 2;
            let t = thresholds[below + half];
            let passed = if self.below_only { t < x } else { t <= x };
            below = if passed { below + half + 1 } else { below };
            unknown = if passed { unknown - half - 1 } else { half };
        }
        below
    }
}

/// How many of `thresholds` lie below `x` (`t < x`), or at or below it when not `BELOW_ONLY`
/// (`t <= x`). NaN thresholds (the padding) never count.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn count_below<const W: usize, const BELOW_ONLY: bool>(thresholds: &[f32; W], x: f32) -> u32 {
    // LLVM vectorises this natively (SSE/AVX compares and adds).
    if BELOW_ONLY {
        thresholds.iter().map(|&t| u32::from(t < x)).sum()
    } else {
        thresholds.iter().map(|&t| u32::from(t <= x)).sum()
    }
}

/// [`count_below`] in WebAssembly SIMD: four thresholds per compare. LLVM does not vectorise
/// the plain loop for WebAssembly (it emits one scalar compare per threshold, which Cranelift
/// then spills), so the vector code is spelled out: the same compares, the same count.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn count_below<const W: usize, const BELOW_ONLY: bool>(thresholds: &[f32; W], x: f32) -> u32 {
    use core::arch::wasm32::*;
    let x = f32x4_splat(x);
    let mut below = i32x4_splat(0);
    for t in thresholds.chunks_exact(4) {
        let t = f32x4(t[0], t[1], t[2], t[3]);
        // A true lane is all ones, -1: subtracting it counts it.
        below = i32x4_sub(below, if BELOW_ONLY { f32x4_lt(t, x) } else { f32x4_le(t, x) });
    }
    let halves = i32x4_add(below, i32x4_shuffle::<2, 3, 0, 1>(below, below));
    (i32x4_extract_lane::<0>(halves) + i32x4_extract_lane::<1>(halves)) as u32
}

/// Copies a row's scores. Rows of up to four are copied value by value: `copy_from_slice` of
/// an unknown length is a call to `memcpy`, which WebAssembly makes a host call (`memory.copy`).
#[inline(always)]
fn copy_scores(to: &mut [f32], from: &[f32]) {
    match (to, from) {
        ([a], [x]) => *a = *x,
        ([a, b], [x, y]) => (*a, *b) = (*x, *y),
        ([a, b, c], [x, y, z]) => (*a, *b, *c) = (*x, *y, *z),
        ([a, b, c, d], [x, y, z, w]) => (*a, *b, *c, *d) = (*x, *y, *z, *w),
        (to, from) => to.copy_from_slice(from),
    }
}

impl Levels {
    /// Sums, for each row, the single leaf weight each tree reaches: eight rows at a time walk
    /// every tree in lockstep, with their features and scores in cache. Stumps are added first,
    /// then the other trees in order.
    ///
    /// Each group of rows is first copied feature-major (`x[feature * LANES + lane]`), so a lane's
    /// value sits at a constant offset from one base: the unrolled lanes then need no pointer of
    /// their own, which keeps them in registers under Cranelift too, not only under LLVM.
    fn sum<const C: u32>(&self, input: &[f32], n_features: usize, output: &mut [f32], t: usize) {
        for scores in output.chunks_exact_mut(t) {
            scores.copy_from_slice(&self.stumps);
        }
        let mut columns = vec![0.0f32; LANES * n_features];
        let mut groups = input.chunks_exact(LANES * n_features);
        let mut scores = output.chunks_exact_mut(LANES * t);
        for (group, scores) in (&mut groups).zip(&mut scores) {
            for (lane, row) in group.chunks_exact(n_features).enumerate() {
                for (feature, &x) in row.iter().enumerate() {
                    columns[feature * LANES + lane] = x;
                }
            }
            self.sum_lanes::<C, LANES>(&columns, n_features, scores, t);
        }
        // One row is its own feature-major layout.
        for (row, scores) in
            groups.remainder().chunks_exact(n_features).zip(scores.into_remainder().chunks_exact_mut(t))
        {
            self.sum_lanes::<C, 1>(row, n_features, scores, t);
        }
    }

    /// [`Levels::sum`] for `N` rows, given feature-major: `x[feature * N + lane]`.
    #[inline(always)]
    fn sum_lanes<const C: u32, const N: usize>(&self, x: &[f32], n_features: usize, scores: &mut [f32], t: usize) {
        let cmp = Cmp::from_bits(C);
        let single = self.single.as_deref().expect("checked by the caller");
        assert!(x.len() == N * n_features && scores.len() == N * t);
        for tree in &self.deep {
            let mut at = [0usize; N];
            for _ in 0..tree.depth {
                for (lane, position) in at.iter_mut().enumerate() {
                    // SAFETY: before the last step a position is one of the tree's 2^depth - 1
                    // nodes, all within `nodes` (built by `Forest::levels`). A feature index is
                    // below `min_features()`, which `predict` checked against `n_features`
                    // (padding nodes read feature 0), so `feature * N + lane` lies within `x`.
                    let node = unsafe { *self.nodes.get_unchecked(tree.nodes as usize + *position) };
                    let feature = (node.feature & !LEVEL_MISSING_TRUE) as usize;
                    let value = unsafe { *x.get_unchecked(feature * N + lane) };
                    let go_true = if value.is_nan() {
                        node.feature & LEVEL_MISSING_TRUE != 0
                    } else {
                        cmp.test(value, node.threshold)
                    };
                    *position = 2 * *position + 2 - go_true as usize;
                }
            }
            let bottom = (1usize << tree.depth) - 1;
            for (lane, &position) in at.iter().enumerate() {
                // SAFETY: after `depth` steps a position is a bottom slot of this tree, and its
                // target was checked against `n_targets` when the forest was compiled.
                let (target, weight) = unsafe { *single.get_unchecked(tree.slots as usize + position - bottom) };
                unsafe { *scores.get_unchecked_mut(lane * t + target as usize) += weight };
            }
        }
    }

    /// Walks every tree for every row of `rows` (rows of `n_features`), pushing the leaf ranges
    /// tree-major. `C` is the comparison all branches share.
    fn walk<const C: u32>(&self, rows: &[f32], n_features: usize, out: &mut Vec<(u32, u32)>) {
        let cmp = Cmp::from_bits(C);
        for tree in &self.trees {
            let nodes = &self.nodes[tree.nodes as usize..];
            let slots = &self.slots[tree.slots as usize..];
            let bottom = (1usize << tree.depth) - 1;
            for group in rows.chunks(LANES * n_features) {
                let lanes = group.len() / n_features;
                let mut at = [0usize; LANES];
                for _ in 0..tree.depth {
                    for (lane, position) in at.iter_mut().enumerate().take(lanes) {
                        let node = nodes[*position];
                        let x = group[lane * n_features + (node.feature & !LEVEL_MISSING_TRUE) as usize];
                        let go_true = if x.is_nan() {
                            node.feature & LEVEL_MISSING_TRUE != 0
                        } else {
                            cmp.test(x, node.threshold)
                        };
                        *position = 2 * *position + 2 - go_true as usize;
                    }
                }
                out.extend(at[..lanes].iter().map(|&position| slots[position - bottom]));
            }
        }
    }
}

/// `walk_all::<MIXED>` reads each node's own comparison.
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
            post_transform: PostTransform::None,
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
    fn post_transforms_and_best_targets() {
        let rows = [[0.5, 9.0], [1.0, 2.0]]; // raw scores [11, 20.5], [10, 22.5]
        let input: Vec<f32> = rows.iter().flatten().copied().collect();
        let score = |post| {
            let forest =
                Forest::compile(&OnnxTrees { post_transform: post, ..trees(Aggregate::Sum, Cmp::Leq) }).unwrap();
            let (mut out, mut best) = (vec![0.0; 4], vec![-1; 2]);
            forest.predict_best(&input, 2, &mut out, &mut best).unwrap();
            (out, best)
        };
        assert_eq!(score(PostTransform::None), (vec![11.0, 20.5, 10.0, 22.5], vec![1, 1]));
        let (softmax, best) = score(PostTransform::Softmax);
        let expected = [1.0 / (1.0 + 9.5f32.exp()), 1.0 / (1.0 + (-9.5f32).exp())];
        assert!((softmax[0] - expected[0]).abs() < 1e-7 && (softmax[1] - expected[1]).abs() < 1e-6, "{softmax:?}");
        assert!((softmax[2] + softmax[3] - 1.0).abs() < 1e-6, "{softmax:?}");
        assert_eq!(best, vec![1, 1]);
        let (logistic, _) = score(PostTransform::Logistic);
        assert_eq!(logistic[0], 1.0 / (1.0 + (-11.0f32).exp()));
        // Equal scores: the first wins.
        let mut tied = trees(Aggregate::Sum, Cmp::Leq);
        tied.leaf_weights = vec![0.0; 5];
        tied.base_values = vec![1.0, 1.0];
        let forest = Forest::compile(&tied).unwrap();
        let mut best = vec![-1; 2];
        forest.predict_best(&input, 2, &mut [0.0; 4], &mut best).unwrap();
        assert_eq!(best, vec![0, 0]);
        assert!(PostTransform::from_onnx("PROBIT").unwrap_err().contains("PROBIT"));
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

    /// A deterministic random ensemble: `trees` trees of depth up to 7 over 5 features, one
    /// comparison for all branches, missing values sent either way, leaves voting for 3 targets.
    fn random_trees(trees: i64, seed: u64, max_weights: u32) -> OnnxTrees {
        random_trees_with(trees, seed, max_weights, 200, Cmp::Lt)
    }

    /// [`random_trees`] with `distinct` possible thresholds and comparison `cmp`.
    fn random_trees_with(trees: i64, seed: u64, max_weights: u32, distinct: u32, cmp: Cmp) -> OnnxTrees {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut t = OnnxTrees { n_targets: 3, ..OnnxTrees::default() };
        for tree in 0..trees {
            let mut next_id = 0i64;
            // (node id, depth) still to create.
            let mut pending = vec![(0i64, 0u32)];
            while let Some((id, depth)) = pending.pop() {
                next_id = next_id.max(id + 1);
                t.tree_ids.push(tree);
                t.node_ids.push(id);
                t.missing_tracks_true.push(next() % 2 == 0);
                // One tree in five is a stump (a single leaf), as boosting often makes.
                if depth < 7 && next() % (if depth == 0 { 5 } else { 4 }) != 0 {
                    let (yes, no) = (next_id, next_id + 1);
                    next_id += 2;
                    t.feature_ids.push((next() % 5) as i64);
                    t.values.push((next() % distinct) as f32 * (10.0 / distinct as f32) - 5.0);
                    t.modes.push(Some(cmp));
                    t.true_ids.push(yes);
                    t.false_ids.push(no);
                    pending.push((yes, depth + 1));
                    pending.push((no, depth + 1));
                } else {
                    t.feature_ids.push(0);
                    t.values.push(0.0);
                    t.modes.push(None);
                    t.true_ids.push(0);
                    t.false_ids.push(0);
                    for _ in 0..1 + next() % max_weights {
                        t.leaf_tree_ids.push(tree);
                        t.leaf_node_ids.push(id);
                        t.leaf_targets.push((next() % 3) as i64);
                        t.leaf_weights.push((next() % 1000) as f32 / 100.0 - 5.0);
                    }
                }
            }
        }
        t
    }

    /// The padded layout scores exactly as the node-by-node walk, missing values included, with
    /// several weights per leaf (random forests) and with one (boosting: the one-pass sum).
    #[test]
    fn padded_layout_matches_the_walk() {
        for (max_weights, single) in [(2, false), (1, true)] {
            let padded = Forest::compile(&random_trees(40, 7, max_weights)).unwrap();
            let levels = padded.levels.as_ref().expect("shallow trees with one comparison are padded");
            assert_eq!(levels.single.is_some(), single);
            compare(&padded, &Forest { levels: None, ..padded.clone() });
        }
    }

    /// A small grid is tabulated, and the table scores every row with the walk's very bits
    /// and best targets: values on, between and beyond the thresholds, signed zeros,
    /// infinities, missing values; for every comparison that orders, with one and with several
    /// weights per leaf, under every post-transform.
    #[test]
    fn the_table_scores_exactly_as_the_walk() {
        let posts = [PostTransform::None, PostTransform::Softmax, PostTransform::Logistic];
        for ((seed, cmp), post) in
            [(1, Cmp::Lt), (2, Cmp::Leq), (3, Cmp::Gte), (4, Cmp::Gt)].into_iter().zip(posts.iter().cycle())
        {
            for max_weights in [1, 2] {
                let trees = OnnxTrees { post_transform: *post, ..random_trees_with(60, seed, max_weights, 6, cmp) };
                let tabulated = Forest::compile(&trees).unwrap();
                assert!(tabulated.table.is_some(), "{cmp:?}: 5 features x 6 thresholds make 7^5 cells");
                let walked = Forest { table: None, ..tabulated.clone() };
                let special = [-5.0, 0.0, -0.0, 5.0 / 3.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e30];
                let mut state = seed;
                let input: Vec<f32> = (0..5 * 2000)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let v = (state >> 33) as u32;
                        match v % 4 {
                            // exactly a threshold: (k * 10/6) - 5 as the trees compute it
                            0 => (v / 4 % 6) as f32 * (10.0 / 6.0) - 5.0,
                            1 => special[(v / 4) as usize % special.len()],
                            _ => (v % 2400) as f32 / 200.0 - 6.0,
                        }
                    })
                    .collect();
                let (mut a, mut b) = (vec![0.0; 2000 * 3], vec![0.0; 2000 * 3]);
                let (mut best_a, mut best_b) = (vec![-1; 2000], vec![-1; 2000]);
                tabulated.predict_best(&input, 5, &mut a, &mut best_a).unwrap();
                walked.predict_best(&input, 5, &mut b, &mut best_b).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{cmp:?}, {max_weights} weights per leaf, {post:?}");
                assert_eq!(best_a, best_b, "{cmp:?}, {max_weights} weights per leaf, {post:?}");
                let mut plain = vec![0.0; 2000 * 3];
                tabulated.predict(&input, 5, &mut plain).unwrap();
                assert_eq!(bits(&plain), bits(&a), "the scores do not depend on asking for the best");
            }
        }
        // Too many cells, or an equality test: no table.
        assert!(Forest::compile(&random_trees(40, 7, 1)).unwrap().table.is_none());
        assert!(Forest::compile(&random_trees_with(20, 5, 1, 6, Cmp::Eq)).unwrap().table.is_none());
    }

    #[test]
    fn counted_bins_are_the_searched_bins() {
        let mut state = 5u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for lengths in [[0, 1], [3, 4], [5, 16], [17, 64], [1, 33], [9, 2], [20, 3]] {
            // Thresholds -4, -3.5, ..., so 0.0 is one of them from 9 on; the rows try -0.0 too.
            let mut features: Vec<Axis> = lengths
                .iter()
                .enumerate()
                .map(|(feature, &n)| Axis {
                    feature,
                    thresholds: (0..n).map(|i| i as f32 * 0.5 - 4.0).collect(),
                    stride: 1,
                })
                .collect();
            features[1].stride = lengths[0] + 1;
            let (padded, width) = Table::pad(&features);
            for below_only in [false, true] {
                let table = Table {
                    features: features.clone(),
                    below_only,
                    scores: vec![],
                    best: vec![],
                    padded: padded.clone(),
                    width,
                };
                for _ in 0..2000 {
                    let pick = |v: u32| match v % 5 {
                        0 => [f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e30][(v / 5) as usize % 5],
                        1 | 2 => (v / 5 % 80) as f32 * 0.5 - 20.0, // on a threshold, or beyond all
                        _ => (v / 5 % 4000) as f32 / 100.0 - 20.0,
                    };
                    let row = [pick(next()), pick(next())];
                    let counted = match width {
                        4 => table.counted_cell::<4>(&row),
                        8 => table.counted_cell::<8>(&row),
                        16 => table.counted_cell::<16>(&row),
                        32 => table.counted_cell::<32>(&row),
                        64 => table.counted_cell::<64>(&row),
                        other => panic!("width {other} for {lengths:?}"),
                    };
                    assert_eq!(counted, table.cell(&row), "{lengths:?} below_only {below_only} row {row:?}");
                }
            }
        }
        let long = [Axis { feature: 0, thresholds: (0..65).map(|i| i as f32).collect(), stride: 1 }];
        assert_eq!(Table::pad(&long), (vec![], 0), "more than MAX_COUNTED: searched");
    }

    fn compare(padded: &Forest, walked: &Forest) {
        let mut state = 99u64;
        let input: Vec<f32> = (0..5 * 333)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let v = (state >> 40) as u32;
                if v.is_multiple_of(10) { f32::NAN } else { (v % 2000) as f32 / 200.0 - 5.0 }
            })
            .collect();
        let (mut a, mut b) = (vec![0.0; 333 * 3], vec![0.0; 333 * 3]);
        padded.predict(&input, 5, &mut a).unwrap();
        walked.predict(&input, 5, &mut b).unwrap();
        // Stumps are summed first on the fast path: the order, and so the last bits, may differ.
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
        }
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
