//! The trees padded to complete binary trees ([`Levels`]), built by `Forest::levels` when every
//! branch uses one comparison and padding costs little, and walked several rows in lockstep
//! with no data-dependent branch; for one weight per leaf (boosting), walked and summed in one
//! pass ([`Levels::sum`]).

use crate::node::{FEATURE_MASK, LEAF, MISSING_TRUE, Node};
use crate::{Cmp, Forest};

/// Trees padded to complete binary trees (heap order: the children of node `i` are `2i + 1`,
/// taken when the test is true, and `2i + 2`). A leaf above the bottom level is repeated in
/// every bottom slot below it, so every walk takes exactly `depth` steps: no leaf test, no
/// data-dependent branch, and several rows can walk a tree in lockstep.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Levels {
    trees: Vec<LevelTree>,
    nodes: Vec<LevelNode>,
    /// Per bottom slot: the range of its leaf's weights in `Forest::leaves`.
    slots: Vec<(u32, u32)>,
    /// When every leaf has at most one weight (XGBoost, gradient boosting): per bottom slot,
    /// that `(target, weight)` itself (weight 0 for an empty leaf), so summing needs no
    /// indirection. See [`Levels::sum`].
    pub(crate) single: Option<Vec<(u32, f32)>>,
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

impl Forest {
    /// The padded layout, or `None` when a tree is too deep or padding would cost more than
    /// 16 times the nodes (and at least 64k nodes).
    pub(crate) fn levels(&self) -> Option<Levels> {
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
}

impl Levels {
    /// Sums, for each row, the single leaf weight each tree reaches: eight rows at a time walk
    /// every tree in lockstep, with their features and scores in cache. Stumps are added first,
    /// then the other trees in order.
    ///
    /// Each group of rows is first copied feature-major (`x[feature * LANES + lane]`), so a lane's
    /// value sits at a constant offset from one base: the unrolled lanes then need no pointer of
    /// their own, which keeps them in registers under Cranelift too, not only under LLVM.
    pub(crate) fn sum<const C: u32>(&self, input: &[f32], n_features: usize, output: &mut [f32], t: usize) {
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
    pub(crate) fn walk<const C: u32>(&self, rows: &[f32], n_features: usize, out: &mut Vec<(u32, u32)>) {
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

#[cfg(test)]
mod tests {
    use crate::Forest;
    use crate::testing::{Lcg, random_trees};

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

    fn compare(padded: &Forest, walked: &Forest) {
        let mut rng = Lcg::new(99);
        let input: Vec<f32> = (0..5 * 333)
            .map(|_| {
                let v = rng.next_u32();
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
}
